"""The two faces a program holds: a ``Runtime`` and its ``Session``s.

Both are Protocols, so that every backend offers the same face: the
in-process runtime (``LocalRuntime``, ``LocalSession``) and the Ray one
(``amplifier.cluster``), which runs sessions on session hosts and shares
the rest. ``amplifier.open_runtime`` gives either.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from amplifier.persistence import (
    Durability,
    EndStatus,
    EventRecord,
    RecoveryReport,
    SearchHit,
    SessionLocation,
    SessionMetadata,
    SessionSort,
    SessionSummary,
    TranscriptRecord,
)

from ._bus import Subscription
from ._lifecycle import SessionState
from ._messages import Reply

if TYPE_CHECKING:
    from ._runtime import Cleanup, HeldSession


class Session(Protocol):
    """A handle on an open session: ask it, cancel its turn, subscribe to it, close it."""

    @property
    def id(self) -> str: ...

    @property
    def metadata(self) -> SessionMetadata:
        """A copy of the session's current metadata."""
        ...

    @property
    def state(self) -> SessionState: ...

    @property
    def location(self) -> SessionLocation: ...

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
        ...

    async def set_attributes(self, values: Mapping[str, str | None]) -> SessionMetadata:
        """Set the metadata's ``attributes`` (None removes one); the metadata as written.

        Written after the running turn, if any, and durable when this
        returns; not a use of the session (``updated`` stays). The agent
        loop reads ``model``: the model that the session's next turns call.
        A resumed session takes its attributes from its configuration as it
        is then (the profile's model, say), as it takes its profile.
        Raises ``SessionClosed`` if the session has ended.
        """
        ...

    def cancel(self) -> None:
        """Cancel the running turn, if any; the session stays open. Never blocks."""
        ...

    def subscribe(self, *, tree: bool = True, buffer: int = 1024) -> Subscription:
        """Events of this session (and, with ``tree``, its sub-sessions) as they are persisted."""
        ...

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
        ...

    async def __aenter__(self) -> Session: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class SessionOpening:
    """``await rt.open_session(...)`` gives a ``Session``; ``async with`` also closes it."""

    def __init__(self, open_: Callable[[], Awaitable[Session]]) -> None:
        self._open = open_
        self._session: Session | None = None

    def __await__(self) -> Generator[Any, None, Session]:
        return self._open().__await__()

    async def __aenter__(self) -> Session:
        self._session = await self._open()
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.__aexit__(exc_type, exc, tb)


