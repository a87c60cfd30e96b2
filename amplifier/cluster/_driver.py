"""The driver's side of a cluster runtime: the public faces, and opening it.

    ClusterRuntime (a Runtime)        in the caller's process, on asyncio or trio
     ├─ Store (writer "driver")       listing, deleting, flushing: through the service
     ├─ HostPool (``_pool``)          the SessionHost actors, one pump task each
     └─ the persistence service       one named Ray actor, on this node (the home's)

Rule 1: placement, fencing and replacing dead hosts are the pool's (``_pool``).
        A turn running on a host that dies fails with ``TurnFailed`` naming
        the session; every acknowledged record is on disk and the session
        resumes on another host.
Rule 2: joining the cluster and starting the hosts are bounded by
        ``cluster_timeout`` and give up at once when cancelled (``_connect``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from ray.exceptions import RayActorError

from amplifier._errors import UsageError, unwrap_single_error
from amplifier.agents import Permissions, ProviderKind, load_profile
from amplifier.agents._trust import settled
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
    resolve_home_and_cwd,
)
from amplifier.runtime import (
    Cleanup,
    HeldSession,
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
from amplifier.runtime.lowlevel import (
    EventBus,
    LocalRuntime,
    check_end,
    check_prompt,
    open_local_runtime,
)

from . import _ray
from ._bridge import call, unwrapped
from ._connect import joined
from ._exceptions import ClusterError, PersistenceUnavailable
from ._failures import unpack
from ._forwarder import open_forwarding_store
from ._host import HostConfig, Outcome
from ._info import ClusterInfo, HostInfo
from ._pool import HostLink, HostPlan, HostPool
from ._wire import Answer, Item

SHUTDOWN_TIMEOUT = 60.0
"""Seconds the hosts get to end their sessions and write their records at exit."""


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
        check_prompt(prompt)
        if self._closed:
            raise SessionClosed(self.id)
        link = self._link
        if not link.alive:
            raise TurnFailed(self.id, _host_died(self.id))
        pool = self._runtime._pool
        ticket = pool.stream(on_text)
        self._state = SessionState.RUNNING
        try:
            outcome, count, meta = await unwrapped(link.actor.ask.remote(self.id, prompt, ticket))
            # What the host sent before its answer (its events, the turn's streamed
            # text) is delivered first, while the ticket still names ``on_text``.
            await link.caught_up(count)
        except RayActorError as exc:
            # Dead for everyone from now on, not only once its pump notices: a resume
            # that follows this failure waits for the host's fence (``_pool`` Rule 2).
            link.alive = False
            raise TurnFailed(self.id, _host_died(self.id)) from exc
        finally:
            pool.unstream(ticket)
            self._state = SessionState.IDLE
        self._meta = meta
        return _reply(self.id, outcome)

    async def set_attributes(self, values: Mapping[str, str | None]) -> SessionMetadata:
        """Set the metadata's attributes on the session's host (see ``Session.set_attributes``).

        Raises ``SessionClosed`` if the session has ended or its host is gone.
        """
        if self._closed or not self._link.alive:
            raise SessionClosed(self.id)
        try:
            meta: SessionMetadata = await unwrapped(
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
        check_end(status, error)  # before anything: a close is not taken back
        if self._closed:
            return
        self._closed = True
        self._state = SessionState.CLOSING
        link = self._link
        try:
            if link.alive:
                await unwrapped(link.actor.close.remote(self.id, status, error, keep_previous))
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
    """A ``Runtime`` whose sessions run on Ray session hosts.

    Opening and resuming place a session on a host; everything that reads
    or changes the stored sessions is the in-process runtime's, through the
    same persistence service (``local``).
    """

    def __init__(
        self, local: LocalRuntime, pool: HostPool, cluster: ClusterInfo, persistence_pid: int
    ) -> None:
        self._local = local
        self._pool = pool
        self._cluster = cluster
        self._persistence_pid = persistence_pid
        self._closed = False

    # -- what the stored sessions are: the in-process runtime's ----------------------

    @property
    def cwd(self) -> Path:
        return self._local.cwd

    @property
    def project(self) -> str:
        return self._local.project

    @property
    def profile(self) -> str | None:
        return self._local.profile

    @property
    def home(self) -> Path:
        return self._local.home

    @property
    def durability(self) -> Durability:
        return self._local.durability

    @property
    def recovered(self) -> RecoveryReport:
        return self._local.recovered

    async def find(self, id_or_prefix: str) -> SessionLocation:
        return await self._local.find(id_or_prefix)

    async def flush(self) -> None:
        await self._local.flush()

    async def sessions(
        self,
        *,
        all_projects: bool = False,
        limit: int | None = None,
        roots_only: bool = False,
        sort: SessionSort = "created",
        tag: str | None = None,
    ) -> list[SessionSummary]:
        return await self._local.sessions(
            all_projects=all_projects, limit=limit, roots_only=roots_only, sort=sort, tag=tag
        )

    async def search(
        self, text: str, *, all_projects: bool = False, limit: int = 20
    ) -> list[SearchHit]:
        return await self._local.search(text, all_projects=all_projects, limit=limit)

    async def rename(self, session_id: str, name: str | None) -> SessionMetadata:
        return await self._local.rename(session_id, name)

    async def tag(
        self, session_id: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> SessionMetadata:
        return await self._local.tag(session_id, add=add, remove=remove)

    def hold(self, session_id: str) -> AbstractAsyncContextManager[HeldSession]:
        return self._local.hold(session_id)

    async def reindex(self) -> int:
        return await self._local.reindex()

    def events(self, session_id: str, *, tree: bool = False) -> AsyncIterator[EventRecord]:
        return self._local.events(session_id, tree=tree)

    async def latest(self, *, cwd: str | os.PathLike[str] | None = None) -> SessionSummary | None:
        return await self._local.latest(cwd=cwd)

    async def transcript(self, session_id: str) -> list[TranscriptRecord]:
        return await self._local.transcript(session_id)

    async def tree(self, session_id: str) -> list[SessionSummary]:
        return await self._local.tree(session_id)

    async def delete(self, session_id: str) -> list[str]:
        return await self._local.delete(session_id)

    async def cleanup(
        self, *, days: float, dry_run: bool = False, all_projects: bool = False
    ) -> Cleanup:
        return await self._local.cleanup(days=days, dry_run=dry_run, all_projects=all_projects)

    # -- what runs on the hosts -------------------------------------------------------

    @property
    def cluster(self) -> ClusterInfo:
        """The Ray cluster this runtime runs on, and how it was found."""
        return self._cluster

    @property
    def hosts(self) -> list[HostInfo]:
        """The session hosts, by index: a dead one stays listed (``alive`` false) beside its
        replacement. Process id, node, liveness and root sessions open on each."""
        return [HostInfo(k.index, k.pid, k.node, k.alive, k.roots) for k in self._pool.links]

    @property
    def persistence_pid(self) -> int:
        """The process id of the persistence service (as first started; Ray restarts it)."""
        return self._persistence_pid

    async def children_per_host(self) -> list[int]:
        """Delegated children each host has run so far (0 for a dead host), by host index."""
        counts = []
        for link in self._pool.links:
            try:
                alive = link.alive
                counts.append(await unwrapped(link.actor.children_run.remote()) if alive else 0)
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
            await self._pool.fenced()  # nothing of a dead host lands after the resume
            return await self._place(
                lambda link: link.actor.resume.remote(location.session_id, profile)
            )

        return SessionOpening(open_)

    async def _place(self, start: Callable[[HostLink], Any]) -> Session:
        if self._closed:
            raise RuntimeClosed("-", "the runtime is closed")
        link = await self._pool.pick()
        link.roots += 1
        try:
            metadata: SessionMetadata = await unwrapped(start(link))
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
        return self._local.subscribe(session_id, tree=tree, buffer=buffer)


def _host_died(session_id: str) -> str:
    return (
        f"the host of session {session_id} died mid-turn; its stored records are intact: "
        f"resume it with: amplifier session resume {session_id}"
    )


def _reply(session_id: str, outcome: Outcome) -> Reply:
    if outcome.status == "answered":
        return Reply(
            session_id=session_id, text=outcome.text, turn=outcome.turn, cut_off=outcome.cut_off
        )
    if outcome.status == "failed":
        cause = unpack(outcome.cause) if outcome.cause is not None else None
        raise TurnFailed(session_id, outcome.reason) from cause
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
    timeout: float,  # noqa: ASYNC109 - bounds the start, not one call
    profile: str | None,
    home: str | os.PathLike[str] | None,
    cwd: str | os.PathLike[str] | None,
    durability: Durability | None,
    provider: ProviderKind | None,
    model: str | None,
    permissions: Permissions | None = None,
    assume_yes: bool = False,
    trust_project: bool | None = None,
) -> AsyncIterator[ClusterRuntime]:
    """A Runtime whose sessions run on ``hosts`` session hosts of the Ray cluster ``cluster``.

    With ``spread_children``, the hosts place delegated children on each other in
    turn. Joining the cluster and starting the hosts each take at most ``timeout``
    seconds (``ClusterError`` past that).
    """
    root, directory = resolve_home_and_cwd(home, cwd)
    kind = provider
    trust = await settled(directory, home=root, trust=trust_project)
    settings = await anyio.to_thread.run_sync(
        lambda: load_profile(
            profile, home=root, cwd=directory, provider=kind, model=model, trust=trust
        )
    )
    chosen: Durability = durability or settings.durability
    async with joined(cluster, timeout) as info:
        runtime_id = _runtime_id()
        service = _ray.persistence_actor(f"amplifier-persistence-{runtime_id}", str(root), chosen)
        config = HostConfig(
            str(root),
            str(directory),
            profile,
            provider,
            model,
            chosen,
            permissions,
            assume_yes,
            trust_project,
        )
        # The hosts' processes start beside the service's, not after it (``HostPlan``).
        plan = HostPlan(
            runtime_id, config, service, service.recovered.remote(), spread_children, timeout
        )
        pool = HostPool(plan)
        try:
            with unwrap_single_error():
                async with anyio.create_task_group() as starting:
                    starting.start_soon(pool.start, hosts)
                    try:
                        with anyio.fail_after(timeout):
                            pid, recovered = await unwrapped(service.describe.remote())
                    except TimeoutError:
                        raise ClusterError(
                            f"the persistence service did not start within {timeout:g} s"
                        ) from None

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

            bus = EventBus()
            async with (
                open_forwarding_store(root, chosen, recovered, commit) as (store, _),
                open_local_runtime(
                    home=root,
                    cwd=directory,
                    durability=chosen,
                    profile=settings.name,
                    store=store,
                    bus=bus,
                ) as local,
            ):
                with unwrap_single_error():
                    async with anyio.create_task_group() as tg:
                        pool.run(tg, bus)
                        runtime = ClusterRuntime(local, pool, info, pid)
                        try:
                            yield runtime
                        finally:
                            runtime._closed = pool.closing = True
                            with anyio.move_on_after(SHUTDOWN_TIMEOUT, shield=True):
                                async with anyio.create_task_group() as ending:
                                    for link in pool.links:
                                        if link.alive:
                                            ending.start_soon(_end_host, link)
                            tg.cancel_scope.cancel()
            with anyio.move_on_after(SHUTDOWN_TIMEOUT, shield=True):
                await unwrapped(service.shutdown.remote())
        finally:
            for actor in pool.actors:
                _ray.kill(actor)
            _ray.kill(service)


async def _end_host(link: HostLink) -> None:
    with contextlib.suppress(RayActorError):  # died meanwhile: fenced by its pump
        await unwrapped(link.actor.shutdown.remote())
