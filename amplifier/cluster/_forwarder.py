"""A ``Store`` whose requests go, in batches, to the persistence service in another process.

The sessions of a host write through an ordinary ``Store`` and
``SessionWriter``; only the consumer of the mailbox differs: instead of the
``PersistenceActor``, a ``Forwarder`` takes every request waiting, sends
them in one call, and fills their receipts from the answers.

Rule 1: at most one batch is in flight; the next is sent once the previous
        one is answered. A request's ``after`` (another session's last
        request, sent before it through this same mailbox) is therefore in
        the same batch or answered already, and travels as an index into
        the batch or as the failure it met (``_wire``).
Rule 2: batches are numbered 1, 2, 3, ...; the service answers a number it
        has already committed with the answers it gave then, so a call
        delivered twice is applied once.
Rule 3: receipts stay in this process. Answers fill them in order, then
        the commit listeners see the batch's events (as in-process, in seq
        order) and every waiter is woken (``Acks``).
Rule 4: a session opened before the service restarted is unknown to the new
        one, which refuses its records (``PersistenceRestarted``): its turn
        fails, and it is resumed to go on. Its end is not lost, though:
        when its ``session:end`` is refused so, the session is opened
        again on the new service and its end (and what follows it: the
        metadata, the close) is sent again; nothing of it had been applied.
        Only if its files hold nothing beyond what this host saw
        acknowledged: otherwise another writer (a resume elsewhere, a batch
        in flight at the crash) wrote there, and the end is left unwritten
        and reported (``unended``) instead of written over them.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from amplifier._errors import unwrap_single_error
from amplifier.persistence import (
    Durability,
    PersistenceError,
    RecoveryReport,
    SessionLocation,
    Store,
)
from amplifier.persistence.lowlevel import (
    Acks,
    AppendEvent,
    CloseSession,
    CommitListener,
    CommittedEvents,
    CreateSession,
    OpenedSession,
    OpenSession,
    RecordRequest,
    Request,
    Stamp,
    receive_group,
    stamped_line,
)

from ._exceptions import PersistenceRestarted
from ._wire import Answer, Item, to_item

MAILBOX_SIZE = 4096
MAX_BATCH = 2048
"""Requests per call at most: a bound on one message's size, far above a normal batch."""
SHUTDOWN_GRACE = 10.0

Commit = Callable[[int, list[Item]], Awaitable[list[Answer]]]
"""Send batch number N; its answers in order. Raises ``PersistenceError`` if none came."""


class Forwarder:
    """Serves a ``Store``'s mailbox by committing its requests through ``commit``."""

    def __init__(
        self,
        home: Path,
        durability: Durability,
        recovered: RecoveryReport,
        commit: Commit,
        receive: MemoryObjectReceiveStream[Request],
    ) -> None:
        self.home = home
        self.durability: Durability = durability
        self.recovered = recovered
        self.listeners: list[CommitListener] = []
        self.acks = Acks()
        self._commit = commit
        self._receive = receive
        self._numbers = itertools.count(1)
        self.scope = anyio.CancelScope(shield=True)
        self.stopped = anyio.Event()
        self._open: dict[int, tuple[SessionLocation, int]] = {}
        """Open sessions by handle: where they are, the highest seq acknowledged (Rule 4)."""
        self.unended: set[str] = set()
        """Sessions whose end could not be written after a restart (Rule 4)."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Forward until every sender is closed. Shielded, like the persistence actor:
        cancelled sessions still send their final records."""
        try:
            with self.scope:
                task_status.started()
                async with self._receive as receive:
                    while requests := await receive_group(receive, MAX_BATCH):
                        await self._forward(requests)
        finally:
            self.stopped.set()

    async def _send(self, requests: list[Request]) -> list[Answer]:
        """One batch: its answers, in order (each the batch's failure if none came)."""
        position = {id(request): index for index, request in enumerate(requests)}
        items = [to_item(request, position) for request in requests]
        try:
            return await self._commit(next(self._numbers), items)
        except PersistenceError as exc:
            return [Answer(error=exc)] * len(requests)

    async def _forward(self, requests: list[Request]) -> None:
        answers = await self._send(requests)
        answers = await self._end_orphans(requests, answers)
        events: list[bytes] = []
        for request, answer in zip(requests, answers, strict=True):
            self._track(request, answer)
            request.value, request.error = answer.value, answer.error
            request.done = True
            if answer.error is None and isinstance(request, AppendEvent):
                events.append(stamped_line(Stamp(*answer.value), request.body))
        if events:
            committed = CommittedEvents(events)
            for listener in self.listeners:
                listener(committed)
        self.acks.announce()

    def _track(self, request: Request, answer: Answer) -> None:
        """Keep each open session's location and highest acknowledged seq (Rule 4)."""
        handle = getattr(request, "handle", None)
        if handle is None:
            return
        if isinstance(request, CreateSession | OpenSession) and answer.error is None:
            self._open[handle] = (request.location, 0)
        if isinstance(request, CloseSession):
            self._open.pop(handle, None)
        elif answer.error is None and isinstance(request, RecordRequest) and handle in self._open:
            seq, _ = answer.value
            location, acked = self._open[handle]
            self._open[handle] = (location, max(acked, seq))

    async def _end_orphans(self, requests: list[Request], answers: list[Answer]) -> list[Answer]:
        """Send again the ends the restarted service refused, once their sessions are open
        there (Rule 4); the answers with those replaced."""
        resend: dict[int, list[int]] = {}
        for index, (request, answer) in enumerate(zip(requests, answers, strict=True)):
            handle = getattr(request, "handle", None)
            if handle not in self._open or not isinstance(answer.error, PersistenceRestarted):
                continue
            if handle in resend:
                resend[handle].append(index)
            elif isinstance(request, AppendEvent) and request.event == "session:end":
                resend[handle] = [index]
        if not resend:
            return answers
        opens: list[Request] = [
            OpenSession(handle=handle, location=self._open[handle][0]) for handle in resend
        ]
        again: list[int] = []
        closes: list[Request] = []
        for request, answer in zip(opens, await self._send(opens), strict=True):
            handle = request.handle  # type: ignore[union-attr]  # every one an OpenSession
            location, acked = self._open[handle]
            opened = answer.value if answer.error is None else None
            if isinstance(opened, OpenedSession) and opened.last_seq <= acked:
                again += resend[handle]
                continue
            self.unended.add(location.session_id)
            if opened is not None:  # written meanwhile by another: let it go again
                closes.append(CloseSession(handle=handle, epoch=-2))
        answers = list(answers)
        resent = [requests[index] for index in again]
        if resent or closes:
            for index, answer in zip(again, await self._send(resent + closes), strict=False):
                answers[index] = answer
        return answers


@asynccontextmanager
async def open_forwarding_store(
    home: Path, durability: Durability, recovered: RecoveryReport, commit: Commit
) -> AsyncIterator[tuple[Store, Forwarder]]:
    """A ``Store`` committing through ``commit``, and its forwarder; on exit, what was sent
    is answered first."""
    send, receive = anyio.create_memory_object_stream[Request](MAILBOX_SIZE)
    forwarder = Forwarder(home, durability, recovered, commit, receive)
    with unwrap_single_error():
        async with anyio.create_task_group() as tg:
            await tg.start(forwarder.run)
            try:
                yield Store(forwarder, send), forwarder
            finally:
                send.close()
                with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
                    await forwarder.stopped.wait()
                forwarder.scope.cancel()
