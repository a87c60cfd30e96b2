"""Memory per idle session: 10,000 open sessions waiting on their mailboxes.

Measured, on asyncio and on trio:

- ``ours``: a core Runtime (``amplifier.runtime.lowlevel.open_local_runtime``, the default
  echo handler, ``durability="none"``) with N sessions opened by
  ``await rt.open_session()`` (in waves of 100 at a time) and kept open: each
  is a session actor waiting on its mailbox, its claim written in its folder
  (it holds no file descriptor of its own);
- ``raw``: the floor, N anyio tasks each waiting on ``receive`` of its own
  memory object stream (buffer 16, like a session's mailbox), nothing else.

Two methods, each in its own fresh process (tracing inflates the RSS):

- ``tracemalloc``: Python heap allocated while the N sessions open and still
  alive once they are idle (traced from just before the first of them);
- ``RSS``: the growth of the process's resident set (``/proc/self/statm``)
  over the same span; it also counts the allocator's overhead and anything
  outside the Python heap.

Before measuring, 10 warm-up sessions (tasks) are opened and kept, every
write-behind has had time to finish, and ``gc.collect()`` has run. Each
figure is bytes per session: (after - before) / N, median of repeated runs.
The open file descriptors are counted too (``/proc/self/fd``, after the N
sessions are open minus before), and the time the N sessions took to open
(in the RSS runs: tracing slows the others): until every ``open_session``
returned (their folders are written behind; the memory is measured once
they are), and until every raw task waits on its stream. The soft
``RLIMIT_NOFILE`` is
left as it is. Every run checks that all N sessions are open and idle and
that the first and last still answer.

Targets: ours <= 2x raw and <= 16 KB per session (both methods); all N open
sessions together hold at most 32 file descriptors; opening them takes at
most 5x the time of the raw tasks.

Only the public API (``import amplifier``) is used for our side.

Reproduce::

    .venv/bin/python benchmarks/memory.py            # full size
    .venv/bin/python benchmarks/memory.py --quick    # smoke test, seconds
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, get_args

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import amplifier
from amplifier.runtime.lowlevel import open_local_runtime

Backend = Literal["asyncio", "trio"]
Kind = Literal["ours", "raw"]
Method = Literal["tracemalloc", "rss"]

BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")
KINDS: tuple[Kind, ...] = ("ours", "raw")
METHODS: tuple[Method, ...] = ("tracemalloc", "rss")
WARM_UP = 10
WAVE = 100
"""Sessions opened concurrently at a time."""
SETTLE = 0.15
"""Seconds left for write-behind (50 ms) and for new tasks to start waiting, before measuring."""
MAILBOX = 16
Request = tuple[str, MemoryObjectSendStream[str]]
"""What a raw session receives: a prompt and where to send the answer."""

VS_RAW = 2.0
LIMIT_BYTES = 16 * 1024
LIMIT_FDS = 32
"""File descriptors all the open sessions may hold together."""
OPEN_VS_RAW = 5.0

REPO = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python benchmarks/memory.py"


# -- one measurement, in a child process ------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Probe:
    """Memory and descriptors before and after the sessions open."""

    def __init__(self, method: Method, top: int) -> None:
        self.method = method
        self.top = top
        self.before = 0
        self.fds = 0
        self.started = 0.0
        self.opened = 0.0
        self.tops: list[str] = []

    def start(self) -> None:
        gc.collect()
        self.fds = open_fds()
        if self.method == "tracemalloc":
            tracemalloc.start()
            self.before = tracemalloc.get_traced_memory()[0]
        else:
            self.before = rss_bytes()
        self.started = time.perf_counter()

    def all_open(self) -> None:
        """The N sessions (tasks) are open: the time it took is what ``opened in`` reports."""
        self.opened = time.perf_counter() - self.started

    def stop(self, count: int) -> dict[str, Any]:
        seconds = self.opened or time.perf_counter() - self.started
        gc.collect()
        if self.method == "tracemalloc":
            after = tracemalloc.get_traced_memory()[0]
            if self.top:
                snapshot = tracemalloc.take_snapshot()
                for stat in snapshot.statistics("lineno")[: self.top]:
                    frame = stat.traceback[0]
                    where = f"{_short(frame.filename)}:{frame.lineno}"
                    self.tops.append(f"{stat.size / count:9.0f} B/session  {where}")
            tracemalloc.stop()
        else:
            after = rss_bytes()
        return {
            "bytes": (after - self.before) / count,
            "fds": open_fds() - self.fds,
            "seconds": seconds,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "top": self.tops,
        }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/amplifier/", "/lib/python"):
        if marker in filename:
            return filename[filename.index(marker) + len(marker) :]
    return filename


async def measure_ours(directory: Path, count: int, probe: Probe) -> dict[str, Any]:
    async with open_local_runtime(home=directory / "home", cwd=directory, durability="none") as rt:
        sessions: list[amplifier.Session] = []

        async def open_one() -> None:
            sessions.append(await rt.open_session())

        async def open_many(n: int) -> None:
            for first in range(0, n, WAVE):
                async with anyio.create_task_group() as tg:
                    for _ in range(min(WAVE, n - first)):
                        tg.start_soon(open_one)

        await open_many(WARM_UP)
        await rt.flush()
        await anyio.sleep(SETTLE)
        probe.start()
        await open_many(count)
        probe.all_open()
        # Their folders are written behind: done, as idle sessions' would be.
        await rt.flush()
        await anyio.sleep(SETTLE)
        figures = probe.stop(count)

        measured = sessions[WARM_UP:]
        idle = sum(1 for s in measured if s.state is amplifier.SessionState.IDLE)
        ids = {s.id for s in measured}
        if idle != count or len(ids) != count:
            raise AssertionError(f"{idle} idle sessions with {len(ids)} ids, expected {count}")
        for session in (measured[0], measured[-1]):
            reply = await session.ask("ping")
            if reply.text != "echo: ping":
                raise AssertionError(f"{session.id} answered {reply.text!r}")
    return figures


async def raw_session(
    receive: MemoryObjectReceiveStream[Request],
) -> None:
    async with receive:
        async for text, reply in receive:
            await reply.send(f"echo: {text}")


async def measure_raw(directory: Path, count: int, probe: Probe) -> dict[str, Any]:
    del directory
    mailboxes: list[MemoryObjectSendStream[Request]] = []
    async with anyio.create_task_group() as tg:

        async def open_many(n: int) -> None:
            for _ in range(n):
                # Not subscripted: that would give each stream pair a __dict__.
                send: MemoryObjectSendStream[Request]
                receive: MemoryObjectReceiveStream[Request]
                send, receive = anyio.create_memory_object_stream(MAILBOX)
                mailboxes.append(send)
                tg.start_soon(raw_session, receive)

        async def all_waiting() -> None:
            # A task needs a few scheduling rounds to reach its receive
            # (polled: the tasks under test must not be changed to report it).
            for _ in range(3000):
                if waiting() == len(mailboxes):
                    return
                await anyio.sleep(0.02)

        def waiting() -> int:
            return sum(1 for m in mailboxes if m.statistics().tasks_waiting_receive == 1)

        await open_many(WARM_UP)
        await all_waiting()
        await anyio.sleep(SETTLE)
        probe.start()
        await open_many(count)
        await all_waiting()
        probe.all_open()
        await anyio.sleep(SETTLE)
        figures = probe.stop(count)

        if (idle := waiting()) != count + WARM_UP:
            raise AssertionError(f"{idle} tasks waiting on receive, expected {count + WARM_UP}")
        measured = mailboxes[WARM_UP:]
        for mailbox in (measured[0], measured[-1]):
            send, receive = anyio.create_memory_object_stream[str](1)
            await mailbox.send(("ping", send))
            if (answer := await receive.receive()) != "echo: ping":
                raise AssertionError(f"answered {answer!r}")
        for mailbox in mailboxes:
            mailbox.close()
    return figures


def child(kind: Kind, backend: Backend, method: Method, count: int, root: Path, top: int) -> None:
    """Run one measurement and print it as one JSON line."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    directory = Path(tempfile.mkdtemp(prefix=f"{backend}-{kind}-{method}-", dir=root))
    try:
        probe = Probe(method, top)
        run = measure_ours if kind == "ours" else measure_raw
        figures = anyio.run(partial(run, directory, count, probe), backend=backend)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    figures["fd_limit"] = soft
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")


