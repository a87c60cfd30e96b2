"""Fan-out: one parent delegates to 1,000 agent children at once, 100 at a time.

A child costs its records and nothing more: creating it, running its one
turn and closing it ride on the journal with the records themselves. This
benchmark checks that claim. Measured, in one run, on asyncio and on trio:

- ``fan-out``: ``amplifier.open_runtime`` (durability ``fsync``, the
  offline provider, the built-in agents, a profile that lets 100 children
  and 100 tool calls run at once); one root session asked 1,000
  ``/delegate explorer: go`` lines: its model call answers with 1,000
  delegate calls, each runs an ``explorer`` child through the agent loop
  (the child's own model call, its events and messages persisted), and the
  parent's second model call answers. Each child writes its
  ``session:start``, ``prompt:submit``, user message, ``provider:request``,
  ``provider:response``, assistant message, ``prompt:complete``,
  ``session:end`` and its metadata; the parent its ``tool:pre``,
  ``delegate:start``, ``delegate:end``, ``tool:post`` and tool result for
  each. Timed: the ``ask``. Reported: children/s, and records/s, counting
  the event and transcript lines on disk afterwards (metadata versions are
  not counted).
- ``events``: the baseline, ``benchmarks/persistence.py``'s own workload in
  the same run: 100 sessions each emitting 100 events, every one
  acknowledged before the next, under ``fsync``.

Target: fan-out records/s >= 0.5x the baseline's events/s (same backend):
a child costs no more than its records. The ratio is the median of each
repetition's (the fan-out against the events run beside it), so a machine
that drifts during the benchmark moves both sides alike.

Every run checks what it produced: one folder per child with its two
messages and a completed ``session:end``, each listed by the parent, and
one completed delegation per child in the parent's tool results.

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


PROFILE = f"""\
description: fan-out benchmark
extends: base
max_children: {AT_A_TIME}
tool_concurrency: {AT_A_TIME}
"""


async def run_fan_out(directory: Path, children: int) -> FanOut:
    home = directory / "home"
    (home / "profiles").mkdir(parents=True)
    (home / "profiles" / "fanout.yaml").write_text(PROFILE)
    prompt = "\n".join(["/delegate explorer: go"] * children)
    async with amplifier.open_runtime(
        home=home, cwd=directory, profile="fanout", durability="fsync"
    ) as rt:
        async with rt.open_session() as session:
            start = time.perf_counter()
            await session.ask(prompt)
            seconds = time.perf_counter() - start
            root = session.id
    return FanOut(children, verify(home, root, children), seconds)


def verify(home: Path, root: str, children: int) -> int:
    """Every child complete on disk and listed by the parent; the lines written in all."""
    folders = {p.name: p for p in home.glob("projects/*/sessions/*")}
    listed = orjson.loads((folders[root] / "metadata.json").read_bytes())["children"]
    if len(listed) != children:
        raise AssertionError(f"the parent lists {len(listed)} children of {children}")
    records = 0
    for child in listed:
        folder = folders.get(child)
        if folder is None:
            raise AssertionError(f"{child}: listed, not on disk")
        events = (folder / "events.jsonl").read_bytes().splitlines()
        messages = (folder / "transcript.jsonl").read_bytes().splitlines()
        last = orjson.loads(events[-1])
        if len(messages) != 2 or last["event"] != "session:end":
            raise AssertionError(f"{child}: {len(messages)} messages, ends {last}")
        if last["data"]["status"] != "completed":
            raise AssertionError(f"{child}: ended {last['data']['status']}")
        records += len(events) + len(messages)
    parent_events = (folders[root] / "events.jsonl").read_bytes().splitlines()
    parent_messages = (folders[root] / "transcript.jsonl").read_bytes().splitlines()
    ended = [orjson.loads(line) for line in parent_events if b'"delegate:end"' in line]
    failed = [e for e in ended if e["data"]["status"] != "completed"]
    if len(ended) != children or failed:
        raise AssertionError(f"{len(failed)} of {len(ended)} delegations did not complete")
    return records + len(parent_events) + len(parent_messages)


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
        f"fan-out benchmark: one parent, {args.children} offline agent children, "
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
        # Each repetition's fan-out against its events run, back to back: drift moves both.
        ratio = statistics.median(
            run.records_rate / rate for run, rate in zip(fan[backend], events[backend], strict=True)
        )
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
