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
        ``session:end``) is written in a later batch: causality is the
        order of batches.
Rule 4: a batch succeeds or fails as a whole. If the disk refuses any write,
        every file touched by the batch (and the journal) is cut back to
        its length before the batch and every request in it fails with
        ``WriteFailed``; what was stored before stays intact.

Group commit: the actor takes one request, then every request already
waiting, and commits them together: one journal write + one ``fdatasync``
(durability ``fsync``), then the per-session files, all in one call to its
worker thread. See ``_journal`` for why one journal per Runtime.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, assert_never

import anyio
import orjson
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field

from amplifier._errors import unwrap_single_error

from ._exceptions import PersistenceError, SessionNotFound, StoreClosed, WriteFailed
from ._files import (
    atomic_replace,
    fsync_dir,
    fsync_path,
    last_seq,
    metadata_seq,
    set_aside_torn_tail,
    write_all,
)
from ._journal import FrameKind, Journal, RecoveryReport, encode_frame, recover_dead_journals
from ._lock import FileLock
from ._paths import SessionLocation, ensure_private_dir
from ._records import SCHEMA_VERSION, Durability, SessionMetadata, format_ts, utc_now

Clock = Callable[[], datetime]
"""Wall-clock time for record stamps; tests pass a fake one."""

Stream = Literal["events", "transcript"]

MAILBOX_SIZE = 4096
OPEN_FILE_LIMIT = 256
"""Transcript/event files kept open at once; older ones are closed and reopened on demand."""
CHECKPOINT_BYTES = 32 * 1024 * 1024
"""Journal size that triggers a checkpoint (fsync the session files, empty the journal)."""
LAZY_WRITE_BYTES = 256 * 1024
LAZY_WRITE_DELAY = 0.05
"""Durability ``none``: buffered records reach the OS at least this often (seconds)."""
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
    """A one-shot answer from the actor to the task that sent a request."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def resolve(self, value: Any) -> None:
        self.value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._done.set()

    async def wait(self) -> Any:
        """Wait for the answer. Checkpoint; cancelling the wait does not undo the request."""
        await self._done.wait()
        if self.error is not None:
            raise self.error
        return self.value


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


class AppendRecord(_Request):
    """Append one record (without ``version``/``seq``/``ts``, stamped here) to a session file."""

    kind: Literal["append"] = "append"
    location: SessionLocation
    stream: Stream
    record: dict[str, Any]


class WriteMetadata(_Request):
    """Replace a session's ``metadata.json`` (atomically)."""

    kind: Literal["metadata"] = "metadata"
    location: SessionLocation
    metadata: dict[str, Any]


class CloseSession(_Request):
    """Make the session's files durable, close them and release its lock."""

    kind: Literal["close"] = "close"
    location: SessionLocation


class Flush(_Request):
    """Barrier: answered once everything sent before it is written to the OS."""

    kind: Literal["flush"] = "flush"


