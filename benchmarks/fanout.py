"""Fan-out: one parent delegates to 1,000 children at once, 100 at a time.

A child costs its records and nothing more: creating it, running its one
turn and closing it ride on the journal with the records themselves. This
benchmark checks that claim. Measured, in one run, on asyncio and on trio:

- ``fan-out``: a core Runtime (``amplifier.runtime.lowlevel.open_local_runtime``, durability
  ``fsync``, ``max_children=100``); one root session whose turn calls
  ``turn.delegate_all`` with 1,000 delegations. Each child's turn records
  one assistant message (what one offline-provider turn persists) and
  returns; each child writes its ``session:start``, ``prompt:submit``, user
  message, assistant message, ``prompt:complete``, ``session:end`` and its
  metadata, and the parent a ``delegate:start`` and ``delegate:end`` each.
  Timed: the ``delegate_all`` call. Reported: children/s, and records/s,
  counting the event and transcript lines on disk afterwards (metadata
  versions are not counted).
- ``events``: the baseline, ``benchmarks/persistence.py``'s own workload in
  the same run: 100 sessions each emitting 100 events, every one
  acknowledged before the next, under ``fsync``.

Target: fan-out records/s >= 0.5x the baseline's events/s (same backend):
a child costs no more than its records.

Every run checks what it produced: one folder per child with its two
messages and a completed ``session:end``, each listed by the parent.

Only the public API is used.

Reproduce::

    .venv/bin/python benchmarks/fanout.py            # full size
    .venv/bin/python benchmarks/fanout.py --quick    # smoke test, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Literal

import anyio
import orjson

import amplifier
from amplifier.runtime.lowlevel import open_local_runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
import persistence

Backend = Literal["asyncio", "trio"]
BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")
AT_A_TIME = 100
VS_EVENTS = 0.5
COMMAND = ".venv/bin/python benchmarks/fanout.py"


@dataclass(frozen=True, slots=True)
class FanOut:
    children: int
    records: int
    seconds: float

    @property
    def children_rate(self) -> float:
        return self.children / self.seconds

    @property
    def records_rate(self) -> float:
        return self.records / self.seconds


class FanOutHandler:
    """The root's turn delegates to ``children`` at once; each child records one answer."""

    def __init__(self, children: int) -> None:
        self.children = children
        self.seconds = 0.0
        self.results: list[amplifier.DelegationResult] = []

    def prepare_session(
        self, agent: str | None, *, profile: str | None = None
    ) -> amplifier.SessionSetup:
        return amplifier.SessionSetup(agent=agent or "default")

    async def on_resume(self, session: amplifier.SessionContext) -> None:
        return None

    async def run_turn(self, turn: amplifier.Turn) -> str:
        if turn.session.depth >= 1:
            await turn.record({"role": "assistant", "content": "done"})
            return "done"
        requests = [amplifier.Delegation(agent="explorer", instruction="go")] * self.children
        start = time.perf_counter()
        self.results = await turn.delegate_all(requests)
        self.seconds = time.perf_counter() - start
        return f"{len(self.results)} children"


async def run_fan_out(directory: Path, children: int) -> FanOut:
    handler = FanOutHandler(children)
    home = directory / "home"
    async with open_local_runtime(
        home=home, cwd=directory, handler=handler, max_children=AT_A_TIME
    ) as rt:
        async with rt.open_session() as session:
            await session.ask("fan out")
            root = session.id
    failed = [r for r in handler.results if not r.ok or r.response != "done"]
    if len(handler.results) != children or failed:
        raise AssertionError(f"{len(failed)} of {len(handler.results)} children failed")
    return FanOut(children, verify(home, root, handler.results), handler.seconds)


def verify(home: Path, root: str, results: Sequence[amplifier.DelegationResult]) -> int:
    """Every child complete on disk and listed by the parent; the lines written in all."""
    folders = {p.name: p for p in home.glob("projects/*/sessions/*")}
    listed = set(orjson.loads((folders[root] / "metadata.json").read_bytes())["children"])
    records = 0
    for result in results:
        folder = folders.get(result.session_id)
        if folder is None or result.session_id not in listed:
            raise AssertionError(f"{result.session_id}: not on disk or not listed")
        events = (folder / "events.jsonl").read_bytes().splitlines()
        messages = (folder / "transcript.jsonl").read_bytes().splitlines()
        last = orjson.loads(events[-1])
        if len(messages) != 2 or last["event"] != "session:end":
            raise AssertionError(f"{result.session_id}: {len(messages)} messages, ends {last}")
        records += len(events) + len(messages)
    parent = (folders[root] / "events.jsonl").read_bytes().count(b'"event":"delegate:')
    return records + parent


