"""The driver's session hosts: where they start, their pumps, and a dead one replaced.

Rule 1: a new root session goes to the live host with the fewest open roots
        (a tie: the lowest index); a delegated child runs on its parent's
        host, inside its parent's task group, unless ``spread_children``
        has the hosts place children on each other in turn (``_spread``).
Rule 2: a host that dies (its pump call fails) is fenced at the persistence
        service before any of its sessions is resumed elsewhere: nothing it
        sent can land after the resume; the other hosts place no more
        children there.
Rule 3: then a replacement starts, on another node where there is one
        (``_ray``'s Rule 4 otherwise), with the next index and a writer id
        of its own; new sessions go to it as to any host. A dead host is
        ``settled`` once fenced and replaced (or its replacement failed,
        which is logged); placing a session waits for that when no host is
        left alive, resuming one waits only for the fence (Rule 2).
Rule 4: an answer is returned only after the events pumped before it were
        delivered to this process's subscribers (the host's Rule 2).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from ray.exceptions import RayActorError, RayError

from amplifier.runtime.lowlevel import EventBus

from . import _ray
from ._bridge import call, unwrapped
from ._exceptions import ClusterError
from ._host import HostConfig

log = logging.getLogger("amplifier.cluster")


@dataclass(eq=False)
class HostLink:
    """One session host as the driver sees it."""

    index: int
    actor: Any
    writer: str
    node: str
    pid: int = 0
    roots: int = 0
    """Root sessions open there (Rule 1)."""
    alive: bool = True
    delivered: int = 0
    """Pumped entries delivered here (Rule 4)."""
    progress: anyio.Event = field(default_factory=anyio.Event)
    fenced: anyio.Event = field(default_factory=anyio.Event)
    """Set once it died and was fenced (Rule 2)."""
    settled: anyio.Event = field(default_factory=anyio.Event)
    """Set once it died, was fenced, and a replacement was tried (Rule 3)."""

    async def caught_up(self, count: int) -> None:
        """Wait until the entries pumped before ``count`` are delivered (or the host died)."""
        while self.alive and self.delivered < count:
            await self.progress.wait()


@dataclass(frozen=True, slots=True)
class HostPlan:
    """What every host of a runtime is started with."""

    runtime_id: str
    config: HostConfig
    persistence: Any
    recovered: Any
    """The service's ``RecoveryReport``, or the Ray call that returns it: a host's process
    then starts while the service is still starting, and Ray hands the host the report
    once it is there."""
    spread: bool
    timeout: float
    """Seconds a host may take to start (``cluster_timeout``)."""


class HostPool:
    """The hosts, their pumps and the streams of text waiting for their turns' answers."""

    def __init__(self, plan: HostPlan) -> None:
        self.links: list[HostLink] = []
        self.actors: list[Any] = []
        """Every host actor started, up or not (killed at the end)."""
        self.closing = False
        """Set at shutdown: a host dying then is not replaced."""
        self._plan = plan
        self._bus: EventBus | None = None
        self._tg: TaskGroup | None = None
        self._tickets = itertools.count(1)
        self._streams: dict[int, Callable[[str], Awaitable[None]]] = {}
        self._watching = False

    # -- starting hosts ------------------------------------------------------------

    async def start(self, count: int) -> None:
        """Start ``count`` hosts, spread over the nodes (``_ray``'s Rule 4). Raises
        ``ClusterError`` if they are not up within the plan's timeout."""
        try:
            with anyio.fail_after(self._plan.timeout):
                nodes = await anyio.to_thread.run_sync(_ray.host_nodes)
                placed: list[str] = []
                for _ in range(count):
                    placed.append(_ray.pick_node(nodes, placed, ()))
                starting = [self._launch(index, node) for index, node in enumerate(placed)]
                for index, (node, actor) in enumerate(starting):
                    link = await self._up(index, node, actor)
                    if link is None:  # its node went away meanwhile: another one
                        link = await self._start_one(index, avoid={node})
                    self.links.append(link)
        except TimeoutError:
            raise ClusterError(
                f"the session hosts did not start within {self._plan.timeout:g} s"
            ) from None
        if self._plan.spread:
            await self._share_peers()

    def _launch(self, index: int, node: str) -> tuple[str, Any]:
        plan = self._plan
        writer = f"{plan.runtime_id}/host-{index}"
        actor = _ray.host_actor(node, index, plan.config, plan.persistence, writer, plan.recovered)
        self.actors.append(actor)
        return node, actor

    async def _up(self, index: int, node: str, actor: Any) -> HostLink | None:
        """The started host's link, or None (killed) if it could not start on ``node``."""
        try:
            pid, writer = await unwrapped(actor.describe.remote())
        except RayError as exc:  # its node died or cannot take it (strict affinity)
            log.warning("session host %d could not start on node %s: %s", index, node, exc)
            _ray.kill(actor)
            return None
        return HostLink(index, actor, writer, node, pid=pid)

    async def _start_one(self, index: int, *, avoid: set[str]) -> HostLink:
        """One host, on the least used node not in ``avoid`` (if there is another one);
        each node is tried once."""
        tried: set[str] = set()
        while True:
            nodes = await anyio.to_thread.run_sync(_ray.host_nodes)
            untried = [node for node in nodes if node not in tried]
            if not untried:
                raise ClusterError("no node of the Ray cluster could take a session host")
            live = [link.node for link in self.links if link.alive]
            node = _ray.pick_node(untried, live, avoid)
            tried.add(node)
            link = await self._up(index, *self._launch(index, node))
            if link is not None:
                return link

    async def _share_peers(self) -> None:
        """Tell every live host who its peers are, and which are dead (``spread_children``)."""
        peers = [(link.actor, link.writer) for link in self.links]
        lost = [link.index for link in self.links if not link.alive]
        for link in self.links:
            if link.alive:
                with contextlib.suppress(RayActorError):  # died meanwhile: its pump sees to it
                    await unwrapped(link.actor.spread.remote(peers, lost))

    # -- placing sessions ------------------------------------------------------------

    async def pick(self) -> HostLink:
        """The live host with the fewest roots (Rule 1); with none alive, once the dead
        ones are settled (their replacements up)."""
        live = [link for link in self.links if link.alive]
        if not live:
            await self.settle()
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

    async def fenced(self) -> None:
        """Wait until every dead host is fenced (Rule 2)."""
        for link in list(self.links):
            if not link.alive:
                await link.fenced.wait()

    async def settle(self) -> None:
        """Wait until every dead host is fenced and replaced (Rules 2 and 3)."""
        for link in list(self.links):
            if not link.alive:
                await link.settled.wait()

    # -- pumps -------------------------------------------------------------------------

    def run(self, tg: TaskGroup, bus: EventBus) -> None:
        """Pump every host in ``tg`` into ``bus`` (replacements too, as they start)."""
        self._tg, self._bus = tg, bus
        for link in self.links:
            tg.start_soon(self.pump, link)

    async def pump(self, link: HostLink) -> None:
        """Deliver what ``link``'s host sends, until it dies (then fence and replace it)."""
        bus = self._bus
        assert bus is not None, "run() first"
        while True:
            try:
                count, entries = await call(link.actor.pump.remote())
            except RayActorError:
                break
            for kind, payload in entries:
                if kind == "events":
                    for record in payload:
                        if record["event"] == "session:start":
                            bus.register(record["session_id"], record["parent_id"])
                    bus.deliver(payload)
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
        try:
            try:
                for other in self.links:
                    if other.alive:
                        other.actor.lose.remote(link.index)
                await call(self._plan.persistence.fence.remote(link.writer))
            finally:
                link.fenced.set()
            await self._replace(link)
        finally:
            link.settled.set()

    async def _replace(self, dead: HostLink) -> None:
        """Start a host in ``dead``'s stead, on another node if there is one (Rule 3)."""
        if self.closing or self._tg is None:
            return
        index = len(self.links)
        try:
            with anyio.fail_after(self._plan.timeout):
                link = await self._start_one(index, avoid={dead.node})
        except (ClusterError, RayError, TimeoutError) as exc:
            log.warning("session host %d died and could not be replaced: %s", dead.index, exc)
            return
        if self.closing:
            _ray.kill(link.actor)
            return
        self.links.append(link)
        if self._watching:
            link.actor.watch.remote()
        if self._plan.spread:
            await self._share_peers()
        self._tg.start_soon(self.pump, link)
        log.info("session host %d died; host %d replaces it on %s", dead.index, index, link.node)
