"""Replaying the journals of runtimes that died, into the session folders.

A journal whose lock is free belongs to a Runtime that died (``_ownership``
Rule 1). Its records above the checkpoint go through the same
materialising code as a live Runtime's write-behind (``_materialise``), in
``seq`` order: folders whose ``CREATE`` is there and which never appeared
are built, lines beyond each file's last ``seq`` are appended, the newest
metadata is restored. A file whose records are not all there below its
last ``seq`` (a power cut kept a later append and lost an earlier one) is
repaired (``_repair``): the records are checked against the journal, not
only the last one. Every session the journal touched is written into the
index again; what the dead runtime left half-built or half-deleted in a
project's ``.staging`` is removed; then everything is synced and the
journal deleted.

Recovering processes take turns through ``journal/.recovery.lock``, so a
journal is replayed exactly once. While a journal is replayed its lock is
held, so its sessions still look in use and nobody claims them half-way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._exceptions import InvalidSessionId, RecoveryWarning
from ._files import fsync_dir, metadata_seq, read_file, set_aside_torn_tail
from ._journal import MAGIC, Frame, FrameKind, decode_frames, read_checkpoint
from ._materialise import STAGING, Backlog, Create, Materialiser, sweep_staging
from ._ownership import (
    HANDOVER_SUFFIX,
    JOURNAL_SUFFIX,
    held_by_runtime,
    journal_pid,
    process_alive,
    read_claim,
    runtime_alive,
)
from ._paths import SessionLocation, is_safe_slug, journal_root
from ._repair import Tail, needs_repair, read_tail, repair
from ._upkeep import IndexUpkeep

_CREATING = ".creating"
_OLDER_MAGIC = b"AMPLIFIER-JOURNAL 2\n"
"""Journals of the previous layout (no checkpoint) are still replayed."""


@dataclass(slots=True)
class RecoveryReport:
    """What replaying dead journals restored."""

    journals: int = 0
    records: int = 0
    sessions: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)
    last_seq: int = 0
    """The highest seq found in the journals replayed (their checkpoints included)."""

    def add(self, other: RecoveryReport) -> None:
        self.journals += other.journals
        self.records += other.records
        self.sessions |= other.sessions
        self.skipped += other.skipped
        self.last_seq = max(self.last_seq, other.last_seq)


def recover_dead_journals(home: Path, *, own: str | None = None) -> RecoveryReport:
    """Replay and delete every journal whose owning runtime has died.

    A journal locked at the instant it is looked at is left alone (its
    runtime lives, or someone probed it); ``recover_journal`` insists.
    ``own``: the caller's own journal, never a candidate. Blocking; call
    from a worker thread.
    """
    report = RecoveryReport()
    folder = journal_root(home)
    if not folder.is_dir():
        return report
    names = list(folder.iterdir())
    candidates = sorted(
        p
        for p in names
        if (p.suffix == JOURNAL_SUFFIX and p.stem != own)
        or (p.suffix == _CREATING and not _creator_alive(p))
    )
    if candidates:
        with _taking_turns(folder):
            for path in candidates:
                _recover_one(home, path, report, patient=False)
    _sweep_handovers(names)
    _warn(report)
    return report


def _sweep_handovers(names: list[Path]) -> None:
    """Remove the handover lists whose journal is gone (``_ownership`` Rule 4).

    A runtime lists its handovers only while its journal exists, and removes
    the list before the journal; recovery removes both. So a list without a
    journal was left by a crash between two unlinks: nobody is handing over.
    """
    journals = {p.stem for p in names if p.suffix == JOURNAL_SUFFIX}
    for path in names:
        if path.suffix == HANDOVER_SUFFIX and path.stem not in journals:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def recover_journal(home: Path, runtime: str) -> bool:
    """Replay the journal of ``runtime`` if it died; False if it turns out to be running.

    For a session whose claim names a dead runtime: its journal must be
    replayed before anyone else writes there. Blocking.
    """
    folder = journal_root(home)
    path = folder / f"{runtime}{JOURNAL_SUFFIX}"
    if not path.exists():
        return True
    report = RecoveryReport()
    with _taking_turns(folder):
        alive = not _recover_one(home, path, report, patient=True)
    _warn(report)
    return not alive


@contextlib.contextmanager
def _taking_turns(folder: Path) -> Iterator[None]:
    guard = os.open(
        folder / ".recovery.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield
    finally:
        os.close(guard)


def _creator_alive(path: Path) -> bool:
    """True if the process named in a ``.creating`` journal's name still runs.

    Such a file is created before it is locked; only its creator's death
    makes it a leftover. Names are ``<time>-<pid>-<random>.creating``.
    """
    pid = journal_pid(path.stem)
    return pid is not None and process_alive(pid)


def _recover_one(home: Path, path: Path, report: RecoveryReport, *, patient: bool) -> bool:
    """Replay and remove one journal; False if its runtime holds it (or, impatient, anyone)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True  # replayed and removed by a process that held the guard before us
    try:
        if held_by_runtime(fd, path.stem, fcntl.LOCK_EX, patient=patient):
            return False  # its Runtime is alive
        if path.suffix == JOURNAL_SUFFIX:
            runtime = path.name.removesuffix(JOURNAL_SUFFIX)
            data = path.read_bytes()
            every = _frames(data)
            checkpoint = read_checkpoint(data)
            report.last_seq = max(report.last_seq, checkpoint, *(f.seq for f in every[-1:]))
            frames = [f for f in every if f.seq > checkpoint]
            if frames:
                _replay(home, runtime, frames, report)
                report.journals += 1
            # What it was building or deleting when it died (we hold its lock: it looks alive).
            for slug in _project_slugs(home):
                sweep_staging(home / "projects" / slug / STAGING, dead=runtime)
        path.unlink()
        with contextlib.suppress(FileNotFoundError):  # what it was handing over is its journal's
            (path.parent / f"{path.stem}{HANDOVER_SUFFIX}").unlink()
        fsync_dir(path.parent)  # both names gone together
    finally:
        os.close(fd)
    return True