async def run_events(directory: Path, size: int) -> float:
    config = persistence.Config(sessions=size, events=size)
    result = await persistence.run_ours(directory, config, "fsync", verify=False)
    return result.rate


def run_one(kind: str, backend: Backend, children: int, root: Path) -> FanOut | float:
    directory = Path(tempfile.mkdtemp(prefix=f"{backend}-{kind}-", dir=root))
    try:
        if kind == "fan-out":
            return anyio.run(partial(run_fan_out, directory, children), backend=backend)
        # persistence.py's own size (100 x 100); smaller with a smaller fan-out.
        size = 100 if children >= 1000 else 30
        return anyio.run(run_events, directory, size, backend=backend)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One parent, 1,000 children, 100 at a time.")
    parser.add_argument("--children", type=int, default=None, help="children (1000; quick 200)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions, median kept (3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 children, once")
    parser.add_argument(
        "--backend", choices=[*BACKENDS, "both"], default="both", help="event loop (both)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a temp dir)")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if a target is not met"
    )
    args = parser.parse_args(argv)
    for name, (small, full) in {"children": (200, 1000), "repeat": (1, 3)}.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    if args.children < 1 or args.repeat < 1:
        parser.error("--children and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends: tuple[Backend, ...] = BACKENDS if args.backend == "both" else (args.backend,)
    base = (args.dir or Path(tempfile.gettempdir())).resolve()
    root = Path(tempfile.mkdtemp(prefix="amplifier-fanout-", dir=base))
    print(
        f"fan-out benchmark: one parent, {args.children} children through delegate_all, "
        f"{AT_A_TIME} at a time, durability fsync; median of {args.repeat}"
    )
    print(
        f"python {platform.python_version()}, anyio {metadata.version('anyio')}, "
        f"trio {metadata.version('trio')}, {os.cpu_count()} CPUs, writing in {root}"
    )
    fan: dict[Backend, list[FanOut]] = {b: [] for b in backends}
    events: dict[Backend, list[float]] = {b: [] for b in backends}
    try:
        for repetition in range(args.repeat):
            for backend in backends:
                for kind in ("fan-out", "events") if repetition % 2 == 0 else ("events", "fan-out"):
                    result = run_one(kind, backend, args.children, root)
                    if isinstance(result, FanOut):
                        fan[backend].append(result)
                        figure = (
                            f"{result.children_rate:8.0f} children/s "
                            f"{result.records_rate:8.0f} records/s"
                        )
                    else:
                        events[backend].append(result)
                        figure = f"{result:8.0f} events/s"
                    print(f"  run {repetition + 1}/{args.repeat} {backend:7} {kind:8} {figure}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    met = report(fan, events, backends)
    print(f"\nreproduce: {COMMAND}" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""))
    return 1 if args.strict and not met else 0


def report(
    fan: dict[Backend, list[FanOut]],
    events: dict[Backend, list[float]],
    backends: Sequence[Backend],
) -> bool:
    print()
    print("| backend | children/s | records/s | persistence.py fsync events/s | ratio |")
    print("|---------|-----------:|----------:|------------------------------:|------:|")
    verdicts = []
    for backend in backends:
        children = statistics.median(r.children_rate for r in fan[backend])
        records = statistics.median(r.records_rate for r in fan[backend])
        baseline = statistics.median(events[backend])
        ratio = records / baseline
        cells = f"{children:10.0f} | {records:9.0f} | {baseline:29.0f} | {ratio:.2f}x"
        print(f"| {backend:7} | {cells} |")
        ok = ratio >= VS_EVENTS
        verdicts.append(
            f"{backend:7}  records/s >= {VS_EVENTS:g}x persistence.py fsync  "
            f"{'met' if ok else 'NOT met'}: {ratio:.2f}x ({records:.0f} vs {baseline:.0f}/s)"
        )
    print()
    for verdict in verdicts:
        print(verdict)
    return not any("NOT met" in verdict for verdict in verdicts)


if __name__ == "__main__":
    sys.exit(main())
