"""Throughput and acknowledgement latency of the persistence actor.

N concurrent sessions each emit M events, every event acknowledged (durable
under the Runtime's durability) before the session sends its next. Measured,
in one run, on asyncio and on trio:

- ``fsync``: our path with the default durability (group commit: one journal
  write and one ``fdatasync`` per batch);
- ``none``: our path with nothing made durable, the CPU ceiling of our own
  code (records are acknowledged as soon as the actor has taken them);
- ``flush``: our path with every batch handed to the OS (for information);
- ``naive``: the baseline to beat, with no actor at all: each of the N
  concurrent tasks appends to its own file and fsyncs it, one event at a
  time, in a worker thread (``anyio.to_thread.run_sync``, default limiter);
- ``sdk``: the peer baseline, the OpenAI Agents SDK's session store
  ``SQLiteSession``: N ``SQLiteSession(session_id, db_path)`` sharing ONE SQLite file,
  each adding its M items one ``add_items([item])`` at a time, each awaited
  before the next (the SDK's own settings: WAL, ``synchronous=FULL``, so
  every commit fsyncs the WAL, as durable as ``fsync``). The SDK calls
  ``asyncio.to_thread``, so it runs on asyncio only; on trio it fails and
  the table says so.

Targets: ``fsync`` >= 0.7x ``none``, >= 5x ``naive`` and >= 20x
``sdk`` (SQLiteSession); p99 acknowledgement latency of ``fsync`` <= 10 ms.

Only the public API (``import amplifier``) is used. events/s counts only the
benchmark's own events, over the wall time from the moment every session
starts asking until every reply is back (opening and closing sessions are
not timed). A session's folder is built behind its opening, by the
Runtime's write-behind: the benchmark waits for the folders
(``Runtime.flush``) before it starts the clock, so that building them
counts with the opening, as it did before light sessions, when a folder
was built as its session opened (``compare.py`` against 9558365).
Each ask also writes five records of its own (``prompt:submit``, the user
message, metadata, ``prompt:complete``, metadata), which are not counted.

Reproduce::

    .venv/bin/python benchmarks/persistence.py            # full size
    .venv/bin/python benchmarks/persistence.py --quick    # smoke test, seconds
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import orjson

import amplifier

Backend = Literal["asyncio", "trio"]
Mode = Literal["fsync", "none", "flush", "naive", "sdk"]

BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")
MODES: tuple[Mode, ...] = ("fsync", "none", "flush", "naive", "sdk")
"""``sdk`` is the Agents SDK's SQLiteSession (a short name keeps the table's columns)."""
TEXT = (
    "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut"
)
"""About 100 bytes of payload per event."""
RECORDS_PER_ASK = 5
"""Records each ask writes besides the handler's events (not counted in events/s)."""

FSYNC_VS_NONE = 0.7
FSYNC_VS_NAIVE = 5.0
FSYNC_VS_SQLITE_SESSION = 20.0
P99_LIMIT_MS = 10.0

REPO = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python benchmarks/persistence.py"


@dataclass(frozen=True, slots=True)
class Config:
    sessions: int
    events: int


@dataclass(frozen=True, slots=True)
class RunResult:
    events: int
    seconds: float
    latencies: list[float]
    """Acknowledgement latency of every event, seconds."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- our path: a Runtime, its sessions, a turn handler that emits ------------------


class BenchHandler:
    """Answers every turn by emitting ``events`` events, timing each acknowledgement."""

    def __init__(self, events: int) -> None:
        self.events = events
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def prepare_session(
        self, agent: str | None, *, profile: str | None = None
    ) -> amplifier.SessionSetup:
        return amplifier.SessionSetup(agent=agent or "default")

    async def on_resume(self, session: amplifier.SessionContext) -> None:
        return None

    async def run_turn(self, turn: amplifier.Turn) -> str:
        clock = time.perf_counter
        latencies = self.latencies
        previous = 0
        for i in range(self.events):
            start = clock()
            seq = await turn.emit("bench", {"i": i, "text": TEXT})
            latencies.append(clock() - start)
            if seq <= previous:
                self.errors.append(f"{turn.session.id}: seq {seq} after {previous}")
            previous = seq
        return f"{self.events} events"


async def run_ours(
    directory: Path, config: Config, durability: amplifier.Durability, *, verify: bool
) -> RunResult:
    handler = BenchHandler(config.events)
    async with amplifier.open_runtime(
        home=directory / "home", cwd=directory, durability=durability, handler=handler
    ) as rt:
        sessions = [await rt.open_session() for _ in range(config.sessions)]
        flush = getattr(rt, "flush", None)  # older commits build folders as they open
        if flush is not None:
            await flush()
        replies: list[str] = []

        async def ask(session: amplifier.Session) -> None:
            reply = await session.ask("go")
            replies.append(reply.text)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for session in sessions:
                tg.start_soon(ask, session)
        seconds = time.perf_counter() - start

        if handler.errors:
            raise AssertionError(f"seq did not increase: {handler.errors[:3]}")
        expected = config.sessions * config.events
        if len(replies) != config.sessions or len(handler.latencies) != expected:
            raise AssertionError(
                f"{len(replies)} replies, {len(handler.latencies)} events; expected "
                f"{config.sessions} and {expected}"
            )
        if verify:
            await verify_stored(rt, sessions, config.events)
    return RunResult(expected, seconds, handler.latencies)


async def verify_stored(
    rt: amplifier.Runtime, sessions: list[amplifier.Session], events: int
) -> None:
    """Every bench event is in its session's ``events.jsonl``, in order, seq increasing."""
    for session in sessions:
        seen = [record async for record in rt.events(session.id)]
        bench = [record.data.get("i") for record in seen if record.event == "bench"]
        if bench != list(range(events)):
            raise AssertionError(f"{session.id}: stored bench events {bench[:5]}...")
        seqs = [record.seq for record in seen]
        if seqs != sorted(set(seqs)):
            raise AssertionError(f"{session.id}: seq not strictly increasing on disk")


