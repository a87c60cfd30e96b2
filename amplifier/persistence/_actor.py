"""The persistence actor: the only writer of session files in a Runtime.

Rule 1: every write to a session's files goes through this actor's mailbox;
        nothing else in the process opens them for writing.
Rule 2: ``seq`` is stamped here, in mailbox order, so it is strictly
        increasing across every session of the Runtime.
Rule 3: a request is acknowledged only after its whole batch is durable
        under the configured durability. A session waits for the
        acknowledgement before it goes on, so anything that happens because
        of a record (a child's ``session:start`` after its parent's
        ``delegate:start``; a parent's ``delegate:end`` after its child's
        ``session:end``) is committed in a later batch: causality is the
        order of batches, and the journal (or, without one, the files)
        holds batches in that order.
Rule 4: a batch succeeds or fails as a whole. If the disk refuses a write,
        every request of the batch fails with ``WriteFailed`` and nothing
        of it counts: files are cut back to their length before the batch.

Group commit: the actor takes one request, then every request already
waiting, and commits them together. What "committed" means depends on the
durability:

    fsync   the batch goes into the journal with one fdatasync (in the worker
            thread); the session files are written behind it, coalesced,
            within ``WRITE_BEHIND_DELAY`` (see ``_journal`` for why)
    flush   the batch is written to the session files (worker thread)
    none    the batch is buffered and written behind, like fsync, without
            the journal

A batch that creates, opens or closes a session, or asks for a flush,
brings every session file fully up to date before it is answered, so
readers and other processes see everything once such a request returns.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import shutil
import sqlite3
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, assert_never

import anyio
import orjson
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field

from amplifier._errors import UsageError, unwrap_single_error

from ._exceptions import (
    CorruptSession,
    PersistenceError,
    SessionLocked,
    SessionNotFound,
    StoreClosed,
    StoreWarning,
    WriteFailed,
)
from ._files import (
    atomic_replace,
    fsync_dir,
    fsync_path,
    last_seq,
    metadata_seq,
    set_aside_torn_tail,
    sweep_temp_files,
    write_all,
    write_new_file,
)
from ._index import connect as connect_index
from ._index import is_damage as is_index_damage
from ._index import open_built as open_built_index
from ._index import rebuild as rebuild_index
from ._index import recreate as recreate_index
from ._index import remove as remove_from_index
from ._index import upsert as upsert_index
from ._journal import (
    FrameKind,
    Journal,
    RecoveryReport,
    encode_batch,
    encode_entry,
    recover_dead_journals,
)
from ._lock import FileLock, is_locked
from ._paths import LOCK, METADATA, SessionLocation, ensure_private_dir, refuse_links_out
from ._reader import read_metadata
from ._records import SCHEMA_VERSION, Durability, SessionMetadata, format_ts, utc_now
from ._search import index_transcript_lines

Clock = Callable[[], datetime]
"""Wall-clock time for record stamps; tests pass a fake one."""

MAILBOX_SIZE = 4096
OPEN_FILE_LIMIT = 256
"""Transcript/event files kept open at once; older ones are closed and reopened on demand."""
CHECKPOINT_BYTES = 16 * 1024 * 1024
"""Journal size that triggers a checkpoint (fsync the session files, empty the journal)."""
WRITE_BEHIND_BYTES = 1024 * 1024
WRITE_BEHIND_DELAY = 0.05
"""Seconds (at most) between a record's acknowledgement and its line in the session file."""
STAGING = ".staging"
"""Beside ``sessions/``: where a new session's folder is built before it is renamed in."""
STAGING_GRACE = 60.0
"""Seconds before an unlocked half-built folder counts as left behind by a crash."""
SHUTDOWN_GRACE = 10.0
"""How long closing the store waits for outstanding writers before it stops the actor."""

_LINE = orjson.OPT_APPEND_NEWLINE
_DOCUMENT = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where an acknowledged record landed in the Runtime's total order."""

    seq: int
    ts: str


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """What opening an existing session's files found."""

    last_seq: int
    torn: tuple[Path, ...] = ()
    """Side files that received a torn last line."""


CommitListener = Callable[[Sequence[dict[str, Any]]], None]
"""Called on the event loop after each commit with the committed event records, in seq order.

Must not block; the runtime uses it to feed in-process subscribers.
"""


class _Reply:
    """The slot a request's answer is put in; ``_Acks`` tells when to look."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


class _Acks:
    """Tells waiting senders that a batch was answered: one event per commit.

    One event per request would cost more than the rest of a record's path
    together; instead every sender waits on the current commit's event and
    looks at its own ``_Reply`` when it fires. A request answered by this
    commit is done; one that arrived too late for it waits for the next.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    async def wait(self, reply: _Reply) -> Any:
        """Wait for ``reply``'s answer. Checkpoint; cancelling does not undo the request."""
        while not reply.done:
            await self._event.wait()
        if reply.error is not None:
            raise reply.error
        return reply.value

    def announce(self) -> None:
        """Wake every waiter; called after a commit filled its replies."""
        event, self._event = self._event, anyio.Event()
        event.set()


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    reply: _Reply


class CreateSession(_Request):
    """Make a new session's folder, lock it and write its first metadata (identity first)."""

    kind: Literal["create"] = "create"
    location: SessionLocation
    metadata: dict[str, Any]


