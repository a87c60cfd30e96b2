"""One agent task with one sub-agent, the unit a program runs: ours against the Agents SDK.

A task, run one after another, N times:

- ``ours`` (durability ``fsync``, then ``none``; asyncio and trio): in one
  ``amplifier.open_runtime()`` (offline provider, built-in agents), open a
  fresh root session, ``ask("/delegate explorer: go")`` (a parent model
  call that calls ``delegate``, the ``explorer`` child's own model call,
  the parent's second model call, every event of the three persisted),
  and close the session.
- ``OpenAI Agents SDK`` (asyncio only): ``Runner.run`` on a parent agent
  whose tool is a child agent (``Agent.as_tool``), with scripted models
  (three model calls, nothing reaching the network, tracing off). Nothing
  is persisted.

Targets (tasks/s, ours over the SDK's, in one run; the SDK runs on asyncio
only, so both of our backends are compared with it): at least 1x with
``fsync`` and at least 2x with ``none``. ``--strict`` exits 1 unless both
are met.

Every run checks what it produced: for ours, each task's root and child
folders on disk, both ended ``completed``; for the SDK, the expected final
output and model calls.

The runs take turns: after a warm-up of a few tasks each, every repeat
runs the SDK and every one of ours once, in that order. A row's rate is
the median of its repeats; its ratio is the median of its repeats' ratios,
each against the SDK's run of the same repeat, seconds before. A machine
that speeds up or slows down during the benchmark (these shared VMs move
by 1.5x within a minute) then moves both sides of a ratio alike, not the
side that happened to run in that stretch.

Reproduce::

    .venv/bin/python benchmarks/agent_task.py            # full size, < 60 s
    .venv/bin/python benchmarks/agent_task.py --quick    # smoke test, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anyio
import orjson

import amplifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from delegation import sdk_agents

Backend = Literal["asyncio", "trio"]
Mode = Literal["fsync", "none", "sdk"]
TASKS = 200
QUICK_TASKS = 20
WARM_UP = 5
TARGETS = {"fsync": 1.0, "none": 2.0}


async def run_ours(tasks: int, durability: Literal["fsync", "none"], root: Path) -> float:
    """Tasks per second of ours; checks every task's two sessions on disk."""
    home, project = root / "home", root / "project"
    project.mkdir(parents=True)
    ids: list[str] = []
    async with amplifier.open_runtime(home=home, cwd=project, durability=durability) as rt:
        started = time.perf_counter()
        for _ in range(tasks):
            async with rt.open_session() as session:
                reply = await session.ask("/delegate explorer: go")
            ids.append(session.id)
            if "completed" not in reply.text:
                raise AssertionError(f"task {session.id} answered {reply.text[:200]!r}")
        elapsed = time.perf_counter() - started
    verify(home, ids)
    return tasks / elapsed


def verify(home: Path, ids: Sequence[str]) -> None:
    folders = {p.name: p for p in (home / "projects").glob("*/sessions/*")}
    for session_id in ids:
        meta = orjson.loads((folders[session_id] / "metadata.json").read_bytes())
        (child,) = meta["children"]
        child_meta = orjson.loads((folders[child] / "metadata.json").read_bytes())
        if (meta["status"], child_meta["status"]) != ("completed", "completed"):
            raise AssertionError(f"{session_id}: {meta['status']}, child {child_meta['status']}")


async def run_sdk(tasks: int) -> float:
    from agents import RunConfig, Runner

    parent, calls = sdk_agents()
    config = RunConfig(tracing_disabled=True)
    started = time.perf_counter()
    finals = []
    for _ in range(tasks):
        finals.append((await Runner.run(parent, "go", run_config=config)).final_output)
    elapsed = time.perf_counter() - started
    if finals != ["child said: done"] * tasks or calls() != (2 * tasks, tasks):
        raise AssertionError(f"the SDK runs went wrong: {finals[:1]}, calls {calls()}")
    return tasks / elapsed


Run = tuple[Backend, Mode]


