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
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from amplifier._errors import unwrap_single_error
from amplifier.persistence import Durability, PersistenceError, RecoveryReport, Store
from amplifier.persistence.lowlevel import (
    SCHEMA_VERSION,
    Acks,
    AppendEvent,
    CommitListener,
    Request,
    Stamp,
    receive_group,
)

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

    async def _forward(self, requests: list[Request]) -> None:
        position = {id(request.receipt): index for index, request in enumerate(requests)}
        items = [to_item(request, position) for request in requests]
        try:
            answers = await self._commit(next(self._numbers), items)
        except PersistenceError as exc:
            answers = [Answer(error=exc)] * len(requests)
        events: list[dict[str, Any]] = []
        for request, answer in zip(requests, answers, strict=True):
            receipt = request.receipt
            receipt.value, receipt.error = answer.value, answer.error
            receipt.done = True
            if answer.error is None and isinstance(request, AppendEvent):
                stamp: Stamp = answer.value
                events.append(
                    {
                        "version": SCHEMA_VERSION,
                        "seq": stamp.seq,
                        "ts": stamp.ts,
                        "session_id": request.session_id,
                        "parent_id": request.parent_id,
                        "event": request.event,
                        "data": request.data,
                    }
                )
        if events:
            for listener in self.listeners:
                listener(events)
        self.acks.announce()


@asynccontextmanager
async def open_forwarding_store(
    home: Path, durability: Durability, recovered: RecoveryReport, commit: Commit
) -> AsyncIterator[Store]:
    """A ``Store`` committing through ``commit``; on exit, what was sent is answered first."""
    send, receive = anyio.create_memory_object_stream[Request](MAILBOX_SIZE)
    forwarder = Forwarder(home, durability, recovered, commit, receive)
    with unwrap_single_error():
        async with anyio.create_task_group() as tg:
            await tg.start(forwarder.run)
            try:
                yield Store(forwarder, send)
            finally:
                send.close()
                with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
                    await forwarder.stopped.wait()
                forwarder.scope.cancel()