class OpenSession(_Request):
    """Lock an existing session, set torn tails aside, report its last seq."""

    kind: Literal["open"] = "open"
    location: SessionLocation


class AppendEvent(_Request):
    """Append one event to a session's ``events.jsonl`` (stamped here)."""

    kind: Literal["event"] = "event"
    handle: int
    session_id: str
    parent_id: str | None
    event: str
    data: dict[str, Any]


class AppendMessage(_Request):
    """Append one message to a session's ``transcript.jsonl`` (stamped here)."""

    kind: Literal["message"] = "message"
    handle: int
    message: dict[str, Any]


class WriteMetadata(_Request):
    """Replace a session's ``metadata.json`` (atomically)."""

    kind: Literal["metadata"] = "metadata"
    handle: int
    metadata: dict[str, Any]


class CloseSession(_Request):
    """Make the session's files durable, close them and release its lock."""

    kind: Literal["close"] = "close"
    handle: int


class Flush(_Request):
    """Barrier: answered once everything sent before it is in the session files."""

    kind: Literal["flush"] = "flush"


class Reindex(_Request):
    """Rebuild the session index from every session's metadata file."""

    kind: Literal["reindex"] = "reindex"


class DeleteSessions(_Request):
    """Remove sessions' folders: all of them, or none if any is in use."""

    kind: Literal["delete"] = "delete"
    locations: tuple[SessionLocation, ...]
    untouched_since: datetime | None = None


Request = Annotated[
    CreateSession
    | OpenSession
    | AppendEvent
    | AppendMessage
    | WriteMetadata
    | CloseSession
    | Flush
    | DeleteSessions
    | Reindex,
    Field(discriminator="kind"),
]


@dataclass(slots=True)
class _Held:
    """A session whose files this actor owns (created or opened, not yet closed)."""

    location: SessionLocation
    lock: FileLock
    events: Path = field(init=False)
    transcript: Path = field(init=False)
    folder: bytes = field(init=False)

    def __post_init__(self) -> None:
        # Computed once: building paths per record would dominate the hot path.
        self.events = self.location.events
        self.transcript = self.location.transcript
        self.folder = self.location.relative.encode()


@dataclass(slots=True)
class _Pending:
    """Lines and metadata documents not yet in the session files."""

    lines: dict[Path, list[bytes]] = field(default_factory=dict)
    newest: dict[Path, int] = field(default_factory=dict)
    """The highest seq among each file's pending lines."""
    documents: dict[Path, bytes] = field(default_factory=dict)
    size: int = 0

    def append(self, path: Path, line: bytes, seq: int) -> None:
        self.lines.setdefault(path, []).append(line)
        self.newest[path] = seq
        self.size += len(line)

    def add(self, other: _Pending) -> None:
        for path, lines in other.lines.items():
            self.lines.setdefault(path, []).extend(lines)
            self.newest[path] = max(self.newest.get(path, 0), other.newest[path])
        self.documents.update(other.documents)
        self.size += other.size

    def __bool__(self) -> bool:
        return bool(self.lines or self.documents)


@dataclass(slots=True)
class _Batch:
    """One group commit: what to write where, and whom to answer."""

    requests: list[Any]
    records: _Pending = field(default_factory=_Pending)
    """Appended lines and metadata updates of sessions already open."""
    entries: list[bytes] = field(default_factory=list)
    """The records as journal entries (durability fsync), in seq order."""
    first_seq: int = 0
    created: dict[int, tuple[bytes, Stamp]] = field(default_factory=dict)
    """New sessions' first metadata, by request index."""
    events: list[dict[str, Any]] = field(default_factory=list)
    results: dict[int, Any] = field(default_factory=dict)
    """Answers by request index; an exception value fails that request."""
    controls: bool = False
    """The batch creates, opens or closes a session or asks for a flush."""
    behind_failed: WriteFailed | None = None
    """What stopped the files being brought up to date before the controls ran."""


_CONTROLS = (CreateSession, OpenSession, CloseSession, Flush, DeleteSessions, Reindex)


class _OpenFiles:
    """A bounded cache of append-mode descriptors, with each file's length for rollback."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._fds: OrderedDict[Path, tuple[int, int]] = OrderedDict()

    def write(self, path: Path, data: bytes) -> None:
        """Append ``data``; if the write fails part-way, cut the file back first."""
        entry = self._fds.get(path)
        if entry is None:
            fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
            entry = (fd, os.fstat(fd).st_size)
            self._fds[path] = entry
            if len(self._fds) > self._limit:
                _, (old_fd, _) = self._fds.popitem(last=False)
                os.close(old_fd)
        else:
            self._fds.move_to_end(path)
        fd, size = entry
        try:
            write_all(fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        self._fds[path] = (fd, size + len(data))

    def length(self, path: Path) -> int:
        """The file's length as this cache knows it (opening it if needed)."""
        entry = self._fds.get(path)
        if entry is not None:
            return entry[1]
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    def truncate(self, path: Path, length: int) -> None:
        """Cut a file back to ``length`` (undoing appends of a failed batch)."""
        entry = self._fds.get(path)
        if entry is not None:
            os.ftruncate(entry[0], length)
            self._fds[path] = (entry[0], length)
        else:
            os.truncate(path, length)

    def close(self, path: Path) -> None:
        entry = self._fds.pop(path, None)
        if entry is not None:
            os.close(entry[0])

    def close_all(self) -> None:
        while self._fds:
            _, (fd, _) = self._fds.popitem()
            with contextlib.suppress(OSError):
                os.close(fd)


