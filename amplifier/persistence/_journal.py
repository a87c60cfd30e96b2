"""The runtime journal: one append-only file per Runtime, fsynced once per batch.

Why a journal: a session waiting for its acknowledgement has at most one
record in a batch, so with one file per session a batch of N records costs
N fsyncs and nothing amortises. Instead every record of a batch is framed
into the journal, the journal is fsynced once, and only then are the
records appended to the per-session files (``events.jsonl``,
``transcript.jsonl``, ``metadata.json``), which keep exactly the layout of
DESIGN.md. The per-session files are fsynced at a checkpoint (when the
journal grows large, and when a session is closed), after which the journal
is emptied. On a clean shutdown the journal is removed.

Recovery: a journal whose owner died (its flock is free) is replayed by the
next Runtime that starts or opens a session: every framed record whose
``seq`` is beyond the last ``seq`` of its target file is appended, and the
newest metadata is restored, then the journal is deleted. Within one
session file ``seq`` only grows (a Runtime that opens a session continues
above the session's last ``seq``), so "beyond the last seq" is exactly
"missing".

Frame layout (little endian)::

    u32 body length | u32 crc32 of everything after it | u64 seq | u8 kind |
    u16 folder length | folder (utf-8) | payload

A frame whose length runs past the end of the file or whose crc does not
match ends the journal: it was being written when the process died and was
never acknowledged.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
import time
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from ._exceptions import InvalidSessionId, RecoveryWarning, SessionLocked
from ._files import (
    atomic_replace,
    fsync_dir,
    last_seq,
    metadata_seq,
    set_aside_torn_tail,
    write_all,
)
from ._lock import FileLock
from ._paths import SessionLocation, ensure_private_dir, journal_root

MAGIC = b"AMPLIFIER-JOURNAL 1\n"
_HEAD = struct.Struct("<IIQBH")
_SUM = struct.Struct("<QBH")
_SUFFIX = ".journal"


class FrameKind(IntEnum):
    EVENT = 1
    MESSAGE = 2
    METADATA = 3


def encode_frame(seq: int, kind: FrameKind, folder: bytes, payload: bytes) -> bytes:
    """One journal frame; ``folder`` is the session folder relative to the home."""
    checksum = zlib.crc32(
        payload, zlib.crc32(folder, zlib.crc32(_SUM.pack(seq, kind, len(folder))))
    )
    return (
        _HEAD.pack(len(folder) + len(payload), checksum, seq, kind, len(folder)) + folder + payload
    )


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    kind: FrameKind
    folder: str
    payload: bytes


def decode_frames(data: bytes) -> Iterator[Frame]:
    """The intact frames of a journal's contents, stopping at the first damaged one."""
    if not data.startswith(MAGIC):
        return
    offset = len(MAGIC)
    while offset + _HEAD.size <= len(data):
        length, checksum, seq, kind, folder_length = _HEAD.unpack_from(data, offset)
        start = offset + _HEAD.size
        end = start + length
        if end > len(data) or folder_length > length:
            return
        body = data[start:end]
        expected = zlib.crc32(body, zlib.crc32(_SUM.pack(seq, kind, folder_length)))
        if expected != checksum or kind not in FrameKind._value2member_map_:
            return
        yield Frame(seq, FrameKind(kind), body[:folder_length].decode(), body[folder_length:])
        offset = end


