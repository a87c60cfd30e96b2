"""The runtime journal: one file per Runtime, fsynced once per batch, and its lock.

Why a journal: a session waiting for its acknowledgement has at most one
record in a batch, so with one file per session a batch of N records costs
N fsyncs and nothing amortises. Instead every record of a batch goes into
the journal, the journal is fsynced once, and the batch is acknowledged.
Creating a session is a record too (its first metadata, ``CREATE``): the
session exists, durably, once that record is in the journal. The session
folders and files (``events.jsonl``, ``transcript.jsonl``, ``metadata.json``,
exactly as DESIGN.md lays them out) are built and written behind it
(``_materialise``), and synced in bulk; then the journal's checkpoint says
how far the files are durable, and the journal is emptied when it grows.
On a clean shutdown it is removed.

The journal is also the Runtime's lock (``_ownership``, Rule 1): its file
is ``flock``ed for as long as the Runtime lives, in every durability mode
(with ``flush`` and ``none`` it holds no batches, only the lock).

Why pre-zeroed: overwriting blocks that already exist lets ``fdatasync``
skip the file-size and extent updates an append needs; on ext4 that makes
each batch's sync about twice as cheap. The file grows in zeroed chunks:
the first is small (a ``run`` of one turn writes a few KiB, and a zeroed
MiB costs a new journal about 2 ms more to sync), then the file doubles,
by at most ``ZERO_CHUNK`` at a time. It grows ahead of the batches: once
less than half a chunk of zeroes is left (or less than two batches like
the last), the actor zeroes and syncs the next chunk after it has
answered a batch (``make_room``), while the sessions it woke prepare
their next records; a batch grows the file itself only if it outruns
that. Growing costs a sync that changes the file's size (an ext4 journal
commit of everything else pending): 0.3 to 5 ms each, seven times in a
run of 10,000 events, all of which used to wait on the acknowledgements
of whichever batch crossed the end.

Recovery: a journal whose owner died (its flock is free) is replayed by the
next Runtime that starts or opens a session: every record above the
checkpoint and beyond the last ``seq`` of its target file is written (a
folder whose ``CREATE`` is there and which never appeared is built), the
newest metadata is restored, then the journal is deleted. Within one
session file ``seq`` only grows (a Runtime that opens a session continues
above the session's last ``seq``), so after a process crash "beyond the
last seq" is exactly "missing"; after a power cut a file may also have a
hole below it, which recovery finds and fills (``_repair``).

Layout (little endian): ``MAGIC``, the checkpoint, then batches::

    checkpoint: u64 seq    records up to this seq are durable in the session files
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
import errno
import fcntl
import os
import secrets
import struct
import time
import zlib
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

from ._files import close_kept, fsync_dir, kept_from_forks, no_fork_meanwhile, write_all
from ._ownership import JOURNAL_SUFFIX
from ._paths import ensure_private_dir, journal_root

MAGIC = b"AMPLIFIER-JOURNAL 3\n"
CHECKPOINT = struct.Struct("<Q")
HEADER_SIZE = len(MAGIC) + CHECKPOINT.size
BATCH = struct.Struct("<IIQ")
ENTRY = struct.Struct("<QBHI")
ZERO_CHUNK = 1024 * 1024
"""The journal grows by at most this many zeroed bytes at a time."""
FIRST_CHUNK = 64 * 1024
"""The zeroed bytes a new journal starts with."""
_ZEROS = bytes(FIRST_CHUNK)
_RECOVERY_ATTEMPTS = 5
_RECOVERY_PAUSE = 0.01
"""A liveness probe (``_ownership.runtime_alive``) holds a journal's lock for microseconds."""


class FrameKind(IntEnum):
    EVENT = 1
    MESSAGE = 2
    METADATA = 3
    CREATE = 4
    """A new session's first metadata: its folder is built from it."""


def encode_entry(seq: int, kind: FrameKind, folder: bytes, payload: bytes) -> bytes:
    """One record for a batch body; ``folder`` is the session folder relative to the home."""
    return ENTRY.pack(seq, kind, len(folder), len(payload)) + folder + payload


def encode_batch(first_seq: int, body: bytes) -> bytes:
    return BATCH.pack(len(body), zlib.crc32(body), first_seq) + body


def header(checkpoint: int = 0) -> bytes:
    """The start of a journal file: the magic and the checkpoint."""
    return MAGIC + CHECKPOINT.pack(checkpoint)


class Frame(NamedTuple):
    """One record of a journal batch (a named tuple: cheaper to define at import than a
    frozen dataclass, which every process that writes pays)."""

    seq: int
    kind: FrameKind
    folder: str
    payload: bytes


def read_checkpoint(data: bytes) -> int:
    """The journal's checkpoint (0 if the file is not a journal)."""
    if not data.startswith(MAGIC) or len(data) < HEADER_SIZE:
        return 0
    seq: int = CHECKPOINT.unpack_from(data, len(MAGIC))[0]
    return seq


