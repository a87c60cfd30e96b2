"""File history of a session tree: what its tools changed, ``session diff`` and ``rewind``.

Every change a write tool makes is on record (the ``file`` of its
``tool:post``: path, hash before, hash after), with the content before
kept in the session's ``file-history``. A rewind is a change too: its
``session:rewind`` lists each file it restored the same way.

Rule 1: a file's recorded changes form a chain in ``seq`` order across the
        whole tree, parents and children alike: each change's ``before`` is
        the previous one's ``after``. Rewinding to a point restores each
        file to the ``before`` of its first change at or after that point,
        whichever session made it.
Rule 2: a file whose content now is not what the tree last wrote (someone
        changed it since, or removed it) is not rewound unless forced; nor
        is one whose kept content is missing or damaged. Either refuses the
        whole rewind, naming the files, so a rewind is never half done by
        surprise.
Rule 3: what a rewind overwrites is kept first, and the rewind is recorded
        (``session:rewind``), so a rewind can itself be rewound.
Rule 4: changes made by ``bash`` commands are not on record, and are
        neither shown nor undone; the reports say how many commands ran.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from amplifier._errors import UsageError
from amplifier.persistence import (
    CorruptSession,
    EventRecord,
    SessionLocation,
    SessionSummary,
    merge_events,
    read_kept,
    session_tree,
    summarize,
)
from amplifier.persistence.lowlevel import NotAFile, content_digest, open_to_read
from amplifier.runtime import PromptSubmitted, Runtime

from ._diffs import decode, diff_texts
from ._events import FileChange, ForeignEvent, SessionRewound, ToolFinished, read_event
from ._exceptions import AgentError, ToolFailed
from ._tools import confine
from ._write_tools import replace_file

FileState = Literal["created", "modified", "removed", "unchanged"]


class RewindRefused(AgentError):
    """A rewind would overwrite changes made since, or lacks the content to restore."""

    def __init__(self, session_id: str, problems: Sequence[str]) -> None:
        self.session_id = session_id
        self.problems = tuple(problems)
        super().__init__(
            f"not rewound: {'; '.join(self.problems)} (--force restores the others anyway, "
            "overwriting what changed since)"
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded change of one file (Rule 1)."""

    seq: int
    session_id: str
    location: SessionLocation
    """Where its ``before`` content is kept."""
    change: FileChange
    by_rewind: bool = False


@dataclass(frozen=True, slots=True)
class History:
    """The recorded file changes of a session tree, and what else the report needs."""

    root: SessionSummary
    project: Path
    transitions: tuple[Transition, ...]
    turns: dict[int, int]
    """The root's turn numbers -> the ``seq`` of their ``prompt:submit``."""
    last_rewind: int | None
    bash_calls: tuple[int, ...]
    """The ``seq`` of each ``bash`` call of the tree (Rule 4)."""
    sessions: dict[str, SessionSummary] = field(default_factory=dict)

    def by_path(self, since: int = 0) -> dict[str, list[Transition]]:
        """Each path's transitions, for the paths changed at or after ``since``."""
        paths: dict[str, list[Transition]] = {}
        for transition in self.transitions:
            paths.setdefault(transition.change.path, []).append(transition)
        return {path: chain for path, chain in paths.items() if any(t.seq >= since for t in chain)}

    def bash_since(self, since: int) -> int:
        return sum(1 for seq in self.bash_calls if seq >= since)


async def load_history(rt: Runtime, session_id: str) -> History:
    """The file history of the session ``session_id`` and its sub-sessions."""
    tree = await rt.tree(session_id)
    root = tree[0]
    sessions = {row.session_id: row for row in tree}
    events = [event async for event in rt.events(root.session_id, tree=True)]
    recorded = root.metadata.cwd if root.metadata is not None else ""
    project = rt.cwd
    if recorded:
        project = Path(await anyio.to_thread.run_sync(os.path.realpath, recorded))
    return read_history(root, sessions, events, project)