class Journal:
    """This Runtime's journal file: created locked, appended, synced, emptied, removed."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self.size = len(MAGIC)

    @classmethod
    def create(cls, home: Path) -> Journal:
        """Create and lock a fresh journal under ``$HOME/journal``.

        The file is locked under a temporary name and only then renamed into
        place, so no recovering process can ever take a live journal for a
        dead one.
        """
        folder = journal_root(home)
        ensure_private_dir(folder, below=home)
        name = (
            f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{secrets.token_hex(4)}"
        )
        temp = folder / f"{name}.creating"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, MAGIC)
            os.fsync(fd)
            path = folder / f"{name}{_SUFFIX}"
            os.rename(temp, path)
            fsync_dir(folder)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return cls(path, fd)

    def append(self, data: bytes) -> None:
        """Append ``data``; on failure the journal is cut back to where it was."""
        before = self.size
        try:
            write_all(self._fd, data)
        except OSError:
            self.truncate(before)
            raise
        self.size += len(data)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self.size = size

    def reset(self) -> None:
        """Empty the journal after a checkpoint made every session file durable."""
        self.truncate(len(MAGIC))
        os.fsync(self._fd)

    def remove(self) -> None:
        """Delete the journal (clean shutdown: every session file is durable)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            fsync_dir(self.path.parent)
        os.close(self._fd)


@dataclass(slots=True)
class RecoveryReport:
    """What replaying dead journals restored."""

    journals: int = 0
    records: int = 0
    sessions: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)


def recover_dead_journals(home: Path) -> RecoveryReport:
    """Replay and delete every journal whose owning process has died.

    Recovering processes take turns through ``journal/.recovery.lock``, so a
    journal is replayed exactly once. Blocking; call from a worker thread.
    """
    report = RecoveryReport()
    folder = journal_root(home)
    if not folder.is_dir():
        return report
    candidates = sorted(p for p in folder.iterdir() if p.suffix in {_SUFFIX, ".creating"})
    if not candidates:
        return report
    guard = os.open(folder / ".recovery.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        for path in candidates:
            _recover_one(home, path, report)
    finally:
        os.close(guard)
    return report


def _recover_one(home: Path, path: Path, report: RecoveryReport) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # replayed and removed by a process that held the guard before us
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its Runtime is alive
        if path.suffix == _SUFFIX:
            data = path.read_bytes()
            frames = list(decode_frames(data))
            if frames:
                _replay(home, frames, report)
                report.journals += 1
        path.unlink()
        fsync_dir(path.parent)
    finally:
        os.close(fd)


def _replay(home: Path, frames: list[Frame], report: RecoveryReport) -> None:
    by_folder: dict[str, list[Frame]] = defaultdict(list)
    for frame in frames:
        by_folder[frame.folder].append(frame)
    for folder, group in by_folder.items():
        try:
            location = SessionLocation.from_relative(home, folder)
        except InvalidSessionId:
            report.skipped.append(folder)
            continue
        ensure_private_dir(location.directory, below=home)
        try:
            lock = FileLock.acquire(location.lock, session_id=location.session_id, label="recovery")
        except SessionLocked:
            report.skipped.append(folder)
            continue
        try:
            restored = _replay_session(location, group)
        finally:
            lock.release()
        if restored:
            report.records += restored
            report.sessions.add(location.session_id)
    if report.records:
        warnings.warn(
            f"restored {report.records} record(s) of {len(report.sessions)} session(s) "
            "from the journal of a runtime that did not shut down",
            RecoveryWarning,
            stacklevel=3,
        )


def _replay_session(location: SessionLocation, frames: list[Frame]) -> int:
    restored = 0
    for kind, target in (
        (FrameKind.EVENT, location.events),
        (FrameKind.MESSAGE, location.transcript),
    ):
        set_aside_torn_tail(target)
        have = last_seq(target)
        missing = [f.payload for f in frames if f.kind is kind and f.seq > have]
        if missing:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, b"".join(missing))
                os.fsync(fd)
            finally:
                os.close(fd)
            restored += len(missing)
    documents = [f for f in frames if f.kind is FrameKind.METADATA]
    if documents:
        newest = max(documents, key=lambda f: f.seq)
        current = metadata_seq(location.metadata)
        if current is None or newest.seq > current:
            atomic_replace(location.metadata, newest.payload, sync=True)
            restored += 1
    fsync_dir(location.directory)
    return restored
