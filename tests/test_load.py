"""Load: many concurrent sessions with delegations in one runtime, then nothing left behind.

Each root session runs the agent loop with the offline provider and
delegates on every turn:

    root (default)    turn 1: two children at once; turn 2: one more
     ├─ explorer        calls list_dir
     ├─ default         delegates again (depth 2)
     │    └─ explorer   calls read_file
     └─ reviewer        calls glob

so each root makes ``SESSIONS_PER_ROOT`` sessions. All roots are open at
the same time in one Runtime before any of them is asked anything, and the
whole round must finish within a time limit (a hang guard, not a timing
assertion). The test runs two such rounds, each in a new Runtime: the first
with durability ``none`` (records written behind), the second with ``fsync``
(the default: through the journal) under tracemalloc. After each it checks
what a user would: every file valid and consistent, and no task, file
descriptor or thread left behind; after the second, memory back where it was.

CI runs ``CI_ROOTS`` root sessions a round (1,000 sessions) on each backend,
about 20 s each on a 2-core VM. Run more locally with ``--trials`` (root
sessions a round; 1000 makes 5,000 sessions open at once, about 4 minutes
for both backends)::

    .venv/bin/pytest tests/test_load.py --trials 1000 --durations=0
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import resource
import stat
import threading
import tracemalloc
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import trio

import amplifier

CI_ROOTS = 100
"""Root sessions per round in CI (``--trials N`` overrides)."""
SESSIONS_PER_ROOT = 5
"""The root, its three children and one grandchild (see the module docstring)."""
LEFT_OPEN_EVERY = 4
"""One root in this many is left open by its user, to be closed by the runtime's exit."""
FIRST_TURN = "\n".join(
    [
        '/delegate explorer: /tool list_dir {"path": "."}',
        '/delegate default: /delegate explorer: /tool read_file {"path": "notes.txt"}',
    ]
)
SECOND_TURN = '/delegate reviewer: /tool glob {"pattern": "*.txt"}'
LEAF_TOOLS = {"explorer": {"list_dir", "read_file"}, "reviewer": {"glob"}}
"""The tool each leaf agent is told to call (an explorer calls one of the two)."""
SUITE_TIMEOUT = 3600
"""pytest-timeout for these tests: ``anyio.fail_after`` (``time_limit``) is the real bound."""


def time_limit(roots: int) -> float:
    """Seconds one round may take: a hang guard, 5-20x what a round takes on a 2-core VM."""
    return 60.0 + 0.2 * roots


# -- one round of load ------------------------------------------------------------------------


@dataclass
class Round:
    """What one round did, as the Python API reported it."""

    roots: list[str] = field(default_factory=list)
    left_open: set[str] = field(default_factory=set)
    replies: dict[str, list[str]] = field(default_factory=dict)
    listed_live: dict[str, str] = field(default_factory=dict)
    """``rt.sessions()`` before the runtime exits: id -> status."""
    listed: dict[str, str] = field(default_factory=dict)
    """``rt.sessions()`` of a new runtime afterwards: id -> status."""
    peak_open: int = 0


