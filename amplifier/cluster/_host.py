"""The session host: a Ray actor running many sessions on its own event loop.

Its body is the in-process runtime: ``open_runtime`` of the agents layer,
the same session actors, delegation and agent loop, writing through a
``Store`` whose mailbox is forwarded in batches to the persistence service
(``_forwarder``). A delegated child runs here, in its parent's task
group, exactly as in-process; with ``spread_children``, the host's child
launcher (``_spread``) places some on the other hosts, which run them
through ``run_child``.

Rule 1: nothing comes through the environment: Ray workers inherit the
        environment of the cluster's start, not the driver's. The home,
        the project and the configuration are arguments.
Rule 2: what the driver sees besides answers (events for its subscribers,
        streamed text) goes through one long-poll call, ``pump``; an
        answer carries the count of pumped entries before it, so the
        driver delivers them before it returns the answer.
Rule 3: errors cross the boundary as values (``Outcome``, a failed turn's
        cause packed with its traceback: ``_failures``) or as errors that
        pickle (``_wire.portable``); a user never sees Ray's wrapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio

from amplifier.agents import Permissions, ProviderKind
from amplifier.agents._runtime import open_agent_runtime
from amplifier.persistence import (
    Durability,
    EndStatus,
    PersistenceError,
    RecoveryReport,
    SessionMetadata,
)
from amplifier.runtime import Session, TurnCancelled, TurnFailed
from amplifier.runtime.lowlevel import ChildOutcome, ChildRun, LocalRuntime, run_child

from ._bridge import call
from ._exceptions import PersistenceUnavailable
from ._failures import PackedError, pack
from ._forwarder import Forwarder, open_forwarding_store
from ._spread import ChildSpreader
from ._wire import Answer, Item, portable

COMMIT_TIMEOUT = 120.0
"""Seconds a batch may wait for the persistence service (a restart takes a few)."""
PUMP_WAIT = 30.0
"""Seconds a ``pump`` call waits for something before it returns empty."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    """What every host of a cluster runtime is started with (Rule 1)."""

    home: str
    cwd: str
    profile: str | None
    provider: ProviderKind | None
    model: str | None
    durability: Durability
    permissions: Permissions | None = None
    """Permission rules beside every profile's (``--allow``, ``--deny``)."""
    assume_yes: bool = False
    trust_project: bool | None = None
    """The project's own configuration: trusted, not, or as the home's record says."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a turn ended, as the driver rebuilds it."""

    status: Literal["answered", "failed", "cancelled"]
    text: str = ""
    turn: int = 0
    reason: str = ""
    cause: PackedError | None = None
    """What a failed turn was raised from, with its traceback (``_failures``)."""
    cut_off: str | None = None
    """Why an answer stops short (``Reply.cut_off``)."""


