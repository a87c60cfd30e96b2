"""In-process event subscriptions, fed by the persistence actor after each commit.

Subscribers see exactly what was persisted, in ``seq`` order, right after
it became durable. A subscriber that falls more than its buffer behind is
cut off with ``SubscriberTooSlow`` rather than slowing every session down;
``events.jsonl`` still has everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import anyio

from amplifier.persistence import EventRecord

from ._exceptions import SubscriberTooSlow


class EventBus:
    """Routes committed event records to subscriptions by session, subtree or everything."""

    def __init__(self) -> None:
        self._parents: dict[str, str | None] = {}
        self._subscriptions: dict[str | None, list[Subscription]] = {}
        self._closed = False

    def register(self, session_id: str, parent_id: str | None) -> None:
        """Remember a live session's parent, so subtree subscribers see its events."""
        self._parents[session_id] = parent_id

    def unregister(self, session_id: str) -> None:
        self._parents.pop(session_id, None)

    def subscribe(
        self, session_id: str | None, *, tree: bool, buffer: int, ended: bool = False
    ) -> Subscription:
        """A subscription to ``session_id`` (None: every session); one that yields nothing
        if the session has ``ended`` already, or the bus is closed (its Runtime is)."""
        subscription = Subscription(self, session_id, tree=tree, buffer=buffer)
        if ended or self._closed:
            subscription.end()
        else:
            self._subscriptions.setdefault(session_id, []).append(subscription)
        return subscription

    def close(self) -> None:
        """Nothing more will be delivered (the Runtime is closed): every subscription ends
        after what it holds."""
        self._closed = True
        for listed in list(self._subscriptions.values()):
            for subscription in list(listed):
                subscription.end()

    def remove(self, subscription: Subscription) -> None:
        listed = self._subscriptions.get(subscription.session_id, [])
        if subscription in listed:
            listed.remove(subscription)
            if not listed:
                del self._subscriptions[subscription.session_id]

    def deliver(self, records: Sequence[dict[str, Any]]) -> None:
        """Commit listener: hand each record to every subscription that wants it."""
        if not self._subscriptions:
            return
        everything = self._subscriptions.get(None, ())
        for record in records:
            for subscription in tuple(everything):
                subscription.push(record)
            session_id: str | None = record["session_id"]
            direct = True
            parent = record.get("parent_id")
            seen = 0
            while session_id is not None and seen < 64:  # 64: a bound against a cyclic lineage
                for subscription in tuple(self._subscriptions.get(session_id, ())):
                    if direct or subscription.tree:
                        subscription.push(record)
                session_id = parent if direct else self._parents.get(session_id)
                direct = False
                seen += 1


class Subscription:
    """An async iterator of ``EventRecord`` as they are persisted; an async context manager."""

    def __init__(self, bus: EventBus, session_id: str | None, *, tree: bool, buffer: int) -> None:
        self.session_id = session_id
        self.tree = tree
        self._bus = bus
        self._send, self._receive = anyio.create_memory_object_stream[dict[str, Any]](buffer)
        self._too_slow = False

    def push(self, record: dict[str, Any]) -> None:
        try:
            self._send.send_nowait(record)
        except anyio.WouldBlock:
            self._too_slow = True
            self.end()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.end()
        else:
            if record["event"] == "session:end" and record["session_id"] == self.session_id:
                self.end()  # the subscribed session is over: iteration ends after this event

    def end(self) -> None:
        """Nothing more comes: iteration ends after what was delivered. Idempotent."""
        self._send.close()
        self._bus.remove(self)

    def close(self) -> None:
        """Stop receiving. Idempotent."""
        self.end()
        self._receive.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> EventRecord:
        try:
            record = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._receive.close()  # read to its end: nothing is left to hold
            if self._too_slow:
                raise SubscriberTooSlow(
                    self.session_id or "*",
                    "event subscriber fell behind and was cut off; read events.jsonl for the rest",
                ) from None
            raise StopAsyncIteration from None
        return EventRecord.model_validate(record)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
