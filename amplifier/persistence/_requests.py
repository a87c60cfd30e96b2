"""What travels through the persistence actor's mailbox, and how answers come back.

Requests are a closed union (STYLE rule 5), dispatched with ``match`` in
the actor. Records arrive already serialised (``body``): the sender pays for
its own JSON, and a value JSON cannot hold is the sender's error, raised
where it called. The actor adds only the stamp (``version``, ``seq``,
``ts``) in front.

Requests are not frozen, and nothing but its answer changes one once it is sent: a frozen
dataclass is built through ``object.__setattr__``, field by field, which
made a request three times as dear to build (1.6 against 0.45 us), and an
agent task with a sub-agent sends about 33.

Each request is its own ``Receipt``; the actor fills in the answer and
announces the commit through ``Acks``. A sender that does not wait (``wait=False``)
still gets its receipt filled, and looks at its last one when it does wait:
replies are filled in mailbox order, so the last one answered means every
earlier one was, and a failure poisons the rest of the writer's ``epoch``
(see ``PersistenceActor``), so the last receipt also says whether any
earlier one failed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import anyio

from ._paths import SessionLocation


@dataclass(slots=True, eq=False)
class Receipt:
    """The slot a request's answer is put in; ``Acks`` tells when to look.

    Every request is its own receipt; one made alone stands for an answer
    that needs no request (a failure known before anything was sent).
    Objects a group holds until it is answered (thousands, in a burst) are
    what every collection of the older generations scans: one per record,
    not two, and its answer not one more.
    """

    done: bool = field(default=False, init=False)
    value: Any = field(default=None, init=False)
    """The answer. A record's is its ``(seq, ts)``: a plain tuple of an int and a str,
    which the collector stops tracking; ``SessionWriter`` builds the ``Stamp`` for a
    caller who waits for one."""
    error: BaseException | None = field(default=None, init=False)
    """Set when the request is refused or its batch fails (before ``done``)."""


class Acks:
    """Tells waiting senders that a batch was answered: one event per commit.

    One event per request would cost more than the rest of a record's path
    together; instead every sender waits on the current commit's event and
    looks at its own ``Receipt`` when it fires. A request answered by this
    commit is done; one that arrived too late for it waits for the next.
    A waiter also says that it waits (``demand``): a group nobody waits for
    may be held back for more (``PersistenceActor``), one somebody waits
    for is committed at once.
    """

    __slots__ = ("_event", "demand")

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        """What the waiters of the next commit wait on; made by the first of them."""
        self.demand = anyio.Event()
        """Set while some sender waits for an answer; the actor renews it as it commits."""

    async def wait(self, receipt: Receipt) -> Any:
        """Wait for ``receipt``'s answer. Checkpoint; cancelling does not undo the request."""
        while not receipt.done:
            self.demand.set()
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        if receipt.error is not None:
            raise own_copy(receipt.error) from receipt.error
        return receipt.value

    def announce(self) -> None:
        """Wake every waiter; called after a commit filled its replies."""
        event, self._event = self._event, None
        if event is not None:
            event.set()

    def renew_demand(self) -> None:
        """A commit is under way: whoever still waits after it says so again."""
        if self.demand.is_set():
            self.demand = anyio.Event()


def own_copy(error: BaseException) -> BaseException:
    """A new exception of ``error``'s type and fields, for one of the waiters it fails.

    One failure answers many requests (a whole batch, the rest of an epoch).
    Raising the one object in every waiter would grow its traceback by each
    waiter's frames in turn; each waiter raises its own copy instead,
    ``from`` the shared one, which keeps where the failure came from.
    """
    try:
        fresh = copy.copy(error)  # through ``__reduce__``: the fields as the type wants them
    except Exception:  # a type that cannot be rebuilt from its args: its fields, as they are
        fresh = type(error).__new__(type(error), *error.args)
        fresh.__dict__.update(vars(error))
    fresh.__traceback__ = fresh.__cause__ = fresh.__context__ = None
    return fresh


@dataclass(slots=True, kw_only=True)
class _Request(Receipt):
    kind: ClassVar[str]
    """Names the request on the wire (``amplifier.cluster``)."""


@dataclass(slots=True, kw_only=True)
class _Record(_Request):
    """A record of an open session."""

    handle: int
    epoch: int = 0
    """The writer's failure count when it sent this: a failure refuses the rest of its epoch."""


@dataclass(slots=True, kw_only=True)
class CreateSession(_Record):
    """A new session: its first metadata, journalled; its folder is built behind."""

    kind: ClassVar[str] = "create"
    location: SessionLocation
    document: bytes
    """``metadata.json`` as written, without its ``seq`` (the actor stamps it)."""
    fresh: bool = False
    """Its id was just drawn at random: no folder is looked for (a stat on the event loop)."""


@dataclass(slots=True, kw_only=True)
class OpenSession(_Record):
    """Claim an existing session, set torn tails aside, report its last seq."""

    kind: ClassVar[str] = "open"
    location: SessionLocation


@dataclass(slots=True, kw_only=True)
class AppendEvent(_Record):
    """One event for ``events.jsonl``: ``body`` is the line without its stamp."""

    kind: ClassVar[str] = "event"
    body: bytes
    session_id: str
    parent_id: str | None
    event: str
    after: Receipt | None = None
    """Another writer's request this event depends on: refused if that one failed."""


@dataclass(slots=True, kw_only=True)
class AppendMessage(_Record):
    """One message for ``transcript.jsonl``: ``body`` is the line without its stamp."""

    kind: ClassVar[str] = "message"
    body: bytes


@dataclass(slots=True, kw_only=True)
class WriteMetadata(_Record):
    """A new ``metadata.json`` (replaced atomically, behind the journal)."""

    kind: ClassVar[str] = "metadata"
    document: bytes


@dataclass(slots=True, kw_only=True)
class CloseSession(_Record):
    """The session is done: its claim is released once its files are durable."""

    kind: ClassVar[str] = "close"
    hand_over: bool = False
    """Hand the session over (a root's close): list it, and every session closed and not
    yet released, for other processes to wait for (``_ownership`` Rule 4), before the
    close is answered; otherwise it is released unlisted. Either way its files, their sync
    and the release follow with the write-behind's next round."""


@dataclass(slots=True, kw_only=True)
class Flush(_Request):
    """Barrier: answered once everything sent before it is in the session files."""

    kind: ClassVar[str] = "flush"
    release: bool = False
    """Also sync the files of closed sessions and release their claims first."""


@dataclass(slots=True, kw_only=True)
class Reindex(_Request):
    """Rebuild the session index from every session's metadata file."""

    kind: ClassVar[str] = "reindex"


@dataclass(slots=True, kw_only=True)
class DeleteSessions(_Request):
    """Remove sessions' folders: all of them, or none if any is in use."""

    kind: ClassVar[str] = "delete"
    locations: tuple[SessionLocation, ...]
    untouched_since: datetime | None = None


@dataclass(slots=True, kw_only=True)
class KeepFile(_Request):
    """Keep a file's content in a session's file history; answered with its digest once durable."""

    kind: ClassVar[str] = "keep"
    location: SessionLocation
    content: bytes


RecordRequest = CreateSession | AppendEvent | AppendMessage | WriteMetadata | CloseSession
"""What a session's writer sends: committed in batches, through the journal."""
ControlRequest = OpenSession | DeleteSessions | Reindex | Flush | KeepFile
"""What needs the session files up to date first: committed one at a time, between batches."""
CONTROLS = (OpenSession, DeleteSessions, Reindex, Flush, KeepFile)
Request = RecordRequest | ControlRequest