# -- the naive baseline: every session appends + fsyncs its own file --------------


def _append_and_fsync(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


async def run_naive(directory: Path, config: Config, *, verify: bool) -> RunResult:
    latencies: list[float] = []
    paths = [directory / f"session-{k}.jsonl" for k in range(config.sessions)]
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fds = [os.open(path, flags, 0o600) for path in paths]

    async def session(k: int, fd: int) -> None:
        clock = time.perf_counter
        for i in range(config.events):
            start = clock()
            record = {"seq": i + 1, "session": k, "event": "bench", "data": {"i": i, "text": TEXT}}
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
            await anyio.to_thread.run_sync(_append_and_fsync, fd, line)
            latencies.append(clock() - start)

    try:
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for k, fd in enumerate(fds):
                tg.start_soon(session, k, fd)
        seconds = time.perf_counter() - start
    finally:
        for fd in fds:
            os.close(fd)
    if verify:
        for path in paths:
            lines = path.read_bytes().splitlines()
            if [orjson.loads(line)["data"]["i"] for line in lines] != list(range(config.events)):
                raise AssertionError(f"{path}: wrong content")
    return RunResult(config.sessions * config.events, seconds, latencies)


# -- the peer baseline: the OpenAI Agents SDK's SQLiteSession, one shared file ----


def _sqlite_session_class() -> Any:
    """``agents.SQLiteSession``, imported with tracing off and a dummy key (no network)."""
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    os.environ.setdefault("OPENAI_API_KEY", "sk-dummy-for-benchmarks")
    from agents import SQLiteSession

    return SQLiteSession


async def run_sqlite_session(directory: Path, config: Config, *, verify: bool) -> RunResult:
    """N SQLiteSessions on ONE database file, each adding its items one at a time."""
    SQLiteSession = _sqlite_session_class()
    database = directory / "agents.sqlite"
    sessions = [SQLiteSession(f"session-{k}", database) for k in range(config.sessions)]
    latencies: list[float] = []

    async def session(store: Any) -> None:
        clock = time.perf_counter
        for i in range(config.events):
            start = clock()
            await store.add_items([{"role": "user", "content": f"{i} {TEXT}"}])
            latencies.append(clock() - start)

    try:
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for store in sessions:
                tg.start_soon(session, store)
        seconds = time.perf_counter() - start
        if verify:
            for store in sessions:
                items = await store.get_items()
                numbers = [int(item["content"].split(" ", 1)[0]) for item in items]
                if numbers != list(range(config.events)):
                    raise AssertionError(f"{store.session_id}: stored items {numbers[:5]}...")
    finally:
        for store in sessions:
            store.close()
    return RunResult(config.sessions * config.events, seconds, latencies)


def sqlite_session_problem(backend: Backend, root: Path) -> str | None:
    """Why SQLiteSession cannot run on ``backend`` (None: it can)."""
    directory = Path(tempfile.mkdtemp(prefix=f"{backend}-probe-", dir=root))
    problem: str | None = None
    # On trio the SDK's asyncio calls fail and leave a coroutine never awaited.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            run = partial(run_sqlite_session, directory, Config(1, 1), verify=True)
            anyio.run(run, backend=backend)
        except ImportError as exc:
            problem = f"not installed ({exc.name}): pip install -e '.[bench]'"
        except Exception as exc:
            error: BaseException = exc
            while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
                error = error.exceptions[0]
            problem = (
                f"fails on {backend} ({type(error).__name__}: {error}): "
                "the SDK calls asyncio directly"
            )
            del error  # its traceback holds the coroutine the SDK never awaited
        gc.collect()
    shutil.rmtree(directory, ignore_errors=True)
    return problem


def sqlite_synchronous() -> str:
    """The WAL ``synchronous`` level SQLite uses here (the SDK leaves SQLite's default)."""
    import sqlite3

    with tempfile.TemporaryDirectory() as directory:
        connection = sqlite3.connect(Path(directory) / "probe.sqlite")
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            level = connection.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            connection.close()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"{names.get(level, level)} ({level})"


# -- driving the runs -------------------------------------------------------------


def run_one(backend: Backend, mode: Mode, config: Config, root: Path, *, verify: bool) -> RunResult:
    """One measurement in a fresh directory, on a fresh event loop."""
    directory = Path(tempfile.mkdtemp(prefix=f"{backend}-{mode}-", dir=root))
    try:
        if mode == "naive":
            return anyio.run(partial(run_naive, directory, config, verify=verify), backend=backend)
        if mode == "sdk":
            run = partial(run_sqlite_session, directory, config, verify=verify)
            return anyio.run(run, backend=backend)
        return anyio.run(partial(run_ours, directory, config, mode, verify=verify), backend=backend)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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


def filesystem(path: Path) -> str:
    """``/dev/vda ext4 on /`` for the mount holding ``path`` (best effort, Linux)."""
    best = ("", "?", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                device, point, kind = line.split()[:3]
                if str(path).startswith(point) and len(point) >= len(best[0]):
                    best = (point, kind, device)
    except OSError:
        return "unknown file system"
    point, kind, device = best
    return f"{device} {kind} on {point}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Persistence actor throughput and ack latency vs a naive per-file fsync.",
    )
    parser.add_argument("--sessions", type=int, default=None, help="concurrent sessions (100)")
    parser.add_argument("--events", type=int, default=None, help="events per session (100)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions, median kept (3)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 10 sessions x 20 events, 1 repetition"
    )
    parser.add_argument(
        "--backend", choices=[*BACKENDS, "both"], default="both", help="event loop (both)"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir on disk)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip reading the files back after each run"
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="skip the Agents SDK SQLiteSession baseline"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if a target is not met"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"sessions": (10, 100), "events": (20, 100), "repeat": (1, 3)}
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    for name in ("sessions", "events", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config(args.sessions, args.events)
    backends: tuple[Backend, ...] = BACKENDS if args.backend == "both" else (args.backend,)
    base = (args.dir or default_root()).resolve()
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="amplifier-bench-", dir=base))
    verify = not args.no_verify

    print(
        f"persistence benchmark: {config.sessions} concurrent sessions x {config.events} "
        f"events, every event acknowledged before the next; median of {args.repeat}"
    )
    print(
        f"python {platform.python_version()}, anyio {metadata.version('anyio')}, "
        f"trio {metadata.version('trio')}, {os.cpu_count()} CPUs, "
        f"writing in {root} ({filesystem(root)})"
    )
    print(code_state())
    results: dict[tuple[Backend, Mode], list[RunResult]] = {}
    skipped: dict[Backend, str] = {}
    """Why SQLiteSession did not run on a backend."""
    try:
        for backend in backends:
            if args.no_peers:
                skipped[backend] = "skipped (--no-peers)"
            elif (problem := sqlite_session_problem(backend, root)) is not None:
                skipped[backend] = problem
        if len(skipped) < len(backends):
            print(
                "sdk: the Agents SDK's SQLiteSession, one file for all sessions, WAL, synchronous "
                f"{sqlite_synchronous()}, agents {metadata.version('openai-agents')}"
            )

        def modes(backend: Backend) -> tuple[Mode, ...]:
            return tuple(m for m in MODES if m != "sdk" or backend not in skipped)

        if not args.quick:  # warm up threads, imports and the page cache; not measured
            small = Config(min(config.sessions, 10), min(config.events, 10))
            for backend in backends:
                for mode in modes(backend):
                    run_one(backend, mode, small, root, verify=False)
        for repetition in range(args.repeat):
            # Interleaved, and in a rotating order, so drift hits every mode alike.
            for backend in backends:
                available = modes(backend)
                shift = repetition % len(available)
                order = available[shift:] + available[:shift]
                for mode in order:
                    result = run_one(backend, mode, config, root, verify=verify)
                    results.setdefault((backend, mode), []).append(result)
                    print(
                        f"  run {repetition + 1}/{args.repeat} {backend:7} {mode:5} "
                        f"{result.rate:9.0f} events/s  p50 {result.percentile_ms(50):6.2f} ms"
                        f"  p99 {result.percentile_ms(99):6.2f} ms",
                        flush=True,
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    met = report(results, backends, config, skipped)
    print(f"\nreproduce: {COMMAND}" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""))
    return 1 if args.strict and not met else 0


