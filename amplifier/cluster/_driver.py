"""The driver's side of a cluster runtime: placement, the hosts' pumps, the public faces.

    ClusterRuntime (a Runtime)        in the caller's process, on asyncio or trio
     ├─ Store (writer "driver")       listing, deleting, flushing: through the service
     ├─ HostLink (one per host)       one SessionHost actor and one pump task each
     └─ the persistence service       one named Ray actor, on this node (the home's)

Rule 1: a new root session goes to the live host with the fewest open roots
        (a tie: the lowest index); a delegated child runs on its parent's
        host, inside its parent's task group, unless ``spread_children``
        has the hosts place children on each other in turn (``_spread``).
Rule 2: a host that dies (its pump call fails) is fenced at the persistence
        service before any of its sessions is resumed elsewhere: nothing it
        sent can land after the resume; the other hosts place no more
        children there. Its running turns fail with
        ``TurnFailed`` naming the session; every acknowledged record is on
        disk and the session resumes on another host.
Rule 3: an answer is returned only after the events pumped before it were
        delivered to this process's subscribers (the host's Rule 2).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
from ray.exceptions import RayActorError, RayTaskError

from amplifier._errors import UsageError, unwrap_single_error
from amplifier.agents import ProviderKind, load_profile
from amplifier.persistence import (
    Durability,
    EndStatus,
    SessionLocation,
    SessionMetadata,
    resolve_home_and_cwd,
)
from amplifier.runtime import (
    Reply,
    Runtime,
    RuntimeClosed,
    Session,
    SessionClosed,
    SessionOpening,
    SessionState,
    Subscription,
    TurnCancelled,
    TurnFailed,
)
from amplifier.runtime import open_runtime as open_core_runtime
from amplifier.runtime.lowlevel import EventBus

from . import _ray
from ._bridge import call
from ._exceptions import ClusterError, PersistenceUnavailable
from ._forwarder import open_forwarding_store
from ._host import HostConfig, Outcome
from ._wire import Answer, Item

SHUTDOWN_TIMEOUT = 60.0
"""Seconds the hosts get to end their sessions and write their records at exit."""


@dataclass(eq=False)
class HostLink:
    """One session host as the driver sees it."""

    index: int
    actor: Any
    writer: str
    pid: int = 0
    roots: int = 0
    """Root sessions open there (Rule 1)."""
    alive: bool = True
    delivered: int = 0
    """Pumped entries delivered here (Rule 3)."""
    progress: anyio.Event = field(default_factory=anyio.Event)
    fenced: anyio.Event = field(default_factory=anyio.Event)

    async def caught_up(self, count: int) -> None:
        """Wait until the entries pumped before ``count`` are delivered (or the host died)."""
        while self.alive and self.delivered < count:
            await self.progress.wait()


@dataclass(frozen=True, slots=True)
class HostInfo:
    """A session host: where it runs and what it holds."""

    index: int
    pid: int
    alive: bool
    roots: int


class HostPool:
    """The hosts, their pumps and the streams of text waiting for their turns' answers."""

    def __init__(self, links: list[HostLink], persistence: Any, bus: EventBus) -> None:
        self.links = links
        self._persistence = persistence
        self._bus = bus
        self._tickets = itertools.count(1)
        self._streams: dict[int, Callable[[str], Awaitable[None]]] = {}
        self._watching = False

    def pick(self) -> HostLink:
        """The live host with the fewest roots (Rule 1)."""
        live = [link for link in self.links if link.alive]
        if not live:
            raise ClusterError("every session host of this runtime has died")
        return min(live, key=lambda link: (link.roots, link.index))

    def stream(self, on_text: Callable[[str], Awaitable[None]] | None) -> int | None:
        if on_text is None:
            return None
        ticket = next(self._tickets)
        self._streams[ticket] = on_text
        return ticket

    def unstream(self, ticket: int | None) -> None:
        if ticket is not None:
            self._streams.pop(ticket, None)

    def watch(self) -> None:
        """Have the hosts send their events here (someone subscribed)."""
        if not self._watching:
            self._watching = True
            for link in self.links:
                if link.alive:
                    link.actor.watch.remote()

    async def settle(self) -> None:
        """Wait until every dead host is fenced (Rule 2)."""
        for link in self.links:
            if not link.alive:
                await link.fenced.wait()

    async def pump(self, link: HostLink) -> None:
        """Deliver what ``link``'s host sends, until it dies (then fence it) or we stop."""
        while True:
            try:
                count, entries = await call(link.actor.pump.remote())
            except RayActorError:
                break
            for kind, payload in entries:
                if kind == "events":
                    for record in payload:
                        if record["event"] == "session:start":
                            self._bus.register(record["session_id"], record["parent_id"])
                    self._bus.deliver(payload)
                else:
                    ticket, piece = payload
                    on_text = self._streams.get(ticket)
                    if on_text is not None:
                        await on_text(piece)
            link.delivered = count
            link.progress.set()
            link.progress = anyio.Event()
        link.alive = False
        link.progress.set()
        for other in self.links:
            if other.alive:
                other.actor.lose.remote(link.index)
        try:
            await call(self._persistence.fence.remote(link.writer))
        finally:
            link.fenced.set()