def run_once(backend: Backend, mode: Mode, tasks: int) -> float:
    """Tasks per second of one run of ``mode`` (the SDK runs on asyncio whatever ``backend``)."""
    root = Path(tempfile.mkdtemp(prefix="amplifier-agent-task-"))
    try:
        if mode == "sdk":
            return anyio.run(run_sdk, tasks, backend="asyncio")
        return anyio.run(run_ours, tasks, mode, root, backend=backend)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(runs: Sequence[Run], tasks: int, repeat: int) -> dict[Run, list[float]]:
    """The rates of each run, repeat by repeat, the runs taking turns ``repeat`` times.

    Each first runs WARM_UP tasks, not counted: what a process pays once
    (imports, the first folders and index) is nobody's rate.
    """
    for backend, mode in runs:
        run_once(backend, mode, WARM_UP)
    rates: dict[Run, list[float]] = {run: [] for run in runs}
    for number in range(1, repeat + 1):
        for backend, mode in runs:
            rate = run_once(backend, mode, tasks)
            rates[backend, mode].append(rate)
            shown = "sdk" if mode == "sdk" else f"{backend} {mode}"
            print(f"  run {number}/{repeat} {shown:13} {rate:6.0f} tasks/s", flush=True)
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TASKS} tasks, one repeat")
    parser.add_argument("--tasks", type=int, default=None, help=f"tasks per run ({TASKS})")
    parser.add_argument("--repeat", type=int, default=None, help="runs, median kept (3)")
    parser.add_argument("--backend", choices=["asyncio", "trio"], action="append")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless the targets are met")
    args = parser.parse_args(argv)
    tasks = args.tasks or (QUICK_TASKS if args.quick else TASKS)
    repeat = args.repeat or (1 if args.quick else 3)
    backends: list[Backend] = args.backend or ["asyncio", "trio"]
    has_sdk = importlib.util.find_spec("agents") is not None
    print(f"agent task benchmark: {tasks} tasks per run, median of {repeat}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    ours: list[Run] = [(backend, mode) for backend in backends for mode in ("fsync", "none")]
    sdk_run: Run = ("asyncio", "sdk")
    rates = measure([sdk_run, *ours] if has_sdk else ours, tasks, repeat)
    sdk_rates = rates.get(sdk_run)
    sdk = statistics.median(sdk_rates) if sdk_rates else None
    rows = []
    verdicts = []
    for backend, mode in ours:
        rate = statistics.median(rates[backend, mode])
        ratio = (
            statistics.median(a / b for a, b in zip(rates[backend, mode], sdk_rates, strict=True))
            if sdk_rates
            else None
        )
        rows.append((backend, mode, rate, ratio))
        target = TARGETS[mode]
        if ratio is None:
            verdicts.append(f"{backend:8} {mode:5} >= {target}x the SDK   not measured: no SDK")
        else:
            met = "met" if ratio >= target else "NOT met"
            verdicts.append(
                f"{backend:8} {mode:5} >= {target}x the SDK   {met}: {ratio:.2f}x "
                f"({rate:.0f} vs {sdk:.0f} tasks/s)"
            )
    print("\n| backend | durability | tasks/s | ms per task | vs the SDK |")
    print("|---------|------------|--------:|------------:|-----------:|")
    for backend, mode, rate, ratio in rows:
        shown = f"{ratio:.2f}x" if ratio is not None else "n/a"
        print(f"| {backend} | {mode} | {rate:.0f} | {1000 / rate:.2f} | {shown} |")
    if sdk is not None:
        print(f"| asyncio | SDK (nothing persisted) | {sdk:.0f} | {1000 / sdk:.2f} | 1.00x |")
        print(
            "\ntasks/s: the median of the repeats; vs the SDK: the median of each repeat's "
            "ratio to the SDK's run of that repeat"
        )
    print()
    for line in verdicts:
        print(line)
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\nreproduce: .venv/bin/python benchmarks/agent_task.py {shown}")
    missed = any("NOT met" in line for line in verdicts)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
