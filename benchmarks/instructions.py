"""Instructions per unit of work on the event loop's thread, counted by callgrind.

The other benchmarks time their work, and on a shared VM a run moves by
up to 1.5x within minutes: a change worth 5% cannot be told from the noise
there. Counted instructions do not move with the machine; they move only
with where the cyclic collector's collections land, which any change to
what is allocated shifts (the echo child: about 2% either way over 50 to
250 round trips, 10% over 10 to 30), so one count does not resolve a small
change; ``--offsets 5`` keeps the median of five, each with the heap
shifted first (medians of five over 10 to 30 round trips: within 1.5%).
This runs each workload under
``valgrind --tool=callgrind`` twice, with a small and a large number of
units, and divides the difference of the event loop thread's instructions
by the difference of units: what start-up, imports and warm-up cost falls
out, and so does anything the run does once.

Workloads (``none`` durability for ours: CPU, not waiting, is what
instructions measure):

- ``echo child``: ``delegation.py``'s round trip (a root's turn delegates
  to a child that records one answer), against autogen-core's new agent
  plus message and raw anyio's task plus stream (the same workloads as
  there).
- ``agent task``: ``agent_task.py``'s task (a fresh root session asks
  ``/delegate explorer: go``: three offline model calls, two sessions),
  against the Agents SDK's ``Runner.run`` with a child agent as tool.

Only the thread that runs the event loop is counted. Ours also writes its
session files behind, in a worker thread or a writer process (system calls
mostly), and under ``fsync`` waits for the journal's ``fdatasync``; neither
is in these counts, and the timed benchmarks are still the ones that say
how fast a round trip is. The ratio is the peer's count over ours: how
many times as fast ours would be at the same instructions per cycle.
Read beside the timed tables, it says how much of a gap is work and how
much is the machine (caches, the scheduler, the disk).

Needs ``valgrind`` (Linux); each workload runs about 50 times slower under
it, so a full run takes several minutes.

Reproduce::

    .venv/bin/python benchmarks/instructions.py                # asyncio and trio
    .venv/bin/python benchmarks/instructions.py --quick        # small counts, one backend
    .venv/bin/python benchmarks/compare.py HEAD~1 instructions --rounds 1 -- --quick --offsets 5
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMAND = ".venv/bin/python benchmarks/instructions.py"
_TOTAL = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)

# Run by ``python -c`` under valgrind: argv is the benchmarks folder, the
# workload, the backend, the units, a scratch folder and how many objects
# to hold before the workload starts (a heap offset: see ``per_unit``).
WORKLOAD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import anyio
kind, backend, units, scratch = sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
held = [[] for _ in range(int(sys.argv[6]))]
if kind == "echo":
    import delegation
    job = lambda: delegation.run_ours_echo(scratch, units, "none", verify=False)
elif kind == "autogen":
    import delegation
    job = lambda: delegation.run_autogen(units)
elif kind == "anyio":
    import delegation
    job = lambda: delegation.run_raw_anyio(units)
elif kind == "task":
    import agent_task
    job = lambda: agent_task.run_ours(units, "none", scratch)
elif kind == "sdk":
    import agent_task
    job = lambda: agent_task.run_sdk(units)
else:
    raise SystemExit(f"unknown workload {kind}")
anyio.run(job, backend=backend)
"""


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    label: str
    unit: str
    peer_of: str | None
    """The workload of ours this one is a peer of (None: this one is ours)."""
    needs: str | None = None
    """The module a peer needs installed."""
    asyncio_only: bool = False


WORKLOADS = (
    Workload("echo", "ours, echo child (none)", "round trip", None),
    Workload("anyio", "raw anyio", "round trip", "echo"),
    Workload("autogen", "autogen-core", "round trip", "echo", "autogen_core", True),
    Workload("task", "ours, agent task (none)", "task", None),
    Workload("sdk", "OpenAI Agents SDK", "task", "task", "agents", True),
)
UNITS = {"echo": (50, 250), "task": (20, 80)}
QUICK_UNITS = {"echo": (10, 30), "task": (5, 15)}