def _frames(data: bytes) -> list[Frame]:
    if data.startswith(_OLDER_MAGIC):
        # Same batches, no checkpoint: shift them behind a header of the current layout.
        data = MAGIC + bytes(8) + data[len(_OLDER_MAGIC) :]
    return list(decode_frames(data))


@dataclass(slots=True)
class _Target:
    """One session of a replayed journal, as found on disk."""

    location: SessionLocation
    exists: bool
    metadata_seq: int = 0
    tails: dict[FrameKind, Tail] = field(default_factory=dict)
    """Each file's end, as far back as the journal reaches (``_repair``)."""
    lines: dict[FrameKind, dict[int, bytes]] = field(default_factory=dict)
    """Every line of the journal for each file, by seq."""

    def file(self, kind: FrameKind) -> Path:
        return self.location.events if kind is FrameKind.EVENT else self.location.transcript


def _replay(home: Path, runtime: str, frames: list[Frame], report: RecoveryReport) -> None:
    targets: dict[str, _Target | None] = {}
    backlog = Backlog()
    restored: dict[str, int] = {}
    for frame in frames:
        if frame.folder not in targets:
            targets[frame.folder] = _target(home, runtime, frame.folder, report)
        target = targets[frame.folder]
        if target is None:
            continue
        location = target.location
        if frame.kind is FrameKind.CREATE and not target.exists:
            backlog.barrier(Create(location, frame.payload, owner=None), frame.seq)
            target.exists = True
            target.metadata_seq = frame.seq
        elif not target.exists:
            continue  # never created here, and not on disk: deleted since
        elif frame.kind in (FrameKind.METADATA, FrameKind.CREATE):
            if frame.seq > target.metadata_seq:
                backlog.document(str(location.metadata), frame.payload, frame.seq)
                target.metadata_seq = frame.seq
            else:
                continue
        else:
            path = target.file(frame.kind)
            tail = target.tails.get(frame.kind)
            if tail is None:
                set_aside_torn_tail(path)
                tail = target.tails[frame.kind] = read_tail(path, frame.seq)
            target.lines.setdefault(frame.kind, {})[frame.seq] = frame.payload
            if frame.seq <= tail.last:
                continue  # in the file already, or in a hole that ``_repair`` fills
            backlog.line(str(path), frame.payload, frame.seq)
        restored[location.session_id] = restored.get(location.session_id, 0) + 1
    upkeep = IndexUpkeep(home)
    try:
        materialiser = Materialiser(home, upkeep, track_dirty=True, replaying=runtime)
        materialiser.apply(backlog)
        touched = [t for t in targets.values() if t is not None and t.exists]
        for target in touched:
            for kind, tail in target.tails.items():
                lines = target.lines[kind]
                if needs_repair(tail, list(lines)):
                    put_back = repair(target.file(kind), lines, min(lines))
                    session_id = target.location.session_id
                    restored[session_id] = restored.get(session_id, 0) + put_back
        _reindex(upkeep, touched)
        materialiser.sync()
    finally:
        upkeep.close()
    report.records += sum(restored.values())
    report.sessions |= {s for s, n in restored.items() if n}


def _reindex(upkeep: IndexUpkeep, touched: list[_Target]) -> None:
    """Write every session the journal touched into the index again (``_index`` Rule 1).

    Its row and its transcript's lines may have reached the files and not
    the index before the crash: what the index holds is only synced with
    the files the journal's checkpoint has passed.
    """
    documents = []
    for target in touched:
        with contextlib.suppress(OSError):
            documents.append((target.location, read_file(target.location.metadata)))
    upkeep.note(documents)
    messages = {}
    for target in touched:
        lines = target.lines.get(FrameKind.MESSAGE, {})
        if lines:
            messages[str(target.location.transcript)] = [lines[seq] for seq in sorted(lines)]
    upkeep.note_lines(messages)


def _target(home: Path, runtime: str, folder: str, report: RecoveryReport) -> _Target | None:
    try:
        location = SessionLocation.from_relative(home, folder)
    except InvalidSessionId:
        report.skipped.append(folder)
        return None
    if location.leads_outside():
        report.skipped.append(folder)
        return None
    if not location.directory.is_dir():
        return _Target(location, exists=False)
    owner = read_claim(location)
    if owner is not None and owner.runtime != runtime and runtime_alive(home, owner.runtime):
        report.skipped.append(folder)  # someone else owns it now: never write under them
        return None
    return _Target(location, exists=True, metadata_seq=metadata_seq(location.metadata) or 0)


def _project_slugs(home: Path) -> list[str]:
    try:
        return sorted(p for p in os.listdir(home / "projects") if is_safe_slug(p))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _warn(report: RecoveryReport) -> None:
    if report.records:
        warnings.warn(
            f"restored {report.records} record(s) of {len(report.sessions)} session(s) "
            "from the journal of a runtime that did not shut down",
            RecoveryWarning,
            stacklevel=3,
        )
