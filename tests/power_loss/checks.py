"""What must hold once a crash state is recovered: the promises of the README under test.

``Durable.at`` says what the recorded run had made durable by a crash
point: every record of every journal batch whose sync had returned (the
journal as it was synced, decoded independently, so a journal lost in the
crash state still counts), and every acknowledgement the workload had
received. ``recover_and_check`` recovers a state through the API (and,
for a sample, first through the command line) and checks:

- every durable record is in its session file, byte for byte, and every
  acknowledged open, turn (with its sub-sessions), close and label holds;
- every line parses, no torn tail is left, ``seq`` increases in every file;
- parent and child: no parent names a child that is missing, every child
  on disk is named by its parent's ``delegate:start`` (before its
  ``session:start``), ``delegate:end`` after the child's ``session:end``;
- the listing is exactly the folders on disk (all projects, each project,
  a first page by creation and by use, a tag); each session shows (tree,
  events and transcript are the complete lines on disk) and resumes; a
  search finds each message that holds its word, and nothing else (the
  index, a cache, never lies);
- nothing is left: no journal, nothing in ``.staging``, no temporary file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson

import amplifier
from amplifier.persistence import SessionSort, list_sessions, project_slug

from ..raw_store import StoredSession, read_raw
from ..store_checks import (
    ACKNOWLEDGED,
    CLI,
    JOURNAL_LEFT,
    PHANTOM,
    READERS,
    RESUME,
    SHOW,
    UNLISTED,
    Frame,
    Frames,
    Sessions,
    check_children_complete,
    check_family,
    check_frames,
    check_leftovers,
    check_lines,
    check_seq,
    data_of,
    decode_journal,
    problem,
)
from .ops import Trace
from .workload import WORDS

AMPLIFIER = Path(sys.executable).with_name("amplifier")
INDEX = "index does not agree with the files"
RECOVERY = "recovery failed"
CLI_TIMEOUT = 60.0


@dataclass
class Expected:
    """What the recorded run had made durable, and acknowledged, by a crash point."""

    frames: Frames = field(default_factory=dict)
    acks: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    """The highest seq the recorded run stamped: records above it are recovery's own."""


class Durable:
    """When each journalled record of a trace became durable: the first sync that held it."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.since: dict[tuple[str, int, int], tuple[int, Frame]] = {}
        for index in sorted(trace.journal_syncs):
            for frame in decode_journal(trace.journal_syncs[index]):
                self.since.setdefault((frame.folder, frame.kind, frame.seq), (index, frame))
        self.last_seq = max((key[2] for key in self.since), default=0)

    def at(self, point: int) -> Expected:
        """What a crash at ``point`` must keep: records whose sync had returned, and acks."""
        return Expected(
            frames={key: frame for key, (index, frame) in self.since.items() if index < point},
            acks=[ack.fields for ack in self.trace.acks if ack.after <= point],
            last_seq=self.last_seq,
        )


# -- the checks on the files -------------------------------------------------------------------


def check_acknowledged(expected: Expected, sessions: Sessions) -> list[str]:
    """Every open, turn, close and label the workload was told of is on disk."""
    problems = []
    last = expected.last_seq
    for ack in expected.acks:
        session_id = str(ack.get("session"))
        stored = sessions.get(session_id)
        where = f"acknowledged {ack['ack']} of {session_id}"
        if stored is None or stored.metadata is None:
            problems.append(problem(ACKNOWLEDGED, f"{where}: the session is not on disk whole"))
            continue
        match ack["ack"]:
            case "open":
                if not stored.named("session:start"):
                    problems.append(problem(ACKNOWLEDGED, f"{where}: no session:start"))
            case "close":
                if not any(e["seq"] <= last for e in stored.named("session:end")):
                    problems.append(problem(ACKNOWLEDGED, f"{where}: no session:end"))
            case "label":
                meta = stored.metadata
                if meta.get("name") != ack["name"] or not set(ack["tags"]) <= set(meta["tags"]):
                    problems.append(problem(ACKNOWLEDGED, f"{where}: metadata says {meta}"))
            case "ask":
                problems += _check_turn(sessions, stored, ack, where)
    return problems


def _check_turn(
    sessions: Sessions, stored: StoredSession, ack: dict[str, Any], where: str
) -> list[str]:
    turn = ack["turn"]
    where = f"{where} turn {turn}"
    submit = [e for e in stored.named("prompt:submit") if data_of(e).get("turn") == turn]
    complete = [
        e
        for e in stored.named("prompt:complete")
        if data_of(e).get("turn") == turn and data_of(e).get("status") == "completed"
    ]
    if not submit or not complete:
        return [problem(ACKNOWLEDGED, f"{where}: no prompt:submit / prompt:complete")]
    low, high = submit[0]["seq"], complete[0]["seq"]
    said = [m for m in stored.transcript if low < m["seq"] < high]
    problems = []
    if not any(m.get("role") == "user" and m.get("content") == ack["prompt"] for m in said):
        problems.append(problem(ACKNOWLEDGED, f"{where}: the prompt is not in the transcript"))
    if not any(m.get("role") == "assistant" and m.get("content") == ack["response"] for m in said):
        problems.append(problem(ACKNOWLEDGED, f"{where}: the answer is not in the transcript"))
    return problems + check_children_complete(sessions, stored, low, high, where)


def check_journals_gone(home: Path) -> list[str]:
    try:
        left = sorted(n for n in (home / "journal").iterdir() if not n.name.startswith("."))
    except FileNotFoundError:
        return []
    return [problem(JOURNAL_LEFT, f"after recovery: {[p.name for p in left]}")] if left else []


# -- through the API ---------------------------------------------------------------------------

_WORD = {word: re.compile(rf"\b{word}\b", re.IGNORECASE) for word in WORDS}


def _text(message: dict[str, Any]) -> str:
    """What search indexes of a message: its text and its tool calls' names and arguments."""
    parts = [message.get("content") if isinstance(message.get("content"), str) else ""]
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            arguments = call.get("arguments")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments).decode() if arguments is not None else ""
            parts.append(f"{call.get('name', '')} {arguments}")
    return "\n".join(p for p in parts if p)