class Runtime(Protocol):
    """Opens, resumes and observes sessions. Made by ``amplifier.open_runtime``."""

    @property
    def cwd(self) -> Path:
        """The project directory: its sessions are this runtime's."""
        ...

    @property
    def project(self) -> str:
        """The project's slug: the folder under ``projects/`` its sessions are stored in."""
        ...

    @property
    def profile(self) -> str | None:
        """The profile new sessions run under unless they are given one."""
        ...

    @property
    def home(self) -> Path: ...

    @property
    def durability(self) -> Durability: ...

    @property
    def recovered(self) -> RecoveryReport:
        """What start-up recovery restored from runtimes that died."""
        ...

    def open_session(
        self,
        agent: str | None = None,
        *,
        profile: str | None = None,
        attributes: Mapping[str, str] | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
    ) -> SessionOpening:
        """Start a new root session of ``agent`` (None: the handler's default agent).

        ``await`` it for a ``Session`` (closed when the runtime closes), or use
        ``async with`` to close it at the end of the block.
        ``metadata.json`` (identity first) and ``session:start`` are sent
        before this returns, and durable with the first group the store
        commits, at the latest with the first answer or the close. ``name``
        and ``tags`` label it as ``rename`` and ``tag`` do (``UsageError``
        if they are not valid).
        """
        ...

    def resume(self, session_id: str, *, profile: str | None = None) -> SessionOpening:
        """Open a stored session again, by id or unique prefix, from any project.

        Its history is kept. It runs under its own profile (the one its
        metadata records; this Runtime's if it records none), or under
        ``profile`` if given; the profile, its provider and the agent are
        taken as they are configured now. Raises ``SessionNotFound``,
        ``AmbiguousSessionId``, ``InvalidSessionId``, ``SessionLocked``, or
        the handler's error for a profile or agent that no longer exists.
        """
        ...

    async def find(self, id_or_prefix: str) -> SessionLocation:
        """Where the session with this id (or unique id prefix) is stored."""
        ...

    async def flush(self) -> None:
        """Wait until every session file holds what this runtime has committed.

        Records are durable once committed (in the journal, under ``fsync``);
        the session folders and files follow within a few milliseconds, and
        a closed sub-session is free for other processes once its files are
        synced. Call this before reading the files directly, or before
        another process must see them or open them. The readers of this API
        (``events``, ``transcript``, ``sessions``, ...) flush by themselves.
        """
        ...

    async def sessions(
        self,
        *,
        all_projects: bool = False,
        limit: int | None = None,
        roots_only: bool = False,
        sort: SessionSort = "created",
        tag: str | None = None,
    ) -> list[SessionSummary]:
        """Stored sessions of this project (or every project), newest first.

        This project's are those stored under its slug that recorded this
        directory: ``/a-b`` and ``/a/b`` share a slug, not their sessions.

        ``sort`` is ``created`` (newest created first) or ``used`` (most
        recently used first: the metadata's ``updated``). ``limit`` gives the
        first page (read through the session index, so it costs the same
        however many sessions exist); ``roots_only`` leaves out sub-sessions;
        ``tag`` keeps the sessions that have that tag.
        """
        ...

    async def search(
        self, text: str, *, all_projects: bool = False, limit: int = 20
    ) -> list[SearchHit]:
        """Where ``text`` occurs in this project's sessions (or every project's), newest first.

        Searches prompts, answers and tool output of sessions and
        sub-sessions, and session names and tags. Every word must occur;
        ``"quoted words"`` match as a phrase, ``word*`` as a prefix. Matches
        of a name or tag come first, then messages, newest first. The first
        search of a store indexed before search existed builds the index.
        Raises ``UsageError`` if there is nothing to search for.
        """
        ...

    async def rename(self, session_id: str, name: str | None) -> SessionMetadata:
        """Give a stored session a name (None: take it away); its metadata as now stored.

        A session open in this Runtime is renamed between its turns.
        Raises ``SessionLocked`` if the session is open in another Runtime
        or process, ``UsageError`` for an empty or unprintable name.
        """
        ...

    async def tag(
        self, session_id: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> SessionMetadata:
        """Add and remove tags of a stored session; its metadata as now stored.

        A session open in this Runtime is tagged between its turns.
        Raises ``SessionLocked`` if the session is open in another Runtime
        or process, ``UsageError`` for a tag that is not one word.
        """
        ...

    def hold(self, session_id: str) -> AbstractAsyncContextManager[HeldSession]:
        """Claim a stored session and its sub-sessions, to change them outside any turn.

        For work on a whole tree that must not race a turn (``session
        rewind``): every session of the tree is claimed, or ``SessionLocked``
        names the one in use and nothing is claimed. The claims go when the
        block ends. Events written through the held session are the root's.
        """
        ...

    async def reindex(self) -> int:
        """Rebuild the session index from every session's metadata; how many it holds."""
        ...

    def events(self, session_id: str, *, tree: bool = False) -> AsyncIterator[EventRecord]:
        """A session's persisted events (with ``tree``: and its sub-sessions'), in seq order.

        Streamed: the files are read in a worker thread, some hundreds of
        events at a time, so the first event comes before a long log is
        read to its end, and memory stays bounded however long it is.
        Events committed after the reading started may be left out.
        """
        ...

    async def latest(self, *, cwd: str | os.PathLike[str] | None = None) -> SessionSummary | None:
        """The root session of this project used last (what ``continue`` resumes).

        ``cwd`` asks for another directory's instead. Last used means the
        newest metadata ``updated``; a session that never got a prompt (an
        interactive session left at once) is passed over: it holds nothing
        to go on with. A session whose metadata is damaged is returned (with
        ``metadata`` None) when its event log was written after every
        readable one was used: resuming it rebuilds its metadata. An older
        session never silently stands in for it; the caller should say that
        it is damaged.
        """
        ...

    async def transcript(self, session_id: str) -> list[TranscriptRecord]:
        """A session's stored messages, oldest first."""
        ...

    async def tree(self, session_id: str) -> list[SessionSummary]:
        """The session and its sub-sessions (depth first, parents before children)."""
        ...

    async def delete(self, session_id: str) -> list[str]:
        """Delete a session and its sub-sessions; the ids removed.

        Raises ``SessionLocked`` (and deletes nothing) if any of them is in use.
        """
        ...

    async def cleanup(
        self, *, days: float, dry_run: bool = False, all_projects: bool = False
    ) -> Cleanup:
        """Delete sessions not updated for ``days``, each with its sub-sessions.

        A tree goes only if every session in it is that old and none is in
        use; sessions in use are never touched (they are reported).
        ``dry_run`` only reports what would go.
        """
        ...

    def subscribe(
        self, session_id: str | None = None, *, tree: bool = True, buffer: int = 1024
    ) -> Subscription:
        """Events as they are persisted: of one session (and its subtree), or of all."""
        ...
