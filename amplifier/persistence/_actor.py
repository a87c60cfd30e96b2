"""The persistence actor: the group-commit loop, the only writer of session files.

Rule 1: every write to a session's files goes through this actor's mailbox;
        nothing else in the process opens them for writing.
Rule 2: ``seq`` is stamped here, in mailbox order, so it is strictly
        increasing across every session of the Runtime, and the journal
        holds batches in that order.
Rule 3: causality is mailbox order. A record sent after another is stamped
        after it and lands in the same batch or a later one; a batch is
        all or nothing. So a session need not wait for a record before
        sending what follows from it (a child's ``session:start`` after its
        parent's ``delegate:start``): it waits only where something leaves
        the Runtime (an answer, a return to the caller), and
        ``AppendEvent.after`` refuses a parent's ``delegate:end`` whose
        child's last records failed.
Rule 4: a batch succeeds or fails as a whole. If the disk refuses it, every
        request of the batch fails with ``WriteFailed``, nothing of it
        counts, and the rest of each writer's epoch is refused too (no
        session ever has a gap in its files).

Group commit: the actor takes one request, then every request already
waiting, and commits them together. What "committed" means depends on the
durability:

    fsync   the batch goes into the journal with one fdatasync (in the worker
            thread); the session folders and files are written behind it
            (``_materialise``), within ``WRITE_BEHIND_DELAY``
    flush   the batch is written to the session files (worker thread)
    none    the batch is buffered and written behind, like fsync, without
            the journal

Creating and closing a session are records like any other: a new session
is a ``CREATE`` in the journal, its folder is built behind; a closed one
releases its claim (``_ownership``) once its files are durable. Opening,
deleting, reindexing and flushing first bring every session file up to
date, so what is read after them is complete.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, assert_never, overload

import anyio
import orjson
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from ._documents import format_ts
from ._exceptions import (
    CorruptSession,
    PersistenceError,
    SessionLocked,
    SessionNotFound,
    StoreWarning,
    WriteFailed,
    write_failed,
)
from ._file_history import FILE_HISTORY, keep_content
from ._files import fsync_dir, last_seq, metadata_seq, set_aside_torn_tail, sweep_temp_files
from ._journal import FrameKind, Journal, encode_batch, encode_entry
from ._materialise import Backlog, Create, Materialiser, Release, remove_session_folder
from ._ownership import Handovers, Owner, claim, read_claim, release, runtime_alive
from ._paths import (
    EVENTS,
    METADATA,
    TRANSCRIPT,
    SessionLocation,
    ensure_private_dir,
    refuse_links_out,
)
from ._reader import read_metadata
from ._records import SCHEMA_VERSION, Durability
from ._recovery import RecoveryReport, recover_dead_journals, recover_journal
from ._requests import (
    CONTROLS,
    Acks,
    AppendEvent,
    AppendMessage,
    CloseSession,
    ControlRequest,
    CreateSession,
    DeleteSessions,
    Flush,
    KeepFile,
    OpenSession,
    RecordRequest,
    Reindex,
    Request,
    WriteMetadata,
)
from ._upkeep import IndexUpkeep
from ._writer import FilesWriter


class Clock(Protocol):
    """Wall-clock time for record stamps (``utc_now``); tests pass a fake one.

    Any function of no arguments that returns an aware ``datetime`` is one.
    """

    def __call__(self) -> datetime: ...


CHECKPOINT_BYTES = 16 * 1024 * 1024
"""Journal size past which the files are synced and the journal emptied."""
WRITE_BEHIND_BYTES = 1024 * 1024
WRITE_BEHIND_DELAY = 0.05
"""Seconds (at most) between a record's acknowledgement and its line in the session file;
also how soon another process sees a new session, or a closed one released."""
WRITE_ROUND_SECONDS = 0.05
"""Seconds a round of writing behind spends in the Runtime's own thread before it stops
and leaves the rest to the next round: a loop that never idles holds the interpreter's lock,
and that thread, waiting for it after every system call, would write one round for as long
as the loop stays busy. A round that ran longer has the next start the writer process
(``FilesWriter.hurry``), which then takes every round."""
GATHER_DELAY = 0.005
"""Seconds (at most) a group nobody waits for is held for more: a session that posts and
goes on costs one commit with its next answer (one fdatasync under fsync, one write under
flush), not one per group."""
THREADS = 4
"""The actor's worker threads at most: its calls that run at once are a commit's, a round
of writing behind's and one under the session files' lock (and its shutdown's, alone)."""

T = TypeVar("T")

CommitListener = Callable[[Sequence[dict[str, Any]]], None]
"""Called on the event loop after each commit with the committed event records, in seq order.

Must not block; the runtime uses it to feed in-process subscribers.
"""


def stamp_prefix(ts: str) -> bytes:
    """How every line stamped at ``ts`` begins, with ``%d`` for its seq; the body a
    session serialised (without its opening brace) follows."""
    return f'{{"version":{SCHEMA_VERSION},"seq":%d,"ts":"{ts}",'.encode()


def stamped_line(stamp: Stamp, body: bytes) -> bytes:
    """A record's line as written under ``stamp``."""
    return (stamp_prefix(stamp.ts) % stamp.seq) + body[1:]


class CommittedEvents(Sequence[dict[str, Any]]):
    """The event records of one commit, each decoded from its line when it is read.

    What a listener sees is what was written, and a listener with nobody to
    tell (a Runtime without subscribers) reads none: the records are not
    kept as objects beside their lines until the commit is answered.
    """

    __slots__ = ("_lines",)

    def __init__(self, lines: Sequence[bytes]) -> None:
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [orjson.loads(line) for line in self._lines[index]]
        record: dict[str, Any] = orjson.loads(self._lines[index])
        return record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (orjson.loads(line) for line in self._lines)


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


@dataclass(slots=True)
class _Held:
    """A session this Runtime writes (created or opened, not yet closed).

    Its paths are strings made once, not Paths: a record's way to its file
    is on the hot path.
    """

    location: SessionLocation
    folder: bytes
    """The folder relative to the home, as the journal names it."""
    directory: str
    events: str
    transcript: str
    metadata: str
    built: bool = True
    """Its folder exists or will (False: its creation failed)."""
    failed_epoch: int = -1
    failure: BaseException | None = None

    @classmethod
    def of(cls, location: SessionLocation) -> _Held:
        relative = location.relative
        directory = f"{location.home}/{relative}"
        return cls(
            location,
            relative.encode(),
            directory,
            f"{directory}/{EVENTS}",
            f"{directory}/{TRANSCRIPT}",
            f"{directory}/{METADATA}",
        )


@dataclass(slots=True)
class _Batch:
    """The records of one phase of a group commit."""

    requests: list[RecordRequest]
    backlog: Backlog = field(default_factory=Backlog)
    entries: list[bytes] = field(default_factory=list)
    """The records as journal entries (durability fsync), in seq order."""
    first_seq: int = 0
    last_seq: int = 0
    events: list[bytes] = field(default_factory=list)
    """The event lines, for the commit listeners."""


async def receive_group(
    receive: MemoryObjectReceiveStream[Request], limit: int | None = None
) -> list[Request]:
    """The next group of requests: the first one to come, and every one sent meanwhile
    (at most ``limit``). Empty once every sender is closed and nothing is left.

    The caller runs shielded and is cancelled only to abandon its mailbox (a store
    whose writers never closed): then the group taken here is dropped unanswered,
    like the rest of the mailbox and the commit under way, so the yield below
    needs no shield of its own (on asyncio, a shielded one costs a cancel scope
    per group).
    """
    try:
        first = await receive.receive()
    except anyio.EndOfStream:
        return []
    # Let every task that is ready run first: what they send joins this group.
    await anyio.lowlevel.checkpoint()
    requests = [first]
    while limit is None or len(requests) < limit:
        try:
            requests.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return requests


class PersistenceActor:
    """Owns the journal (the Runtime's lock), the write-behind and the claims of one Runtime.

    Not used directly: ``open_store`` starts it and hands out a ``Store``.
    """

    def __init__(
        self,
        home: Path,
        durability: Durability,
        clock: Clock,
        receive: MemoryObjectReceiveStream[Request],
    ) -> None:
        self.home = home
        self.durability: Durability = durability
        self._clock = clock
        self._receive = receive
        self._seq = 0
        self._held: dict[int, _Held] = {}
        self._claimed: dict[str, int] = {}
        """Session id -> handle, for every session this Runtime has open."""
        self._journal: Journal | None = None
        """Created at the first write; its lock is the Runtime's (``_ownership``)."""
        self._owner: Owner | None = None
        self._handovers: Handovers | None = None
        """Closed sessions not yet released, listed for other processes at a root's close."""
        self._upkeep = IndexUpkeep(home)
        self._materialiser = Materialiser(home, self._upkeep, track_dirty=durability == "fsync")
        self._files = FilesWriter(self._materialiser, durability)
        self._backlog = Backlog()
        """Acknowledged, not yet in the session files (durability fsync or none)."""
        self._backlog_since = math.inf
        self._releasing: list[SessionLocation] = []
        """Closed and written; their claims go once their files are durable."""
        self._writing = False
        """A write-behind task is running (at most one at a time)."""
        self._files_lock = anyio.Lock()
        """Held around every worker-thread call that touches the session files."""
        self._threads = anyio.CapacityLimiter(THREADS)
        """The actor's own worker threads (``in_thread``)."""
        self._tasks: TaskGroup | None = None
        self._broken: BaseException | None = None
        self._behind_failing = False
        """Writing behind has failed since it last succeeded (warned once)."""
        self.listeners: list[CommitListener] = []
        self.acks = Acks()
        self.recovered = RecoveryReport()
        self._replay_warned = False
        self.scope = anyio.CancelScope(shield=True)
        self.stopped = anyio.Event()

    async def in_thread(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in one of the actor's own worker threads (DESIGN: its blocking
        file work runs in worker threads it owns). anyio's shared limiter would do it with
        whatever tokens the program's own blocking calls, or its tools', leave free: with
        all of them held, every session's turn waited for its commit."""
        return await anyio.to_thread.run_sync(work, *args, limiter=self._threads)

    # -- lifecycle ------------------------------------------------------------

    def prepare(self) -> None:
        """Blocking start-up: replay the journals of runtimes that died.

        Nothing is created here: a Runtime that only reads writes nothing
        (the journal, the runtime's lock, comes with the first write).
        """
        if not self.home.is_dir():
            return
        self._replay_dead_journals()
        self._upkeep.open()

    def _replay_dead_journals(self) -> None:
        """Replay every journal whose runtime died; one that cannot be replayed (a session
        folder that cannot be written) is left for later, with a warning, once: it holds
        only sessions whose claim names its runtime, and opening or deleting one of those
        replays that journal first (``_claim``), which then fails for that session alone."""
        try:
            self.recovered.add(recover_dead_journals(self.home, own=self._own_name()))
        except OSError as exc:
            if not self._replay_warned:
                self._replay_warned = True
                warnings.warn(
                    f"{write_failed(exc)}; journals of runtimes that did not shut down were "
                    "not replayed (the next runtime that can write will)",
                    StoreWarning,
                    stacklevel=3,
                )

    def continue_above(self, seq: int) -> None:
        """Stamp every later record above ``seq`` (a restarted actor, over its own journal)."""
        self._seq = max(self._seq, seq)

    def _start_writing(self, *, records: bool = True) -> None:
        """Blocking: the home, this Runtime's journal and lock, before its first write.

        Without ``records`` (a deletion: claims and renames), the journal gets no room
        ahead: deleting sessions to free a full disk must not need a block of it."""
        if self._journal is not None:
            return
        ensure_private_dir(self.home / "projects", below=self.home)
        journal = Journal.create(self.home, preallocate=records and self.durability == "fsync")
        self._journal = journal
        self._owner = Owner.current(journal.name)
        self._handovers = Handovers(self.home, journal.name)
        self._files.writing_as(journal.fileno())

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
                left = await self.in_thread(self._shutdown)
                if left:
                    warnings.warn(left, StoreWarning, stacklevel=1)
            self.stopped.set()

    async def _serve(self) -> None:
        while requests := await receive_group(self._receive):
            if not self.acks.demand.is_set():
                await self._gather(requests)
            await self._commit(requests)

    async def _gather(self, requests: list[Request]) -> None:
        """Hold a group nobody waits for, adding what comes, until somebody waits.

        Every commit answers one group (under fsync, one fdatasync of the
        journal); records that only ride (a turn's events before its answer,
        a child's before its end) need none of their own: an agent task
        with a sub-agent is two commits (its answer, its close), in every
        durability. At most ``GATHER_DELAY``: what nobody waits for is still
        durable promptly, and subscribers see it.
        """
        with anyio.move_on_after(GATHER_DELAY):
            await self.acks.demand.wait()
        while True:
            try:
                requests.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break

    def _shutdown(self) -> str | None:
        """Blocking: write what is behind, make it durable, release every claim.

        Returns what the user must be told if not everything could be written.
        """
        left = None
        journal = self._journal
        try:
            self._releasing += self._files.apply(self._backlog, last=True)
            if journal is not None and self.durability == "fsync":
                self._files.sync()
            self._files.close()  # before the journal goes: the writer holds its lock
            self._releasing += [held.location for held in self._held.values() if held.built]
            self._claimed.clear()
            self._release_closed()
            if self._handovers is not None:
                self._handovers.remove()
            if journal is not None:
                journal.remove(sync=self.durability == "fsync")
                self._journal = None
        except OSError as exc:
            if journal is not None:
                if self.durability == "none":  # its journal holds only the lock
                    left = (
                        f"{write_failed(exc)}; with durability none there is no journal: "
                        "what was not written to the session files is lost"
                    )
                else:  # the journal holds what the files lack; the next Runtime replays it
                    left = (
                        f"{write_failed(exc)}; what is missing stays in {journal.path} and "
                        "is written to the session files by the next runtime that starts"
                    )
                journal.abandon()
                self._journal = None
        finally:
            self._files.close()
            self._held.clear()
            self._claimed.clear()
            self._upkeep.close()
        return left

    # -- one group commit -------------------------------------------------------

    async def _commit(self, requests: list[Request]) -> None:
        """Commit ``requests``: the records as one group, then the controls, in order.

        A control may come after records sent later than it: what it
        promises (everything sent before it is written) still holds. The
        flushes of a batch share one catch-up.
        """
        self.acks.renew_demand()
        records: list[RecordRequest] = []
        controls: list[ControlRequest] = []
        flushes: list[Flush] = []
        for request in requests:
            if isinstance(request, Flush):
                flushes.append(request)
            elif isinstance(request, CONTROLS):
                controls.append(request)
            else:
                records.append(request)
        if records:
            await self._commit_records(records)
        for control in controls:
            await self._control(control)
        if flushes:
            # The one that asks most answers for all of them.
            leading = next((f for f in flushes if f.release), flushes[0])
            await self._control(leading)
            for flush in flushes:
                if flush is not leading:
                    flush.error = leading.error
                    flush.done = True
        self.acks.announce()
        journal = self._journal
        if journal is None or self.durability != "fsync":
            return
        if journal.size > CHECKPOINT_BYTES:
            await self._empty_journal(journal)
        elif journal.short_of_room():
            # While the sessions just answered prepare their next records; the requests
            # that come meanwhile wait in the mailbox for the next commit.
            with contextlib.suppress(OSError):  # a batch that needs the room grows it itself
                await self.in_thread(journal.make_room)

    async def _commit_records(self, requests: list[RecordRequest]) -> None:
        failure: BaseException | None = self._broken
        if failure is None and self._journal is None:
            try:
                await self.in_thread(self._start_writing)
            except OSError as exc:
                failure = write_failed(exc)
        if failure is not None:
            self._fail(requests, failure)
            return
        batch = self._stamp(requests)
        try:
            if self.durability == "flush":
                async with self._files_lock:
                    try:
                        released = await self.in_thread(
                            self._materialiser.write_now, batch.backlog
                        )
                    finally:
                        self._schedule()  # closes the files it keeps open, once writing stops
                    self._releasing += released
                    if released:
                        await self.in_thread(self._release_closed)
            else:
                handing_over = any(isinstance(r, CloseSession) and r.hand_over for r in requests)
                if self._journal is not None and self.durability == "fsync" and batch.entries:
                    body = b"".join(batch.entries)
                    await self.in_thread(
                        self._journal_append,
                        encode_batch(batch.first_seq, body),
                        batch.last_seq,
                        handing_over,
                    )
                elif handing_over and self._handovers is not None:
                    # One short line into a file held open, not synced: written from the
                    # loop, since a worker thread's round trip costs many times the write
                    # (an agent task in `none`: about a fifth of its time, on trio a third).
                    self._handovers.list_closed()
                self._defer(batch.backlog)
                if handing_over:
                    # The files, their sync and the release follow behind, with the round
                    # that writes what other sessions left (one sync for many handovers).
                    self._schedule()
        except OSError as exc:
            self._fail(requests, write_failed(exc), batch)
            return
        if batch.events:
            events = CommittedEvents(batch.events)
            for listener in self.listeners:
                listener(events)
        for request in requests:
            request.done = True

    def _journal_append(self, batch: bytes, last_seq: int, handing_over: bool) -> None:
        """Blocking: make a group durable; list the sessions a root's close hands over."""
        assert self._journal is not None
        self._journal.append(batch, last_seq)
        if handing_over and self._handovers is not None:
            self._handovers.list_closed()

    def _stamp(self, requests: list[RecordRequest]) -> _Batch:
        """Give every record its seq and its line; nothing is written yet."""
        batch = _Batch(requests)
        ts = format_ts(self._clock())
        stamp = stamp_prefix(ts)
        journaling = self.durability == "fsync"
        backlog = batch.backlog
        entries = batch.entries
        # The journal entry of each session's latest metadata since the last create: a newer
        # one replaces it (a group is all or nothing, so the older is never read). A parent
        # delegating to many children at once rewrites its growing list of children for
        # each; journalled every time, that is quadratic in the number of children.
        latest: dict[str, int] = {}
        for request in requests:
            held = self._admit(request)
            if held is None:
                continue
            self._seq += 1
            seq = self._seq
            match request:
                case AppendEvent():
                    line = (stamp % seq) + request.body[1:]
                    backlog.line(held.events, line, seq)
                    if journaling:
                        entries.append(encode_entry(seq, FrameKind.EVENT, held.folder, line))
                    batch.events.append(line)
                case AppendMessage():
                    line = (stamp % seq) + request.body[1:]
                    backlog.line(held.transcript, line, seq)
                    if journaling:
                        entries.append(encode_entry(seq, FrameKind.MESSAGE, held.folder, line))
                case WriteMetadata():
                    document = _stamped_document(request.document, seq)
                    backlog.document(held.metadata, document, seq)
                    if journaling:
                        replaced = latest.get(held.metadata)
                        if replaced is not None:
                            entries[replaced] = b""
                        latest[held.metadata] = len(entries)
                        entries.append(encode_entry(seq, FrameKind.METADATA, held.folder, document))
                case CreateSession():
                    document = _stamped_document(request.document, seq)
                    backlog.barrier(Create(request.location, document, self._owner), seq)
                    if journaling:
                        latest.clear()  # what a create follows stays before it
                        entries.append(encode_entry(seq, FrameKind.CREATE, held.folder, document))
                case CloseSession():
                    # Not a record on disk: the seq only orders the release.
                    self._forget_handle(request.handle)
                    if held.built:
                        backlog.barrier(Release(held.location), seq)
                        if self._handovers is not None:
                            self._handovers.closed(held.location)
                case _:
                    assert_never(request)
            request.value = (seq, ts)  # a plain tuple: see ``Receipt.value``
            if not batch.first_seq:
                batch.first_seq = seq
            batch.last_seq = seq
        return batch

    def _admit(self, request: RecordRequest) -> _Held | None:
        """The session a record is for; None if the record is refused (its answer says why)."""
        if isinstance(request, CreateSession):
            location = request.location
            held = self._held[request.handle] = _Held.of(location)
            if (
                location.session_id in self._claimed
                or (self._handovers is not None and location.session_id in self._handovers)
                or (not request.fresh and os.path.exists(held.directory))
            ):
                # Ids are random: only a caller choosing its own can collide.
                exists = FileExistsError(errno.EEXIST, "session exists", str(location.directory))
                held.built = False
                self._poison(held, request.epoch, exists)
                request.error = exists
                return None
            self._claimed[location.session_id] = request.handle
            return held
        found = self._held.get(request.handle)
        if found is None:
            request.error = _not_open()
            return None
        held = found
        if request.epoch == held.failed_epoch:
            request.error = held.failure
            # A close still closes (and releases); its receipt says what failed before it.
            return held if isinstance(request, CloseSession) else None
        if isinstance(request, AppendEvent):
            after = request.after
            if after is not None and after.error is not None:
                self._poison(held, request.epoch, after.error)
                request.error = after.error
                return None
        return held

    def _fail(
        self, requests: list[RecordRequest], failure: BaseException, batch: _Batch | None = None
    ) -> None:
        """Rule 4: the whole phase fails; each writer's epoch is poisoned from here on."""
        for request in requests:
            request.error = failure
            request.done = True
            held: _Held | None
            if isinstance(request, CreateSession):
                held = self._held.setdefault(request.handle, _Held.of(request.location))
                held.built = False
            else:
                held = self._held.get(request.handle)
            if held is not None:
                self._poison(held, request.epoch, failure)
            if isinstance(request, CloseSession):
                self._forget_handle(request.handle)
        if batch is not None and self.durability == "flush" and self._owner is not None:
            # A refused flush batch never counts: folders it built go (best effort).
            for request in requests:
                if isinstance(request, CreateSession):
                    with contextlib.suppress(OSError):
                        remove_session_folder(request.location, self._owner)

    def _poison(self, held: _Held, epoch: int, failure: BaseException) -> None:
        if held.failed_epoch != epoch:
            held.failed_epoch, held.failure = epoch, failure

    def _forget_handle(self, handle: int) -> None:
        held = self._held.pop(handle, None)
        if held is not None and self._claimed.get(held.location.session_id) == handle:
            del self._claimed[held.location.session_id]

    # -- controls: open, delete, reindex, flush -----------------------------------------

    async def _control(self, request: ControlRequest) -> None:
        try:
            match request:
                case OpenSession():
                    request.value = await self._open(request)
                case DeleteSessions():
                    request.value = await self._delete(request)
                case Reindex():
                    request.value = await self._locked(self._reindex_blocking)
                case KeepFile():
                    request.value = await self._locked(lambda: self._keep_blocking(request))
                case Flush(release=True):
                    await self._locked(lambda: self._write_round(checkpoint=True))
                case Flush():
                    await self._locked(self._catch_up)
                case _:
                    assert_never(request)
        except OSError as exc:
            failure = write_failed(exc)
            request.error = failure
            if self.durability == "fsync" and self._journal is not None:
                self._warn_behind(failure)
        except PersistenceError as exc:
            request.error = exc
        else:
            if not self._backlog:
                self._broken = None
                self._behind_failing = False
        request.done = True
        if self._releasing:
            self._schedule()

    async def _locked(self, work: Callable[[], Any]) -> Any:
        """Run blocking ``work`` in the worker thread, once everything behind is written."""
        async with self._files_lock:
            return await self.in_thread(work)

    async def _open(self, request: OpenSession) -> OpenedSession:
        location = request.location
        if location.session_id in self._claimed:
            raise SessionLocked(location.session_id, "another session of this runtime")
        if self._journal is None:
            await self.in_thread(self._start_writing)
        opened: OpenedSession = await self._locked(lambda: self._open_blocking(location))
        self._seq = max(self._seq, opened.last_seq)
        self._held[request.handle] = _Held.of(location)
        self._claimed[location.session_id] = request.handle
        self._releasing = [r for r in self._releasing if r != location]
        return opened

    def _open_blocking(self, location: SessionLocation) -> OpenedSession:
        self._catch_up()
        if not location.directory.is_dir():
            raise SessionNotFound(location.session_id)
        refuse_links_out(location)
        # Before claiming: a dead runtime's records must be in the files first.
        self._replay_dead_journals()
        self._claim(location)
        if self._handovers is not None:
            self._handovers.settle((location,))  # this runtime's again, not handed over
        try:
            sweep_temp_files(location.directory)
            if (location.directory / FILE_HISTORY).is_dir():
                sweep_temp_files(location.directory / FILE_HISTORY)
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
            assert self._owner is not None
            release(location, self._owner)
            raise
        # The session's files continue above their own last seq, whichever
        # Runtime wrote it, so seq only grows within every file.
        return OpenedSession(last_seq=seen, torn=torn)

    def _claim(self, location: SessionLocation) -> None:
        """Claim ``location`` for this Runtime, replaying its dead owner's journal first."""
        owner = self._owner
        assert owner is not None
        previous = read_claim(location)
        if (
            previous is not None
            and previous.runtime != owner.runtime
            and not runtime_alive(self.home, previous.runtime)
        ):
            recover_journal(self.home, previous.runtime)
        try:
            claim(location, owner)
        except (FileNotFoundError, NotADirectoryError):
            raise SessionNotFound(location.session_id) from None  # deleted meanwhile

    async def _delete(self, request: DeleteSessions) -> list[str]:
        for location in request.locations:
            if location.session_id in self._claimed:
                raise SessionLocked(location.session_id, "a session open in this runtime")
        if self._journal is None:
            await self.in_thread(lambda: self._start_writing(records=False))
        removed: list[str] = await self._locked(
            lambda: self._delete_blocking(request.locations, request.untouched_since)
        )
        return removed

    def _delete_blocking(
        self, locations: tuple[SessionLocation, ...], untouched_since: datetime | None
    ) -> list[str]:
        """Remove the folders (children before parents); the ids this call removed.

        None are removed if any session is in use (``SessionLocked``) or, with
        ``untouched_since``, was updated at or after it: a session resumed
        since a cleanup made its plan is no longer old. A folder another
        process removes meanwhile is skipped. Each is claimed first (so
        nobody opens it meanwhile) and moved into ``.staging`` before it is
        removed, so an opener finds the whole session or none.
        """
        self._catch_up()
        if self._journal is not None and self.durability == "fsync":
            # Nothing of a deleted session may come back from this journal.
            self._files.sync()
            self._journal.mark_checkpoint(self._backlog.through)
        # A dead runtime's journal could otherwise bring a deleted session back.
        self._replay_dead_journals()
        owner = self._owner
        assert owner is not None
        claimed: list[SessionLocation] = []
        removed: list[str] = []
        try:
            for location in locations:
                refuse_links_out(location)
                try:
                    self._claim(location)
                except SessionNotFound:
                    continue  # gone: another process removed it
                claimed.append(location)
            if untouched_since is not None and any(
                _updated_since(location, untouched_since) for location in claimed
            ):
                return []
            for location in reversed(claimed):
                if remove_session_folder(location, owner):
                    removed.append(location.session_id)
            for parent in {location.directory.parent for location in claimed}:
                with contextlib.suppress(FileNotFoundError):
                    fsync_dir(parent)
            self._upkeep.forget(removed)
            return removed
        finally:
            for location in claimed:
                if location.session_id not in removed:
                    release(location, owner)

    def _keep_blocking(self, request: KeepFile) -> str:
        """Keep a content in a session's file history, its folder written first."""
        self._catch_up()
        location = request.location
        if not location.directory.is_dir():
            raise SessionNotFound(location.session_id)
        refuse_links_out(location)
        return keep_content(location, request.content, sync=self.durability == "fsync")

    def _own_name(self) -> str | None:
        return self._journal.name if self._journal is not None else None

    def _reindex_blocking(self) -> int:
        self._catch_up()
        try:
            return self._upkeep.rebuild()
        except sqlite3.Error as exc:
            raise PersistenceError(f"could not rebuild the index: {exc}") from exc

    # -- writing behind -----------------------------------------------------------------

    def _catch_up(self, until: float | None = None) -> bool:
        """Blocking, under the files lock: write what is behind now (no sync); False if
        ``until`` (a ``time.monotonic()`` deadline) came first and some is left for later."""
        chunk = self._backlog.take()
        released: list[SessionLocation] = []
        try:
            # Under flush, the files stay open for the next batch (``_write_round`` closes them).
            keep = self.durability == "flush"
            self._files.apply(chunk, keep_open=keep, until=until, released=released)
        finally:
            # What it did not reach (its time ran out, or it failed) goes first in the next;
            # the closes it passed are released either way.
            finished = not chunk
            self._backlog.put_back(chunk)
            self._releasing += released
        if self.durability != "fsync":
            self._release_closed()
        return finished

    def _defer(self, backlog: Backlog) -> None:
        """Keep acknowledged records for the session files; a background task writes them."""
        if not backlog:
            return
        self._backlog.extend(backlog)
        if self._backlog.size >= WRITE_BEHIND_BYTES:
            self._backlog_since = -math.inf  # due now
        self._schedule()

    def _schedule(self) -> None:
        """Have the write-behind task run within ``WRITE_BEHIND_DELAY`` from now."""
        self._backlog_since = min(self._backlog_since, anyio.current_time())
        if not self._writing and self._tasks is not None:
            self._writing = True
            self._tasks.start_soon(self._write_behind)

    async def _write_behind(self) -> None:
        """Bring the session files up to date, ``WRITE_BEHIND_DELAY`` after the oldest record.

        Runs beside the actor's commits (one worker thread journals while
        another writes the files). In fsync mode, sessions closed since the
        last round are synced and their claims released, once the journal's
        checkpoint says their records need no replay. On a failure the
        unwritten rest goes back in front of newer records and is tried
        again: with a journal nothing acknowledged is lost; without one
        (durability none) new requests are refused until the disk takes
        writes again.
        """
        try:
            while self._backlog or self._releasing or self._materialiser.holding_files:
                if self._backlog_since == math.inf:  # only descriptors to close, in a while
                    self._backlog_since = anyio.current_time()
                due = self._backlog_since + WRITE_BEHIND_DELAY - anyio.current_time()
                if due > 0:
                    await anyio.sleep(due)
                async with self._files_lock:
                    self._backlog_since = math.inf
                    started = time.monotonic()
                    try:
                        finished = await self.in_thread(self._write_round)
                    except OSError as exc:
                        if self.durability == "none":
                            self._broken = write_failed(exc)
                        else:
                            self._warn_behind(write_failed(exc))
                        self._backlog_since = anyio.current_time()
                    else:
                        self._broken = None
                        self._behind_failing = False
                        if not finished:
                            self._backlog_since = -math.inf  # the rest is overdue
                        if time.monotonic() - started > WRITE_ROUND_SECONDS:
                            self._files.hurry()
            self._files.idle()  # nothing behind: the next round is not back to back
        finally:
            self._writing = False

    def _write_round(self, *, checkpoint: bool = False) -> bool:
        """Blocking, under the files lock: write what is behind; sync where a claim waits.

        With a journal, the files of closed sessions are synced and the
        checkpoint moved past their records before their claims go: from
        then on no replay of this journal touches them, whoever writes
        there next. A round that ran out of time (``WRITE_ROUND_SECONDS``;
        never one for a ``checkpoint``) returns False and leaves the rest,
        the sync, the checkpoint and the claims to the next.
        """
        through = self._backlog.through
        until = None if checkpoint else time.monotonic() + WRITE_ROUND_SECONDS
        if not self._catch_up(until):
            return False
        if self.durability == "flush":
            self._materialiser.close_files()
        journal = self._journal
        if journal is None or self.durability != "fsync":
            return True
        if self._releasing or checkpoint:
            self._files.sync()
            journal.mark_checkpoint(through)
            self._release_closed()
        return True

    def _release_closed(self) -> None:
        """Blocking: clear the claims of closed sessions (those not opened again since)."""
        owner = self._owner
        releasing, self._releasing = self._releasing, []
        if owner is None:
            return
        for location in releasing:
            if location.session_id not in self._claimed:
                release(location, owner)
        if self._handovers is not None:
            self._handovers.settle(releasing)

    async def _empty_journal(self, journal: Journal) -> None:
        """Sync the files and empty the journal; commits wait meanwhile (every 16 MiB)."""
        if journal.checkpoint < journal.last_seq:
            with contextlib.suppress(OSError):  # the files are retried; so is this
                async with self._files_lock:
                    await self.in_thread(lambda: self._write_round(checkpoint=True))
        journal.reset()

    def _warn_behind(self, failure: WriteFailed) -> None:
        """Say once (per spell of failures) that the files lag behind the journal."""
        if self._behind_failing:
            return
        self._behind_failing = True
        warnings.warn(
            f"{failure}; the records are safe in the journal and reach the session files "
            "once they can be written (at the latest, when the next runtime starts)",
            StoreWarning,
            stacklevel=1,
        )


def _stamped_document(document: bytes, seq: int) -> bytes:
    """A metadata document (indented JSON object) with the ``seq`` it is written under."""
    return document[: document.rindex(b"}")].rstrip() + b',\n  "seq": %d\n}\n' % seq


def _updated_since(location: SessionLocation, when: datetime) -> bool:
    """True if the session's metadata says it was updated at or after ``when``."""
    try:
        return read_metadata(location).updated >= when
    except (CorruptSession, SessionNotFound, OSError):
        return False  # damaged: its age is the folder's, which the plan already judged


def _not_open() -> PersistenceError:
    return PersistenceError("the session is not open for writing (it was closed)")