def read_history(
    root: SessionSummary,
    sessions: dict[str, SessionSummary],
    events: Sequence[EventRecord],
    project: Path,
) -> History:
    """The file history in ``events`` (the tree's, merged in ``seq`` order)."""
    transitions: list[Transition] = []
    turns: dict[int, int] = {}
    bash: list[int] = []
    last_rewind: int | None = None
    for event in events:
        seq = event.seq
        if seq is None or event.session_id not in sessions:
            continue
        location = sessions[event.session_id].location
        at_root = event.session_id == root.session_id
        if event.event not in _READ:
            continue  # most events: not parsed at all
        match read_event(event):
            case ToolFinished(tool=tool, file=change):
                if tool == "bash":
                    bash.append(seq)
                if change is not None:
                    transitions.append(Transition(seq, event.session_id, location, change))
            case PromptSubmitted(turn=int(turn)) if at_root:
                turns.setdefault(turn, seq)
            case SessionRewound(files=files) if at_root:
                last_rewind = seq
                transitions.extend(
                    Transition(seq, event.session_id, location, change, by_rewind=True)
                    for change in files
                )
            case ForeignEvent() if at_root and event.event == SessionRewound.name:
                last_rewind = seq  # damaged: it restores nothing, but it was a rewind
            case _:
                pass
    return History(
        root=root,
        project=project,
        transitions=tuple(transitions),
        turns=turns,
        last_rewind=last_rewind,
        bash_calls=tuple(bash),
        sessions=sessions,
    )


_READ = frozenset({ToolFinished.name, PromptSubmitted.name, SessionRewound.name})


# -- diff --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileDiff:
    """One file the tree changed: from its content before the first change to now."""

    path: str
    state: FileState
    sessions: tuple[str, ...]
    """The sessions that changed it, in the order they first did."""
    lines: tuple[str, ...] = ()
    """The unified diff, a line each."""
    added: int = 0
    removed: int = 0
    problem: str | None = None
    """Why there is no diff (its kept content is missing or damaged)."""

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "path": self.path,
            "state": self.state,
            "sessions": list(self.sessions),
            "added": self.added,
            "removed": self.removed,
            "diff": "\n".join(self.lines),
        }
        if self.problem is not None:
            document["problem"] = self.problem
        return document


@dataclass(frozen=True, slots=True)
class DiffReport:
    """What ``session diff`` shows: each file the tree changed, and the untracked commands."""

    session_id: str
    files: tuple[FileDiff, ...]
    bash_calls: int

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "files": [file.as_json() for file in self.files],
            "bash_calls_untracked": self.bash_calls,
        }


async def session_diff(rt: Runtime, session_id: str) -> DiffReport:
    """What the session and its sub-sessions changed in the project's files, up to now.

    Per file, the unified diff from its content before the tree first
    changed it to its content now. Changes made by ``bash`` are not on
    record (Rule 4): ``bash_calls`` counts them.
    """
    history = await load_history(rt, session_id)
    files = await anyio.to_thread.run_sync(_diffs, history)
    return DiffReport(history.root.session_id, tuple(files), len(history.bash_calls))


def _diffs(history: History) -> list[FileDiff]:
    files = []
    for path, chain in history.by_path().items():
        first = chain[0]
        sessions = tuple(dict.fromkeys(t.session_id for t in chain if not t.by_rewind))
        if _leads_outside(history.project, path):
            files.append(FileDiff(path, "modified", sessions, problem=OUTSIDE))
            continue
        try:
            now = _current(history.project, path)
        except NotComparable as exc:
            files.append(FileDiff(path, "modified", sessions, problem=str(exc)))
            continue
        try:
            before = _kept(first)
        except CorruptSession as damage:
            files.append(FileDiff(path, "modified", sessions, problem=damage.reason))
            continue
        state: FileState
        if before == now:
            state = "unchanged"
        elif before is None:
            state = "created"
        elif now is None:
            state = "removed"
        else:
            state = "modified"
        diff = diff_texts(decode(before), decode(now), path)
        files.append(FileDiff(path, state, sessions, diff.lines, diff.added, diff.removed))
    return files


# -- rewind ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileRewind:
    """One file a rewind restores (or would)."""

    path: str
    action: Literal["restore", "remove", "recreate"]
    target: str | None
    """The digest of the content it gets back (None: it is removed)."""
    sessions: tuple[str, ...]
    conflict: bool = False
    """Its content now is not what the tree last wrote (Rule 2)."""
    problem: str | None = None
    """The content to restore is missing or damaged."""

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "path": self.path,
            "action": self.action,
            "sessions": list(self.sessions),
        }
        if self.conflict:
            document["changed_since"] = True
        if self.problem is not None:
            document["problem"] = self.problem
        return document


