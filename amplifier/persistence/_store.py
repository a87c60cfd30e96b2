"""The persistence actor as the rest of the Runtime uses it: ``Store`` and ``SessionWriter``.

Two ways to write a record, both in mailbox order (the actor's Rule 3):

- ``append_*`` sends and waits until the record is committed under the
  store's durability, and returns its ``Stamp``;
- ``post_*`` only sends (waiting just when the mailbox is full). The
  record is committed in order with everything else; ``sync`` waits for
  every record posted so far and raises the first failure among them.

A session posts what causality alone orders, and syncs where something
leaves the Runtime (an answer returned, a session opened for a caller).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args

import anyio
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from amplifier._errors import UsageError, unwrap_single_error

from ._actor import (
    Clock,
    CommitListener,
    OpenedSession,
    PersistenceActor,
    Stamp,
)
from ._exceptions import PersistenceError, StoreClosed, write_failed
from ._paths import SessionLocation
from ._records import Durability, SessionMetadata, utc_now
from ._recovery import RecoveryReport
from ._requests import (
    Acks,
    AppendEvent,
    AppendMessage,
    CloseSession,
    CreateSession,
    DeleteSessions,
    Flush,
    KeepFile,
    OpenSession,
    Receipt,
    Reindex,
    Request,
    WriteMetadata,
)

MAILBOX_SIZE = 32768
"""Requests sent and not yet taken by the persistence actor, at most; a sender waits for
room beyond. While the actor commits a group, sessions that do not wait for it (a fan-out's
children) go on sending, and the next group takes all they sent: beside a loop that never
idles a commit costs far more than its disk time (its worker thread waits for the
interpreter's lock at every step back), so large groups are what keeps the actor up with
them. At 4,096, 1,000 agent children from one parent filled it at every commit and the loop
sat idle for a third of the fan-out. A request is its record's bytes and a few objects:
about 1 KB, so this bounds what waits to some 30 MB."""
READ_THREADS = 8
"""Blocking reads of the session files (a resume's, a listing's, a search's) that run at once,
at most, in the store's own worker threads (``Store.read``)."""
SHUTDOWN_GRACE = 10.0
"""How long closing the store waits for outstanding writers before it stops the actor."""

T = TypeVar("T")

_LINE = orjson.OPT_APPEND_NEWLINE
_HEADS_KEPT = 32
"""Beginnings of event lines a writer keeps (a session sends a dozen kinds of event)."""
_STAMP_KEYS = frozenset({"version", "seq", "ts"})


class Committer(Protocol):
    """What serves a ``Store``'s mailbox: the ``PersistenceActor``, or a forwarder to one.

    A forwarder (the Ray backend's session hosts) hands the requests to a
    persistence actor in another process and fills their receipts from its
    answers; the sessions cannot tell the difference.
    """

    home: Path
    durability: Durability
    recovered: RecoveryReport
    listeners: list[CommitListener]
    acks: Acks


class Store:
    """The persistence actor's mailbox, as the rest of the Runtime uses it.

    Every waiting method is a checkpoint and returns once its request is
    committed under the store's durability. Cancelling a call does not
    withdraw a request that was already sent.
    """

    def __init__(self, actor: Committer, send: MemoryObjectSendStream[Request]) -> None:
        self._actor = actor
        self._send = send
        self._acks = actor.acks
        self._handles = itertools.count(1)
        self._readers = anyio.CapacityLimiter(READ_THREADS)

    @property
    def home(self) -> Path:
        return self._actor.home

    @property
    def durability(self) -> Durability:
        return self._actor.durability

    @property
    def recovered(self) -> RecoveryReport:
        """What recovery restored from journals of runtimes that died."""
        return self._actor.recovered

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)``, a blocking read of the session files, in one of the store's own
        worker threads. anyio's shared limiter would run it with whatever tokens the
        program's own blocking calls, or its tools', leave free: with all of them held
        (or held by calls that wait for this Runtime), no session could be resumed, listed
        or searched. Separate from the persistence actor's: a long search never holds up
        a commit."""
        return await anyio.to_thread.run_sync(work, *args, limiter=self._readers)

    def add_listener(self, listener: CommitListener) -> None:
        self._actor.listeners.append(listener)

    async def create(
        self,
        location: SessionLocation,
        metadata: SessionMetadata,
        *,
        wait: bool = True,
        fresh: bool = False,
    ) -> SessionWriter:
        """A new session: its metadata, then its folder (behind the journal).

        With ``wait`` it is committed (durable, under ``fsync``) when this
        returns; without, a failure shows at the writer's next wait.
        ``fresh``: its id was just drawn at random (a runtime's ids are), so
        no folder on disk can hold it and none is looked for; a session of
        this runtime with that id is still refused.
        """
        writer = self._writer(location)
        request = CreateSession(
            handle=writer.handle,
            location=location,
            document=_document(metadata),
            fresh=fresh,
        )
        try:
            await writer._submit(request)
            if wait:
                await writer.sync()
        except BaseException:
            writer._abandon()
            raise
        return writer

    async def open(self, location: SessionLocation) -> tuple[SessionWriter, OpenedSession]:
        """Claim an existing session for writing (``SessionLocked`` if someone else has it)."""
        writer = self._writer(location)
        request = OpenSession(handle=writer.handle, location=location)
        await _send(self._send, request)
        try:
            opened: OpenedSession = await self._acks.wait(request)
        except BaseException:
            writer._abandon()
            raise
        return writer, opened

    async def delete(
        self, locations: Sequence[SessionLocation], *, untouched_since: datetime | None = None
    ) -> list[str]:
        """Delete these sessions (give children after their parent); the ids this removed.

        Raises ``SessionLocked`` naming the holder, and deletes nothing, if any
        of them is open in some process. With ``untouched_since``, deletes
        nothing (and returns ``[]``) if any was updated at or after it.
        Sessions already gone (another process removed them) are skipped.
        """
        request = DeleteSessions(locations=tuple(locations), untouched_since=untouched_since)
        await _send(self._send, request)
        removed: list[str] = await self._acks.wait(request)
        return removed

    async def reindex(self) -> int:
        """Rebuild the session index from the metadata files; how many sessions it holds."""
        request = Reindex()
        await _send(self._send, request)
        total: int = await self._acks.wait(request)
        return total

    async def flush(self, *, release: bool = False) -> None:
        """Wait until everything sent so far is in the session files (any durability).

        With ``release``, also until the sessions closed so far are free for
        other processes (their files synced, their claims cleared).
        """
        request = Flush(release=release)
        await _send(self._send, request)
        await self._acks.wait(request)

    async def keep(self, location: SessionLocation, content: bytes) -> str:
        """Keep ``content`` in the session's file history (once); its digest, once durable.

        Sent in mailbox order, so it follows the session's creation; under
        ``fsync`` the content is on stable storage when this returns.
        """
        request = KeepFile(location=location, content=content)
        await _send(self._send, request)
        digest: str = await self._acks.wait(request)
        return digest

    async def forward(self, request: Request) -> None:
        """Send a request built elsewhere (by a writer in another process); answered in order.

        Its receipt is filled like any other; wait on it with ``wait``.
        """
        await _send(self._send, request)

    async def wait(self, receipt: Receipt) -> Any:
        """The answer of a forwarded request, once committed (raises what it failed with)."""
        return await self._acks.wait(receipt)

    def _writer(self, location: SessionLocation) -> SessionWriter:
        return SessionWriter(location, next(self._handles), self._send.clone(), self._acks)


class SessionWriter:
    """One session's way into the persistence actor; owned by that session's task."""

    __slots__ = (
        "_acks",
        "_closed",
        "_epoch",
        "_heads",
        "_last",
        "_send",
        "handle",
        "location",
        "session_id",
    )

    def __init__(
        self,
        location: SessionLocation,
        handle: int,
        send: MemoryObjectSendStream[Request],
        acks: Acks,
    ) -> None:
        self.location = location
        self.session_id = location.session_id
        self.handle = handle
        self._send = send
        self._acks = acks
        self._closed = False
        self._epoch = 0
        self._last: Receipt | None = None
        self._heads: dict[tuple[str | None, str], bytes] = {}
        """How an event's line begins, up to its data, by parent and event name."""

    @property
    def last(self) -> Receipt | None:
        """The receipt of the latest request sent (for ``AppendEvent.after``)."""
        return self._last

    async def append_event(
        self,
        event: str,
        data: Mapping[str, Any] | EncodedData,
        *,
        parent_id: str | None,
        after: Receipt | None = None,
    ) -> Stamp:
        """Append one event; returns its stamp once committed (``data`` as for ``post_event``)."""
        receipt = await self.post_event(event, data, parent_id=parent_id, after=after)
        return Stamp(*await self._wait(receipt))

    async def post_event(
        self,
        event: str,
        data: Mapping[str, Any] | EncodedData,
        *,
        parent_id: str | None,
        after: Receipt | None = None,
    ) -> Receipt:
        """Send one event without waiting for its commit.

        ``data``: JSON values, or their JSON as ``encode_data`` made it (a sender
        that had to encode it anyway, to look for secrets, pays once).
        ``after``: another writer's request this event depends on (a child's
        last); the event is refused if that one failed.
        """
        encoded = data if isinstance(data, EncodedData) else encode_data(data)
        head = self._heads.get((parent_id, event))
        if head is None:
            head = orjson.dumps(
                {"session_id": self.session_id, "parent_id": parent_id, "event": event}
            )
            head = head[:-1] + b',"data":'
            if len(self._heads) < _HEADS_KEPT:
                self._heads[parent_id, event] = head
        request = AppendEvent(
            handle=self.handle,
            epoch=self._epoch,
            body=head + encoded + b"}\n",
            session_id=self.session_id,
            parent_id=parent_id,
            event=event,
            after=after,
        )
        await self._submit(request)
        return request

    async def append_message(self, message: Mapping[str, Any]) -> Stamp:
        """Append one message (a mapping with at least ``role``) to ``transcript.jsonl``."""
        return Stamp(*await self._wait(await self.post_message(message)))

    async def post_message(self, message: Mapping[str, Any]) -> Receipt:
        """Send one message without waiting for its commit."""
        if not _STAMP_KEYS.isdisjoint(message):
            message = {k: v for k, v in message.items() if k not in _STAMP_KEYS}
        request = AppendMessage(handle=self.handle, epoch=self._epoch, body=_serialised(message))
        await self._submit(request)
        return request

    async def write_metadata(self, metadata: SessionMetadata) -> Stamp:
        return Stamp(*await self._wait(await self.post_metadata(metadata)))

    async def post_metadata(self, metadata: SessionMetadata) -> Receipt:
        """Send a new ``metadata.json`` without waiting for its commit."""
        request = WriteMetadata(handle=self.handle, epoch=self._epoch, document=_document(metadata))
        await self._submit(request)
        return request

    async def sync(self) -> None:
        """Wait until everything this writer sent is committed; raise the first failure.

        After raising, the writer goes on: later records are accepted again.
        """
        if self._last is not None:
            await self._wait(self._last)

    async def close(self, *, wait: bool = True) -> None:
        """Close the session: its claim goes once its files are durable. Idempotent.

        With ``wait``, returns once the session's records are durable,
        raising what failed since the last wait: its files, their sync and
        the release of its claim follow with the write-behind's next round
        (within ``WRITE_BEHIND_DELAY``), and any process may open it
        meanwhile (it waits for the handover, ``_ownership`` Rule 4).
        Without, all of that follows too, unlisted, and ``last`` is the
        close's receipt.
        """
        if self._closed:
            return
        request = CloseSession(handle=self.handle, epoch=self._epoch, hand_over=wait)
        try:
            await self._submit(request)
        finally:
            self._abandon()
        if wait:
            await self._wait(request)

    async def _wait(self, receipt: Receipt) -> Any:
        try:
            return await self._acks.wait(receipt)
        except PersistenceError:
            self._epoch += 1  # observed: what comes next is accepted again
            raise

    def has_room(self, requests: int) -> bool:
        """``requests`` more sent now go straight into the persistence actor's mailbox:
        sending them does not wait (nor yield to the loop), so no cancellation can stop them."""
        stats = self._send.statistics()
        return stats.max_buffer_size - stats.current_buffer_used >= requests

    async def _submit(self, request: Request) -> None:
        if self._closed:
            raise StoreClosed(f"session {self.session_id} is closed for writing")
        await _send(self._send, request)
        self._last = request

    def _abandon(self) -> None:
        self._closed = True
        self._send.close()


async def _send(stream: MemoryObjectSendStream[Request], request: Request) -> None:
    try:
        stream.send_nowait(request)
    except anyio.WouldBlock:
        try:
            await stream.send(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise StoreClosed("the persistence actor has stopped") from None
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        raise StoreClosed("the persistence actor has stopped") from None


class EncodedData(bytes):
    """An event's data as the JSON object stored, made by ``encode_data`` alone: a writer
    puts it into the event's line as it is, which it would never do with other bytes."""

    __slots__ = ()


def encode_data(
    data: Mapping[str, Any], *, default: Callable[[Any], Any] | None = None, option: int = 0
) -> EncodedData:
    """An event's data as JSON, or the caller's mistake as a ``UsageError`` (``default``
    and ``option`` as ``orjson.dumps`` takes them)."""
    return EncodedData(_serialised(data, default=default, option=option))


def _serialised(
    record: Mapping[str, Any],
    *,
    default: Callable[[Any], Any] | None = None,
    option: int = _LINE,
) -> bytes:
    """The record as JSON (by default its line without its stamp), or the caller's mistake
    as a ``UsageError``."""
    try:
        return orjson.dumps(record, default=default, option=option)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise UsageError(f"a record must hold JSON values only: {exc}") from exc


def _document(metadata: SessionMetadata) -> bytes:
    """``metadata.json`` without its ``seq`` (the actor adds the one it is written under)."""
    return orjson.dumps(metadata.document(), option=orjson.OPT_INDENT_2)


DURABILITIES: tuple[Durability, ...] = get_args(Durability)
"""The durability modes, strongest first."""


@asynccontextmanager
async def open_store(
    home: Path,
    *,
    durability: Durability = "fsync",
    clock: Clock = utc_now,
    continue_seq: bool = False,
) -> AsyncIterator[Store]:
    """Start a persistence actor for ``home``; on exit, write everything and stop it.

    Start-up replays the journals of runtimes that died; with
    ``continue_seq``, stamps go on above the highest seq they held (a
    persistence actor restarted over its own journal: seq never goes back). On exit the actor
    drains its mailbox once every writer has closed, syncs, releases its
    claims and removes its journal; writers still open after
    ``SHUTDOWN_GRACE`` seconds are cut off (their unsent records are lost,
    nothing sent is). Raises ``UsageError`` for a durability that is none of
    ``fsync``, ``flush`` and ``none``.
    """
    if durability not in DURABILITIES:
        raise UsageError(
            f"durability {durability!r} is not one of {', '.join(map(repr, DURABILITIES))}"
        )
    send, receive = anyio.create_memory_object_stream[Request](MAILBOX_SIZE)
    actor = PersistenceActor(home, durability, clock, receive)
    try:
        await actor.in_thread(actor.prepare)
    except OSError as exc:
        raise write_failed(exc) from None
    if continue_seq:
        actor.continue_above(actor.recovered.last_seq)
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
