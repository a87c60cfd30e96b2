"""Session actors: one task and one bounded mailbox per session, root or delegated.

Rule 1: a session handles one mailbox message at a time; a turn's
        cancellation comes from outside the mailbox (``Session.cancel``),
        since the mailbox is busy while a turn runs.
Rule 2: a child session is a task inside its parent's delegation call, so it
        cannot outlive its parent; cancelling the parent cancels it first.
Rule 3: records are sent in the order they happen and committed in that
        order (the persistence actor's Rule 3), so a session waits for its
        own bookkeeping only where something leaves the Runtime: a root is
        durable before ``open_session`` returns, a turn's records before
        its answer is returned to a caller outside, a session's end before
        ``close`` returns. Between parent and child nothing waits: the
        child's records follow the parent's ``delegate:start`` in the
        journal, and the parent's ``delegate:end`` follows (and depends on)
        the child's last records. What a handler writes itself (``emit``,
        ``record``) is durable when the call returns, as documented.
Rule 4: a session's final records (``prompt:complete``, ``session:end``,
        metadata) are written in a shielded, time-bounded scope, also when
        the session is cancelled, so it stays resumable with an honest status;
        records sent without a wait into a mailbox with room for them need no
        scope (``_final_records``): nothing yields, so nothing can cancel them.
Rule 5: an exception in one session never crashes the Runtime: it ends that
        session with status ``failed``. Only cancellation propagates.
Rule 6: a failure keeps its cause: the exception that failed a turn travels
        in ``Failed`` and is raised again ``from`` it to the caller; it is
        logged with its traceback (``amplifier._log``), and the formatted
        traceback is recorded in the event that reports the failure.
Rule 7: everyone who asks is answered: a prompt or a change still in the
        mailbox (or being stored) when its session ends is answered that
        the session ended, once the session's final records are written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, assert_never

import anyio
from anyio.abc import TaskStatus

from amplifier._errors import UsageError
from amplifier._log import formatted_traceback, log_failure
from amplifier.persistence import (
    EndStatus,
    PersistenceError,
    Receipt,
    SessionLocation,
    SessionMetadata,
    SessionStatus,
    SessionWriter,
    Store,
    count_from_files,
    existing_children,
    load_message_tail,
    load_transcript,
    read_or_rebuild_metadata,
    validate_session_id,
)
from amplifier.persistence.lowlevel import EncodedData, encode_data

from ._approval import ApprovalDecision, ApprovalRequest, Approver, decide
from ._bus import EventBus, Subscription
from ._children import ChildLauncher, ChildOutcome, ChildRun, Launch
from ._delegation import Delegation, DelegationResult
from ._events import (
    DelegateEnded,
    DelegateStarted,
    Event,
    PromptCompleted,
    PromptSubmitted,
    SessionEnded,
    SessionResumed,
    SessionStarted,
    encode,
)
from ._exceptions import RuntimeClosed, SessionClosed, describe_error
from ._handle import LocalSession
from ._history import FRESH_WINDOW, HistoryCopy, HistoryTail
from ._ids import new_child_id
from ._lifecycle import Lifecycle, SessionState
from ._messages import (
    Answered,
    Cancelled,
    Close,
    Failed,
    Outcome,
    Pending,
    Prompt,
    Relabel,
    Reply,
    SessionMessage,
)
from ._supervision import drive_child
from ._turn import SessionContext, Turn
from ._turns import SessionSetup, TurnHandler

FINAL_RECORDS_TIMEOUT = 5.0
"""Seconds a cancelled session may spend writing its final records."""

_IN_TURNS: ContextVar[tuple[SessionActor, ...]] = ContextVar("amplifier_in_turns", default=())
"""The sessions whose turns the running code is part of (a tool's, a sub-session's, a
streaming callback's): asked again from there, one would wait for its own turn to end."""

_SENT_AT_ONCE = contextlib.nullcontext()
"""The scope of final records that go into the persistence mailbox without waiting."""


@dataclass(frozen=True, slots=True)
class Services:
    """What every session of one Runtime shares. Immutable; no session state lives here."""

    profile: str | None
    """The Runtime's profile: for a resumed session that records none."""
    store: Store
    handler: TurnHandler
    bus: EventBus
    clock: Callable[[], datetime]
    mailbox_size: int
    max_depth: int
    max_children: int
    scrub: Callable[[str], str] | None = None
    """Applied to every string of every event, and to metadata's last prompt."""
    children: ChildLauncher | None = None
    """Places some delegated children outside this Runtime (None: all run here)."""
    approve: Approver | None = None
    """Answers the tool calls of root sessions that ask to run (None: no one; denied)."""


class SessionActor:
    """One session's task. Created by the Runtime (roots) or by a delegation (children)."""

    # Thousands may be open at once: no per-instance dict.
    __slots__ = (
        "_before",
        "_children",
        "_closing",
        "_context",
        "_create",
        "_current",
        "_doubt",
        "_ended",
        "_ended_event",
        "_life",
        "_mailbox",
        "_meta",
        "_parent",
        "_profile",
        "_recorded",
        "_send",
        "_services",
        "_setup",
        "_turn_scope",
        "_unlisted",
        "_writer",
        "history",
        "id",
        "location",
    )

    def __init__(
        self,
        services: Services,
        location: SessionLocation,
        *,
        create: SessionMetadata | None,
        profile: str | None = None,
        setup: SessionSetup | None = None,
        parent: SessionActor | None = None,
    ) -> None:
        """``create``: a new session's metadata (None: resume it); ``profile`` overrides its own.

        ``setup``: what the handler said of a new session (its limits and
        scrub; a resumed session asks the handler itself). ``parent``: the
        actor of the session that delegated to this one in this Runtime
        (approval requests travel up through it).
        """
        self.location = location
        self._parent = parent
        self.id = location.session_id
        self._services = services
        self._create = create
        self._profile = profile
        self._setup = setup
        self._meta: SessionMetadata | None = create
        self._writer: SessionWriter | None = None
        self._life = Lifecycle(f"session {self.id}")
        self._send, self._mailbox = anyio.create_memory_object_stream[SessionMessage](
            services.mailbox_size
        )
        self._turn_scope: anyio.CancelScope | None = None
        self._current: Prompt | None = None
        self._children: anyio.CapacityLimiter | None = None
        """Made at the first delegation: most sessions never delegate, and idle ones add up."""
        self._context: SessionContext | None = None
        self._closing: Close | None = None
        """The end asked for when the mailbox was too full to queue it."""
        self._ended = False
        self._ended_event: anyio.Event | None = None
        """Made only if someone waits for the end: idle sessions add up."""
        self._recorded = False
        """session:start or session:resume is on disk; only then does the end get written."""
        self._unlisted = False
        """A child was added to the metadata's ``children`` and no document lists it yet."""
        self._before: tuple[SessionStatus, str | None] | None = None
        """A resumed session's status and error before it was resumed."""
        self.history: HistoryCopy | None = None
        """The end of the transcript, once a turn has read it (``_history`` Rule 1)."""
        self._doubt = False
        """The last turn failed, perhaps to store: the next prompt is stored before the model
        reads the history back, so that it never reads one without that prompt."""

    # -- the task -------------------------------------------------------------------

    async def run(
        self, *, task_status: TaskStatus[LocalSession] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the files, serve the mailbox, write the final records.

        Fails before ``started`` (so ``tg.start`` raises to the opener) if the
        session cannot be created or opened.
        """
        status: EndStatus = "completed"
        error: str | None = None
        trace: str | None = None
        keep_previous = False
        started = False
        try:
            await self._begin()
            self._life.move(SessionState.IDLE)
            task_status.started(LocalSession(self))
            started = True
            async for message in self._mailbox:
                match message:
                    case Prompt():
                        await self._answer(message)
                    case Relabel():
                        await self._relabel(message)
                    case Close():
                        status, error = message.status, message.error
                        keep_previous = message.keep_previous
                        break
                    case _:
                        assert_never(message)
            else:
                closing = self._closing
                if closing is not None:  # asked while the mailbox was full
                    status, error = closing.status, closing.error
                    keep_previous = closing.keep_previous
        except anyio.get_cancelled_exc_class():
            status = "cancelled"
            raise
        except Exception as exc:
            status, error = "failed", describe_error(exc)
            if not started:
                # The caller never had the session (its resume could not be
                # stored, say): it stays as it was, and the caller is told.
                keep_previous = True
                raise
            trace = log_failure(f"session {self.id} failed", exc)
        finally:
            self._send.close()
            unanswered = self._left_in_mailbox()
            self._mailbox.close()
            try:
                with self._final_records(requests=3, waits=not self._ends_unwaited):
                    await self._end(status, error, trace, keep_previous=keep_previous)
            finally:
                for reply in unanswered:
                    reply.close()  # its asker is told the session ended without answering
                self._services.bus.unregister(self.id)
                # The context points back at this actor: dropped, the two are freed as
                # soon as the last reference goes, not by a garbage collection later.
                self._context = None
                self._ended = True
                if self._ended_event is not None:
                    self._ended_event.set()

    def _left_in_mailbox(self) -> list[Pending[Any]]:
        """The replies of the prompts and changes still queued, taken out of the mailbox.

        A session ended by a cancellation or a failure leaves them unserved; a
        close leaves none (it comes after everything queued before it).
        """
        replies: list[Pending[Any]] = []
        while True:
            try:
                message = self._mailbox.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return replies
            if not isinstance(message, Close):
                replies.append(message.reply)

    async def _begin(self) -> None:
        store = self._services.store
        if self._create is not None:
            if self._parent is not None:
                await self._parent._list_children()  # its parent lists it before it exists
            # The runtime draws every new id at random: nothing on disk can hold it.
            self._writer = await store.create(self.location, self._create, wait=False, fresh=True)
            self._services.bus.register(self.id, self._create.parent_id)
            meta = self._create
            await self._post(
                SessionStarted(
                    session_id=self.id,
                    agent=meta.agent,
                    profile=meta.profile,
                    parent_id=meta.parent_id,
                    root_id=meta.root_id,
                    depth=meta.depth,
                    cwd=meta.cwd,
                    **meta.attributes,
                )
            )
            self._recorded = True
            # Nothing to read back: its history is what it records from now on.
            self.history = HistoryCopy.empty(FRESH_WINDOW)
            return
        # Read before claiming: a session that cannot be loaded is left exactly
        # as found. Read again once claimed: a dead owner's journal may have
        # been replayed into it meanwhile.
        await store.read(read_or_rebuild_metadata, self.location)
        # A failure from here on still ends the session through ``_end``.
        self._writer, opened = await store.open(self.location)
        meta, repaired = await store.read(read_or_rebuild_metadata, self.location)
        if meta.status == "active" and not repaired:
            # Cut off (a crash, a kill): what it said after its metadata was last written
            # is in its files, which are counted instead.
            await store.read(count_from_files, meta, self.location)
        _, dropped = await store.read(existing_children, self.location, meta.children)
        meta.children = [child for child in meta.children if child not in dropped]
        # The session's own profile, configuration taken as it is NOW: an
        # agent or profile that no longer exists fails the resume here,
        # before anything is written.
        profile = self._profile or meta.profile or self._services.profile
        setup = self._services.handler.prepare_session(meta.agent, profile=profile)
        self._setup = setup
        self._meta = meta
        self._services.bus.register(self.id, meta.parent_id)
        previous = meta.status
        self._before = (previous, meta.error)
        previous_config = {"profile": meta.profile, **meta.attributes}
        meta.status = "active"
        meta.error = None
        meta.profile = profile
        meta.attributes = {**meta.attributes, **setup.attributes}
        await self._post(
            SessionResumed(
                messages=meta.message_count,
                previous_status=previous,
                metadata_rebuilt=repaired,
                children_dropped=dropped,
                torn_lines_set_aside=[p.name for p in opened.torn],
                previous_config=previous_config,
                config={"profile": meta.profile, **meta.attributes},
            )
        )
        self._recorded = True
        await self._write_metadata()
        await self._services.handler.on_resume(self.context)
        await self._writer.sync()

    async def _end(
        self,
        status: EndStatus,
        error: str | None,
        trace: str | None = None,
        *,
        keep_previous: bool = False,
    ) -> None:
        if self._life.state is SessionState.ENDED:
            return
        if self._life.state is not SessionState.CLOSING:
            self._life.move(SessionState.CLOSING)
        writer = self._writer
        if writer is not None and not self._recorded:
            # It never got going (e.g. its metadata could not be loaded):
            # leave its files exactly as they were found.
            with contextlib.suppress(PersistenceError):
                await writer.close()
        elif writer is not None:
            stored: SessionStatus = status
            if keep_previous and self._before is not None:
                stored, error = self._before
            try:
                if stored != "active":  # one left active (interrupted) never ended
                    await self._post(SessionEnded(status=stored, error=error, traceback=trace))
                if self._meta is not None:
                    scrub = self._scrub()
                    self._meta.status = stored
                    self._meta.error = scrub(error) if scrub is not None and error else error
                    await self._write_metadata()
            except PersistenceError:
                pass  # the disk refused; closing still releases the session
            finally:
                # A child's parent orders its delegate:end after this (``final``);
                # a root's caller is told the session ended once it is durable.
                with contextlib.suppress(PersistenceError):
                    await writer.close(wait=not self._ends_unwaited)
        self._life.move(SessionState.ENDED)

    @property
    def _ends_unwaited(self) -> bool:
        """A child that recorded anything: its end is sent, not waited for (its parent's
        ``delegate:end`` is committed after it)."""
        meta = self._meta
        return self._recorded and meta is not None and meta.parent_id is not None

    def _final_records(self, *, requests: int, waits: bool = False) -> AbstractContextManager[Any]:
        """The scope a session's final records are sent in (Rule 4): shielded from
        cancellation, for at most ``FINAL_RECORDS_TIMEOUT``.

        ``requests`` sent without waiting for their commit need none where the
        persistence actor's mailbox has room for them all: sending them then
        never yields to the loop, so no cancellation can reach them (and the
        scope's timer is saved, a child's three times).
        """
        writer = self._writer
        if waits or writer is None or not writer.has_room(requests):
            return anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True)
        return _SENT_AT_ONCE

    @property
    def context(self) -> SessionContext:
        """What the turn handler sees of this session (made on first use)."""
        if self._context is None:
            self._context = SessionContext(self)
        return self._context

    async def wait_ended(self) -> None:
        """Wait until the session's task is over. Checkpoint."""
        if self._ended:
            await anyio.lowlevel.checkpoint()
            return
        if self._ended_event is None:
            self._ended_event = anyio.Event()
        await self._ended_event.wait()

    @property
    def final(self) -> Receipt | None:
        """The reply of the session's last request (its close, once ended)."""
        return self._writer.last if self._writer is not None else None

    # -- one turn -------------------------------------------------------------------

    async def _answer(self, prompt: Prompt) -> None:
        reply = prompt.reply
        if reply.abandoned:
            return  # whoever asked has given up waiting
        meta = self._require_meta()
        self._life.move(SessionState.RUNNING)
        meta.turns += 1
        number = meta.turns
        outcome: Outcome = Cancelled()
        try:
            with anyio.CancelScope() as scope:
                self._turn_scope, self._current = scope, prompt
                try:
                    for message in prompt.context:
                        await self._post_message(message)
                    await self._post(PromptSubmitted(prompt=prompt.text, turn=number))
                    await self._post_message({"role": "user", "content": prompt.text})
                    if self._doubt:
                        await self._require_writer().sync()
                        self._doubt = False
                    scrub = self._scrub()
                    meta.last_prompt = scrub(prompt.text) if scrub else prompt.text
                    if prompt.durable:
                        await self._write_metadata()
                    else:
                        # A child's turn: its parent closes it once it answers, and the
                        # close writes the metadata (one document per turn, not three).
                        meta.updated = self._services.clock()
                    turn = Turn(self.context, prompt.text, number, on_text=prompt.on_text)
                    inside = _IN_TURNS.set((*_IN_TURNS.get(), self))
                    try:
                        text = await self._services.handler.run_turn(turn)
                    finally:
                        _IN_TURNS.reset(inside)
                    answer = Reply(session_id=self.id, text=text, turn=number, cut_off=turn.cut_off)
                    outcome = Answered(reply=answer)
                except Exception as exc:
                    log_failure(f"turn {number} of session {self.id} failed", exc)
                    outcome = Failed(reason=describe_error(exc), error=exc)
        finally:
            self._turn_scope = self._current = None
            if reply.abandoned and isinstance(outcome, Answered):
                # Its asker gave up (and was told it was cancelled) before the turn ended:
                # recorded as what the asker was told, its answer kept as a cut-off one is.
                outcome = Cancelled()
            reply.decided = True  # recorded as it ended, whatever its asker does now
            with self._final_records(requests=1, waits=prompt.durable):
                outcome = await self._complete_turn(number, outcome, durable=prompt.durable)
            if not isinstance(outcome, Answered):
                self.history = None  # it may hold what the file never got: read it again
                self._doubt = True
            reply.put(outcome)  # read only if somebody still waits
        self._life.move(SessionState.IDLE)

    async def _complete_turn(self, number: int, outcome: Outcome, *, durable: bool) -> Outcome:
        """Record how the turn ended; with ``durable``, wait until the whole turn is committed.

        Without, the metadata is left for what comes next to write (a child's
        close, which its parent sends at once; or the next turn's start).

        An answer whose records could not be stored is not returned as an
        answer: the caller is told the turn failed.
        """
        completed = PromptCompleted(turn=number, status=_turn_status(outcome))
        if isinstance(outcome, Failed):
            trace = formatted_traceback(outcome.error) if outcome.error is not None else None
            completed = PromptCompleted(
                turn=number, status="failed", error=outcome.reason, traceback=trace
            )
        try:
            await self._post(completed)
            if durable:
                await self._write_metadata()
                await self._require_writer().sync()
            else:
                # A child's parent closes it at once, and its end writes the metadata:
                # one document where there were two, in the same group or the next.
                self._require_meta().updated = self._services.clock()
        except PersistenceError as exc:
            if isinstance(outcome, Answered):
                log_failure(f"turn {number} of session {self.id} could not be stored", exc)
                return Failed(reason=f"the turn could not be stored: {exc}", error=exc)
        return outcome

    async def _relabel(self, message: Relabel) -> None:
        """Change the metadata between turns; ``updated`` stays (a label is not a use)."""
        result: SessionMetadata | Exception
        meta = self._require_meta()
        before = meta.model_copy(deep=True)
        try:
            message.change(meta)
            writer = self._require_writer()
            await writer.post_metadata(meta)
            await writer.sync()
            result = meta.model_copy(deep=True)
        except Exception as exc:  # handed to the caller, who raises it
            vars(meta).update(vars(before))  # not stored: the session keeps what it had
            result = exc
        except BaseException:
            message.reply.close()  # cancelled while storing: the caller is told it ended
            raise
        message.reply.put(result)

    async def relabel(self, change: Callable[[SessionMetadata], None]) -> SessionMetadata:
        """Change and write the metadata, after the turn that runs (if any); it as written.

        Raises ``SessionClosed`` if the session is ending, or what kept the
        metadata from being written.
        """
        if self._life.state in (SessionState.CLOSING, SessionState.ENDED):
            raise SessionClosed(self.id)
        self._refuse_from_own_turn("changed")
        reply: Pending[SessionMetadata | Exception] = Pending()
        await self._deliver(Relabel(change=change, reply=reply))
        result = await reply.wait()
        if result is None:
            raise SessionClosed(self.id)
        if isinstance(result, Exception):
            raise result
        return result

    def _refuse_from_own_turn(self, done: str) -> None:
        """``UsageError`` if the caller runs inside this session's turn (or a sub-session's
        of it): queued behind that turn, the request would wait for it for ever."""
        if self in _IN_TURNS.get():
            raise UsageError(
                f"session {self.id} cannot be {done} from inside its own turn (a tool, a "
                "sub-session or a streaming callback of it): it would wait for that turn"
            )

    async def _deliver(self, message: Prompt | Relabel) -> None:
        """Into the mailbox (no yield to the loop while it has room); ``SessionClosed``
        once the session stopped taking messages."""
        try:
            try:
                self._send.send_nowait(message)
            except anyio.WouldBlock:
                await self._send.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise SessionClosed(self.id) from None

    def cancel_turn(self, prompt: Prompt | None = None) -> None:
        """Cancel the running turn (only if it answers ``prompt``, when given)."""
        if self._turn_scope is not None and (prompt is None or self._current is prompt):
            self._turn_scope.cancel()

    async def ask(
        self,
        text: str,
        context: Sequence[Mapping[str, Any]] = (),
        on_text: Callable[[str], Awaitable[None]] | None = None,
        *,
        durable: bool = True,
    ) -> Outcome:
        """Send a prompt and wait for its outcome. Cancelling the wait cancels the turn; once
        the turn has ended and is being recorded, the wait goes on and gives its outcome."""
        if self._life.state in (SessionState.CLOSING, SessionState.ENDED):
            raise SessionClosed(self.id)
        self._refuse_from_own_turn("asked")
        reply: Pending[Outcome] = Pending()
        prompt = Prompt(
            text=text,
            context=tuple(dict(m) for m in context),
            reply=reply,
            on_text=on_text,
            durable=durable,
        )
        try:
            await self._deliver(prompt)
            try:
                outcome = await reply.wait()
            except anyio.get_cancelled_exc_class():
                if not reply.decided:
                    self.cancel_turn(prompt)
                    raise
                # The turn ended before the cancellation came and is being recorded as it
                # ended (an answer, say): the asker gets that, not a cancellation that
                # would have it believe the turn never ran.
                with anyio.CancelScope(shield=True):
                    outcome = await reply.wait()
                if outcome is None or isinstance(outcome, Cancelled):
                    raise  # cancelled with it (a Runtime cancelled whole): the asker's own
        finally:
            # Read at most once; a prompt sent as its sender was cancelled is never run.
            reply.abandoned = True
        if outcome is None:
            raise RuntimeClosed(self.id, f"session {self.id} ended before answering")
        return outcome

    def close_mailbox(
        self,
        status: EndStatus = "completed",
        error: str | None = None,
        *,
        keep_previous: bool = False,
    ) -> None:
        """Ask the session to end after the messages already queued; never blocks."""
        close = Close(status=status, error=error, keep_previous=keep_previous)
        try:
            self._send.send_nowait(close)
        except anyio.WouldBlock:
            # Closing the stream ends the session after what is queued; the
            # end asked for is kept aside until then.
            self._closing = close
        except anyio.ClosedResourceError:
            pass  # asked before: the first request decides how it ends
        self._send.close()

    # -- records ----------------------------------------------------------------------

    async def emit(self, event: str | Event, data: Mapping[str, Any] | None = None) -> int:
        """Persist an event (typed, or a name and its data) and wait until it is committed;
        its ``seq``."""
        name, encoded = self._encoded(event, data)
        stamp = await self._require_writer().append_event(
            name, encoded, parent_id=self._parent_id()
        )
        return stamp.seq

    async def post(self, event: str | Event, data: Mapping[str, Any] | None = None) -> None:
        """Send an event of the turn handler's; committed in order, durable at the next wait."""
        name, encoded = self._encoded(event, data)
        await self._require_writer().post_event(name, encoded, parent_id=self._parent_id())

    async def sync(self) -> None:
        """Wait until everything this session sent is committed; raise the first failure."""
        await self._require_writer().sync()

    async def _post(self, event: Event, *, after: Receipt | None = None) -> None:
        """Send an event of the session's own bookkeeping (committed in order; see Rule 3)."""
        name, encoded = self._encoded(event)
        await self._require_writer().post_event(
            name, encoded, parent_id=self._parent_id(), after=after
        )

    def _encoded(
        self, event: str | Event, data: Mapping[str, Any] | None = None
    ) -> tuple[str, EncodedData]:
        """The event's name and its data as stored, encoded once: the screen for secrets
        looks at that JSON, and the record is made of it."""
        if isinstance(event, Event):
            name, encoded = event.name, encode(event)
        else:
            name, encoded = event, encode_data(data or {})
        scrub = self._scrub()
        if scrub is None:
            return name, encoded
        screen = self._setup.screen if self._setup is not None else None
        if screen is not None and self._services.scrub is None and not screen(encoded):
            return name, encoded  # the usual event: one look at all of it, nothing to change
        plain = event.data() if isinstance(event, Event) else data or {}
        return name, encode_data(_scrubbed(dict(plain), scrub))

    def _scrub(self) -> Callable[[str], str] | None:
        """The Runtime's scrub, then the session's own (``SessionSetup.scrub``)."""
        shared = self._services.scrub
        own = self._setup.scrub if self._setup is not None else None
        if shared is None or own is None:
            return shared or own
        return lambda text: own(shared(text))

    def _max_depth(self) -> int:
        own = self._setup.max_depth if self._setup is not None else None
        return own if own is not None else self._services.max_depth

    def _max_children(self) -> int:
        own = self._setup.max_children if self._setup is not None else None
        return own if own is not None else self._services.max_children

    def _parent_id(self) -> str | None:
        return self._meta.parent_id if self._meta is not None else None

    async def record(self, message: Mapping[str, Any]) -> int:
        """Append a message and wait until it is committed; its ``seq``."""
        stamp = await self._require_writer().append_message(self._counted(message))
        return stamp.seq

    async def read_history(self) -> list[dict[str, Any]]:
        """All of the session's stored messages, oldest first, once what was sent is written."""
        await self._services.store.flush()
        records = await self._services.store.read(load_transcript, self.location)
        return [record.message() for record in records]

    async def history_tail(self, max_bytes: int) -> HistoryTail:
        """The first message and the last ``max_bytes`` or so of the history, from the
        copy kept in memory when it reaches back far enough, else from the transcript's end."""
        if self.history is None or not self.history.covers(max_bytes):
            await self._services.store.flush()
            location = self.location
            tail = await self._services.store.read(
                lambda: load_message_tail(location, max_bytes=max_bytes)
            )
            self.history = HistoryCopy(tail, max_bytes)
        return self.history.tail(max_bytes)

    def subscribe(self, *, tree: bool, buffer: int) -> Subscription:
        """Events of this session (and, with ``tree``, its sub-sessions) as they are persisted."""
        ended = self._life.state is SessionState.ENDED  # its session:end was delivered
        return self._services.bus.subscribe(self.id, tree=tree, buffer=buffer, ended=ended)

    async def post_message(self, message: Mapping[str, Any]) -> None:
        """Send a message for the transcript; committed in order, durable at the next wait."""
        await self._require_writer().post_message(self._counted(message))

    _post_message = post_message

    def _counted(self, message: Mapping[str, Any]) -> Mapping[str, Any]:
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ValueError("a message needs a 'role'")
        if role in ("user", "assistant"):
            self._require_meta().message_count += 1
        if self.history is not None:
            self.history.add(dict(message))
        return message

    async def _list_children(self) -> None:
        """Send the metadata that lists the children added since it was last sent, if any.

        A new child calls it on its parent just before it is created (a child
        placed elsewhere, its parent before placing it). Children started
        together (the delegate calls of one answer, the slots a wave of
        finished children frees) each add themselves and start their task, so
        the first of them to run sends one document listing them all, and the
        rest find it sent. Each document lists every child so far: a parent
        that sent one per child, delegating to n children at once, sent n
        documents of up to n entries (51 MB of JSON for a fan-out of 1,000).
        """
        if self._unlisted:
            # Cleared first: a child added while this one is sent (a full mailbox) is listed
            # by a document of its own. Sent, in mailbox order, before any of their creates.
            self._unlisted = False
            try:
                await self._write_metadata()
            except BaseException:
                self._unlisted = True
                raise

    async def _write_metadata(self) -> None:
        meta = self._require_meta()
        meta.updated = self._services.clock()
        await self._require_writer().post_metadata(meta)

    def _require_writer(self) -> SessionWriter:
        if self._writer is None:
            raise SessionClosed(self.id)
        return self._writer

    def _require_meta(self) -> SessionMetadata:
        if self._meta is None:
            raise SessionClosed(self.id)
        return self._meta

    @property
    def metadata(self) -> SessionMetadata:
        return self._require_meta()

    @property
    def state(self) -> SessionState:
        return self._life.state

    # -- asking, granting, keeping ----------------------------------------------------

    async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        """Ask whoever opened this session's tree (``_approval``); through the parents first."""
        meta = self._require_meta()
        request = request.model_copy(
            update={
                "session_id": self.id,
                "agent": meta.agent,
                "sessions": (self.id,),
                "agents": (meta.agent,),
            }
        )
        return await self._relay_approval(request)

    async def _relay_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        parent = self._parent
        if parent is None:
            return await decide(self._services.approve, request)
        meta = parent._require_meta()
        above = request.model_copy(
            update={
                "sessions": (parent.id, *request.sessions),
                "agents": (meta.agent, *request.agents),
            }
        )
        return await parent._relay_approval(above)

    async def grant(self, rule: str) -> None:
        """Allow ``rule`` for the rest of this session's life, resumes included (metadata)."""
        meta = self._require_meta()
        if rule not in meta.granted:
            meta.granted.append(rule)
            await self._write_metadata()

    async def keep_file(self, content: bytes) -> str:
        """Keep a file's content in this session's file history; its digest, once durable."""
        self._require_writer()
        return await self._services.store.keep(self.location, content)

    async def count_file_changes(self, count: int) -> None:
        """Add ``count`` file changes to the session's metadata (``files_changed``)."""
        self._require_meta().files_changed += count
        await self._write_metadata()

    # -- delegation --------------------------------------------------------------------

    async def delegate(self, request: Delegation) -> DelegationResult:
        """Run ``request`` in a child session; never raises for the child's failure."""
        if self._children is None:
            self._children = anyio.CapacityLimiter(self._max_children())
        limiter = self._children
        try:
            limiter.acquire_nowait()  # a free place is taken without yielding to the loop
        except anyio.WouldBlock:
            await limiter.acquire()
        try:
            return await self._run_child(request)
        finally:
            limiter.release()

    async def _run_child(self, request: Delegation) -> DelegationResult:
        meta = self._require_meta()
        refused = self._refusal(request)
        if refused is not None:
            return refused
        resuming = request.session_id is not None
        child_id = request.session_id or new_child_id(self.id, request.agent)
        location = SessionLocation(self.location.home, self.location.project, child_id)
        await self._post(
            DelegateStarted(
                child_id=child_id,
                agent=request.agent,
                instruction=request.instruction,
                resumed=resuming,
            )
        )
        if not resuming:
            # Listed before the child exists (every child on disk is listed by its parent):
            # by the document the child sends just before its own (``_list_children``).
            meta.children.append(child_id)
            self._unlisted = True
        create = None if resuming else self._child_metadata(child_id, request.agent)
        run = ChildRun(location, create, request)
        launcher = self._services.children
        launch = launcher.place(run) if launcher is not None else None
        outcome = ChildOutcome("cancelled")
        child: SessionActor | None = None
        try:
            if launch is None:
                # A new child shares its parent's setup; a resumed one asks the handler.
                setup = self._setup if create is not None else None
                child = SessionActor(
                    self._services, location, create=create, setup=setup, parent=self
                )
                outcome = await drive_child(child, request)
            else:
                outcome = await self._launch(child_id, launch)
        finally:
            after = child.final if child is not None else _failed(outcome.final_error)
            with self._final_records(requests=1):
                ended = DelegateEnded(
                    child_id=child_id,
                    agent=request.agent,
                    status=outcome.status,
                    error=outcome.error,
                    traceback=outcome.trace,
                )
                # Committed with or after the child's last records, never without them.
                await self._post(ended, after=after)
        result = DelegationResult(
            session_id=child_id,
            agent=request.agent,
            status=outcome.status,
            response=outcome.response,
            error=outcome.error,
            traceback=outcome.trace,
        )
        result._cause = outcome.cause
        return result

    async def _launch(self, child_id: str, launch: Launch) -> ChildOutcome:
        """Run a child placed elsewhere, once what refers to it is durable (``_children``)."""
        try:
            await self._list_children()
            await self._require_writer().sync()
        except PersistenceError as exc:
            return ChildOutcome(
                "failed", error=f"sub-session {child_id} was not started: {describe_error(exc)}"
            )
        return await launch()

    def _refusal(self, request: Delegation) -> DelegationResult | None:
        meta = self._require_meta()
        reason = None
        if meta.depth + 1 > self._max_depth():
            reason = f"delegation depth limit ({self._max_depth()}) reached"
        elif request.session_id is not None:
            try:
                validate_session_id(request.session_id)
            except ValueError as exc:
                reason = str(exc)
            else:
                if request.session_id not in meta.children:
                    reason = f"{request.session_id} is not a sub-session of {self.id}"
        if reason is None:
            return None
        return DelegationResult(
            session_id=request.session_id or "",
            agent=request.agent,
            status="failed",
            error=reason,
        )

    def _child_metadata(self, child_id: str, agent: str) -> SessionMetadata:
        meta = self._require_meta()
        now = self._services.clock()
        return SessionMetadata(
            session_id=child_id,
            created=now,
            updated=now,
            cwd=meta.cwd,
            project=meta.project,
            agent=agent,
            profile=meta.profile,
            parent_id=self.id,
            root_id=meta.root_id,
            depth=meta.depth + 1,
            attributes=dict(meta.attributes),
        )


def _failed(error: BaseException | None) -> Receipt | None:
    """A receipt that failed with ``error`` (None if there is none): refuses what follows it."""
    if error is None:
        return None
    receipt = Receipt()
    receipt.error, receipt.done = error, True
    return receipt


def _scrubbed(value: Any, scrub: Callable[[str], str]) -> Any:
    """``value`` (JSON-like) with every string passed through ``scrub``."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {
            scrub(key) if isinstance(key, str) else key: _scrubbed(item, scrub)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrubbed(item, scrub) for item in value]
    return value


def _turn_status(outcome: Outcome) -> Literal["completed", "failed", "cancelled"]:
    match outcome:
        case Answered():
            return "completed"
        case Failed():
            return "failed"
        case Cancelled():
            return "cancelled"
        case _:
            assert_never(outcome)