class ClusterSession(Session):
    """A session running on a session host; the same face as an in-process ``Session``."""

    def __init__(self, runtime: ClusterRuntime, link: HostLink, metadata: SessionMetadata) -> None:
        self._runtime = runtime
        self._link = link
        self._meta = metadata
        self._state = SessionState.IDLE
        self._closed = False

    @property
    def id(self) -> str:
        return self._meta.session_id

    @property
    def metadata(self) -> SessionMetadata:
        """A copy of the session's metadata as of its last turn."""
        return self._meta.model_copy(deep=True)

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def location(self) -> SessionLocation:
        return SessionLocation(self._runtime.home, self._meta.project, self.id)

    async def ask(
        self, prompt: str, *, on_text: Callable[[str], Awaitable[None]] | None = None
    ) -> Reply:
        """Run one turn on the session's host (see ``Session.ask``).

        Raises ``TurnFailed`` naming the session if its host dies meanwhile.
        """
        if self._closed:
            raise SessionClosed(self.id)
        link = self._link
        if not link.alive:
            raise TurnFailed(self.id, _host_died(self.id))
        pool = self._runtime._pool
        ticket = pool.stream(on_text)
        self._state = SessionState.RUNNING
        try:
            outcome, count, meta = await _remote(link.actor.ask.remote(self.id, prompt, ticket))
        except RayActorError as exc:
            raise TurnFailed(self.id, _host_died(self.id)) from exc
        finally:
            pool.unstream(ticket)
            self._state = SessionState.IDLE
        await link.caught_up(count)
        self._meta = meta
        return _reply(self.id, outcome)

    async def set_attributes(self, values: Mapping[str, str | None]) -> SessionMetadata:
        """Set the metadata's attributes on the session's host (see ``Session.set_attributes``).

        Raises ``SessionClosed`` if the session has ended or its host is gone.
        """
        if self._closed or not self._link.alive:
            raise SessionClosed(self.id)
        try:
            meta: SessionMetadata = await _remote(
                self._link.actor.set_attributes.remote(self.id, dict(values))
            )
        except RayActorError as exc:
            raise SessionClosed(self.id) from exc
        self._meta = meta
        return meta.model_copy(deep=True)

    def cancel(self) -> None:
        """Cancel the running turn, if any; the session stays open. Never blocks."""
        if self._link.alive and self._state is SessionState.RUNNING:
            self._link.actor.cancel.remote(self.id)

    def subscribe(self, *, tree: bool = True, buffer: int = 1024) -> Subscription:
        return self._runtime.subscribe(self.id, tree=tree, buffer=buffer)

    async def close(
        self,
        *,
        status: EndStatus = "completed",
        error: str | None = None,
        keep_previous: bool = False,
    ) -> None:
        """End the session and wait until its end is written (see ``Session.close``)."""
        if self._closed:
            return
        self._closed = True
        self._state = SessionState.CLOSING
        link = self._link
        try:
            if link.alive:
                await _remote(link.actor.close.remote(self.id, status, error, keep_previous))
        except RayActorError:
            pass  # its host died: the fence closed it (Rule 2)
        finally:
            link.roots -= 1
            self._state = SessionState.ENDED

    async def __aenter__(self) -> ClusterSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class()):
            if not self._closed and self._link.alive:
                self._closed = True
                self._link.roots -= 1
                self._link.actor.close.remote(self.id, "cancelled", None)
            return
        await self.close()


class ClusterRuntime(Runtime):
    """A ``Runtime`` whose sessions run on Ray session hosts; everything else is unchanged."""

    def __init__(self, inner: Runtime, pool: HostPool) -> None:
        super().__init__(inner._services, inner._tg, cwd=inner.cwd, profile=inner.profile)
        self._pool = pool

    @property
    def hosts(self) -> list[HostInfo]:
        """The session hosts: process ids, liveness and root sessions open on each."""
        return [HostInfo(k.index, k.pid, k.alive, k.roots) for k in self._pool.links]

    async def children_per_host(self) -> list[int]:
        """Delegated children each host has run so far (0 for a dead host), by host index."""
        counts = []
        for link in self._pool.links:
            try:
                counts.append(await _remote(link.actor.children_run.remote()) if link.alive else 0)
            except RayActorError:
                counts.append(0)
        return counts

    def host_of(self, session: Session) -> int:
        """The index (in ``hosts``) of the host a session of this runtime runs on."""
        if not isinstance(session, ClusterSession):
            raise UsageError("not a session of this cluster runtime")
        return session._link.index

    def open_session(
        self,
        agent: str | None = None,
        *,
        profile: str | None = None,
        attributes: Mapping[str, str] | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
    ) -> SessionOpening:
        """Start a new root session on the least loaded host (see ``Runtime.open_session``)."""

        async def open_() -> Session:
            return await self._place(
                lambda link: link.actor.open.remote(agent, profile, attributes, name, list(tags))
            )

        return SessionOpening(open_)

    def resume(self, session_id: str, *, profile: str | None = None) -> SessionOpening:
        """Open a stored session on the least loaded host (see ``Runtime.resume``)."""

        async def open_() -> Session:
            location = await self.find(session_id)
            await self._pool.settle()
            return await self._place(
                lambda link: link.actor.resume.remote(location.session_id, profile)
            )

        return SessionOpening(open_)

    async def _place(self, start: Callable[[HostLink], Any]) -> Session:
        if self._closed:
            raise RuntimeClosed("-", "the runtime is closed")
        link = self._pool.pick()
        link.roots += 1
        try:
            metadata: SessionMetadata = await _remote(start(link))
        except RayActorError as exc:
            link.roots -= 1
            raise ClusterError("the session host died while opening the session") from exc
        except BaseException:
            link.roots -= 1
            raise
        return ClusterSession(self, link, metadata)

    def subscribe(
        self, session_id: str | None = None, *, tree: bool = True, buffer: int = 1024
    ) -> Subscription:
        self._pool.watch()
        return super().subscribe(session_id, tree=tree, buffer=buffer)