def ratio(value: float) -> str:
    """``0.54x``; small ratios keep three significant digits (``0.0191x``)."""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3g}x"


def report(
    results: dict[tuple[Backend, Mode], list[RunResult]],
    backends: Sequence[Backend],
    config: Config,
    skipped: dict[Backend, str],
) -> bool:
    """Print the table and a verdict per target; True if every target is met."""

    def median(backend: Backend, mode: Mode, value: Callable[[RunResult], float]) -> float:
        return statistics.median(value(run) for run in results[(backend, mode)])

    print()
    header = (
        "backend",
        "mode",
        "events/s",
        "p50 ms",
        "p99 ms",
        "ratio vs none",
        "ratio vs naive",
        "ratio vs ours",
    )
    rows: list[tuple[str, ...]] = []
    for backend in backends:
        none = median(backend, "none", lambda r: r.rate)
        naive = median(backend, "naive", lambda r: r.rate)
        ours = median(backend, "fsync", lambda r: r.rate)
        for mode in MODES:
            if (backend, mode) not in results:
                reason = skipped.get(backend, "not run")
                rows.append((backend, mode, "n/a", "", "", "", "", reason))
                continue
            rate = median(backend, mode, lambda r: r.rate)
            rows.append(
                (
                    backend,
                    mode,
                    f"{rate:.0f}",
                    f"{median(backend, mode, lambda r: r.percentile_ms(50)):.2f}",
                    f"{median(backend, mode, lambda r: r.percentile_ms(99)):.2f}",
                    ratio(rate / none),
                    ratio(rate / naive),
                    ratio(rate / ours),
                )
            )
    # A reason for a missing row may be long: it does not widen its column.
    widths = [
        max(len(row[i]) for row in (header, *rows) if row[2] != "n/a" or i < 7)
        for i in range(len(header))
    ]
    right = {2, 3, 4, 5, 6, 7}

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if i in right and len(cell) <= width else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

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
    extra = config.events + RECORDS_PER_ASK
    print(
        f"\nevents/s counts only the {config.sessions}x{config.events} bench events; each ask "
        f"also writes {RECORDS_PER_ASK} records of its own (prompt:submit, user message, "
        f"metadata, prompt:complete, metadata), so our modes write {extra / config.events:.2f}x "
        "as many records as counted. naive and sdk write only the bench events (sdk: the "
        "Agents SDK's SQLiteSession, one transaction per add_items, all sessions in one "
        "file). Ratios are "
        "ratios of medians within one backend; ratio vs ours is the row over ours (fsync)."
    )

    print()
    everything = True
    for backend in backends:
        fsync = median(backend, "fsync", lambda r: r.rate)
        none = median(backend, "none", lambda r: r.rate)
        naive = median(backend, "naive", lambda r: r.rate)
        p99 = median(backend, "fsync", lambda r: r.percentile_ms(99))
        verdicts = [
            (
                fsync >= FSYNC_VS_NONE * none,
                f"fsync >= {FSYNC_VS_NONE}x none",
                f"{fsync / none:.2f}x ({fsync:.0f} vs {none:.0f} events/s)",
            ),
            (
                fsync >= FSYNC_VS_NAIVE * naive,
                f"fsync >= {FSYNC_VS_NAIVE:g}x naive",
                f"{fsync / naive:.2f}x ({fsync:.0f} vs {naive:.0f} events/s)",
            ),
            (
                p99 <= P99_LIMIT_MS,
                f"fsync p99 ack latency <= {P99_LIMIT_MS:g} ms",
                f"{p99:.2f} ms",
            ),
        ]
        # The SDK runs on asyncio only: trio's rows are compared with its asyncio figure.
        peer_backend = backend if (backend, "sdk") in results else "asyncio"
        if (peer_backend, "sdk") in results:
            peer = median(peer_backend, "sdk", lambda r: r.rate)
            where = "" if peer_backend == backend else f" on {peer_backend}"
            verdicts.append(
                (
                    fsync >= FSYNC_VS_SQLITE_SESSION * peer,
                    f"fsync >= {FSYNC_VS_SQLITE_SESSION:g}x sdk (SQLiteSession)",
                    f"{fsync / peer:.1f}x ({fsync:.0f} vs {peer:.0f} events/s{where})",
                )
            )
        for ok, target, figure in verdicts:
            everything = everything and ok
            print(f"{backend:7}  {target:34} {'met' if ok else 'NOT met'}: {figure}")
        if (peer_backend, "sdk") not in results:
            target = f"fsync >= {FSYNC_VS_SQLITE_SESSION:g}x sdk (SQLiteSession)"
            print(f"{backend:7}  {target:34} not measured: SQLiteSession {skipped.get(backend)}")
    return everything


if __name__ == "__main__":
    sys.exit(main())