class SessionHost:
    """Hosts the sessions the driver places here; see the module's Rules."""

    # Ray awaits an async __init__ on the actor's loop: the host is up once its runtime is.
    async def __init__(  # type: ignore[misc]
        self,
        index: int,
        config: HostConfig,
        persistence: Any,
        writer: str,
        recovered: RecoveryReport,
    ) -> None:
        self._config = config
        self._index = index
        self._spreader = ChildSpreader(index, persistence)
        self._placed: dict[str, anyio.CancelScope] = {}
        """The children other hosts placed here, by their launch's ticket."""
        self._cancelled_early: set[str] = set()
        self._children_run = 0
        self._persistence = persistence
        self._writer = writer
        self._recovered = recovered
        self._runtime: LocalRuntime | None = None
        self._forwarder: Forwarder | None = None
        self._sessions: dict[str, Session] = {}
        self._outbox: list[tuple[str, Any]] = []
        self._pumped = 0
        """Entries put in the outbox since the start (Rule 2's count)."""
        self._watching = False
        self._news = asyncio.Event()
        self._failure: BaseException | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        # Kept: the loop holds tasks weakly.
        self._main = asyncio.get_running_loop().create_task(self._serve())
        await self._ready.wait()
        if self._failure is not None:
            raise self._failure

    async def _serve(self) -> None:
        config = self._config
        try:
            async with open_forwarding_store(
                Path(config.home), config.durability, self._recovered, self._commit
            ) as (store, forwarder):
                self._forwarder = forwarder
                store.add_listener(self._committed)
                async with open_agent_runtime(
                    profile=config.profile,
                    home=config.home,
                    cwd=config.cwd,
                    durability=config.durability,
                    provider=config.provider,
                    model=config.model,
                    store=store,
                    children=self._spreader,
                    permissions=config.permissions,
                    assume_yes=config.assume_yes,
                    trust_project=config.trust_project,
                ) as runtime:
                    self._runtime = runtime
                    self._ready.set()
                    await self._stop.wait()
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._runtime = None
            self._ready.set()

    async def _commit(self, number: int, items: list[Item]) -> list[Answer]:
        ref = self._persistence.commit.remote(self._writer, number, items)
        try:
            with anyio.fail_after(COMMIT_TIMEOUT):
                answers: list[Answer] = await call(ref, cancel_remote=False)
        except TimeoutError:
            raise PersistenceUnavailable(
                f"the persistence service did not answer within {COMMIT_TIMEOUT:g} s; "
                "the last records may or may not be stored"
            ) from None
        except Exception as exc:  # Ray's: the service died or restarted meanwhile
            raise PersistenceUnavailable(
                "the persistence service stopped while storing these records; they may or "
                "may not be stored: resume the session to go on"
            ) from exc
        return answers

    def _committed(self, records: Sequence[dict[str, Any]]) -> None:
        if self._watching:
            self._put(("events", list(records)))

    def _put(self, entry: tuple[str, Any]) -> None:
        self._outbox.append(entry)
        self._pumped += 1
        self._news.set()

    # -- what the driver calls -----------------------------------------------------------

    async def describe(self) -> tuple[int, str]:
        """This process's id and its writer id."""
        return os.getpid(), self._writer

    async def open(
        self,
        agent: str | None,
        profile: str | None,
        attributes: Mapping[str, str] | None,
        name: str | None,
        tags: Sequence[str],
    ) -> SessionMetadata:
        """Start a new root session here; its metadata (durable when this returns)."""
        runtime = self._require()
        try:
            session = await runtime.open_session(
                agent, profile=profile, attributes=attributes, name=name, tags=tags
            )
        except Exception as exc:
            raise portable(exc) from None
        try:
            # Its id goes to another process, which may resume it anywhere: the
            # persistence service must hold it first (a local open does not wait).
            await runtime.flush()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await session.close()
            raise portable(exc) from None
        self._sessions[session.id] = session
        return session.metadata

    async def resume(self, session_id: str, profile: str | None = None) -> SessionMetadata:
        """Open a stored session here (the exact id; under its own profile unless
        ``profile`` says another); its metadata."""
        try:
            session = await self._require().resume(session_id, profile=profile)
        except Exception as exc:
            raise portable(exc) from None
        self._sessions[session.id] = session
        return session.metadata

    async def ask(
        self, session_id: str, prompt: str, ticket: int | None
    ) -> tuple[Outcome, int, SessionMetadata]:
        """Run one turn; its outcome, the pump count before it (Rule 2), the metadata after.

        With a ``ticket``, the answer's text streams through ``pump``.
        Cancelling the call cancels the turn.
        """
        session = self._sessions[session_id]

        async def stream(piece: str) -> None:
            self._put(("text", (ticket, piece)))

        try:
            reply = await session.ask(prompt, on_text=stream if ticket is not None else None)
        except TurnFailed as exc:
            cause = exc.__cause__
            packed = pack(cause, f"session host {self._index}") if cause is not None else None
            outcome = Outcome("failed", reason=exc.reason, cause=packed)
        except TurnCancelled:
            outcome = Outcome("cancelled")
        except Exception as exc:
            raise portable(exc) from None
        else:
            outcome = Outcome("answered", text=reply.text, turn=reply.turn, cut_off=reply.cut_off)
        return outcome, self._pumped, session.metadata

    async def set_attributes(
        self, session_id: str, values: dict[str, str | None]
    ) -> SessionMetadata:
        """Set the session's attributes (see ``Session.set_attributes``); its metadata."""
        try:
            return await self._sessions[session_id].set_attributes(values)
        except Exception as exc:
            raise portable(exc) from None

    async def cancel(self, session_id: str) -> None:
        """Cancel the session's running turn, if any."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.cancel()

    async def close(
        self, session_id: str, status: EndStatus, error: str | None, keep_previous: bool = False
    ) -> None:
        """End the session; returns once its end is written (see ``Session.close``).

        Raises ``PersistenceError`` if the persistence service restarted since the
        session was opened and its end could not be written there (the forwarder's
        Rule 4)."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        await session.close(status=status, error=error, keep_previous=keep_previous)
        if self._forwarder is not None and session_id in self._forwarder.unended:
            self._forwarder.unended.discard(session_id)
            raise PersistenceError(
                f"the persistence service restarted since session {session_id} was opened, "
                "and its files changed since: its end could not be written; what was stored "
                "is intact: resume it to go on"
            )

    async def spread(self, peers: list[tuple[Any, str]], lost: Sequence[int] = ()) -> None:
        """Place this host's delegated children on ``peers`` (every host's actor and writer
        id, by index) in turn, but on none of the ``lost`` (dead) ones."""
        self._spreader.spread(peers)
        for index in lost:
            self._spreader.lose(index)

    async def lose(self, index: int) -> None:
        """The host at ``index`` died: place no more children there."""
        self._spreader.lose(index)

    async def run_child(self, run: ChildRun, ticket: str) -> ChildOutcome:
        """Run a child that a session on another host delegated; its outcome, once its
        final records are durable. ``cancel_child(ticket)`` cancels it."""
        scope = anyio.CancelScope()
        if ticket in self._cancelled_early:
            self._cancelled_early.discard(ticket)
            scope.cancel()
        self._placed[ticket] = scope
        self._children_run += 1
        try:
            return await run_child(self._require(), run, scope=scope)
        except Exception as exc:
            raise portable(exc) from None
        finally:
            del self._placed[ticket]

    async def cancel_child(self, ticket: str) -> None:
        """Cancel the child placed here under ``ticket`` (it may not have arrived yet)."""
        scope = self._placed.get(ticket)
        if scope is None:
            self._cancelled_early.add(ticket)  # calls of one caller may start out of order
        else:
            scope.cancel()

    async def children_run(self) -> int:
        """Delegated children run here since the start: its own sessions' and other hosts'."""
        return self._spreader.kept + self._children_run

    async def watch(self) -> None:
        """From now on, committed events go to the driver too (it has subscribers)."""
        self._watching = True

    async def pump(self) -> tuple[int, list[tuple[str, Any]]]:
        """What the driver has not seen yet (waits for something, at most ``PUMP_WAIT``)."""
        if not self._outbox:
            self._news.clear()
            with anyio.move_on_after(PUMP_WAIT):
                await self._news.wait()
        entries, self._outbox = self._outbox, []
        return self._pumped, entries

    async def shutdown(self) -> None:
        """End every session (``completed``), then the runtime; its records are written."""
        self._stop.set()
        await asyncio.wait([self._main])

    def _require(self) -> LocalRuntime:
        if self._runtime is None:
            raise RuntimeError("the session host has stopped")
        return self._runtime
