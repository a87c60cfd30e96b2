"""The runtime journal: one file per Runtime, fsynced once per batch.

Why a journal: a session waiting for its acknowledgement has at most one
record in a batch, so with one file per session a batch of N records costs
N fsyncs and nothing amortises. Instead every record of a batch goes into
the journal, the journal is fsynced once, and the batch is acknowledged.
The per-session files (``events.jsonl``, ``transcript.jsonl``,
``metadata.json``, exactly as DESIGN.md lays them out) are written behind
it in larger chunks, and fsynced at a checkpoint (when the journal grows
large) and when a session is closed; then the journal is emptied. On a
clean shutdown the journal is removed.

Why pre-zeroed: overwriting blocks that already exist lets ``fdatasync``
skip the file-size and extent updates an append needs; on ext4 that makes
each batch's sync about twice as cheap. The file grows in zeroed chunks.

Recovery: a journal whose owner died (its flock is free) is replayed by the
next Runtime that starts or opens a session: every record whose ``seq`` is
beyond the last ``seq`` of its target file is appended, and the newest
metadata is restored, then the journal is deleted. Within one session file
``seq`` only grows (a Runtime that opens a session continues above the
session's last ``seq``), so "beyond the last seq" is exactly "missing".

Layout (little endian): ``MAGIC``, then batches::

    batch:  u32 body length | u32 crc32 of body | u64 first seq | body
    body:   entries, each  u64 seq | u8 kind | u16 folder length |
                           u32 payload length | folder (utf-8) | payload

A batch whose length runs past the end, whose crc does not match, or whose
first seq is not above the previous batch's last one ends the journal:
it is zero fill, a batch being written when the process died (never
acknowledged), or an older batch left beyond the end after a reset.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sqlite3
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
from ._index import connect as connect_index
from ._index import upsert as upsert_index
from ._lock import FileLock
from ._paths import SessionLocation, ensure_private_dir, journal_root

MAGIC = b"AMPLIFIER-JOURNAL 2\n"
BATCH = struct.Struct("<IIQ")
ENTRY = struct.Struct("<QBHI")
ZERO_CHUNK = 1024 * 1024
"""The journal grows by this many zeroed bytes at a time."""
_SUFFIX = ".journal"
_ZEROS = bytes(ZERO_CHUNK)


class FrameKind(IntEnum):
    EVENT = 1
    MESSAGE = 2
    METADATA = 3


def encode_entry(seq: int, kind: FrameKind, folder: bytes, payload: bytes) -> bytes:
    """One record for a batch body; ``folder`` is the session folder relative to the home."""
    return ENTRY.pack(seq, kind, len(folder), len(payload)) + folder + payload


def encode_batch(first_seq: int, body: bytes) -> bytes:
    return BATCH.pack(len(body), zlib.crc32(body), first_seq) + body


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    kind: FrameKind
    folder: str
    payload: bytes


def decode_frames(data: bytes) -> Iterator[Frame]:
    """The records of every intact batch, stopping where the journal ends."""
    if not data.startswith(MAGIC):
        return
    offset = len(MAGIC)
    last = 0
    while offset + BATCH.size <= len(data):
        length, checksum, first = BATCH.unpack_from(data, offset)
        start = offset + BATCH.size
        end = start + length
        if length == 0 or end > len(data) or first <= last:
            return
        body = data[start:end]
        if zlib.crc32(body) != checksum:
            return
        try:
            entries = list(_entries(body))
        except (ValueError, struct.error):
            return  # a crc collision on garbage; nothing after it can be trusted
        if not entries:
            return
        yield from entries
        last = entries[-1].seq
        offset = end


def _entries(body: bytes) -> Iterator[Frame]:
    position = 0
    while position < len(body):
        seq, kind, folder_length, payload_length = ENTRY.unpack_from(body, position)
        position += ENTRY.size
        folder = body[position : position + folder_length].decode()
        position += folder_length
        payload = body[position : position + payload_length]
        position += payload_length
        yield Frame(seq, FrameKind(kind), folder, payload)


class Journal:
    """This Runtime's journal file: created locked, written, synced, emptied, removed."""

    def __init__(self, path: Path, fd: int, allocated: int) -> None:
        self.path = path
        self._fd = fd
        self.size = len(MAGIC)
        """Where the next batch goes (the journal's logical end)."""
        self._allocated = allocated

    @classmethod
    def create(cls, home: Path) -> Journal:
        """Create, zero-fill and lock a fresh journal under ``$HOME/journal``.

        The file is locked under a temporary name and only then renamed into
        place, so no recovering process can ever take a live journal for a
        dead one.
        """
        folder = journal_root(home)
        ensure_private_dir(folder, below=home)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}"
        temp = folder / f"{name}.creating"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            # Recovery leaves the ``.creating`` files of live processes alone,
            # so nothing else locks or removes this one.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            write_all(fd, MAGIC + _ZEROS)
            os.fsync(fd)
            path = folder / f"{name}{_SUFFIX}"
            os.rename(temp, path)
            fsync_dir(folder)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return cls(path, fd, len(MAGIC) + ZERO_CHUNK)

    def append(self, batch: bytes) -> None:
        """Write ``batch`` at the end and make it durable (one ``fdatasync``).

        On failure nothing of it counts: the next batch overwrites it, and a
        replay stops before it (its crc or seq cannot match).
        """
        end = self.size + len(batch)
        if end > self._allocated:
            grow = max(ZERO_CHUNK, end - self._allocated)
            os.pwrite(self._fd, bytes(grow), self._allocated)
            self._allocated += grow
        view = memoryview(batch)
        position = self.size
        while view:
            written = os.pwrite(self._fd, view, position)
            view = view[written:]
            position += written
        os.fdatasync(self._fd)
        self.size = end

    def reset(self) -> None:
        """Empty the journal after a checkpoint made every session file durable.

        No write is needed: the batches left beyond the new end are either
        overwritten or stop a replay (their seq is not above the new ones),
        and replaying one is harmless anyway, since its records are already
        in the files.
        """
        self.size = len(MAGIC)

    def remove(self) -> None:
        """Delete the journal (clean shutdown: every session file is durable)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            fsync_dir(self.path.parent)
        os.close(self._fd)

    def abandon(self) -> None:
        """Close without removing: the session files are not all durable, a replay must run."""
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
    candidates = sorted(
        p
        for p in folder.iterdir()
        if p.suffix == _SUFFIX or (p.suffix == ".creating" and not _creator_alive(p))
    )
    if not candidates:
        return report
    guard = os.open(
        folder / ".recovery.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        for path in candidates:
            _recover_one(home, path, report)
    finally:
        os.close(guard)
    return report


def _creator_alive(path: Path) -> bool:
    """True if the process named in a ``.creating`` journal's name still runs.

    Such a file is created before it is locked; only its creator's death
    makes it a leftover. Names are ``<time>-<pid>-<random>.creating``.
    """
    try:
        pid = int(path.stem.split("-")[1])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _recover_one(home: Path, path: Path, report: RecoveryReport) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
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
    restored_metadata: list[tuple[SessionLocation, bytes]] = []
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
            restored = _replay_session(location, group, restored_metadata)
        finally:
            lock.release()
        if restored:
            report.records += restored
            report.sessions.add(location.session_id)
    if restored_metadata:
        with contextlib.suppress(sqlite3.Error):  # a cache: reindex mends it
            db = connect_index(home)
            try:
                upsert_index(db, restored_metadata)
            finally:
                db.close()
    if report.records:
        warnings.warn(
            f"restored {report.records} record(s) of {len(report.sessions)} session(s) "
            "from the journal of a runtime that did not shut down",
            RecoveryWarning,
            stacklevel=3,
        )


def _replay_session(
    location: SessionLocation,
    frames: list[Frame],
    restored_metadata: list[tuple[SessionLocation, bytes]],
) -> int:
    restored = 0
    for kind, target in (
        (FrameKind.EVENT, location.events),
        (FrameKind.MESSAGE, location.transcript),
    ):
        set_aside_torn_tail(target)
        have = last_seq(target)
        missing = [f.payload for f in frames if f.kind is kind and f.seq > have]
        if missing:
            fd = os.open(
                target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
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
            restored_metadata.append((location, newest.payload))
            restored += 1
    fsync_dir(location.directory)
    return restored
