"""What a turn handler sees: the session it serves (``SessionContext``) and the turn (``Turn``).

Both are faces of one session actor: every call goes to the actor, which
alone holds the session's state and its way into the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

import anyio

from amplifier.persistence import SessionLocation, SessionMetadata

from ._approval import ApprovalDecision, ApprovalRequest
from ._delegation import Delegation, DelegationResult
from ._events import Event
from ._history import HistoryTail

if TYPE_CHECKING:
    from ._actor import SessionActor


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
        return await self._actor.read_history()

    async def history_tail(self, *, max_bytes: int) -> HistoryTail:
        """The first message and the last ``max_bytes`` or so of the history.

        What a turn needs from a long session: its first prompt and its
        recent messages, read from the end of the transcript only.
        """
        return await self._actor.history_tail(max_bytes)

    async def emit(self, event: str | Event, data: Mapping[str, object] | None = None) -> int:
        """Persist an event of this session; returns its ``seq`` once durable.

        ``event`` is a typed ``Event``, or a name with its ``data`` (JSON values).
        """
        return await self._actor.emit(event, data)

    async def record(self, message: Mapping[str, object]) -> int:
        """Append a message (a mapping with ``role``) to the transcript; returns its ``seq``."""
        return await self._actor.record(message)

    async def post(self, event: str | Event, data: Mapping[str, object] | None = None) -> None:
        """Send an event without waiting for it (``emit`` waits).

        It is committed in the order sent, with or before whatever the
        session waits for next: the answer of its turn, a ``sync``, its end.
        A failure to store it shows there.
        """
        await self._actor.post(event, data)

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