def _first(rows: Iterable[StoredSession], key: str) -> str | None:
    """The session a first page sorted by ``key`` (``created``, ``updated``) must show."""
    readable = [s for s in rows if s.metadata is not None and s.metadata.get(key)]
    if not readable:
        return None
    newest = max(str(s.metadata[key]) for s in readable if s.metadata)
    return min(s.session_id for s in readable if s.metadata and str(s.metadata[key]) == newest)


async def check_through_api(home: Path, projects: list[Path]) -> list[str]:
    """Open a Runtime (it recovers); list, show, search and resume every session."""
    problems: list[str] = []
    async with amplifier.open_runtime(home=home, cwd=projects[0], durability="flush") as rt:
        on_disk = await anyio.to_thread.run_sync(read_raw, home)
        listed = [row.session_id for row in await rt.sessions(all_projects=True)]
        if sorted(listed) != sorted(on_disk):
            problems.append(
                problem(
                    UNLISTED,
                    f"sessions(all_projects) gives {sorted(listed)}, "
                    f"the folders are {sorted(on_disk)}",
                )
            )
        for project in projects:
            slug = project_slug(project)
            here = [s for s in on_disk.values() if s.location.project == slug]
            mine = await anyio.to_thread.run_sync(
                lambda slug=slug, project=project: list_sessions(home, slug, cwd=str(project))
            )
            if sorted(r.session_id for r in mine) != sorted(s.session_id for s in here):
                problems.append(
                    problem(UNLISTED, f"{project.name}: {[r.session_id for r in mine]}")
                )
        roots = [s for s in on_disk.values() if s.parent_id is None]
        orders: tuple[tuple[SessionSort, str], ...] = (("created", "created"), ("used", "updated"))
        for sort, key in orders:
            page = await rt.sessions(all_projects=True, roots_only=True, sort=sort, limit=1)
            want = _first(roots, key)
            if want is not None and [r.session_id for r in page] != [want]:
                got = [r.session_id for r in page]
                problems.append(problem(INDEX, f"first page by {sort}: {got}, want {want}"))
        for tag in ("kept", "draft"):
            tagged = {r.session_id for r in await rt.sessions(all_projects=True, tag=tag)}
            want = {
                s.session_id for s in on_disk.values() if tag in (s.metadata or {}).get("tags", [])
            }
            if tagged != want:
                problems.append(problem(INDEX, f"tag {tag}: {sorted(tagged)}, want {sorted(want)}"))
        for word, pattern in _WORD.items():
            hits = await rt.search(word, all_projects=True, limit=500)
            found = {(h.session_id, h.seq) for h in hits if h.role != "label"}
            want_hits = {
                (s.session_id, m["seq"])
                for s in on_disk.values()
                for m in s.transcript
                if pattern.search(_text(m))
            }
            if found != want_hits:
                problems.append(
                    problem(
                        INDEX,
                        f"search {word}: extra {sorted(found - want_hits)}, "
                        f"missing {sorted(want_hits - found)}",
                    )
                )
        async with anyio.create_task_group() as tg:
            for session_id, stored in sorted(on_disk.items()):
                tg.start_soon(_show, rt, session_id, stored, set(on_disk), problems)
        async with anyio.create_task_group() as tg:
            for session_id in sorted(on_disk):
                tg.start_soon(_resume, rt, session_id, problems)
    return problems