@dataclass(frozen=True, slots=True)
class RewindReport:
    """What a rewind restored (or, with ``dry_run``, would restore)."""

    session_id: str
    since_seq: int
    turn: int | None
    files: tuple[FileRewind, ...]
    dry_run: bool
    bash_calls: int
    """Commands run in the rewound span, whose changes are not undone (Rule 4)."""
    forced: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    """Files left as they are because their kept content is missing or damaged (forced)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "dry_run": self.dry_run,
            "turn": self.turn,
            "files": [file.as_json() for file in self.files],
            "forced": list(self.forced),
            "skipped": list(self.skipped),
            "bash_calls_untracked": self.bash_calls,
        }


async def session_rewind(
    rt: Runtime,
    session_id: str,
    *,
    turn: int | None = None,
    undo: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> RewindReport:
    """Restore the files the session tree changed, from turn ``turn`` on (None: all).

    Changes are undone newest first across parents and children; files the
    tree created are removed. ``undo`` rewinds the last rewind instead. A
    file changed by someone since is refused (``RewindRefused``, nothing
    restored) unless ``force``. Raises ``SessionLocked`` if a session of
    the tree is in use, ``UsageError`` for a turn the session does not have.
    """
    history = await load_history(rt, session_id)
    since = _since(history, turn=turn, undo=undo)
    steps = await anyio.to_thread.run_sync(_plan, history, since)
    plan = [file for file, _ in steps]
    sources = {file.path: source for file, source in steps}
    problems = [
        f"{file.path}: {file.problem}" if file.problem else f"{file.path} was changed since"
        for file in plan
        if file.problem or file.conflict
    ]
    bash_calls = history.bash_since(since)
    if problems and not force and not dry_run:
        raise RewindRefused(history.root.session_id, problems)
    skipped = tuple(file.path for file in plan if file.problem)
    doing = tuple(file for file in plan if not file.problem)
    forced = tuple(file.path for file in doing if file.conflict)
    report = RewindReport(
        history.root.session_id,
        since,
        turn,
        tuple(plan) if dry_run else doing,
        dry_run,
        bash_calls,
        forced=forced,
        skipped=skipped,
    )
    if dry_run or not doing:
        return report
    async with rt.hold(history.root.session_id) as held:
        restored: list[FileChange] = []
        try:
            for file in doing:
                before = await anyio.to_thread.run_sync(_keepable, history.project, file.path)
                kept = await held.keep_file(before) if before is not None else None
                content = await anyio.to_thread.run_sync(_kept, sources[file.path])
                await anyio.to_thread.run_sync(_restore, history.project / file.path, content)
                restored.append(FileChange(path=file.path, before=kept, after=file.target))
        finally:
            # What was restored is on record, even if a later file failed (Rule 3).
            if restored:
                with anyio.CancelScope(shield=True):
                    rewound = SessionRewound(
                        since_seq=since, turn=turn, files=tuple(restored), forced=forced
                    )
                    await held.emit(rewound.name, rewound.data())
    return report


def _since(history: History, *, turn: int | None, undo: bool) -> int:
    if undo:
        if turn is not None:
            raise UsageError("--undo rewinds the last rewind; it takes no --turn")
        if history.last_rewind is None:
            raise UsageError(f"session {history.root.session_id} has no rewind to undo")
        return history.last_rewind
    if turn is None:
        return 0
    if turn not in history.turns:
        have = max(history.turns, default=0)
        raise UsageError(
            f"session {history.root.session_id} has no turn {turn} "
            f"(it has {have} turn{'s' if have != 1 else ''})"
        )
    return history.turns[turn]


def _plan(history: History, since: int) -> list[tuple[FileRewind, Transition]]:
    """Each file to restore, newest change first, and the change it is restored to before
    (Rules 1 and 2)."""
    plan: list[tuple[int, FileRewind, Transition]] = []
    for path, chain in history.by_path(since).items():
        first = next(t for t in chain if t.seq >= since)
        target = first.change.before
        sessions = tuple(dict.fromkeys(t.session_id for t in chain if t.seq >= since))
        if _leads_outside(history.project, path):
            file = FileRewind(path, "restore", target, sessions, False, OUTSIDE)
            plan.append((chain[-1].seq, file, first))
            continue
        try:
            now: bytes | None = _current(history.project, path)
            now_digest = content_digest(now) if now is not None else None
        except NotComparable:
            now, now_digest = b"", "not comparable"  # changed since: replaced if forced
        if now_digest == target:
            continue  # as it was already
        conflict = now_digest != chain[-1].change.after
        problem = None
        if target is not None:
            try:
                _kept(first)
            except CorruptSession as damage:
                problem = damage.reason
        action: Literal["restore", "remove", "recreate"] = (
            "remove" if target is None else "recreate" if now is None else "restore"
        )
        file = FileRewind(path, action, target, sessions, conflict, problem)
        plan.append((chain[-1].seq, file, first))
    plan.sort(key=lambda item: item[0], reverse=True)
    return [(file, first) for _, file, first in plan]


def _kept(transition: Transition | None) -> bytes | None:
    """The content a transition's file held before it (None: it did not exist)."""
    if transition is None or transition.change.before is None:
        return None
    return read_kept(transition.location, transition.change.before)