async def _remote(ref: Any) -> Any:
    """A host's answer; an error it raised comes out as itself, not wrapped by Ray."""
    try:
        return await call(ref)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, Exception):
            raise cause from None
        raise


def _host_died(session_id: str) -> str:
    return (
        f"the host of session {session_id} died mid-turn; its stored records are intact: "
        f"resume it with: amplifier session resume {session_id}"
    )


def _reply(session_id: str, outcome: Outcome) -> Reply:
    if outcome.status == "answered":
        return Reply(session_id=session_id, text=outcome.text, turn=outcome.turn)
    if outcome.status == "failed":
        raise TurnFailed(session_id, outcome.reason)
    raise TurnCancelled(session_id)


def _runtime_id() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}"


@asynccontextmanager
async def open_cluster_runtime(
    cluster: str,
    *,
    hosts: int,
    spread_children: bool,
    profile: str | None,
    home: str | os.PathLike[str] | None,
    cwd: str | os.PathLike[str] | None,
    durability: Durability | None,
    provider: ProviderKind | None,
    model: str | None,
) -> AsyncIterator[Runtime]:
    """A Runtime whose sessions run on ``hosts`` session hosts of the Ray cluster ``cluster``.

    With ``spread_children``, the hosts place delegated children on each other in turn.
    """
    root, directory = resolve_home_and_cwd(home, cwd)
    kind = provider
    settings = await anyio.to_thread.run_sync(
        lambda: load_profile(profile, home=root, cwd=directory, provider=kind, model=model)
    )
    chosen: Durability = durability or settings.durability
    owned = await anyio.to_thread.run_sync(_ray.connect, cluster)
    runtime_id = _runtime_id()
    actors: list[Any] = []
    try:
        service = _ray.persistence_actor(f"amplifier-persistence-{runtime_id}", str(root), chosen)
        actors.append(service)
        _, recovered = await _remote(service.describe.remote())
        config = HostConfig(str(root), str(directory), profile, provider, model, chosen)
        links = []
        for index in range(hosts):
            writer = f"{runtime_id}/host-{index}"
            actor = _ray.host_actor(index, config, service, writer, recovered)
            actors.append(actor)
            links.append(HostLink(index, actor, writer))
        for link in links:
            link.pid, _ = await _remote(link.actor.describe.remote())
        if spread_children and hosts > 1:
            every = [(link.actor, link.writer) for link in links]
            for link in links:
                await _remote(link.actor.spread.remote(every))

        async def commit(number: int, items: list[Item]) -> list[Answer]:
            try:
                answers: list[Answer] = await call(
                    service.commit.remote(f"{runtime_id}/driver", number, items),
                    cancel_remote=False,
                )
            except RayActorError as exc:
                raise PersistenceUnavailable(
                    "the persistence service stopped while answering; try again"
                ) from exc
            return answers

        async with (
            open_forwarding_store(root, chosen, recovered, commit) as store,
            open_core_runtime(
                home=root, cwd=directory, durability=chosen, profile=settings.name, store=store
            ) as inner,
        ):
            pool = HostPool(links, service, inner._services.bus)
            with unwrap_single_error():
                async with anyio.create_task_group() as tg:
                    for link in links:
                        tg.start_soon(pool.pump, link)
                    runtime = ClusterRuntime(inner, pool)
                    try:
                        yield runtime
                    finally:
                        runtime._closed = True
                        with anyio.move_on_after(SHUTDOWN_TIMEOUT, shield=True):
                            async with anyio.create_task_group() as ending:
                                for link in links:
                                    if link.alive:
                                        ending.start_soon(_end_host, link)
                        tg.cancel_scope.cancel()
        with anyio.move_on_after(SHUTDOWN_TIMEOUT, shield=True):
            await _remote(service.shutdown.remote())
    finally:
        with anyio.CancelScope(shield=True):
            for actor in actors:
                _ray.kill(actor)
            if owned:
                await anyio.to_thread.run_sync(_ray.disconnect)


async def _end_host(link: HostLink) -> None:
    with contextlib.suppress(RayActorError):  # died meanwhile: fenced by its pump
        await _remote(link.actor.shutdown.remote())