async def _show(
    rt: amplifier.Runtime,
    session_id: str,
    stored: StoredSession,
    on_disk: set[str],
    problems: list[str],
) -> None:
    """``tree``, ``transcript`` and ``events`` of a session: exactly the complete lines on disk."""
    try:
        tree = await rt.tree(session_id)
        transcript = await rt.transcript(session_id)
        events = [e async for e in rt.events(session_id)]
    except amplifier.AmplifierError as exc:
        problems.append(problem(SHOW, f"{session_id}: {type(exc).__name__}: {exc}"))
        return
    for row in tree:
        if row.metadata is None:
            kind = PHANTOM if row.session_id not in on_disk else SHOW
            problems.append(problem(kind, f"show {session_id}: {row.problem}"))
    if [m.seq for m in transcript] != [m["seq"] for m in stored.transcript]:
        problems.append(problem(READERS, f"{session_id}: transcript != complete lines"))
    if [e.seq for e in events] != [e["seq"] for e in stored.events]:
        problems.append(problem(READERS, f"{session_id}: events != complete lines"))


async def _resume(rt: amplifier.Runtime, session_id: str, problems: list[str]) -> None:
    try:
        async with rt.resume(session_id):
            pass
    except amplifier.AmplifierError as exc:
        problems.append(problem(RESUME, f"{session_id}: {type(exc).__name__}: {exc}"))


# -- through the command line ------------------------------------------------------------------


def cli(home: Path, cwd: Path, backend: str, *args: str) -> tuple[int, Any, str]:
    """``amplifier ARGS --json`` on ``home``: exit code, document, stderr."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "AMPLIFIER_DEBUG"},
        "AMPLIFIER_HOME": str(home),
        "AMPLIFIER_ASYNC_BACKEND": backend,
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [str(AMPLIFIER), *args, "--json"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    try:
        document = orjson.loads(done.stdout)
    except orjson.JSONDecodeError:
        document = None
    return done.returncode, document, done.stderr.decode(errors="replace")


def check_through_cli(home: Path, projects: list[Path], backend: str) -> list[str]:
    """``session list`` (it recovers), ``session show`` and ``session resume`` of a root."""
    problems = []
    code, listing, stderr = cli(home, projects[0], backend, "session", "list", "--all", "--tree")
    on_disk = read_raw(home)
    rows = listing if isinstance(listing, list) else []
    ids = sorted(str(row.get("session_id")) for row in rows)
    if code != 0 or ids != sorted(on_disk):
        problems.append(
            problem(CLI, f"session list: exit {code}, {ids} for {sorted(on_disk)}: {stderr[-300:]}")
        )
    roots = sorted(s for s, stored in on_disk.items() if stored.parent_id is None)
    for root in roots[:1]:
        cwd = Path(str((on_disk[root].metadata or {}).get("cwd") or projects[0]))
        code, document, stderr = cli(home, cwd, backend, "session", "show", root, "--events")
        tree = document.get("tree", []) if isinstance(document, dict) else []
        if code != 0 or not tree or any(row.get("status") == "damaged" for row in tree):
            problems.append(problem(CLI, f"session show {root}: exit {code}: {stderr[-300:]}"))
        code, document, stderr = cli(home, cwd, backend, "session", "resume", root, "again")
        status = document.get("status") if isinstance(document, dict) else None
        if code != 0 or status != "completed":
            problems.append(
                problem(CLI, f"session resume {root}: exit {code}, {status}: {stderr[-300:]}")
            )
    return problems


# -- one state ---------------------------------------------------------------------------------


async def recover_and_check(
    home: Path, projects: list[Path], expected: Expected, *, backend: str, through_cli: bool
) -> list[str]:
    """Recover the crash state in ``home`` (the command line first, if asked), check it all."""
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if through_cli:
            problems += await anyio.to_thread.run_sync(check_through_cli, home, projects, backend)
        try:
            problems += await check_through_api(home, projects)
        except Exception as exc:
            problems.append(problem(RECOVERY, f"{type(exc).__name__}: {exc}"))
    problems += [
        problem(RECOVERY, f"unexpected warning: {w.category.__name__}: {w.message}")
        for w in caught
        if not issubclass(w.category, amplifier.RecoveryWarning)
    ]
    after = await anyio.to_thread.run_sync(read_raw, home)
    problems += check_lines(after, torn_allowed=False)
    problems += check_seq(after)
    problems += check_family(after)
    problems += check_frames(home, expected.frames, after)
    problems += check_acknowledged(expected, after)
    problems += check_journals_gone(home)
    problems += check_leftovers(home)
    return problems