Request = Annotated[
    CreateSession | OpenSession | AppendRecord | WriteMetadata | CloseSession | Flush,
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
class _Batch:
    """One group commit: what to write where, and whom to answer."""

    requests: list[Any]
    journal: list[tuple[int, bytes]] = field(default_factory=list)
    """Frames, each with the index of the request it belongs to."""
    lines: dict[Path, list[bytes]] = field(default_factory=dict)
    documents: dict[Path, bytes] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    results: dict[int, Any] = field(default_factory=dict)
    """Answers by request index; an exception value fails that request."""


class _OpenFiles:
    """A bounded cache of append-mode descriptors, with each file's length for rollback."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._fds: OrderedDict[Path, tuple[int, int]] = OrderedDict()

    def write(self, path: Path, data: bytes) -> tuple[Path, int, int]:
        """Append ``data``; returns what rollback needs (path, descriptor, old length).

        If the write fails part-way, the file is cut back before the error propagates.
        """
        entry = self._fds.get(path)
        if entry is None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            entry = (fd, os.fstat(fd).st_size)
            self._fds[path] = entry
            if len(self._fds) > self._limit:
                _, (old_fd, _) = self._fds.popitem(last=False)
                os.close(old_fd)
        else:
            self._fds.move_to_end(path)
        fd, size = entry
        undo = (path, fd, size)
        try:
            write_all(fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                self.rollback(undo)
            raise
        self._fds[path] = (fd, size + len(data))
        return undo

    def rollback(self, undo: tuple[Path, int, int]) -> None:
        path, fd, size = undo
        os.ftruncate(fd, size)
        if path in self._fds:
            self._fds[path] = (fd, size)

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
        self._held: dict[SessionLocation, _Held] = {}
        self._files = _OpenFiles(OPEN_FILE_LIMIT)
        self._journal: Journal | None = None
        self._dirty: set[Path] = set()
        self._dirty_dirs: set[Path] = set()
        self._lazy: dict[Path, list[bytes]] = {}
        self._lazy_bytes = 0
        self._lazy_since = math.inf
        self._broken: BaseException | None = None
        self.listeners: list[CommitListener] = []
        self.recovered = RecoveryReport()
        self.scope = anyio.CancelScope(shield=True)
        self.stopped = anyio.Event()

    # -- lifecycle ------------------------------------------------------------

    def prepare(self) -> None:
        """Blocking start-up: replay dead journals, then create our own."""
        ensure_private_dir(self.home / "projects", below=self.home)
        self.recovered = recover_dead_journals(self.home)
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
                task_status.started()
                async with self._receive:
                    await self._serve()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._shutdown)
            self.stopped.set()

    async def _serve(self) -> None:
        receive = self._receive
        while True:
            first: Any = None
            try:
                if self._lazy:
                    wait = max(0.0, self._lazy_since + LAZY_WRITE_DELAY - anyio.current_time())
                    with anyio.move_on_after(wait):
                        first = await receive.receive()
                    if first is None:
                        await self._write_lazy()
                        continue
                else:
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

    def _shutdown(self) -> None:
        """Blocking: write what is buffered, make it durable, let go of every file."""
        try:
            if self._lazy:
                self._write_lazy_now()
            if self._journal is not None:
                self._checkpoint()
                self._journal.remove()
                self._journal = None
        finally:
            self._files.close_all()
            for held in self._held.values():
                held.lock.release()
            self._held.clear()

    # -- one group commit -------------------------------------------------------

    async def _commit(self, requests: list[Any]) -> None:
        batch = _Batch(requests)
        ts = format_ts(self._clock())
        controls = False
        for index, request in enumerate(requests):
            match request:
                case AppendRecord():
                    held = self._held.get(request.location)
                    if held is None:
                        batch.results[index] = _not_open(request.location)
                        continue
                    self._seq += 1
                    record = {"version": SCHEMA_VERSION, "seq": self._seq, "ts": ts}
                    record.update(request.record)
                    line = orjson.dumps(record, option=_LINE)
                    events = request.stream == "events"
                    path = held.events if events else held.transcript
                    batch.lines.setdefault(path, []).append(line)
                    if self._journal is not None:
                        kind = FrameKind.EVENT if events else FrameKind.MESSAGE
                        frame = encode_frame(self._seq, kind, held.folder, line)
                        batch.journal.append((index, frame))
                    if events:
                        batch.events.append(record)
                    batch.results[index] = Stamp(self._seq, ts)
                case WriteMetadata() | CreateSession():
                    creating = isinstance(request, CreateSession)
                    if not creating and request.location not in self._held:
                        batch.results[index] = _not_open(request.location)
                        continue
                    self._seq += 1
                    document = dict(request.metadata, seq=self._seq)
                    data = orjson.dumps(document, option=_DOCUMENT)
                    batch.documents[request.location.metadata] = data
                    if self._journal is not None:
                        folder = request.location.relative.encode()
                        frame = encode_frame(self._seq, FrameKind.METADATA, folder, data)
                        batch.journal.append((index, frame))
                    batch.results[index] = Stamp(self._seq, ts)
                    controls = controls or creating
                case OpenSession() | CloseSession() | Flush():
                    controls = True
                case _:
                    assert_never(request)

        if self._broken is not None:
            self._answer(batch, failure=self._broken)
            return
        if self.durability == "none" and not controls and not batch.documents:
            self._buffer_lazily(batch)
            self._answer(batch)
            return
        try:
            await anyio.to_thread.run_sync(self._write_batch, batch)
        except OSError as exc:
            self._answer(batch, failure=_write_failed(exc))
            return
        self._answer(batch)

    def _answer(self, batch: _Batch, failure: BaseException | None = None) -> None:
        if failure is None:
            for listener in self.listeners:
                listener(batch.events)
        for index, request in enumerate(batch.requests):
            result = batch.results.get(index)
            if failure is not None and not isinstance(result, BaseException):
                request.reply.fail(failure)
            elif isinstance(result, BaseException):
                request.reply.fail(result)
            else:
                request.reply.resolve(result)

    def _write_batch(self, batch: _Batch) -> None:
        """Blocking, in the worker thread: the whole batch or nothing (Rule 4)."""
        for index, request in enumerate(batch.requests):
            if isinstance(request, CreateSession):
                try:
                    self._create(request.location)
                except (PersistenceError, OSError) as exc:
                    batch.results[index] = exc
                    batch.documents.pop(request.location.metadata, None)
            elif isinstance(request, OpenSession):
                try:
                    batch.results[index] = self._open(request.location)
                except (PersistenceError, OSError) as exc:
                    batch.results[index] = exc
        journal = b""
        if batch.journal and self._journal is not None:
            # A create that failed (the folder exists) must leave no frame:
            # replaying it would overwrite the metadata of the session there.
            journal = b"".join(
                frame
                for index, frame in batch.journal
                if not isinstance(batch.results.get(index), BaseException)
            )
            self._journal.append(journal)
            self._journal.sync()
        if self._lazy:
            self._write_lazy_now()
        undo: list[tuple[Path, int, int]] = []
        try:
            for path, lines in batch.lines.items():
                undo.append(self._files.write(path, b"".join(lines)))
            for path, data in batch.documents.items():
                atomic_replace(path, data, sync=False)
        except OSError:
            for step in reversed(undo):
                with contextlib.suppress(OSError):
                    self._files.rollback(step)
            if self._journal is not None and journal:
                try:
                    self._journal.truncate(self._journal.size - len(journal))
                    self._journal.sync()
                except OSError as exc:
                    self._broken = _write_failed(exc)
            raise
        if self._journal is not None:
            self._dirty.update(batch.lines)
            self._dirty.update(batch.documents)
        closing = [r.location for r in batch.requests if isinstance(r, CloseSession)]
        if closing:
            self._close(closing)
        for index, request in enumerate(batch.requests):
            if isinstance(request, CloseSession | Flush):
                batch.results[index] = None
        if self._journal is not None and self._journal.size > CHECKPOINT_BYTES:
            self._checkpoint()

    # -- session files ------------------------------------------------------------

    def _create(self, location: SessionLocation) -> None:
        ensure_private_dir(location.directory.parent, below=self.home)
        location.directory.mkdir(mode=0o700)  # FileExistsError: the id is taken
        lock = FileLock.acquire(location.lock, session_id=location.session_id)
        self._held[location] = _Held(location, lock)
        self._dirty_dirs.add(location.directory.parent)
        self._dirty_dirs.add(location.directory)

    def _open(self, location: SessionLocation) -> OpenedSession:
        if not location.directory.is_dir():
            raise SessionNotFound(location.session_id)
        # Before taking the lock: replay needs the locks of the sessions it restores.
        recovered = recover_dead_journals(self.home)
        self.recovered.records += recovered.records
        lock = FileLock.acquire(location.lock, session_id=location.session_id)
        try:
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
        self._held[location] = _Held(location, lock)
        return OpenedSession(last_seq=seen, torn=torn)

    def _close(self, locations: list[SessionLocation]) -> None:
        """Release sessions; with a journal, first make their files independent of it."""
        if self._lazy:
            self._write_lazy_now()
        folders: set[Path] = set()
        for location in locations:
            self._files.close(location.events)
            self._files.close(location.transcript)
            if self._journal is None:
                continue
            # Once the lock is released another process may write here; the
            # files must not depend on our journal any more.
            for path in (location.events, location.transcript, location.metadata):
                if path in self._dirty:
                    fsync_path(path)
                    self._dirty.discard(path)
            folders.add(location.directory)
            if location.directory.parent in self._dirty_dirs:
                folders.add(location.directory.parent)
        for folder in folders:  # a shared sessions/ folder is synced once per batch
            fsync_dir(folder)
            self._dirty_dirs.discard(folder)
        for location in locations:
            held = self._held.pop(location, None)
            if held is not None:
                held.lock.release()

    def _checkpoint(self) -> None:
        """Make every session file written since the last checkpoint durable; empty the journal."""
        assert self._journal is not None
        for path in self._dirty:
            fsync_path(path)
        for folder in self._dirty_dirs | {p.parent for p in self._dirty}:
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(folder)
        self._dirty.clear()
        self._dirty_dirs.clear()
        self._journal.reset()

    # -- durability "none": written out in large chunks ---------------------------

    def _buffer_lazily(self, batch: _Batch) -> None:
        if not self._lazy:
            self._lazy_since = anyio.current_time()
        for path, lines in batch.lines.items():
            self._lazy.setdefault(path, []).extend(lines)
            self._lazy_bytes += sum(map(len, lines))
        if self._lazy_bytes >= LAZY_WRITE_BYTES:
            self._lazy_since = -math.inf  # write out at the next turn of the loop

    async def _write_lazy(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._write_lazy_now)
        except OSError as exc:
            self._broken = _write_failed(exc)

    def _write_lazy_now(self) -> None:
        pending, self._lazy = self._lazy, {}
        self._lazy_bytes = 0
        self._lazy_since = math.inf
        for path, lines in pending.items():
            self._files.write(path, b"".join(lines))


def _not_open(location: SessionLocation) -> PersistenceError:
    return PersistenceError(f"session {location.session_id} is not open for writing")


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
        await reply.wait()
        return SessionWriter(location, self._send.clone())

    async def open(self, location: SessionLocation) -> tuple[SessionWriter, OpenedSession]:
        """Lock an existing session for writing (``SessionLocked`` if someone else has it)."""
        reply = _Reply()
        await _send(self._send, OpenSession(location=location, reply=reply))
        opened: OpenedSession = await reply.wait()
        return SessionWriter(location, self._send.clone()), opened

    async def flush(self) -> None:
        """Wait until everything sent so far has reached the OS (even with durability ``none``)."""
        reply = _Reply()
        await _send(self._send, Flush(reply=reply))
        await reply.wait()


class SessionWriter:
    """One session's way into the persistence actor; owned by that session's task."""

    def __init__(self, location: SessionLocation, send: MemoryObjectSendStream[Any]) -> None:
        self.location = location
        self._send = send
        self._closed = False

    async def append_event(
        self, event: str, data: dict[str, Any], *, parent_id: str | None
    ) -> Stamp:
        record = {
            "session_id": self.location.session_id,
            "parent_id": parent_id,
            "event": event,
            "data": data,
        }
        return await self._request("events", record)

    async def append_message(self, message: dict[str, Any]) -> Stamp:
        """Append one message (a dict with at least ``role``) to ``transcript.jsonl``."""
        return await self._request("transcript", message)

    async def _request(self, stream: Stream, record: dict[str, Any]) -> Stamp:
        if self._closed:
            raise StoreClosed(f"session {self.location.session_id} is closed for writing")
        reply = _Reply()
        await _send(
            self._send,
            AppendRecord(location=self.location, stream=stream, record=record, reply=reply),
        )
        stamp: Stamp = await reply.wait()
        return stamp

    async def write_metadata(self, metadata: SessionMetadata) -> Stamp:
        if self._closed:
            raise StoreClosed(f"session {self.location.session_id} is closed for writing")
        reply = _Reply()
        document = metadata.model_dump(mode="json")
        await _send(
            self._send, WriteMetadata(location=self.location, metadata=document, reply=reply)
        )
        stamp: Stamp = await reply.wait()
        return stamp

    async def close(self) -> None:
        """Make the session's files durable and release its lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            reply = _Reply()
            await _send(self._send, CloseSession(location=self.location, reply=reply))
            await reply.wait()
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
    await anyio.to_thread.run_sync(actor.prepare)
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
