"""Every benchmark, one after another, then all their verdicts together.

Each benchmark runs in its own process (as it would alone) and prints its
tables, measured on asyncio and trio against baselines taken in the same
run. The summary at the end gathers each target's line: met, or not met
with the measured figure.

Reproduce::

    .venv/bin/pip install -e '.[dev,bench]'     # the peer libraries
    .venv/bin/python benchmarks/run_all.py        # all of them (about 8 minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "persistence",
    "delegation",
    "agent_task",
    "fanout",
    "memory",
    "resume",
    "listing",
    "startup",
    "search",
)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark and summarise the targets.")
    parser.add_argument("--quick", action="store_true", help="smoke sizes (seconds each)")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    verdicts: list[str] = []
    failed: list[str] = []
    failures: list[str] = []  # the last lines of each benchmark whose checks failed
    for name in args.only or BENCHMARKS:
        command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        print(f"\n===== {name}: {' '.join(command[1:])}\n", flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        sys.stdout.write(done.stdout)
        if done.returncode != 0:
            failed.append(name)
            sys.stdout.write(done.stderr)
            tail = (done.stdout + done.stderr).strip().splitlines()[-12:]
            failures += [f"{name:<12} {line}" for line in tail]
        print(
            f"({name}: {time.perf_counter() - started:.0f} s, exit {done.returncode})", flush=True
        )
        verdicts += [
            f"{name:<12} {line.strip()}"
            for line in done.stdout.splitlines()
            if not line.startswith("|")
            and (" met:" in line or "NOT met" in line or "not measured" in line.lower())
        ]
    print("\n===== targets\n")
    print("\n".join(verdicts))
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    print(f"\nmachine: {machine}")
    print(f"reproduce: .venv/bin/python benchmarks/run_all.py{' --quick' if args.quick else ''}")
    if failed:
        print("\n".join(["", "===== failed checks (last lines)", "", *failures]))
        print(f"FAILED (a check, not a target): {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