# -- the parent: runs, table, verdicts --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    bytes: float
    fds: float
    seconds: float
    top: list[str]


def run_child(
    kind: Kind, backend: Backend, method: Method, count: int, root: Path, top: int
) -> Run:
    command = [
        sys.executable,
        __file__,
        "--child",
        f"{kind},{backend},{method}",
        "--sessions",
        str(count),
        "--dir",
        str(root),
        "--top",
        str(top),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} {backend} {method} failed:\n{done.stderr}")
    data = orjson.loads(done.stdout.strip().splitlines()[-1])
    return Run(data["bytes"], data["fds"], data["seconds"], data["top"])


def code_state() -> str:
    """Which amplifier is measured: its commit and how many of its files are uncommitted."""
    package = Path(amplifier.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(package.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(package.parent), "status", "--porcelain", "--", package.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"amplifier from {package}"
    return f"amplifier at {head}" + (f" + {len(changed)} uncommitted file(s)" if changed else "")


def default_root() -> Path:
    """The system temp dir if it is on the repository's file system, else the repository."""
    temp = Path(tempfile.gettempdir())
    if temp.stat().st_dev == REPO.stat().st_dev:
        return temp
    return REPO / "benchmarks"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Memory per idle open session vs a raw anyio task + memory stream.",
    )
    parser.add_argument("--sessions", type=int, default=None, help="open sessions (10000)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions, median kept (3)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 500 sessions, 1 repetition"
    )
    parser.add_argument(
        "--backend", choices=[*BACKENDS, "both"], default="both", help="event loop (both)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at once, each its own process (the number of CPUs; quick: twice that)",
    )
    parser.add_argument(
        "--top",
        type=int,
        default=0,
        help="also print the N source lines allocating most per session (tracemalloc)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir on disk)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if a target is not met"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = {"sessions": (500, 10_000), "repeat": (1, 3)}
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    if args.jobs is None:
        args.jobs = (os.cpu_count() or 1) * (2 if args.quick else 1)
    if args.sessions < 1 or args.repeat < 1 or args.jobs < 1:
        parser.error("--sessions, --repeat and --jobs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        kind, backend, method = args.child.split(",")
        if kind not in get_args(Kind) or backend not in BACKENDS or method not in METHODS:
            raise SystemExit(f"--child: unknown run {args.child!r}")
        child(kind, backend, method, args.sessions, args.dir, args.top)
        return 0

    backends: tuple[Backend, ...] = BACKENDS if args.backend == "both" else (args.backend,)
    base = (args.dir or default_root()).resolve()
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="amplifier-memory-", dir=base))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(
        f"memory benchmark: {args.sessions} idle open sessions vs {args.sessions} raw anyio "
        f"tasks + memory streams; bytes per session, median of {args.repeat}, each run in its "
        f"own process, {args.jobs} at a time"
    )
    print(
        f"python {platform.python_version()}, anyio {metadata.version('anyio')}, "
        f"trio {metadata.version('trio')}, {os.cpu_count()} CPUs, RLIMIT_NOFILE {soft}/{hard}, "
        f"writing in {root}"
    )
    print(code_state())
    results: dict[tuple[Backend, Kind, Method], list[Run]] = {}
    plan: list[tuple[int, Backend, Kind, Method]] = []
    for repetition in range(args.repeat):
        for backend in backends:
            combos = [(k, m) for k in KINDS for m in METHODS]
            shift = repetition % len(combos)
            plan += [(repetition, backend, k, m) for k, m in combos[shift:] + combos[:shift]]
    try:
        # Each run is its own process and measures only itself, so runs may
        # overlap (--jobs); only the "opened in" times feel it.
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(
                    run_child,
                    kind,
                    backend,
                    method,
                    args.sessions,
                    root,
                    args.top if kind == "ours" and method == "tracemalloc" else 0,
                )
                for _, backend, kind, method in plan
            ]
            for (repetition, backend, kind, method), future in zip(plan, futures, strict=True):
                run = future.result()
                results.setdefault((backend, kind, method), []).append(run)
                print(
                    f"  run {repetition + 1}/{args.repeat} {backend:7} {kind:4} {method:11} "
                    f"{run.bytes:9.0f} B/session  {run.fds:.0f} fds in all  "
                    f"opened in {run.seconds:.2f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    met = report(results, backends, args.sessions, args.top)
    print(f"\nreproduce: {COMMAND}" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""))
    return 1 if args.strict and not met else 0


