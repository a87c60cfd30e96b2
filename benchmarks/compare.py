"""Run benchmarks on another commit and on the working tree, alternately, in one sitting.

On a machine whose speed drifts (a shared VM), two runs an hour apart say
more about the hour than about the code. This runs each benchmark on
``REV`` and on the working tree in turn (ABBA order over the rounds, so
neither side always goes first), with the same benchmark script (the
working tree's: the same workload) and the same interpreter, the package
taken from a temporary worktree of ``REV`` or from this tree. Then it
prints, for every number in every table the benchmark printed, the median
of each side and their ratio (working tree over ``REV``).

Reproduce::

    .venv/bin/python benchmarks/compare.py 9558365 persistence -- --no-peers --repeat 1
    .venv/bin/python benchmarks/compare.py HEAD~3 delegation startup --rounds 3 -- --quick

Only the public API is used: the benchmarks themselves import ``amplifier``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
_NUMBER = re.compile(r"^-?\d[\d,]*(?:\.\d+)?(?:[a-z%x]*)?$")

Key = tuple[str, str, str]
"""(the table's header row, row label, column name)."""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    if "--" in arguments:
        cut = arguments.index("--")
        arguments, passed = arguments[:cut], arguments[cut + 1 :]
    parser = argparse.ArgumentParser(
        description="Compare benchmarks on REV and on the working tree, alternately.",
        epilog="Arguments after -- go to every benchmark.",
    )
    parser.add_argument("rev", help="the commit to compare against (a hash, tag, HEAD~2, ...)")
    parser.add_argument("benchmarks", nargs="*", default=["persistence"], help="benchmark names")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side (2)")
    args = parser.parse_args(arguments)
    for name in args.benchmarks:
        if not (HERE / f"{name}.py").exists():
            parser.error(f"no benchmark {name!r} in {HERE}")
    with worktree(args.rev) as other:
        for tree in (other, TREE):
            compiled(tree)
        for name in args.benchmarks:
            compare(name, args.rev, other, rounds=args.rounds, passed=passed)
    return 0


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A temporary checkout of ``rev``, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="amplifier-compare-"))
    target = folder / "tree"
    subprocess.run(
        ["git", "-C", str(TREE), "worktree", "add", "--detach", "--quiet", str(target), rev],
        check=True,
    )
    try:
        yield target
    finally:
        subprocess.run(
            ["git", "-C", str(TREE), "worktree", "remove", "--force", str(target)], check=False
        )
        shutil.rmtree(folder, ignore_errors=True)


def compiled(tree: Path) -> None:
    """Write ``tree``'s bytecode: a side whose modules compile at every start (a fresh
    worktree, under ``PYTHONDONTWRITEBYTECODE``) pays for it in whatever starts a process,
    such as the session files' writer, and the comparison would measure that."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(tree / "amplifier")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def compare(name: str, rev: str, other: Path, *, rounds: int, passed: Sequence[str]) -> None:
    sides = {rev: other, "working tree": TREE}
    values: dict[str, dict[Key, list[float]]] = {side: defaultdict(list) for side in sides}
    order = list(sides)
    for number in range(rounds):
        # ABBA: each side goes first as often as the other.
        for side in order if number % 2 == 0 else list(reversed(order)):
            print(f"== {name}, round {number + 1}/{rounds}: {side}", flush=True)
            output = run(name, sides[side], passed)
            for key, value in numbers(output):
                values[side][key].append(value)
    report(name, rev, values)


def run(name: str, package_root: Path, passed: Sequence[str]) -> str:
    """One run of the working tree's benchmark script with the package of ``package_root``."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    done = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), *passed],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):  # 1: a target missed; still a measurement
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{name} failed on {package_root} (exit {done.returncode})")
    return done.stdout


def numbers(output: str) -> Iterator[tuple[Key, float]]:
    """Every numeric cell of every Markdown table in ``output``, keyed by table, row, column."""
    header: list[str] | None = None
    title = ""
    for line in output.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header, title = cells, " ".join(cells)
            continue
        if all(set(cell) <= set("-: ") for cell in cells):
            continue
        label = " / ".join(
            cell for cell in cells if cell and not _NUMBER.match(cell.replace(" ", ""))
        )
        for column, cell in zip(header, cells, strict=False):
            text = cell.replace(" ", "")
            if _NUMBER.match(text):
                yield (title, label, column), float(re.sub(r"[^\d.\-]", "", text))


def report(name: str, rev: str, values: dict[str, dict[Key, list[float]]]) -> None:
    before, after = values[rev], values["working tree"]
    keys = [key for key in before if key in after]
    print(f"\n{name}: medians of each side; ratio = working tree / {rev}\n")
    print(f"| row | column | {rev} | working tree | ratio |")
    print("|---|---|---:|---:|---:|")
    for key in keys:
        old, new = statistics.median(before[key]), statistics.median(after[key])
        ratio = f"{new / old:.2f}x" if old else "n/a"
        print(f"| {key[1]} | {key[2]} | {old:g} | {new:g} | {ratio} |")
    print(f"\nreproduce: .venv/bin/python benchmarks/compare.py {rev} {name} ...")


if __name__ == "__main__":
    raise SystemExit(main())
