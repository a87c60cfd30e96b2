"""System calls on the store per delegated child, counted with strace.

A child should cost its records: its creation, one turn and its close ride
on the journal, and its folder, files, index row and syncs follow behind in
bulk. This counts what that costs the kernel. A Runtime (durability
``fsync``, the default) runs one root session whose turn delegates N echo
children one after another (each child records one assistant message and
answers), once with N children and once with none; the difference, over N,
is the cost of one child. Only calls that name a path or descriptor inside
the store's home are counted (``strace -y`` shows each descriptor's path),
so imports, the event loop and threads are left out.

The table lists, per child, the calls by name and by what they touch: the
journal (one group per round trip), the session folders (the write-behind:
staging, rename, files, metadata, claims, syncs) and the index (SQLite).

Needs ``strace`` (Linux). Only the public API is used by the workload.

Reproduce::

    .venv/bin/python benchmarks/syscalls.py                 # 200 children
    .venv/bin/python benchmarks/syscalls.py --children 50   # quicker
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?([a-z_0-9]+)\(")

WORKLOAD = """
import sys, anyio, amplifier

class Handler:
    def prepare_session(self, agent, *, profile=None):
        return amplifier.SessionSetup(agent=agent or "default")

    async def on_resume(self, session):
        return None

    async def run_turn(self, turn):
        if turn.session.depth >= 1:
            await turn.record({"role": "assistant", "content": "done"})
            return "done"
        for _ in range(int(sys.argv[3])):
            result = await turn.delegate("explorer", "go")
            assert result.ok and result.response == "done", result
        return "delegated"

async def main():
    async with amplifier.open_runtime(
        home=sys.argv[1], cwd=sys.argv[2], durability="fsync", handler=Handler()
    ) as rt:
        async with rt.open_session() as session:
            await session.ask("go")

anyio.run(main)
"""


def area(line: str, home: str) -> str:
    """What a traced call touches: ``journal``, ``index`` or ``sessions``."""
    if f"{home}/journal" in line:
        return "journal"
    if f"{home}/index.sqlite3" in line:
        return "index"
    return "sessions"


def count(children: int, root: Path) -> collections.Counter[tuple[str, str]]:
    """Calls on the store of one run of the workload with ``children`` children."""
    directory = Path(tempfile.mkdtemp(prefix=f"syscalls-{children}-", dir=root))
    home = directory / "home"
    trace = directory / "trace.txt"
    try:
        done = subprocess.run(
            [
                "strace",
                "-f",
                "-qq",
                "-y",
                "-s",
                "4096",
                "-o",
                str(trace),
                sys.executable,
                "-c",
                WORKLOAD,
                str(home),
                str(directory),
                str(children),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=directory,  # not this checkout: ``-c`` puts the working directory on sys.path
        )
        if done.returncode != 0:
            raise SystemExit(f"the workload failed:\n{done.stderr[-2000:]}")
        calls: collections.Counter[tuple[str, str]] = collections.Counter()
        # A path argument, or a descriptor strace -y names, inside the home
        # (not data written that happens to mention it).
        markers = (f'"{home}', f"<{home}")
        with open(trace, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if "resumed>" in line or not any(marker in line for marker in markers):
                    continue
                match = _CALL.match(line)
                if match is not None:
                    calls[area(line, str(home)), match.group(1)] += 1
        return calls
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="System calls on the store per child.")
    parser.add_argument("--children", type=int, default=200, help="children delegated (200)")
    args = parser.parse_args(argv)
    if args.children < 1:
        parser.error("--children must be at least 1")
    if shutil.which("strace") is None:
        print("strace is not installed: nothing measured", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="amplifier-syscalls-"))
    try:
        base = count(0, root)
        loaded = count(args.children, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_child = {
        name: (loaded[name] - base[name]) / args.children
        for name in set(base) | set(loaded)
        if loaded[name] != base[name]
    }
    print(
        f"system calls on the store per delegated child (echo child, durability fsync, "
        f"{args.children} children in sequence, minus a run with none), {os.uname().sysname}"
    )
    print()
    print("| touches | call | per child |")
    print("|---|---|---:|")
    for (where, name), value in sorted(per_child.items(), key=lambda item: (item[0][0], -item[1])):
        print(f"| {where} | {name} | {value:.2f} |")
    for where in ("journal", "sessions", "index"):
        subtotal = sum(v for (w, _), v in per_child.items() if w == where)
        print(f"| {where} | all | {subtotal:.2f} |")
    print(f"| everything | all | {sum(per_child.values()):.2f} |")
    print(f"\nreproduce: .venv/bin/python benchmarks/syscalls.py --children {args.children}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