def report(
    results: dict[tuple[Backend, Kind, Method], list[Run]],
    backends: Sequence[Backend],
    count: int,
    top: int,
) -> bool:
    """Print the table and a verdict per target; True if every target is met."""

    def median(backend: Backend, kind: Kind, method: Method) -> float:
        return statistics.median(run.bytes for run in results[(backend, kind, method)])

    def fds(backend: Backend, kind: Kind) -> float:
        runs = [run.fds for method in METHODS for run in results[(backend, kind, method)]]
        return max(runs)

    def opening(backend: Backend, kind: Kind) -> float:
        return statistics.median(run.seconds for run in results[(backend, kind, "rss")])

    header = (
        "backend",
        "what",
        "tracemalloc B/session",
        "RSS B/session",
        "fds in all",
        "opened in s",
    )
    rows: list[tuple[str, ...]] = []
    for backend in backends:
        ratios = {m: median(backend, "ours", m) / median(backend, "raw", m) for m in METHODS}
        for kind in KINDS:
            label = "ours: idle open session" if kind == "ours" else "raw: task + memory stream"
            rows.append(
                (
                    backend,
                    label,
                    f"{median(backend, kind, 'tracemalloc'):.0f}",
                    f"{median(backend, kind, 'rss'):.0f}",
                    f"{fds(backend, kind):.0f}",
                    f"{opening(backend, kind):.2f}",
                )
            )
        rows.append(
            (
                backend,
                "ratio ours / raw",
                f"{ratios['tracemalloc']:.2f}x",
                f"{ratios['rss']:.2f}x",
                "",
                f"{opening(backend, 'ours') / opening(backend, 'raw'):.2f}x",
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = {2, 3, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if i in right else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    print()
    print(line(header))
    print(
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    for row in rows:
        print(line(row))
    print(
        f"\n{count} sessions per run. tracemalloc: Python heap still allocated once they are "
        "idle; RSS: growth of the resident set (allocator overhead included); fds in all: "
        "descriptors held once they are open, the most of any run (the runtime's journal, "
        "its lock, and the session index); opened in: the RSS runs' time to open them."
    )

    if top:
        for backend in backends:
            print(f"\nours, {backend}: top {top} source lines by bytes per session (first run)")
            for entry in results[(backend, "ours", "tracemalloc")][0].top:
                print(f"  {entry}")

    print()
    everything = True
    for backend in backends:
        for method, name in (("tracemalloc", "tracemalloc"), ("rss", "RSS")):
            ours = median(backend, "ours", method)  # type: ignore[arg-type]
            raw = median(backend, "raw", method)  # type: ignore[arg-type]
            for ok, target, figure in (
                (
                    ours <= VS_RAW * raw,
                    f"{name} ours <= {VS_RAW:g}x raw",
                    f"{ours / raw:.2f}x ({ours:.0f} vs {raw:.0f} B/session)",
                ),
                (
                    ours <= LIMIT_BYTES,
                    f"{name} ours <= {LIMIT_BYTES // 1024} KB/session",
                    f"{ours:.0f} B ({ours / 1024:.1f} KB)",
                ),
            ):
                everything = everything and ok
                print(f"{backend:7}  {target:34} {'met' if ok else 'NOT met'}: {figure}")
        held = fds(backend, "ours")
        ours_s, raw_s = opening(backend, "ours"), opening(backend, "raw")
        for ok, target, figure in (
            (held <= LIMIT_FDS, f"fds in all <= {LIMIT_FDS}", f"{held:.0f}"),
            (
                ours_s <= OPEN_VS_RAW * raw_s,
                f"opening <= {OPEN_VS_RAW:g}x raw",
                f"{ours_s / raw_s:.2f}x ({ours_s:.2f} vs {raw_s:.2f} s)",
            ),
        ):
            everything = everything and ok
            print(f"{backend:7}  {target:34} {'met' if ok else 'NOT met'}: {figure}")
    return everything


if __name__ == "__main__":
    sys.exit(main())