async def run_round(
    home: Path,
    project: Path,
    roots: int,
    *,
    durability: amplifier.Durability = "fsync",
    watch: weakref.WeakSet[object] | None = None,
) -> Round:
    """Open ``roots`` sessions at once in one runtime, then two delegating turns in each.

    One root in ``LEFT_OPEN_EVERY`` is never closed by its user: the
    runtime's exit closes it. ``watch`` collects the Runtimes and every
    Session object, to check later that nothing keeps them alive.
    """
    result = Round()
    open_now = 0
    all_open = anyio.Event()

    async def converse(session: amplifier.Session) -> None:
        nonlocal open_now
        if watch is not None:
            watch.add(session)
        open_now += 1
        result.peak_open = max(result.peak_open, open_now)
        if open_now == roots:
            all_open.set()
        await all_open.wait()  # every root is open before any is asked anything
        first = await session.ask(FIRST_TURN)
        second = await session.ask(SECOND_TURN)
        open_now -= 1
        result.roots.append(session.id)
        result.replies[session.id] = [first.text, second.text]

    async def one_root(rt: amplifier.Runtime, number: int) -> None:
        if number % LEFT_OPEN_EVERY == 0:
            session = await rt.open_session(agent="default")
            result.left_open.add(session.id)
            await converse(session)
        else:
            async with rt.open_session(agent="default") as session:
                await converse(session)

    with anyio.fail_after(time_limit(roots)):
        async with amplifier.open_runtime(home=home, cwd=project, durability=durability) as rt:
            if watch is not None:
                watch.add(rt)
            async with anyio.create_task_group() as tg:
                for number in range(roots):
                    tg.start_soon(one_root, rt, number)
            result.listed_live = {row.session_id: row.status for row in await rt.sessions()}
        async with amplifier.open_runtime(home=home, cwd=project, durability=durability) as rt:
            if watch is not None:
                watch.add(rt)
            result.listed = {row.session_id: row.status for row in await rt.sessions()}
    return result


def make_project(project: Path) -> Path:
    (project / "notes.txt").write_text("what the explorer reads\n")
    return project


# -- what is left behind ----------------------------------------------------------------------


@dataclass
class Process:
    """Tasks, file descriptors and threads of this process at one instant."""

    tasks: Counter[str]
    fds: dict[int, str]
    threads: set[threading.Thread]


def live_tasks(backend: str) -> Counter[str]:
    """The names of every task alive in the event loop (the test's own included)."""
    if backend == "asyncio":
        return Counter(repr(task.get_coro()) for task in asyncio.all_tasks())
    names: Counter[str] = Counter()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    pending = [root]
    while pending:
        task = pending.pop()
        names[task.name] += 1
        pending.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    assert sum(names.values()) == trio.lowlevel.current_statistics().tasks_living
    return names


def open_fds() -> dict[int, str]:
    found = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own, closed by now
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def process_now(backend: str) -> Process:
    return Process(live_tasks(backend), open_fds(), set(threading.enumerate()))


def is_pool_worker(thread: threading.Thread) -> bool:
    """An idle worker of the backend's thread pool (what ``anyio.to_thread`` runs on).

    The pools keep idle workers for reuse (anyio's until the event loop
    ends, trio's for 10 s), so they outlive any one Runtime. A trio worker
    that is busy carries its job's name instead, so it does not count.
    """
    return thread.name == "AnyIO worker thread" or thread.name.startswith("Trio thread ")


def left_behind(before: Process, after: Process, home: Path) -> list[str]:
    """Tasks, descriptors and threads alive now that were not before the runtime opened."""
    problems = []
    into_home = sorted(t for t in after.fds.values() if t.startswith(str(home)))
    if into_home:
        problems.append(f"files of the store still open: {into_home[:10]}")
    tasks = after.tasks - before.tasks
    if tasks:
        problems.append(f"tasks left running: {sorted(tasks.elements())[:10]}")
    fds = {fd: target for fd, target in after.fds.items() if before.fds.get(fd) != target}
    if len(after.fds) > len(before.fds):
        problems.append(f"descriptors left open ({len(before.fds)} -> {len(after.fds)}): {fds}")
    threads = after.threads - before.threads
    others = [t.name for t in threads if not is_pool_worker(t)]
    if others:
        problems.append(f"threads left running: {others}")
    # Under pytest, trio runs as a guest of another loop, whose I/O poll borrows one more
    # thread of trio's cache.
    pool = anyio.to_thread.current_default_thread_limiter().total_tokens + 1
    if len(threads) > pool:
        names = sorted(t.name for t in threads)
        problems.append(f"{len(threads)} new pool threads, more than {pool}: {names}")
    return problems


# -- reading the store straight from disk -----------------------------------------------------