class PersistenceActor:
    """Owns the journal, the open session files and the session locks of one Runtime.

    Not used directly: ``open_store`` starts it and hands out a ``Store``.
    """

    def __init__(
        self,
        home: Path,
        durability: Durability,
        clock: Clock,
        receive: MemoryObjectReceiveStream[Any],
    ) -> None:
        self.home = home
        self.durability: Durability = durability
        self._clock = clock
        self._receive = receive
        self._seq = 0
        self._handles = 0
        self._held: dict[int, _Held] = {}
        self._files = _OpenFiles(OPEN_FILE_LIMIT)
        self._journal: Journal | None = None
        self._behind = _Pending()
        """Acknowledged, not yet in the session files (durability fsync or none)."""
        self._behind_since = math.inf
        self._writing = False
        """A write-behind task is running (at most one at a time)."""
        self._files_lock = anyio.Lock()
        """Held around every worker-thread call that touches the session files."""
        self._tasks: TaskGroup | None = None
        self._dirty: set[Path] = set()
        """Written since the last checkpoint, not yet fsynced (durability fsync)."""
        self._dirty_dirs: set[Path] = set()
        self._broken: BaseException | None = None
        self._behind_failing = False
        """Writing behind has failed since it last succeeded (warned once)."""
        self._index: sqlite3.Connection | None = None
        self.listeners: list[CommitListener] = []
        self.acks = _Acks()
        self.recovered = RecoveryReport()
        self.scope = anyio.CancelScope(shield=True)
        self.stopped = anyio.Event()

    # -- lifecycle ------------------------------------------------------------

    def prepare(self) -> None:
        """Blocking start-up: replay dead journals, then create our own."""
        ensure_private_dir(self.home / "projects", below=self.home)
        self.recovered = recover_dead_journals(self.home)
        try:
            self._index = open_built_index(self.home)
        except sqlite3.Error:
            # A cache: without it listings scan the folders; reindex builds it later.
            self._index = None
        if self.durability == "fsync":
            self._journal = Journal.create(self.home)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox until every sender is closed, then make everything durable.

        Runs shielded: when the Runtime is cancelled, sessions still send
        their final records, and this actor must be there to write them.
        ``open_store`` cancels ``scope`` itself if writers never finish.
        """
        try:
            with self.scope:
                async with anyio.create_task_group() as tasks:
                    self._tasks = tasks
                    task_status.started()
                    async with self._receive:
                        await self._serve()
                    # Stop retrying a failed write-behind; _shutdown writes the rest.
                    tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                left = await anyio.to_thread.run_sync(self._shutdown)
                if left:
                    warnings.warn(left, StoreWarning, stacklevel=1)
            self.stopped.set()

    async def _serve(self) -> None:
        receive = self._receive
        while True:
            try:
                first = await receive.receive()
            except anyio.EndOfStream:
                return
            requests = [first]
            while True:
                try:
                    requests.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await self._commit(requests)

    def _shutdown(self) -> str | None:
        """Blocking: write what is behind, make it durable, let go of every file.

        Returns what the user must be told if not everything could be written.
        """
        left = None
        try:
            self._write_files(self._behind)
            if self._journal is not None:
                self._checkpoint()
                self._journal.remove()
                self._journal = None
        except OSError as exc:
            # The journal still holds what the files lack; the next Runtime replays it.
            if self._journal is not None:
                left = (
                    f"{_write_failed(exc)}; what is missing stays in {self._journal.path} and "
                    "is written to the session files by the next runtime that starts"
                )
                self._journal.abandon()
        finally:
            self._files.close_all()
            for held in self._held.values():
                held.lock.release()
            self._held.clear()
            if self._index is not None:
                self._index.close()
                self._index = None
        return left

    # -- one group commit -------------------------------------------------------

    async def _commit(self, requests: list[Any]) -> None:
        batch = self._stamp(requests)
        if batch.records:
            failure = self._broken
            if failure is None:
                try:
                    await self._commit_records(batch)
                except OSError as exc:
                    failure = _write_failed(exc)
            if failure is not None:
                for index, request in enumerate(requests):
                    if not isinstance(request, _CONTROLS):
                        batch.results[index] = failure
                batch.events.clear()
        if batch.controls:
            async with self._files_lock:
                await anyio.to_thread.run_sync(self._run_controls, batch)
            if batch.behind_failed is not None and self._journal is not None:
                self._warn_behind(batch.behind_failed)
            if not self._behind:
                self._behind_since = math.inf
        self._answer(batch)
        if self._journal is not None and self._journal.size > CHECKPOINT_BYTES:
            async with self._files_lock:
                with contextlib.suppress(OSError):  # the files are retried; so is this
                    await anyio.to_thread.run_sync(self._checkpoint_all)

    async def _commit_records(self, batch: _Batch) -> None:
        """Make the batch's records durable as the durability says (Rule 4: all or none)."""
        records = batch.records
        if self.durability == "flush":
            async with self._files_lock:
                await anyio.to_thread.run_sync(self._write_now, records)
            return
        if self._journal is not None and batch.entries:
            body = b"".join(batch.entries)
            await anyio.to_thread.run_sync(
                self._journal.append, encode_batch(batch.first_seq, body)
            )
        self._defer(records)

    def _stamp(self, requests: list[Any]) -> _Batch:
        """Give every record its seq and its line; nothing is written yet."""
        batch = _Batch(requests)
        ts = format_ts(self._clock())
        journaling = self._journal is not None
        records = batch.records
        for index, request in enumerate(requests):
            match request:
                case AppendEvent():
                    held = self._held.get(request.handle)
                    if held is None:
                        batch.results[index] = _not_open()
                        continue
                    record = {
                        "version": SCHEMA_VERSION,
                        "seq": self._seq + 1,
                        "ts": ts,
                        "session_id": request.session_id,
                        "parent_id": request.parent_id,
                        "event": request.event,
                        "data": request.data,
                    }
                    line = _serialise(record, _LINE)
                    if isinstance(line, UsageError):
                        batch.results[index] = line
                        continue
                    self._seq += 1
                    records.append(held.events, line, self._seq)
                    if journaling:
                        batch.entries.append(
                            encode_entry(self._seq, FrameKind.EVENT, held.folder, line)
                        )
                    batch.events.append(record)
                    batch.results[index] = Stamp(self._seq, ts)
                case AppendMessage():
                    held = self._held.get(request.handle)
                    if held is None:
                        batch.results[index] = _not_open()
                        continue
                    record = {"version": SCHEMA_VERSION, "seq": self._seq + 1, "ts": ts}
                    record.update(request.message)
                    line = _serialise(record, _LINE)
                    if isinstance(line, UsageError):
                        batch.results[index] = line
                        continue
                    self._seq += 1
                    records.append(held.transcript, line, self._seq)
                    if journaling:
                        batch.entries.append(
                            encode_entry(self._seq, FrameKind.MESSAGE, held.folder, line)
                        )
                    batch.results[index] = Stamp(self._seq, ts)
                case WriteMetadata():
                    held = self._held.get(request.handle)
                    if held is None:
                        batch.results[index] = _not_open()
                        continue
                    self._seq += 1
                    data = orjson.dumps(dict(request.metadata, seq=self._seq), option=_DOCUMENT)
                    records.documents[held.location.metadata] = data
                    records.size += len(data)
                    if journaling:
                        batch.entries.append(
                            encode_entry(self._seq, FrameKind.METADATA, held.folder, data)
                        )
                    batch.results[index] = Stamp(self._seq, ts)
                case (
                    CreateSession()
                    | OpenSession()
                    | CloseSession()
                    | Flush()
                    | DeleteSessions()
                    | Reindex()
                ):
                    batch.controls = True
                case _:
                    assert_never(request)
        if batch.entries:
            batch.first_seq = _entry_seq(batch.entries[0])
        # A new session's metadata is made durable by its own fsync, not the
        # journal; stamping it last keeps the batch's records contiguous.
        for index, request in enumerate(requests):
            if isinstance(request, CreateSession):
                self._seq += 1
                data = orjson.dumps(dict(request.metadata, seq=self._seq), option=_DOCUMENT)
                batch.created[index] = (data, Stamp(self._seq, ts))
        return batch

    def _answer(self, batch: _Batch) -> None:
        for listener in self.listeners:
            listener(batch.events)
        results = batch.results
        for index, request in enumerate(batch.requests):
            reply = request.reply
            result = results.get(index)
            if isinstance(result, BaseException):
                reply.error = result
            else:
                reply.value = result
            reply.done = True
        self.acks.announce()

    def _defer(self, records: _Pending) -> None:
        """Keep acknowledged records for the session files; a background task writes them."""
        if not records:
            return
        if not self._behind:
            self._behind_since = anyio.current_time()
        self._behind.add(records)
        if self._behind.size >= WRITE_BEHIND_BYTES:
            self._behind_since = -math.inf  # due now
        if not self._writing and self._tasks is not None:
            self._writing = True
            self._tasks.start_soon(self._write_behind)

    async def _write_behind(self) -> None:
        """Bring the session files up to date, ``WRITE_BEHIND_DELAY`` after the oldest record.

        Runs beside the actor's commits (one worker thread journals while
        another writes the files). On a failure the unwritten rest goes back
        in front of newer records and is tried again: with a journal nothing
        acknowledged is lost; without one (durability none) new requests
        are refused until the disk takes writes again.
        """
        try:
            while self._behind:
                due = self._behind_since + WRITE_BEHIND_DELAY - anyio.current_time()
                if due > 0:
                    await anyio.sleep(due)
                async with self._files_lock:
                    chunk, self._behind = self._behind, _Pending()
                    self._behind_since = math.inf
                    try:
                        await anyio.to_thread.run_sync(self._write_files, chunk)
                    except OSError as exc:
                        if self._journal is None:
                            self._broken = _write_failed(exc)
                        else:
                            self._warn_behind(_write_failed(exc))
                        self._behind_since = anyio.current_time()
                    else:
                        self._broken = None
                        self._behind_failing = False
                    finally:
                        if chunk:  # what did not land goes back, ahead of newer records
                            chunk.add(self._behind)
                            self._behind = chunk
                            self._behind_since = min(self._behind_since, anyio.current_time())
        finally:
            self._writing = False

    def _warn_behind(self, failure: WriteFailed) -> None:
        """Say once (per spell of failures) that the files lag behind the journal."""
        if self._behind_failing:
            return
        self._behind_failing = True
        warnings.warn(
            f"{failure}; the records are safe in the journal and reach the session files "
            "once there is room (at the latest, when the next runtime starts)",
            StoreWarning,
            stacklevel=1,
        )

    # -- in the worker thread ------------------------------------------------------

    def _checkpoint_all(self) -> None:
        self._write_files(self._behind)
        self._checkpoint()

    def _write_now(self, records: _Pending) -> None:
        """Durability flush: write the batch's records, or none of them."""
        written: list[tuple[Path, int]] = []
        try:
            for path, lines in records.lines.items():
                written.append((path, self._files.length(path)))
                self._files.write(path, b"".join(lines))
        except OSError:
            for path, length in written:
                with contextlib.suppress(OSError):
                    self._files.truncate(path, length)
            raise
        index_transcript_lines(self._require_index, records.lines)
        for path, data in records.documents.items():
            atomic_replace(path, data, sync=False)
        self._note_documents(records.documents)

    def _run_controls(self, batch: _Batch) -> None:
        """Blocking: creates and opens, then everything behind to the files, then closes.

        Each control request gets its own answer; none of them raises here.
        Everything behind is written first: a new child's folder must never
        appear before its parent's ``delegate:start`` and ``children`` list.
        """
        behind_failed: WriteFailed | None = None
        try:
            self._write_files(self._behind)
        except OSError as exc:
            behind_failed = _write_failed(exc)
        batch.behind_failed = behind_failed
        self._create_all(batch, refuse=behind_failed)
        for index, request in enumerate(batch.requests):
            if isinstance(request, OpenSession):
                try:
                    batch.results[index] = self._open(request.location)
                except (PersistenceError, OSError) as exc:
                    batch.results[index] = exc
        for index, request in enumerate(batch.requests):
            if isinstance(request, DeleteSessions):
                try:
                    batch.results[index] = self._delete(request.locations, request.untouched_since)
                except (PersistenceError, OSError) as exc:
                    batch.results[index] = exc
            elif isinstance(request, Reindex):
                try:
                    batch.results[index] = self._reindex()
                except (sqlite3.Error, OSError) as exc:
                    batch.results[index] = PersistenceError(f"could not rebuild the index: {exc}")
        closing: list[int] = []
        for index, request in enumerate(batch.requests):
            if isinstance(request, CloseSession | Flush):
                batch.results[index] = behind_failed
                if isinstance(request, CloseSession) and behind_failed is None:
                    closing.append(request.handle)
        if closing:
            try:
                self._close(closing)
            except OSError as exc:
                for index, request in enumerate(batch.requests):
                    if isinstance(request, CloseSession):
                        batch.results[index] = _write_failed(exc)

    def _create_all(self, batch: _Batch, *, refuse: WriteFailed | None) -> None:
        """Create the batch's new sessions; each folder appears complete or not at all.

        A folder is built in the project's ``.staging`` folder (lock taken,
        ``metadata.json`` written, and fsynced with durability fsync), then
        renamed into ``sessions/``: a crash at any instant leaves either no
        session or one that lists and resumes (identity first).
        With ``refuse`` set (what is behind could not be written), no session
        is created, since its parent's records might not be on disk yet.
        """
        if refuse is not None:
            for index in batch.created:
                batch.results[index] = refuse
            return
        made: dict[int, tuple[SessionLocation, FileLock]] = {}
        durable = self.durability == "fsync"
        # Indexed before their folders appear: a crash in between leaves a row
        # with no folder (which readers skip), never a session the index lacks.
        self._note_documents(
            {
                batch.requests[index].location.metadata: document
                for index, (document, _) in batch.created.items()
                if not batch.requests[index].location.directory.exists()
            }
        )
        for index, (document, _) in batch.created.items():
            location = batch.requests[index].location
            try:
                made[index] = (location, self._build(location, document, durable=durable))
            except FileExistsError as exc:
                batch.results[index] = exc
            except OSError as exc:
                batch.results[index] = _write_failed(exc)
                self._forget(location)
            except PersistenceError as exc:
                batch.results[index] = exc
                self._forget(location)
        if durable and made:
            try:
                for parent in {location.directory.parent for location, _ in made.values()}:
                    fsync_dir(parent)
            except OSError as exc:
                failure = _write_failed(exc)
                for index, (location, lock) in made.items():
                    lock.release()
                    _remove_folder(location.directory)
                    self._forget(location)
                    batch.results[index] = failure
                return
        for index, (location, lock) in made.items():
            batch.results[index] = (self._hold(location, lock), batch.created[index][1])

    def _build(self, location: SessionLocation, document: bytes, *, durable: bool) -> FileLock:
        sessions = location.directory.parent
        staging = sessions.parent / STAGING
        ensure_private_dir(sessions, below=self.home)
        ensure_private_dir(staging, below=self.home)
        if os.path.realpath(sessions) != os.path.join(
            os.path.realpath(self.home), location.relative.rsplit("/", 1)[0]
        ):
            raise CorruptSession(
                location.session_id, "its project folder is a link out of the store"
            )
        _sweep_staging(staging)
        if location.directory.exists():
            raise FileExistsError(errno.EEXIST, "session exists", str(location.directory))
        hidden = staging / f"{location.session_id}-{secrets.token_hex(4)}"
        hidden.mkdir(mode=0o700)
        lock: FileLock | None = None
        try:
            lock = FileLock.acquire(hidden / LOCK, session_id=location.session_id)
            write_new_file(hidden / METADATA, document, sync=durable)
            os.rename(hidden, location.directory)  # the lock's descriptor moves with it
        except BaseException:
            if lock is not None:
                lock.release()
            _remove_folder(hidden)
            raise
        lock.path = location.lock
        return lock

    def _write_files(self, writes: _Pending) -> None:
        """Write ``writes`` to the session files, removing each part as it lands.

        Files go in the order of their newest pending seq, so the files keep
        the causal order at every instant, even before a journal replay: a
        child's last line (``session:end``) precedes its parent's
        ``delegate:end``, so the child's file is written first.
        On failure, ``writes`` holds exactly what is still to be written (a
        file whose write failed part-way was cut back).
        """
        index_transcript_lines(self._require_index, writes.lines)  # acknowledged already
        for path in sorted(writes.lines, key=writes.newest.__getitem__):
            self._files.write(path, b"".join(writes.lines[path]))
            del writes.lines[path]
            del writes.newest[path]
            self._dirty.add(path)
        written: dict[Path, bytes] = {}
        try:
            while writes.documents:
                path, data = next(iter(writes.documents.items()))
                atomic_replace(path, data, sync=False)
                del writes.documents[path]
                self._dirty.add(path)
                written[path] = data
        finally:
            self._note_documents(written)
        writes.size = 0
        if self._journal is None:
            self._dirty.clear()

    def _open(self, location: SessionLocation) -> tuple[int, OpenedSession]:
        if not location.directory.is_dir():
            raise SessionNotFound(location.session_id)
        refuse_links_out(location)
        # Before taking the lock: replay needs the locks of the sessions it restores.
        recovered = recover_dead_journals(self.home)
        self.recovered.records += recovered.records
        try:
            lock = FileLock.acquire(location.lock, session_id=location.session_id)
        except (FileNotFoundError, NotADirectoryError):
            raise SessionNotFound(location.session_id) from None  # deleted meanwhile
        try:
            sweep_temp_files(location.directory)
            torn = tuple(
                side
                for side in (
                    set_aside_torn_tail(location.events),
                    set_aside_torn_tail(location.transcript),
                )
                if side is not None
            )
            seen = max(last_seq(location.events), last_seq(location.transcript))
            seen = max(seen, metadata_seq(location.metadata) or 0)
        except BaseException:
            lock.release()
            raise
        # The session's files continue above their own last seq, whichever
        # Runtime wrote it, so seq only grows within every file.
        self._seq = max(self._seq, seen)
        return self._hold(location, lock), OpenedSession(last_seq=seen, torn=torn)

    def _delete(
        self, locations: tuple[SessionLocation, ...], untouched_since: datetime | None
    ) -> list[str]:
        """Remove the folders (children before parents); the ids this call removed.

        None are removed if any session is in use (``SessionLocked``) or, with
        ``untouched_since``, was updated at or after it: a session resumed
        since a cleanup made its plan is no longer old. A folder another
        process removes meanwhile is skipped. Each folder is first moved
        into ``.staging`` under its lock, so an opener finds the whole
        session or none.
        """
        # A dead runtime's journal could otherwise bring a deleted session back.
        recover_dead_journals(self.home)
        held: list[tuple[SessionLocation, FileLock]] = []
        try:
            for location in locations:
                refuse_links_out(location)
                lock = _lock_to_delete(location)
                if lock is not None:
                    held.append((location, lock))
            if untouched_since is not None and any(
                _updated_since(location, untouched_since) for location, _ in held
            ):
                return []
            removed = []
            for location, _ in reversed(held):
                doomed = (
                    location.directory.parent.parent
                    / STAGING
                    / (f"{location.session_id}-deleted-{secrets.token_hex(4)}")
                )
                ensure_private_dir(doomed.parent, below=self.home)
                os.rename(location.directory, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
                removed.append(location.session_id)
            for parent in {location.directory.parent for location, _ in held}:
                with contextlib.suppress(FileNotFoundError):
                    fsync_dir(parent)
            with contextlib.suppress(sqlite3.Error):
                remove_from_index(self._require_index(), removed)
            return removed
        finally:
            for _, lock in held:
                lock.release()

    def _reindex(self) -> int:
        """Rebuild the index from the folders; a damaged index file is replaced first."""
        try:
            return rebuild_index(self.home, self._require_index())
        except sqlite3.DatabaseError as exc:
            if not is_index_damage(exc):
                raise
        if self._index is not None:
            self._index.close()
            self._index = None
        self._index = recreate_index(self.home)
        return rebuild_index(self.home, self._index)

    def _require_index(self) -> sqlite3.Connection:
        if self._index is None:
            self._index = connect_index(self.home)
        return self._index

    def _note_documents(self, documents: dict[Path, bytes]) -> None:
        """Keep the session index in step with the metadata files just written.

        The index is a cache: if SQLite fails, the files are still right and
        ``reindex`` mends it, so a failure here must not fail the write.
        """
        if not documents:
            return
        items = []
        for path, data in documents.items():
            folder = path.parent
            with contextlib.suppress(ValueError):
                items.append(
                    (SessionLocation(self.home, folder.parent.parent.name, folder.name), data)
                )
        with contextlib.suppress(sqlite3.Error):
            upsert_index(self._require_index(), items)

    def _forget(self, location: SessionLocation) -> None:
        """Drop a session that was never created from the index (a cache: never fails)."""
        with contextlib.suppress(sqlite3.Error):
            remove_from_index(self._require_index(), [location.session_id])

    def _hold(self, location: SessionLocation, lock: FileLock) -> int:
        self._handles += 1
        self._held[self._handles] = _Held(location, lock)
        return self._handles

    def _close(self, handles: list[int]) -> None:
        """Release sessions; with a journal, first make their files independent of it."""
        closing = {h: self._held[h] for h in handles if h in self._held}
        folders: set[Path] = set()
        for held in closing.values():
            self._files.close(held.events)
            self._files.close(held.transcript)
            if self._journal is None:
                continue
            # Once the lock is released another process may write here; the
            # files must not depend on our journal any more.
            for path in (held.events, held.transcript, held.location.metadata):
                if path in self._dirty:
                    fsync_path(path)
                    self._dirty.discard(path)
            folders.add(held.location.directory)
            if held.location.directory.parent in self._dirty_dirs:
                folders.add(held.location.directory.parent)
        for folder in folders:  # a shared sessions/ folder is synced once per batch
            fsync_dir(folder)
            self._dirty_dirs.discard(folder)
        for handle, held in closing.items():
            del self._held[handle]
            held.lock.release()

    def _checkpoint(self) -> None:
        """Make every session file written since the last checkpoint durable; empty the journal."""
        assert self._journal is not None
        if self._behind:
            return  # the files are not complete yet; the next write-behind checkpoints
        for path in self._dirty:
            fsync_path(path)
        for folder in self._dirty_dirs | {p.parent for p in self._dirty}:
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(folder)
        self._dirty.clear()
        self._dirty_dirs.clear()
        self._journal.reset()


def _sweep_staging(staging: Path) -> None:
    """Remove folders a crash left half-built (unlocked, and older than a minute)."""
    try:
        leftovers = list(staging.iterdir())
    except FileNotFoundError:
        return
    for folder in leftovers:
        with contextlib.suppress(OSError):
            if time.time() - folder.stat().st_mtime > STAGING_GRACE and not is_locked(
                folder / LOCK
            ):
                _remove_folder(folder)


def _serialise(record: dict[str, Any], option: int) -> bytes | UsageError:
    """The record's line, or the caller's mistake (a value JSON cannot hold) as an error."""
    try:
        return orjson.dumps(record, option=option)
    except (TypeError, orjson.JSONEncodeError) as exc:
        return UsageError(f"a record must hold JSON values only: {exc}")


def _lock_to_delete(location: SessionLocation) -> FileLock | None:
    """The session's lock, or None if the session is gone (another process removed it).

    Raises ``SessionLocked`` if it is in use.
    """
    # A folder without its lock file (written by hand, say) gets one.
    for create in (False, True):
        try:
            return FileLock.acquire(location.lock, session_id=location.session_id, create=create)
        except (FileNotFoundError, NotADirectoryError):
            if not location.directory.is_dir():
                return None
        except SessionLocked:
            if location.directory.exists():
                raise
            return None  # it was being removed
    return None


def _updated_since(location: SessionLocation, when: datetime) -> bool:
    """True if the session's metadata says it was updated at or after ``when``."""
    try:
        return read_metadata(location).updated >= when
    except (CorruptSession, SessionNotFound, OSError):
        return False  # damaged: its age is the folder's, which the plan already judged


def _remove_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()


def _entry_seq(entry: bytes) -> int:
    seq: int = int.from_bytes(entry[:8], "little")
    return seq


def _not_open() -> PersistenceError:
    return PersistenceError("the session is not open for writing (it was closed)")


def _write_failed(exc: OSError) -> WriteFailed:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "the disk is full"
    where = f" ({exc.filename})" if exc.filename else ""
    return WriteFailed(f"could not write session files{where}: {reason}")


class Store:
    """The persistence actor's mailbox, as the rest of the Runtime uses it.

    Every method is a checkpoint and returns once its request is committed
    under the store's durability. Cancelling a call does not withdraw a
    request that was already sent.
    """

    def __init__(self, actor: PersistenceActor, send: MemoryObjectSendStream[Any]) -> None:
        self._actor = actor
        self._send = send
        self._acks = actor.acks

    @property
    def home(self) -> Path:
        return self._actor.home

    @property
    def durability(self) -> Durability:
        return self._actor.durability

    @property
    def recovered(self) -> RecoveryReport:
        """What start-up recovery restored from journals of runtimes that died."""
        return self._actor.recovered

    def add_listener(self, listener: CommitListener) -> None:
        self._actor.listeners.append(listener)

    async def create(self, location: SessionLocation, metadata: SessionMetadata) -> SessionWriter:
        """Create a session's folder, lock it and write its metadata; fail if the id exists."""
        reply = _Reply()
        document = metadata.model_dump(mode="json")
        await _send(self._send, CreateSession(location=location, metadata=document, reply=reply))
        handle, _ = await self._acks.wait(reply)
        return SessionWriter(location, handle, self._send.clone(), self._acks)

    async def open(self, location: SessionLocation) -> tuple[SessionWriter, OpenedSession]:
        """Lock an existing session for writing (``SessionLocked`` if someone else has it)."""
        reply = _Reply()
        await _send(self._send, OpenSession(location=location, reply=reply))
        handle, opened = await self._acks.wait(reply)
        return SessionWriter(location, handle, self._send.clone(), self._acks), opened

    async def delete(
        self, locations: Sequence[SessionLocation], *, untouched_since: datetime | None = None
    ) -> list[str]:
        """Delete these sessions (give children after their parent); the ids this removed.

        Raises ``SessionLocked`` naming the holder, and deletes nothing, if any
        of them is open in some process. With ``untouched_since``, deletes
        nothing (and returns ``[]``) if any was updated at or after it.
        Sessions already gone (another process removed them) are skipped.
        """
        reply = _Reply()
        request = DeleteSessions(
            locations=tuple(locations), untouched_since=untouched_since, reply=reply
        )
        await _send(self._send, request)
        removed: list[str] = await self._acks.wait(reply)
        return removed

    async def reindex(self) -> int:
        """Rebuild the session index from the metadata files; how many sessions it holds."""
        reply = _Reply()
        await _send(self._send, Reindex(reply=reply))
        total: int = await self._acks.wait(reply)
        return total

    async def flush(self) -> None:
        """Wait until everything sent so far is in the session files (any durability)."""
        reply = _Reply()
        await _send(self._send, Flush(reply=reply))
        await self._acks.wait(reply)


class SessionWriter:
    """One session's way into the persistence actor; owned by that session's task."""

    __slots__ = ("_acks", "_closed", "_handle", "_send", "location", "session_id")

    def __init__(
        self,
        location: SessionLocation,
        handle: int,
        send: MemoryObjectSendStream[Any],
        acks: _Acks,
    ) -> None:
        self.location = location
        self.session_id = location.session_id
        self._handle = handle
        self._send = send
        self._acks = acks
        self._closed = False

    async def append_event(
        self, event: str, data: dict[str, Any], *, parent_id: str | None
    ) -> Stamp:
        """Append one event; returns its stamp once durable."""
        reply = _Reply()
        request = AppendEvent(
            handle=self._handle,
            session_id=self.session_id,
            parent_id=parent_id,
            event=event,
            data=data,
            reply=reply,
        )
        await self._submit(request)
        stamp: Stamp = await self._acks.wait(reply)
        return stamp

    async def append_message(self, message: dict[str, Any]) -> Stamp:
        """Append one message (a dict with at least ``role``) to ``transcript.jsonl``."""
        reply = _Reply()
        await self._submit(AppendMessage(handle=self._handle, message=message, reply=reply))
        stamp: Stamp = await self._acks.wait(reply)
        return stamp

    async def write_metadata(self, metadata: SessionMetadata) -> Stamp:
        reply = _Reply()
        document = metadata.model_dump(mode="json")
        await self._submit(WriteMetadata(handle=self._handle, metadata=document, reply=reply))
        stamp: Stamp = await self._acks.wait(reply)
        return stamp

    async def _submit(self, request: Any) -> None:
        if self._closed:
            raise StoreClosed(f"session {self.session_id} is closed for writing")
        try:
            self._send.send_nowait(request)
        except anyio.WouldBlock:
            await _send(self._send, request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise StoreClosed("the persistence actor has stopped") from None

    async def close(self) -> None:
        """Make the session's files durable and release its lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            reply = _Reply()
            await _send(self._send, CloseSession(handle=self._handle, reply=reply))
            await self._acks.wait(reply)
        finally:
            self._send.close()


async def _send(stream: MemoryObjectSendStream[Any], request: Any) -> None:
    try:
        stream.send_nowait(request)
    except anyio.WouldBlock:
        await stream.send(request)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        raise StoreClosed("the persistence actor has stopped") from None


@asynccontextmanager
async def open_store(
    home: Path,
    *,
    durability: Durability = "fsync",
    clock: Clock = utc_now,
) -> AsyncIterator[Store]:
    """Start a persistence actor for ``home``; on exit, write everything and stop it.

    Start-up replays the journals of runtimes that died. On exit the actor
    drains its mailbox once every writer has closed, checkpoints and removes
    its journal; writers still open after ``SHUTDOWN_GRACE`` seconds are cut
    off (their unsent records are lost, nothing sent is).
    """
    send, receive = anyio.create_memory_object_stream[Any](MAILBOX_SIZE)
    actor = PersistenceActor(home, durability, clock, receive)
    try:
        await anyio.to_thread.run_sync(actor.prepare)
    except OSError as exc:
        raise _write_failed(exc) from None
    with unwrap_single_error():
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            try:
                yield Store(actor, send)
            finally:
                send.close()
                with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
                    await actor.stopped.wait()
                actor.scope.cancel()
