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
        the session is cancelled, so it stays resumable with an honest status.
Rule 5: an exception in one session never crashes the Runtime: it ends that
        session with status ``failed``. Only cancellation propagates.
Rule 6: a failure keeps its cause: the exception that failed a turn travels
        in ``Failed`` and is raised again ``from`` it to the caller; it is
        logged with its traceback (``amplifier._log``), and the formatted
        traceback is recorded in the event that reports the failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import Any, Literal, assert_never, cast

import anyio
from anyio.abc import TaskStatus

from amplifier._errors import AmplifierError, UsageError
from amplifier._log import formatted_traceback, log_failure
from amplifier.persistence import (
    CorruptSession,
    EndStatus,
    PersistenceError,
    Receipt,
    SessionLocation,
    SessionMetadata,
    SessionStatus,
    SessionWriter,
    Store,
    existing_children,
    iter_events,
    load_message_tail,
    load_transcript,
    read_metadata,
    validate_session_id,
)

from ._approval import ApprovalDecision, ApprovalRequest, Approver, decide
from ._bus import EventBus, Subscription
from ._children import ChildLauncher, ChildOutcome, ChildRun, Launch
from ._delegation import Delegation, DelegationResult, DelegationStatus
from ._events import (
    DelegateEnded,
    DelegateStarted,
    Event,
    PromptCompleted,
    PromptSubmitted,
    SessionEnded,
    SessionResumed,
    SessionStarted,
)
from ._exceptions import RuntimeClosed, SessionClosed, TurnCancelled, TurnFailed
from ._history import FRESH_WINDOW, HistoryCopy, HistoryTail
from ._ids import new_child_id
from ._lifecycle import Lifecycle, SessionState
from ._messages import (
    Answered,
    Cancelled,
    Close,
    Failed,
    Outcome,
    Prompt,
    Relabel,
    Reply,
    SessionMessage,
    check_prompt,
)
from ._turns import SessionSetup, TurnHandler