def decode_frames(data: bytes) -> Iterator[Frame]:
    """The records of every intact batch, stopping where the journal ends."""
    if not data.startswith(MAGIC):
        return
    offset = HEADER_SIZE
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
    """This Runtime's journal file: created locked, written, synced, emptied, removed.

    Its lock is the Runtime's (``_ownership`` Rule 1); ``name`` is what
    session claims call the Runtime.
    """

    def __init__(self, path: Path, fd: int, allocated: int) -> None:
        self.path = path
        self.name = path.name.removesuffix(JOURNAL_SUFFIX)
        self._fd = fd
        self.size = HEADER_SIZE
        """Where the next batch goes (the journal's logical end)."""
        self.checkpoint = 0
        """Records up to this seq are durable in the session files."""
        self.last_seq = 0
        """The last seq of the last batch written."""
        self._allocated = allocated
        self._last_batch = 0
        self._headless = False
        """Created empty (a full disk): its header is written before anything else."""

    def fileno(self) -> int:
        """The descriptor holding the lock (a writer process inherits it: ``_writer``)."""
        return self._fd

    @classmethod
    def create(cls, home: Path, *, preallocate: bool = True) -> Journal:
        """Create and lock a fresh journal under ``$HOME/journal`` (zero-filled if ``preallocate``).

        The file is locked under a temporary name and only then renamed into
        place, so no recovering process can ever take a live journal for a
        dead one.
        """
        folder = journal_root(home)
        ensure_private_dir(folder, below=home)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}"
        temp = folder / f"{name}.creating"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        with no_fork_meanwhile():
            fd = os.open(temp, flags, 0o600)
            kept_from_forks(fd)  # the lock lives as long as this process, not its forks
        try:
            # Recovery leaves the ``.creating`` files of live processes alone,
            # so nothing else locks or removes this one.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            headless = False
            try:
                write_all(fd, header() + (_ZEROS if preallocate else b""))
            except OSError as exc:
                # Only a lock is needed yet (deleting sessions to free a full disk): an
                # empty journal is one, and replays as one with no records.
                if preallocate or exc.errno != errno.ENOSPC:
                    raise
                os.ftruncate(fd, 0)
                headless = True
            path = folder / f"{name}{JOURNAL_SUFFIX}"
            if preallocate:  # a journal for records: durable before any record trusts it
                os.fsync(fd)
                os.rename(temp, path)
                fsync_dir(folder)
            else:  # only the runtime's lock: a crash ends the runtime anyway
                os.rename(temp, path)
        except BaseException:
            close_kept(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        journal = cls(path, fd, HEADER_SIZE + (FIRST_CHUNK if preallocate else 0))
        journal._headless = headless
        return journal

    def _head(self) -> None:
        """Write the header of a journal created empty, before anything after it."""
        if self._headless:
            _pwrite_all(self._fd, header(self.checkpoint), 0)
            self._headless = False

    def append(self, batch: bytes, last_seq: int) -> None:
        """Write ``batch`` at the end and make it durable (one ``fdatasync``).

        On failure nothing of it counts: the next batch overwrites it, and a
        replay stops before it (its crc or seq cannot match).
        """
        self._head()
        end = self.size + len(batch)
        if end > self._allocated:
            self._grow(end - self._allocated)
        _pwrite_all(self._fd, batch, self.size)
        os.fdatasync(self._fd)
        self.size = end
        self.last_seq = last_seq
        self._last_batch = len(batch)

    def short_of_room(self) -> bool:
        """Less than half a chunk of zeroes is left past the end, or less than two batches
        like the last: time to ``make_room``."""
        return self._allocated - self.size < max(self._step() // 2, 2 * self._last_batch)

    def make_room(self) -> None:
        """Zero the next chunk past the end and make it durable, so that batches to come
        overwrite zeroes (``append`` syncs no size change). Never beside an ``append``."""
        self._grow(0)
        os.fdatasync(self._fd)

    def _step(self) -> int:
        return min(ZERO_CHUNK, max(FIRST_CHUNK, self._allocated))

    def _grow(self, needed: int) -> None:
        self._head()
        grow = max(self._step(), needed)
        os.pwrite(self._fd, bytes(grow), self._allocated)
        self._allocated += grow

    def mark_checkpoint(self, seq: int) -> None:
        """Record that every record up to ``seq`` is durable in the session files.

        A replay skips those records from then on, so a session closed and
        released before ``seq`` is never written to again by this journal.
        """
        if seq <= self.checkpoint:
            return
        self._head()
        os.pwrite(self._fd, CHECKPOINT.pack(seq), len(MAGIC))
        os.fdatasync(self._fd)
        self.checkpoint = seq

    def reset(self) -> None:
        """Empty the journal once its checkpoint covers every batch in it.

        No write is needed: the batches left beyond the new end are either
        overwritten or stop a replay (their seq is not above the new ones),
        and the checkpoint makes a replay skip them anyway.
        """
        if self.checkpoint >= self.last_seq:
            self.size = HEADER_SIZE

    def remove(self, *, sync: bool = True) -> None:
        """Delete the journal (clean shutdown: every session file is durable)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if sync:
            with contextlib.suppress(OSError):
                fsync_dir(self.path.parent)
        close_kept(self._fd)

    def abandon(self) -> None:
        """Close without removing: the session files are not all durable, a replay must run."""
        close_kept(self._fd)


def _pwrite_all(fd: int, data: bytes, position: int) -> None:
    """Write all of ``data`` at ``position`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written
