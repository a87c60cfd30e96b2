"""Start-up: the installed ``amplifier`` command against the bare imports of its stack.

Two pairs, measured as paired runs in one benchmark (each round runs the
three commands one after the other, in a rotating order, so that a busy
moment of the machine weighs on all of them alike):

- ``amplifier --help`` against ``python -c "import typer, rich, pydantic,
  anyio, orjson"`` (the libraries the command is built on, imported and
  nothing done with them). Target: at most 1.5x.
- an offline ``amplifier run "hello"`` (a new session, one turn answered by
  the offline provider, everything made durable under the default ``fsync``
  durability, in a fresh ``AMPLIFIER_HOME``) against the durable floor below
  (a typer command that runs an anyio loop and appends one fsynced line).
  Target: at most 1.5x.

For reference, three more rows: the same bare imports plus one pydantic
model built (what any process of this stack pays once it validates
anything: typer itself builds pydantic adapters to parse a command's
options, and every record of a session is a pydantic model); and the two
programs of ``startup_floor.py``, the least a command of this stack can
be: a typer command that echoes its argument, and one that also runs an
anyio loop to append one fsynced JSON line (the floor under a durable
``run``). A floor above a target says the target cannot be met on this
stack, whatever Amplifier does.

Every command runs as a new process, wall-clock from start to exit, the
median of the rounds. Python loads cached bytecode for every module, ours
and the libraries' alike: the runs share a private bytecode cache
(``PYTHONPYCACHEPREFIX``, filled by a first untimed round), so neither side
pays for compiling, whatever ``PYTHONDONTWRITEBYTECODE`` says. Each run is
checked: ``--help`` lists the commands, ``run`` prints the offline answer.

Reproduce::

    .venv/bin/python benchmarks/startup.py            # 21 rounds
    .venv/bin/python benchmarks/startup.py --quick    # 1 round, a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AMPLIFIER = Path(sys.executable).parent / "amplifier"
FLOOR = Path(__file__).resolve().parent / "startup_floor.py"
BARE = "import typer, rich, pydantic, anyio, orjson"
ONE_MODEL = f"{BARE}; pydantic.create_model('M', x=(int, ...))(x=1)"
TARGETS = {"help": (1.5, "bare"), "run": (1.5, "store")}
"""Each command's target: at most so many times the run of its baseline."""


def commands() -> dict[str, list[str]]:
    return {
        "bare": [sys.executable, "-c", BARE],
        "model": [sys.executable, "-c", ONE_MODEL],
        "echo": [sys.executable, str(FLOOR), "echo", "hello"],
        "store": [sys.executable, str(FLOOR), "store", "hello"],
        "help": [str(AMPLIFIER), "--help"],
        "run": [str(AMPLIFIER), "run", "hello"],
    }


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Seconds from start to exit; fails on a non-zero exit."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])}: exit {done.returncode}: {done.stderr}")
    return took, done.stdout


def check(name: str, stdout: str) -> str | None:
    if name == "help" and not ("run" in stdout and "session" in stdout):
        return "--help did not list the commands"
    if name in ("run", "echo", "store") and "You asked: hello" not in stdout:
        return f"{name} did not print the answer"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 round (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (21)")
    parser.add_argument("--dir", type=Path, default=None, help="where the scratch files go")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 21)
    root = Path(tempfile.mkdtemp(prefix="amplifier-startup-", dir=args.dir))
    project = root / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        AMPLIFIER_HOME=str(root / "home"),
        PYTHONPYCACHEPREFIX=str(root / "bytecode"),
        NO_COLOR="1",
    )
    runs = commands()
    times: dict[str, list[float]] = {name: [] for name in runs}
    problems: list[str] = []
    try:
        for command in runs.values():  # untimed: fills the bytecode cache
            timed(command, env, project)
        for number in range(rounds):
            names = list(runs)
            names = names[number % len(names) :] + names[: number % len(names)]
            for name in names:
                took, stdout = timed(runs[name], env, project)
                times[name].append(took)
                if (problem := check(name, stdout)) and problem not in problems:
                    problems.append(problem)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    bare = medians["bare"]
    print(f"\nstart-up, median of {rounds} paired rounds (wall clock, new process each)\n")
    print("| command                                            |     ms | / bare imports |")
    print("|----------------------------------------------------|-------:|---------------:|")
    labels = {
        "bare": "bare imports: typer, rich, pydantic, anyio, orjson",
        "model": "reference: bare imports + one pydantic model",
        "echo": "floor: a typer command echoing its argument",
        "store": "floor: the same + anyio loop + one fsynced line",
        "help": "amplifier --help",
        "run": 'amplifier run "hello" (offline, fsync)',
    }
    for name, label in labels.items():
        ratio = "" if name == "bare" else f"{medians[name] / bare:.2f}x"
        print(f"| {label:<50} | {medians[name] * 1000:6.0f} | {ratio:>14} |")
    print()
    baselines = {"bare": "bare imports", "store": "the durable floor"}
    for name, (target, baseline) in TARGETS.items():
        ratio = medians[name] / medians[baseline]
        verdict = "met" if ratio <= target else "NOT met"
        print(
            f"{labels[name]:<39} <= {target:g}x {baselines[baseline]:<17} {verdict}: {ratio:.2f}x"
        )
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    print(f"\nmachine: {machine}")
    print(f"reproduce: .venv/bin/python benchmarks/startup.py{' --quick' if args.quick else ''}")
    if problems:
        print("CHECK FAILED: " + "; ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