FINAL_RECORDS_TIMEOUT = 5.0
"""Seconds a cancelled session may spend writing its final records."""
CHILD_CLOSE_GRACE = 5.0
"""Seconds a child may take to end after its answer (or timeout) before it is cancelled."""


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
        self._before: tuple[SessionStatus, str | None] | None = None
        """A resumed session's status and error before it was resumed."""
        self.history: HistoryCopy | None = None
        """The end of the transcript, once a turn has read it (``_history`` Rule 1)."""

    # -- the task -------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Session] = anyio.TASK_STATUS_IGNORED) -> None:
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
            task_status.started(Session(self))
            started = True
            async with self._mailbox:
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
            status, error = "failed", _describe(exc)
            if not started:
                # The caller never had the session (its resume could not be
                # stored, say): it stays as it was, and the caller is told.
                keep_previous = True
                raise
            trace = log_failure(f"session {self.id} failed", exc)
        finally:
            self._send.close()
            self._mailbox.close()
            with anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True):
                await self._end(status, error, trace, keep_previous=keep_previous)
            self._services.bus.unregister(self.id)
            self._ended = True
            if self._ended_event is not None:
                self._ended_event.set()

    async def _begin(self) -> None:
        store = self._services.store
        if self._create is not None:
            self._writer = await store.create(self.location, self._create, wait=False)
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
            if meta.parent_id is None:
                await self._writer.sync()  # identity first: durable before the caller has it
            return
        # Read before claiming: a session that cannot be loaded is left exactly
        # as found. Read again once claimed: a dead owner's journal may have
        # been replayed into it meanwhile.
        await anyio.to_thread.run_sync(_load_metadata, self.location)
        # A failure from here on still ends the session through ``_end``.
        self._writer, opened = await store.open(self.location)
        meta, repaired = await anyio.to_thread.run_sync(_load_metadata, self.location)
        _, dropped = await anyio.to_thread.run_sync(existing_children, self.location, meta.children)
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
                    self._meta.status = stored
                    self._meta.error = error
                    await self._write_metadata()
            except PersistenceError:
                pass  # the disk refused; closing still releases the session
            finally:
                # A child's parent orders its delegate:end after this (``final``);
                # a root's caller is told the session ended once it is durable.
                with contextlib.suppress(PersistenceError):
                    await writer.close(wait=self._meta is None or self._meta.parent_id is None)
        self._life.move(SessionState.ENDED)

    @property
    def context(self) -> SessionContext:
        """What the turn handler sees of this session (made on first use)."""
        if self._context is None:
            self._context = SessionContext(self)
        return self._context

    @property
    def has_ended(self) -> bool:
        """The session's task is over (its final records sent)."""
        return self._ended

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
        if reply.statistics().open_receive_streams == 0:
            reply.close()  # whoever asked has given up waiting
            return
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
                    scrub = self._scrub()
                    meta.last_prompt = scrub(prompt.text) if scrub else prompt.text
                    await self._write_metadata()
                    turn = Turn(self.context, prompt.text, number, on_text=prompt.on_text)
                    text = await self._services.handler.run_turn(turn)
                    answer = Reply(session_id=self.id, text=text, turn=number, cut_off=turn.cut_off)
                    outcome = Answered(reply=answer)
                except Exception as exc:
                    log_failure(f"turn {number} of session {self.id} failed", exc)
                    outcome = Failed(reason=_describe(exc), error=exc)
        finally:
            self._turn_scope = self._current = None
            with anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True):
                outcome = await self._complete_turn(number, outcome, durable=prompt.durable)
            if not isinstance(outcome, Answered):
                self.history = None  # it may hold what the file never got: read it again
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                reply.send_nowait(outcome)  # refused only if nobody is waiting any more
            reply.close()
        self._life.move(SessionState.IDLE)

    async def _complete_turn(self, number: int, outcome: Outcome, *, durable: bool) -> Outcome:
        """Record how the turn ended; with ``durable``, wait until the whole turn is committed.

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
            await self._write_metadata()
            if durable:
                await self._require_writer().sync()
        except PersistenceError as exc:
            if isinstance(outcome, Answered):
                log_failure(f"turn {number} of session {self.id} could not be stored", exc)
                return Failed(reason=f"the turn could not be stored: {exc}", error=exc)
        return outcome

    async def _relabel(self, message: Relabel) -> None:
        """Change the metadata between turns; ``updated`` stays (a label is not a use)."""
        result: SessionMetadata | Exception
        try:
            meta = self._require_meta()
            message.change(meta)
            writer = self._require_writer()
            await writer.post_metadata(meta)
            await writer.sync()
            result = meta.model_copy(deep=True)
        except Exception as exc:  # handed to the caller, who raises it
            result = exc
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            message.reply.send_nowait(result)
        message.reply.close()

    async def relabel(self, change: Callable[[SessionMetadata], None]) -> SessionMetadata:
        """Change and write the metadata, after the turn that runs (if any); it as written.

        Raises ``SessionClosed`` if the session is ending, or what kept the
        metadata from being written.
        """
        if self._life.state in (SessionState.CLOSING, SessionState.ENDED):
            raise SessionClosed(self.id)
        send, receive = anyio.create_memory_object_stream[SessionMetadata | Exception](1)
        with receive:
            try:
                await self._send.send(Relabel(change=change, reply=send))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.close()
                raise SessionClosed(self.id) from None
            try:
                result = await receive.receive()
            except anyio.EndOfStream:
                raise SessionClosed(self.id) from None
        if isinstance(result, Exception):
            raise result
        return result

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
        """Send a prompt and wait for its outcome. Cancelling the wait cancels the turn."""
        if self._life.state in (SessionState.CLOSING, SessionState.ENDED):
            raise SessionClosed(self.id)
        send, receive = anyio.create_memory_object_stream[Outcome](1)
        prompt = Prompt(
            text=text,
            context=tuple(dict(m) for m in context),
            reply=send,
            on_text=on_text,
            durable=durable,
        )
        with receive:
            try:
                await self._send.send(prompt)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                send.close()
                raise SessionClosed(self.id) from None
            try:
                return await receive.receive()
            except anyio.EndOfStream:
                raise RuntimeClosed(self.id, f"session {self.id} ended before answering") from None
            except anyio.get_cancelled_exc_class():
                self.cancel_turn(prompt)
                raise

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

    async def emit(self, event: str, data: Mapping[str, Any]) -> int:
        """Persist an event and wait until it is committed; its ``seq``."""
        stamp = await self._require_writer().append_event(
            event, self._payload(data), parent_id=self._parent_id()
        )
        return stamp.seq

    async def post(self, event: str, data: Mapping[str, Any]) -> None:
        """Send an event of the turn handler's; committed in order, durable at the next wait."""
        await self._require_writer().post_event(
            event, self._payload(data), parent_id=self._parent_id()
        )

    async def sync(self) -> None:
        """Wait until everything this session sent is committed; raise the first failure."""
        await self._require_writer().sync()

    async def _post(self, event: Event, *, after: Receipt | None = None) -> None:
        """Send an event of the session's own bookkeeping (committed in order; see Rule 3)."""
        await self._require_writer().post_event(
            event.name, self._payload(event.data()), parent_id=self._parent_id(), after=after
        )

    def _payload(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        # The record is serialised before the call returns, so the caller's
        # dict is not kept: no copy needed (unless it is scrubbed).
        scrub = self._scrub()
        return _scrubbed(dict(data), scrub) if scrub is not None else data

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
        async with self._children:
            return await self._run_child(request)

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
            # Written before the child exists: every child on disk is listed by its parent.
            meta.children.append(child_id)
            await self._write_metadata()
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
            with anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True):
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
            await self._require_writer().sync()
        except PersistenceError as exc:
            return ChildOutcome(
                "failed", error=f"sub-session {child_id} was not started: {_describe(exc)}"
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


async def drive_child(child: SessionActor, request: Delegation) -> ChildOutcome:
    """Start ``child``, ask it ``request``'s instruction, close it; how it ended.

    A child that fails, times out or cannot start is an outcome, not an
    error; only cancellation propagates (the child ends as cancelled first).
    """
    outcome = ChildOutcome("cancelled")
    async with anyio.create_task_group() as tg:
        try:
            await tg.start(child.run)
        except Exception as exc:
            trace = log_failure(f"sub-session {child.id} could not start", exc)
            outcome = ChildOutcome("failed", error=_describe(exc), trace=trace, cause=exc)
        else:
            outcome = await _supervise(child, request, tg)
    return outcome


async def _supervise(
    child: SessionActor, request: Delegation, tg: anyio.abc.TaskGroup
) -> ChildOutcome:
    """Ask the child, then close it with the matching end status."""
    status: DelegationStatus
    response = error = trace = None
    cause: BaseException | None = None
    end: EndStatus = "cancelled"
    try:
        with anyio.move_on_after(request.timeout if request.timeout else float("inf")) as timer:
            try:
                outcome: Outcome = await child.ask(
                    request.instruction, request.context, durable=False
                )
            except (RuntimeClosed, SessionClosed) as exc:
                outcome = Failed(reason=str(exc), error=exc)
        if timer.cancelled_caught:
            status, error = "timed_out", f"no answer within {request.timeout:g} s"
        else:
            match outcome:
                case Answered(reply=reply):
                    status, response, end = "completed", reply.text, "completed"
                case Failed(reason=reason, error=cause):
                    status, error, end = "failed", reason, "failed"
                    if cause is not None:  # the parent's delegate:end keeps where it failed
                        trace = formatted_traceback(cause)
                case Cancelled():
                    status, error = "cancelled", "the child's turn was cancelled"
                case _:
                    assert_never(outcome)
    finally:
        child.close_mailbox(end, error)
    with anyio.move_on_after(CHILD_CLOSE_GRACE):
        await child.wait_ended()
    if not child.has_ended:
        tg.cancel_scope.cancel()
    return ChildOutcome(status, response, error, trace=trace, cause=cause)


def _failed(error: BaseException | None) -> Receipt | None:
    """A receipt that failed with ``error`` (None if there is none): refuses what follows it."""
    if error is None:
        return None
    receipt = Receipt()
    receipt.error, receipt.done = error, True
    return receipt


def _load_metadata(location: SessionLocation) -> tuple[SessionMetadata, bool]:
    """The stored metadata, or metadata rebuilt from the event log if it is damaged."""
    try:
        return read_metadata(location), False
    except CorruptSession as damage:
        # Ours only: another tool's log may hold a session:start of its own (no seq).
        start = next(
            (e for e in iter_events(location) if e.event == "session:start" and e.seq is not None),
            None,
        )
        if start is None:
            raise CorruptSession(
                location.session_id, f"{damage.reason}; no session:start to rebuild from"
            ) from None
        data = start.data
        messages = sum(1 for m in load_transcript(location) if m.role in ("user", "assistant"))
        children = [
            str(e.data["child_id"])
            for e in iter_events(location)
            if e.event == "delegate:start" and e.data.get("child_id") and not e.data.get("resumed")
        ]
        parent_id = data.get("parent_id")
        return (
            SessionMetadata(
                session_id=location.session_id,
                created=start.ts,
                updated=start.ts,
                cwd=str(data.get("cwd", "")),
                project=location.project,
                agent=str(data.get("agent", "default")),
                profile=str(data["profile"]) if data.get("profile") else None,
                parent_id=str(parent_id) if parent_id else None,
                root_id=str(data.get("root_id") or location.session_id),
                depth=depth if isinstance(depth := data.get("depth"), int) else 0,
                message_count=messages,
                children=list(dict.fromkeys(children)),
            ),
            True,
        )


def _scrubbed(value: Any, scrub: Callable[[str], str]) -> Any:
    """``value`` (JSON-like) with every string passed through ``scrub``."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item, scrub) for key, item in value.items()}
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


def _describe(exc: BaseException) -> str:
    """One line for an error: Amplifier's own say enough; others are named by type."""
    text = str(exc)
    if isinstance(exc, AmplifierError | UsageError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SessionContext:
    """What a turn handler may know and do about the session it serves."""

    def __init__(self, actor: SessionActor) -> None:
        self._actor = actor
        self._state: dict[str, object] | None = None

    @property
    def state(self) -> dict[str, object]:
        """Scratch space for the turn handler, kept while the session is open (not persisted)."""
        if self._state is None:
            self._state = {}  # made on first use: most sessions never need one
        return self._state

    @property
    def id(self) -> str:
        return self._actor.id

    @property
    def metadata(self) -> SessionMetadata:
        """A copy of the session's current metadata."""
        return self._actor.metadata.model_copy(deep=True)

    @property
    def agent(self) -> str:
        return self._actor.metadata.agent

    @property
    def profile(self) -> str | None:
        """The profile the session records (None: the Runtime's)."""
        return self._actor.metadata.profile

    @property
    def cwd(self) -> str:
        """The project directory the session records (its tools run there)."""
        return self._actor.metadata.cwd

    @property
    def attributes(self) -> Mapping[str, str]:
        """The session's attributes (provider, model, ...), read-only and not copied."""
        return MappingProxyType(self._actor.metadata.attributes)

    @property
    def depth(self) -> int:
        return self._actor.metadata.depth

    @property
    def location(self) -> SessionLocation:
        return self._actor.location

    async def history(self) -> list[dict[str, Any]]:
        """All of the session's stored messages, oldest first."""
        await self._actor._services.store.flush()
        records = await anyio.to_thread.run_sync(load_transcript, self._actor.location)
        return [record.message() for record in records]

    async def history_tail(self, *, max_bytes: int) -> HistoryTail:
        """The first message and the last ``max_bytes`` or so of the history.

        What a turn needs from a long session: its first prompt and its
        recent messages, read from the end of the transcript only.
        """
        actor = self._actor
        if actor.history is None or not actor.history.covers(max_bytes):
            await actor._services.store.flush()
            tail = await anyio.to_thread.run_sync(
                lambda: load_message_tail(actor.location, max_bytes=max_bytes)
            )
            actor.history = HistoryCopy(tail, max_bytes)
        return actor.history.tail(max_bytes)

    async def emit(self, event: str | Event, data: Mapping[str, object] | None = None) -> int:
        """Persist an event of this session; returns its ``seq`` once durable.

        ``event`` is a typed ``Event``, or a name with its ``data`` (JSON values).
        """
        if isinstance(event, Event):
            return await self._actor.emit(event.name, event.data())
        return await self._actor.emit(event, data or {})

    async def record(self, message: Mapping[str, object]) -> int:
        """Append a message (a mapping with ``role``) to the transcript; returns its ``seq``."""
        return await self._actor.record(message)

    async def post(self, event: str | Event, data: Mapping[str, object] | None = None) -> None:
        """Send an event without waiting for it (``emit`` waits).

        It is committed in the order sent, with or before whatever the
        session waits for next: the answer of its turn, a ``sync``, its end.
        A failure to store it shows there.
        """
        if isinstance(event, Event):
            await self._actor.post(event.name, event.data())
        else:
            await self._actor.post(event, data or {})

    async def post_record(self, message: Mapping[str, object]) -> None:
        """Send a message for the transcript without waiting for it (``record`` waits)."""
        await self._actor.post_message(message)

    async def sync(self) -> None:
        """Wait until everything the session sent so far is durable; raise the first failure.

        Where something is about to leave the Runtime before the turn ends:
        a tool with side effects runs only after its records are durable.
        """
        await self._actor.sync()

    async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        """Ask whoever opened the session tree whether a tool call may run.

        The request travels up through the parents' actors (each adds itself
        to ``sessions``) to the Runtime's ``approve`` callback; without one,
        the answer is a denial by ``"no one"``. Cancelling the call withdraws
        the question.
        """
        return await self._actor.request_approval(request)

    @property
    def granted(self) -> tuple[str, ...]:
        """Permission rules granted to this session when it asked ("always")."""
        return tuple(self._actor.metadata.granted)

    async def grant(self, rule: str) -> None:
        """Grant ``rule`` to this session for good (kept in its metadata, across resumes)."""
        await self._actor.grant(rule)

    async def keep_file(self, content: bytes) -> str:
        """Keep a file's content in the session's ``file-history``; its digest, once durable.

        Content-addressed: keeping the same content twice stores it once.
        """
        return await self._actor.keep_file(content)

    async def count_file_changes(self, count: int) -> None:
        """Record that the session's tools changed ``count`` more files (its metadata's
        ``files_changed``), so readers of its file history know to look."""
        await self._actor.count_file_changes(count)


class Turn:
    """One prompt being answered, as the turn handler sees it."""

    def __init__(
        self,
        session: SessionContext,
        prompt: str,
        number: int,
        *,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.session = session
        self.prompt = prompt
        self.number = number
        self._on_text = on_text
        self.cut_off: str | None = None
        """Why the answer stops short, if it does: the handler sets it, ``Reply`` carries it."""

    @property
    def streaming(self) -> bool:
        """Someone is reading the answer as it is produced."""
        return self._on_text is not None

    async def stream(self, text: str) -> None:
        """Pass a piece of the answer to whoever asked, as it arrives (not persisted)."""
        if self._on_text is not None and text:
            await self._on_text(text)

    async def emit(self, event: str | Event, data: Mapping[str, object] | None = None) -> int:
        """Persist an event (a typed ``Event``, or a name and its data); its ``seq``."""
        return await self.session.emit(event, data)

    async def record(self, message: Mapping[str, object]) -> int:
        """Append a message to the transcript as it happens; returns its ``seq``."""
        return await self.session.record(message)

    async def post(self, event: str | Event, data: Mapping[str, object] | None = None) -> None:
        """Send an event without waiting; durable once the turn's answer is (``emit`` waits)."""
        await self.session.post(event, data)

    async def post_record(self, message: Mapping[str, object]) -> None:
        """Send a message without waiting; durable once the turn's answer is."""
        await self.session.post_record(message)

    async def sync(self) -> None:
        """Wait until everything the session sent so far is durable (``SessionContext.sync``)."""
        await self.session.sync()

    async def delegate(
        self,
        agent: str,
        instruction: str,
        *,
        session_id: str | None = None,
        context: Sequence[Mapping[str, Any]] = (),
        timeout: float | None = None,  # noqa: ASYNC109 - bounds the child, which reports timed_out
    ) -> DelegationResult:
        """Run ``instruction`` in a child session of ``agent`` and wait for its result.

        A child that fails, times out or is refused returns a result with
        that status; only cancellation of this turn propagates.
        """
        request = Delegation(
            agent=agent,
            instruction=instruction,
            session_id=session_id,
            context=tuple(dict(m) for m in context),
            timeout=timeout,
        )
        return await self.session._actor.delegate(request)

    async def delegate_all(self, requests: Sequence[Delegation]) -> list[DelegationResult]:
        """Run several delegations concurrently (within the session's child limit).

        Results come back in the order of ``requests``.
        """
        results: list[DelegationResult | None] = [None] * len(requests)

        async def run(index: int, request: Delegation) -> None:
            results[index] = await self.session._actor.delegate(request)

        async with anyio.create_task_group() as tg:
            for index, request in enumerate(requests):
                tg.start_soon(run, index, request)
        return cast(list[DelegationResult], results)


class Session:
    """A handle on an open session: ask it, cancel its turn, subscribe to it, close it."""

    def __init__(self, actor: SessionActor) -> None:
        self._actor = actor

    @property
    def id(self) -> str:
        return self._actor.id

    @property
    def metadata(self) -> SessionMetadata:
        """A copy of the session's current metadata."""
        return self._actor.metadata.model_copy(deep=True)

    @property
    def state(self) -> SessionState:
        return self._actor.state

    @property
    def location(self) -> SessionLocation:
        return self._actor.location

    async def ask(
        self, prompt: str, *, on_text: Callable[[str], Awaitable[None]] | None = None
    ) -> Reply:
        """Run one turn and return its answer.

        ``on_text`` receives the answer's text as it streams in. Raises
        ``TurnFailed`` if the turn handler failed, ``TurnCancelled`` if the
        turn was cancelled (``cancel``); the session goes on after both.
        Cancelling the call cancels the turn. Raises ``TypeError`` for a prompt
        that is not a string and ``UsageError`` for one without text, before
        anything is stored.
        """
        outcome = await self._actor.ask(check_prompt(prompt), on_text=on_text)
        match outcome:
            case Answered(reply=reply):
                return reply
            case Failed(reason=reason, error=error):
                raise TurnFailed(self.id, reason) from error
            case Cancelled():
                raise TurnCancelled(self.id)
            case _:
                assert_never(outcome)

    async def set_attributes(self, values: Mapping[str, str | None]) -> SessionMetadata:
        """Set the metadata's ``attributes`` (None removes one); the metadata as written.

        Written after the running turn, if any, and durable when this
        returns; not a use of the session (``updated`` stays). The agent
        loop reads ``model``: the model that the session's next turns call.
        A resumed session takes its attributes from its configuration as it
        is then (the profile's model, say), as it takes its profile.
        Raises ``SessionClosed`` if the session has ended.
        """
        changes = dict(values)

        def change(meta: SessionMetadata) -> None:
            for key, value in changes.items():
                if value is None:
                    meta.attributes.pop(key, None)
                else:
                    meta.attributes[key] = value

        return await self._actor.relabel(change)

    def cancel(self) -> None:
        """Cancel the running turn, if any; the session stays open. Never blocks."""
        self._actor.cancel_turn()

    def subscribe(self, *, tree: bool = True, buffer: int = 1024) -> Subscription:
        """Events of this session (and, with ``tree``, its sub-sessions) as they are persisted."""
        return self._actor._services.bus.subscribe(self.id, tree=tree, buffer=buffer)

    async def close(
        self,
        *,
        status: EndStatus = "completed",
        error: str | None = None,
        keep_previous: bool = False,
    ) -> None:
        """End the session (``session:end`` with ``status``) and wait until it is written.

        ``status`` says how the session ended (``cancelled`` after a
        cancelled turn, say, or ``failed`` with the ``error`` that ended
        it); metadata records both. With ``keep_previous``, a resumed
        session ends with the status and error it had before it was
        resumed, whatever ``status`` says: for a failure that tells nothing
        about the session (its turn could not be stored); a new session
        ends with ``status``. Idempotent: a later call waits, and its
        status does not count. Waits for a running turn to finish first;
        ``cancel`` it to end sooner.
        """
        self._actor.close_mailbox(status, error, keep_previous=keep_previous)
        await self._actor.wait_ended()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class()):
            # Cancelled here: do not wait (that would block the cancellation);
            # the session ends on its own with status cancelled.
            self._actor.close_mailbox("cancelled")
            return
        await self.close()