SHIFT = 2500
"""Objects held before a workload, per heap offset (``per_unit``)."""


def loop_instructions(kind: str, backend: str, units: int, offset: int = 0) -> int:
    """Instructions of the main thread (the event loop's) of one run of ``kind``, with
    ``offset`` more objects on the heap before it starts."""
    scratch = Path(tempfile.mkdtemp(prefix=f"amplifier-instructions-{kind}-"))
    try:
        out = scratch / "callgrind.out"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-c",
                WORKLOAD,
                str(HERE),
                kind,
                backend,
                str(units),
                str(scratch / "work"),
                str(offset),
            ],
            capture_output=True,
            check=False,
            cwd=scratch,  # not this checkout: ``-c`` puts the working directory on sys.path
        )
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-2000:]
            raise SystemExit(f"{kind} on {backend} failed under valgrind:\n{tail}")
        main_thread = scratch / "callgrind.out-01"
        found = _TOTAL.search(main_thread.read_bytes())
        if found is None:
            raise SystemExit(f"callgrind wrote no total for {kind} on {backend}")
        return int(found.group(1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def per_unit(kind: str, backend: str, small: int, large: int, offsets: int = 1) -> float:
    """Instructions per unit: the difference of a large and a small run, over their units;
    the median of that at ``offsets`` heap offsets.

    Where the cyclic collector's collections land moves a count by about 2% either way,
    and what a workload allocates before (any change to the code) moves them: counted
    with the heap shifted by ``SHIFT`` objects at a time, the median is the code's."""
    counts = sorted(
        (
            loop_instructions(kind, backend, large, offset * SHIFT)
            - loop_instructions(kind, backend, small, offset * SHIFT)
        )
        / (large - small)
        for offset in range(offsets)
    )
    return counts[len(counts) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, asyncio only")
    parser.add_argument("--backend", choices=["asyncio", "trio"], action="append")
    parser.add_argument(
        "--offsets",
        type=int,
        default=1,
        help="heap offsets to count each workload at, median kept (1; 5 for differences of 2%%)",
    )
    args = parser.parse_args(argv)
    if args.offsets < 1:
        parser.error("--offsets must be at least 1")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing measured", file=sys.stderr)
        return 2
    backends = args.backend or (["asyncio"] if args.quick else ["asyncio", "trio"])
    units = QUICK_UNITS if args.quick else UNITS
    print("instructions benchmark: the event loop thread's instructions per unit, by callgrind")
    counts: dict[tuple[str, str], float] = {}
    for workload in WORKLOADS:
        if workload.needs and importlib.util.find_spec(workload.needs) is None:
            print(f"skipped {workload.label}: {workload.needs} is not installed")
            continue
        small, large = units[workload.peer_of or workload.kind]
        for backend in ["asyncio"] if workload.asyncio_only else backends:
            count = per_unit(workload.kind, backend, small, large, args.offsets)
            counts[workload.kind, backend] = count
            print(f"  {workload.label:26} {backend:7} {count / 1e6:7.3f} M a {workload.unit}")
    print("\n| workload | backend | M instructions per unit | ours vs it |")
    print("|---|---|---:|---:|")
    for workload in WORKLOADS:
        for backend in ["asyncio"] if workload.asyncio_only else backends:
            count = counts.get((workload.kind, backend))
            if count is None:
                continue
            shown = "1.00x"
            if workload.peer_of is not None:
                ours = counts.get((workload.peer_of, backend))
                shown = f"{count / ours:.2f}x" if ours else "n/a"
            row = f"{workload.label} ({workload.unit})"
            print(f"| {row} | {backend} | {count / 1e6:.3f} | {shown} |")
    print(
        "\nours vs it: the peer's instructions over ours on the same backend (ours as fast at "
        "equal instructions per cycle); units per run: "
        + ", ".join(f"{kind} {small} and {large}" for kind, (small, large) in units.items())
        + f"; the median of {args.offsets} heap offset(s) of {SHIFT} objects"
    )
    shown_args = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"reproduce: {COMMAND} {shown_args}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