OUTSIDE = "it leads outside the project now (through a link); not followed"


def _leads_outside(project: Path, path: str) -> bool:
    """The project's ``path`` resolves (through a link made since) outside the project:
    neither read nor written, as the file tools refuse it (``confine``)."""
    try:
        confine(Path(os.path.realpath(project)), path)
    except ToolFailed:
        return True
    return False


MAX_COMPARED = 16 * 1024 * 1024
"""The largest file compared with what the session wrote (the write tools write 10 MiB at
most): a larger one has been changed since, and is not read."""


class NotComparable(Exception):
    """What stands at a path the session wrote cannot be read to compare (the message says
    why): a FIFO, a device, a file grown past ``MAX_COMPARED``, one that cannot be opened."""


def _current(project: Path, path: str) -> bytes | None:
    """What the file holds now (None: there is none, or a folder); ``NotComparable``."""
    try:
        fd, info = open_to_read(project / path, follow_links=True)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except NotAFile:
        if (project / path).is_dir():
            return None
        raise NotComparable("not a regular file now") from None
    except OSError as exc:
        raise NotComparable(f"cannot be read now: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        if info.st_size > MAX_COMPARED:
            raise NotComparable(f"{info.st_size:,} bytes now, too large to compare")
        data = file.read(MAX_COMPARED + 1)
    if len(data) > MAX_COMPARED:
        raise NotComparable("it grows while it is read")
    return data


def _keepable(project: Path, path: str) -> bytes | None:
    """What a forced rewind overwrites, to keep for ``--undo``: nothing of a FIFO or of a
    file too large to compare (``--undo`` then removes what the rewind put there)."""
    try:
        return _current(project, path)
    except NotComparable:
        return None


def _restore(path: Path, content: bytes | None) -> None:
    """Put ``content`` back at ``path`` (None: remove the file)."""
    if content is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    replace_file(path, content)


# -- on resume ---------------------------------------------------------------------------


def changed_since(location: SessionLocation, project: Path) -> list[str]:
    """Blocking: the files the session tree changed that hold something else now.

    Someone (a person, another program, a ``bash`` command) changed or
    removed them after the tree last wrote them. Only the event logs of
    sessions that recorded file changes are read.
    """
    nodes = [summarize(node) for node in session_tree(location)]
    writers = [n for n in nodes if n.metadata is not None and n.metadata.files_changed]
    if not writers:
        return []
    sessions = {node.session_id: node for node in nodes}
    logs = dict.fromkeys([nodes[0].location, *(n.location for n in writers)])
    history = read_history(nodes[0], sessions, list(merge_events(logs)), project)
    changed = []
    for path, chain in history.by_path().items():
        try:
            now = _current(project, path)
        except NotComparable:
            changed.append(path)  # a notice, never a reason not to resume
            continue
        if (content_digest(now) if now is not None else None) != chain[-1].change.after:
            changed.append(path)
    return changed
