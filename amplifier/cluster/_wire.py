"""What crosses the process boundary between a session host and the persistence service.

A ``Request`` holds a ``Receipt``, which only means something in the process
that waits on it; ``Item`` is the request without it. ``after`` (the
request another session's record depends on) becomes an index into the
same batch, or the failure that request already met (the forwarder's
Rule 1). Answers come back as ``Answer``, one per item, in order.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from typing import Any

from amplifier._errors import AmplifierError, UsageError
from amplifier.persistence import PersistenceError, Receipt
from amplifier.persistence.lowlevel import (
    AppendEvent,
    AppendMessage,
    CloseSession,
    CreateSession,
    DeleteSessions,
    Flush,
    KeepFile,
    OpenSession,
    Reindex,
    Request,
    WriteMetadata,
)

KINDS: dict[str, type[Request]] = {
    kind.kind: kind
    for kind in (
        CreateSession,
        OpenSession,
        AppendEvent,
        AppendMessage,
        WriteMetadata,
        CloseSession,
        Flush,
        Reindex,
        DeleteSessions,
        KeepFile,
    )
}
"""Every request type by its ``kind``."""
_LOCAL = frozenset({field.name for field in dataclasses.fields(Receipt)} | {"after"})
"""A request's fields that stay in its process: its answer, and what it depends on."""


@dataclass(frozen=True, slots=True)
class Item:
    """One request of a batch, without its receipt."""

    kind: str
    fields: dict[str, Any]
    after: int | None = None
    """Index (in the same batch) of the request this one depends on."""
    after_error: BaseException | None = None
    """What the request this one depends on failed with (it was answered earlier)."""

    @property
    def handle(self) -> int | None:
        handle: int | None = self.fields.get("handle")
        return handle


@dataclass(frozen=True, slots=True)
class Answer:
    """A request's answer: what its receipt holds once committed."""

    value: Any = None
    error: BaseException | None = None


def to_item(request: Request, position: dict[int, int]) -> Item:
    """``request`` for the wire; ``position`` maps ``id(receipt)`` to its index in the batch."""
    fields = {
        field.name: getattr(request, field.name)
        for field in dataclasses.fields(request)
        if field.name not in _LOCAL
    }
    after = getattr(request, "after", None)
    if after is None:
        return Item(request.kind, fields)
    index = position.get(id(after))
    if index is not None:
        return Item(request.kind, fields, after=index)
    # Rule 1 of the forwarder: not in this batch, so answered already.
    return Item(request.kind, fields, after_error=after.error)


def from_item(item: Item, fields: dict[str, Any], receipts: list[Receipt]) -> Request:
    """The request again, unanswered; ``receipts`` are the batch's requests so far."""
    kind = KINDS[item.kind]
    extra: dict[str, Any] = {}
    if item.after is not None:
        extra["after"] = receipts[item.after]
    elif item.after_error is not None:
        failed = Receipt()
        failed.error, failed.done = item.after_error, True
        extra["after"] = failed
    return kind(**fields, **extra)


def portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else its message under the nearest root we know."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        for root in (PersistenceError, UsageError, AmplifierError):
            if isinstance(error, root):
                return root(str(error))
        return AmplifierError(f"{type(error).__name__}: {error}")
    return error