@dataclass
class Stored:
    """One session folder, parsed without the package's readers."""

    folder: Path
    metadata: dict[str, Any]
    events: list[dict[str, Any]]
    transcript: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return self.folder.name

    def delegate_seq(self, event: str, child_id: str) -> list[int]:
        return [
            e["seq"]
            for e in self.events
            if e["event"] == event and e["data"].get("child_id") == child_id
        ]

    def own_seq(self, event: str) -> list[int]:
        return [e["seq"] for e in self.events if e["event"] == event]


def parse_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        problems.append(f"{path}: torn last line")
    records = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("seq"), int):
            records.append(record)
        else:
            problems.append(f"{path}:{number}: not a JSON record with an integer seq")
    return records


def read_store(home: Path, problems: list[str]) -> dict[str, Stored]:
    found = {}
    for folder in sorted(home.glob("projects/*/sessions/*")):
        try:
            metadata = orjson.loads((folder / "metadata.json").read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            problems.append(f"{folder.name}: metadata.json: {exc}")
            continue
        found[folder.name] = Stored(
            folder=folder,
            metadata=metadata,
            events=parse_jsonl(folder / "events.jsonl", problems),
            transcript=parse_jsonl(folder / "transcript.jsonl", problems),
        )
    return found


def check_permissions(home: Path) -> list[str]:
    """Every folder under home is 0700 and every file 0600."""
    problems = []
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        wanted = 0o700 if path.is_dir() else 0o600
        if mode != wanted:
            problems.append(f"{path.relative_to(home)}: mode {mode:o}, not {wanted:o}")
    return problems


def check_session(stored: Stored) -> list[str]:
    """One session's files: complete, ordered, and saying the session completed."""
    problems = []
    meta, sid = stored.metadata, stored.id
    if meta.get("session_id") != sid or meta.get("status") != "completed":
        problems.append(f"{sid}: metadata id {meta.get('session_id')} status {meta.get('status')}")
    for name, records in (("events", stored.events), ("transcript", stored.transcript)):
        seqs = [r["seq"] for r in records]
        if any(b <= a for a, b in itertools.pairwise(seqs)):
            problems.append(f"{sid}/{name}: seq not strictly increasing: {seqs}")
    if [e["session_id"] for e in stored.events] != [sid] * len(stored.events):
        problems.append(f"{sid}: an event names another session")
    if any(e["parent_id"] != meta.get("parent_id") for e in stored.events):
        problems.append(f"{sid}: an event names another parent than the metadata")
    names = [e["event"] for e in stored.events]
    if names[:1] != ["session:start"] or names[-1:] != ["session:end"]:
        problems.append(f"{sid}: events do not run from session:start to session:end: {names}")
    elif stored.events[-1]["data"].get("status") != "completed":
        problems.append(f"{sid}: session:end says {stored.events[-1]['data']}")
    spoken = sum(1 for m in stored.transcript if m.get("role") in ("user", "assistant"))
    if meta.get("message_count") != spoken:
        counted = meta.get("message_count")
        problems.append(f"{sid}: metadata counts {counted} messages, the transcript {spoken}")
    failed = [e for e in stored.events if e["event"] == "tool:post" and e["data"].get("is_error")]
    if failed:
        problems.append(f"{sid}: failed tool calls: {[e['data'] for e in failed]}")
    side_files = [p.name for p in stored.folder.iterdir() if ".torn-" in p.name]
    if side_files:
        problems.append(f"{sid}: torn lines were set aside: {side_files}")
    return problems


def check_lineage(stored: Stored, sessions: dict[str, Stored]) -> list[str]:
    """A child names its parent, is listed by it, and sits inside the parent's delegation."""
    problems = []
    meta, sid = stored.metadata, stored.id
    for child_id in meta.get("children", []):
        child = sessions.get(child_id)
        if child is None or child.metadata.get("parent_id") != sid:
            problems.append(f"{sid} lists {child_id}, which does not name it as its parent")
    parent_id = meta.get("parent_id")
    if parent_id is None:
        if meta.get("root_id") != sid or meta.get("depth") != 0:
            problems.append(f"root {sid}: root_id {meta.get('root_id')} depth {meta.get('depth')}")
        return problems
    parent = sessions.get(parent_id)
    if parent is None:
        return [*problems, f"{sid}: parent {parent_id} is not on disk"]
    if sid not in parent.metadata.get("children", []):
        problems.append(f"{sid} is not listed among {parent_id}'s children")
    if meta.get("root_id") != parent.metadata.get("root_id"):
        problems.append(f"{sid}: root_id {meta.get('root_id')} is not its parent's")
    if meta.get("depth") != (above := parent.metadata.get("depth", 0)) + 1:
        problems.append(f"{sid}: depth {meta.get('depth')} under a parent at depth {above}")
    started, ended = (
        parent.delegate_seq("delegate:start", sid),
        parent.delegate_seq("delegate:end", sid),
    )
    own_start, own_end = stored.own_seq("session:start"), stored.own_seq("session:end")
    if len(started) != 1 or len(own_start) != 1 or not started[0] < own_start[0]:
        problems.append(f"{sid}: session:start {own_start} not after delegate:start {started}")
    if len(ended) != 1 or len(own_end) != 1 or not own_end[0] < ended[0]:
        problems.append(f"{sid}: session:end {own_end} not before delegate:end {ended}")
    return problems


def check_shape(stored: Stored, sessions: dict[str, Stored]) -> list[str]:
    """Each root has the tree of the module docstring; every leaf called its tool."""
    meta, sid = stored.metadata, stored.id
    children = [sessions[c] for c in meta.get("children", []) if c in sessions]
    agents = sorted(str(c.metadata.get("agent")) for c in children)
    depth = meta.get("depth")
    if depth == 0 and (agents != ["default", "explorer", "reviewer"] or meta.get("turns") != 2):
        return [f"root {sid}: children {agents}, {meta.get('turns')} turns"]
    if depth == 1 and meta.get("agent") == "default" and agents != ["explorer"]:
        return [f"{sid}: children {agents}, not one explorer"]
    if meta.get("agent") in LEAF_TOOLS:
        tools = [e["data"].get("tool") for e in stored.events if e["event"] == "tool:post"]
        if children or len(tools) != 1 or tools[0] not in LEAF_TOOLS[meta["agent"]]:
            return [f"leaf {sid}: tool calls {tools}, children {agents}"]
    return []


def check_store(home: Path, done: Round, roots: int) -> list[str]:
    """Everything on disk after a round: valid, consistent, complete, private, listed."""
    problems: list[str] = []
    sessions = read_store(home, problems)
    expected = roots * SESSIONS_PER_ROOT
    if len(sessions) != expected:
        problems.append(f"{len(sessions)} session folders, expected {expected}")
    for when, listed in (("before the exit", done.listed_live), ("afterwards", done.listed)):
        if set(listed) != set(sessions):
            problems.append(
                f"rt.sessions() {when} listed {len(listed)}, "
                f"{len(set(listed) - set(sessions))} not on disk, "
                f"left out {sorted(set(sessions) - set(listed))[:5]}"
            )
    if sorted(done.roots) != sorted(s for s in sessions if sessions[s].metadata["depth"] == 0):
        problems.append("the root sessions on disk are not the ones opened")
    live = {sid: "active" if sid in done.left_open else "completed" for sid in done.listed_live}
    if done.listed_live != live:
        wrong = sorted(set(done.listed_live.items()) - set(live.items()))
        problems.append(f"rt.sessions() before the exit: wrong status {wrong[:5]}")
    unfinished = sorted(sid for sid, status in done.listed.items() if status != "completed")
    if unfinished:
        problems.append(f"listed as not completed afterwards: {unfinished[:5]}")
    for stored in sessions.values():
        problems += check_session(stored)
        problems += check_lineage(stored, sessions)
        problems += check_shape(stored, sessions)
    seqs = [r["seq"] for s in sessions.values() for r in s.events + s.transcript]
    if len(seqs) != len(set(seqs)):
        problems.append("seq values repeat across the sessions of one runtime")
    problems += check_permissions(home)
    journals = sorted(p.name for p in (home / "journal").glob("*"))
    if journals:
        problems.append(f"journal files left after a clean shutdown: {journals}")
    staged = sorted(p.name for p in home.glob("projects/*/.staging/*"))
    if staged:
        problems.append(f"half-built session folders left in .staging: {staged[:5]}")
    return problems


def check_replies(done: Round) -> list[str]:
    """Every answer reports its sub-sessions as completed."""
    problems = []
    for sid, (first, second) in done.replies.items():
        if first.count("): completed: ") != 2 or second.count("): completed: ") != 1:
            problems.append(f"{sid}: replies do not report completed sub-sessions:\n{first}")
    return problems


def report(problems: list[str]) -> str:
    return f"{len(problems)} problems:\n" + "\n".join(problems[:30])


# -- the test ---------------------------------------------------------------------------------


async def load_and_check(
    home: Path,
    project: Path,
    roots: int,
    backend: str,
    durability: amplifier.Durability,
    watch: weakref.WeakSet[object] | None = None,
) -> None:
    """One round of load, then everything a user would check; keeps nothing of the round."""
    before = process_now(backend)
    done = await run_round(home, project, roots, durability=durability, watch=watch)
    gc.collect()
    assert not (problems := left_behind(before, process_now(backend), home)), report(problems)
    assert done.peak_open == roots  # all were open at once
    assert len(done.roots) == roots
    assert len(done.left_open) == -(-roots // LEFT_OPEN_EVERY)
    problems = check_replies(done)
    problems += await anyio.to_thread.run_sync(check_store, home, done, roots)
    assert not problems, report(problems)


# Memory. A round of ``roots`` roots makes ``roots * SESSIONS_PER_ROOT``
# sessions, all open at once: at the peak 30-40 KB of Python heap a session.
# The first round grows process-wide tables to a high-water mark (Python
# 3.11's table of interned strings, which pathlib fills with every path part;
# asyncio's set of all tasks; the thread pool): about 1.5 KB a session, not a
# leak. So the second round, of the same size, is the one measured: what it
# still holds once its runtime has closed and garbage is collected.
#
# Not counted: (1) blocks of BIG_BLOCK or more. These are the hash tables of
# process-wide registries (the interned strings, weak sets and maps of tasks
# in asyncio, anyio and trio), which are reallocated now and then at a size
# set by the peak number of entries alive at once: 0.1-1 MB at 1,000
# sessions, 2 MB at 5,000, none of it holding anything alive. Per-session
# state is made of small objects, which are counted. (2) What pydantic-core
# allocates while parsing JSON: its cache of parsed strings (one session id a
# session, bounded at 16,384 entries but never emptied).
#
# What is left was measured at 60-100 KB for 1,000 sessions and 60-85 KB for
# 5,000 (free lists, idle pool threads): under 40% of the bound below at CI
# size, 11% at --trials 1000. A leak of per-session state (an actor, its
# mailbox, records, a subscription, a dict entry per session id) keeps a few
# hundred bytes a session or more and exceeds it: leaks of 200 B a session
# (a bytes object), 300-400 B (a dict entry per session) and a whole actor
# were each checked to fail it on both backends. (Adding only existing
# objects, such as session ids, to a global set grows a table and nothing
# else; keeping the Runtime or a Session alive is what the weak references
# catch.)
RETAINED_FIXED = 128 * 1024
RETAINED_PER_SESSION = 128
BIG_BLOCK = 16 * 1024
NOT_COUNTED = [tracemalloc.Filter(False, "*/pydantic/main.py")]
"""Allocations made by pydantic-core while parsing JSON: its string cache (see above)."""


def retained_by_line(snapshot: tracemalloc.Snapshot) -> tuple[Counter[str], list[int]]:
    """Bytes still allocated, by the line that allocated them; and the big blocks, not counted."""
    counted: Counter[str] = Counter()
    big = []
    for trace in snapshot.filter_traces(NOT_COUNTED).traces:
        if trace.size >= BIG_BLOCK:
            big.append(trace.size)
        else:
            counted[str(trace.traceback[0])] += trace.size
    return counted, sorted(big, reverse=True)


@pytest.mark.timeout(SUITE_TIMEOUT)
async def test_rounds_of_concurrent_sessions_with_delegations_leave_nothing_behind(
    tmp_path: Path, project: Path, anyio_backend: str, trials: int | None
) -> None:
    """N sessions at once, delegating concurrently and nested, finish in time and leave nothing.

    Two rounds, each in a new runtime, of N root sessions open at the same
    time, each with two turns that delegate (see the module docstring); one
    root in LEFT_OPEN_EVERY is left for the runtime's exit to close. After
    each round: every session folder, root or child, is valid and consistent
    (metadata completed, every line parses, seq strictly increasing, each
    child listed by its parent, naming it, and ended before its parent's
    delegate:end; files 0600, folders 0700; no journal or half-built folder
    left), ``rt.sessions()`` lists them all, before the exit and from a new
    runtime after it, and no task, file descriptor or thread is left. After
    the second round the Runtimes and every Session object have been freed,
    and the memory the round still holds is a small bounded amount, not a
    share of every session (the bound is explained above).
    """
    roots = trials or CI_ROOTS
    sessions = roots * SESSIONS_PER_ROOT
    make_project(project)
    await load_and_check(tmp_path / "round-1", project, roots, anyio_backend, "none")

    watch: weakref.WeakSet[object] = weakref.WeakSet()
    gc.collect()
    tracemalloc.start()
    try:
        await load_and_check(tmp_path / "round-2", project, roots, anyio_backend, "fsync", watch)
        gc.collect()
        peak = tracemalloc.get_traced_memory()[1]
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()

    assert len(watch) == 0, f"alive after their runtime closed: {list(watch)[:5]}"
    counted, big = retained_by_line(snapshot)
    retained = sum(counted.values())
    bound = RETAINED_FIXED + RETAINED_PER_SESSION * sessions
    largest = "\n".join(f"{size:>9} B  {line}" for line, size in counted.most_common(10))
    assert retained < bound, (
        f"{sessions} sessions left {retained} B after their runtime closed "
        f"({retained / sessions:.0f} B a session; at the peak {peak / sessions:.0f} B a "
        f"session); bound {bound} B. Big blocks not counted: {big}. Largest:\n{largest}"
    )
    assert peak > 20 * bound  # the round was traced: its sessions did take memory


def leaf_errors(error: BaseException) -> list[str]:
    """The messages of the exceptions at the leaves of an exception group."""
    if isinstance(error, BaseExceptionGroup):
        return [m for e in error.exceptions for m in leaf_errors(e)]
    return [f"{type(error).__name__}: {error}"]


DEFAULT_SOFT_LIMIT = 1024
"""``ulimit -n`` of a default Linux login."""
LIMIT_ROOTS = 200
"""Roots (of ``SESSIONS_PER_ROOT`` sessions each) at once under that limit: 1,000 sessions."""


async def test_a_thousand_sessions_at_once_complete_under_the_default_open_file_limit(
    tmp_path: Path, project: Path
) -> None:
    """1,000 sessions open at once, with delegations, all complete under ``ulimit -n 1024``.

    A session holds no file descriptor of its own (its claim is a line in
    its folder, its runtime holds one lock), so the default soft limit of
    a Linux login is no limit on sessions.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < DEFAULT_SOFT_LIMIT:
        pytest.skip(f"the hard limit of open files ({hard}) is below {DEFAULT_SOFT_LIMIT}")
    make_project(project)
    home = tmp_path / "home"
    errors: list[str] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (DEFAULT_SOFT_LIMIT, hard))
    try:
        done = await run_round(home, project, LIMIT_ROOTS, durability="none")
    except Exception as exc:
        errors = leaf_errors(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not errors, f"{len(errors)} sessions failed, the first: {errors[:3]}"
    problems = check_replies(done)
    problems += await anyio.to_thread.run_sync(check_store, home, done, LIMIT_ROOTS)
    assert not problems, report(problems)
