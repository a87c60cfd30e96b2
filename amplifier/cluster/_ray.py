"""Everything that touches Ray itself: finding and joining a cluster, placing the actors.

This module imports ``ray``; nothing imports it unless a cluster is asked
for (``amplifier.open_runtime(cluster=...)``). Its functions block: the
driver calls them in worker threads.

Rule 1: ``auto`` means what it means to Ray: the cluster ``RAY_ADDRESS``
        names, else the one ``ray start`` recorded on this machine; only
        when there is none (or the recorded one does not answer) is a local
        cluster started, for this runtime alone.
Rule 2: an address is probed before Ray is asked to join it (``_connect``):
        Ray itself retries an address that does not answer for many
        minutes, printing its own warnings meanwhile.
Rule 3: Ray's own messages (a worker died, a task retried) go to the
        ``amplifier.cluster`` logger, never to the driver's stdout or
        stderr: the command line prints the same output with or without
        a cluster.
Rule 4: session hosts are spread over the live nodes that offer CPUs (all
        live nodes, if none does): each new host goes to the node with the
        fewest live hosts of this runtime, pinned there (strict affinity:
        Ray's soft affinity lets a host land elsewhere when its node is
        busy starting workers). A node that cannot take it (it died
        meanwhile) is skipped for the next one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import ray
import ray._private.worker as _ray_worker
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ._exceptions import ClusterError
from ._host import SessionHost
from ._info import Joined
from ._service import PersistenceService

NAMESPACE = "amplifier"
MAX_CONCURRENCY = 10_000
"""Calls an actor serves at once: every waiting ``ask`` is one."""
OBJECT_STORE_BYTES = 80 * 1024 * 1024
"""A local cluster's object store: batches are small (Ray's minimum is 75 MiB)."""

log = logging.getLogger("amplifier.cluster")


def _to_log(data: dict[str, Any], *args: object, **kwargs: object) -> None:
    for line in data.get("lines", ()):
        log.info("ray (pid %s): %s", data.get("pid"), line)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to go: a cluster's address, or None to start a local one (Rule 1)."""

    address: str | None
    joined: Joined


def find(address: str) -> Target:
    """The cluster ``address`` means ("auto": Rule 1). Blocking (it may read a file)."""
    if address != "auto":
        return Target(address, "address")
    named = os.environ.get("RAY_ADDRESS", "")
    if named and named not in ("auto", "local"):
        return Target(named, "RAY_ADDRESS")
    recorded: str | None = None
    if named != "local":
        from ray._private.utils import read_ray_address

        recorded = read_ray_address()
    if recorded:
        return Target(recorded, "ray start")
    return Target(None, "started")


def dialled(address: str) -> tuple[str, int]:
    """The host and port Ray will dial for ``address`` (it may turn localhost into this
    machine's address). Raises ``ClusterError`` for what is not an address."""
    from ray._private.services import canonicalize_bootstrap_address

    if "://" in address:
        raise ClusterError(
            f"{address!r} is a Ray Client address; give the cluster's GCS address (host:port)"
        )
    try:
        gcs = canonicalize_bootstrap_address(address) or address
        host, _, port = gcs.rpartition(":")
        return host.strip("[]"), int(port)
    except ValueError:
        raise ClusterError(f"{address!r} is not a Ray cluster address (host:port)") from None


class Connection:
    """One attempt to join a cluster, which its caller may give up on at any moment.

    ``run`` blocks in a worker thread; a caller that stops waiting calls
    ``abandon``: the attempt then leaves the cluster when it gets in, and
    only the caller may still have to (if it got in first).
    """

    _lock = threading.Lock()
    """One attempt at a time in this process: Ray has one connection per process."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._state = threading.Lock()
        self._abandoned = False
        self._owned = False

    def run(self) -> str:
        """Join (or start) the cluster; its address. Blocking."""
        with Connection._lock:
            if ray.is_initialized():
                return connected_address()
            owned = _init(self.target)
            with self._state:
                if not self._abandoned:
                    self._owned = owned
                    return connected_address()
            if owned:
                ray.shutdown()
            return ""

    def abandon(self) -> bool:
        """Stop waiting; True if the attempt had got in already (then leave: ``disconnect``)."""
        with self._state:
            self._abandoned = True
            owned, self._owned = self._owned, False
            return owned

    @property
    def owned(self) -> bool:
        """This attempt connected this process (it disconnects at the end)."""
        return self._owned


def _init(target: Target) -> bool:
    _ray_worker.print_to_stdstream = _to_log  # Rule 3 (looked up at each message)
    logging.getLogger("ray").setLevel(logging.ERROR)
    options: dict[str, Any] = {
        "namespace": NAMESPACE,
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if target.address is None:
        # "local": a new cluster, whatever RAY_ADDRESS or a stale record says.
        options.update(address="local", object_store_memory=OBJECT_STORE_BYTES)
    else:
        options.update(address=target.address)
    where = target.address or "a new local cluster"
    try:
        ray.init(**options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"could not join the Ray cluster at {where}: {exc}") from exc
    return True


def connected_address() -> str:
    """The address of the cluster this process is connected to."""
    return str(ray.get_runtime_context().gcs_address)


def disconnect() -> None:
    """Blocking: leave the cluster (and stop it, if this process started it)."""
    ray.shutdown()


def _here() -> NodeAffinitySchedulingStrategy:
    node = ray.get_runtime_context().get_node_id()
    return NodeAffinitySchedulingStrategy(node_id=node, soft=False)


def persistence_actor(name: str, home: str, durability: str) -> Any:
    """The persistence service, on this node (the one with the home), restarted on a crash.

    ``max_task_retries=0``: a batch in flight when it died is never sent
    again by Ray; its writer is told it may or may not be stored.
    """
    cls = ray.remote(PersistenceService)
    return cls.options(
        name=name,
        namespace=NAMESPACE,
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=MAX_CONCURRENCY,
        num_cpus=0,
        scheduling_strategy=_here(),
    ).remote(home, durability)


def host_nodes() -> list[str]:
    """The live nodes that may take session hosts (Rule 4), in a stable order. Blocking."""
    every: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    live = [node for node in every if node.get("Alive")]
    working = [node for node in live if node.get("Resources", {}).get("CPU", 0) > 0]
    return sorted(node["NodeID"] for node in working or live)


def pick_node(nodes: list[str], hosts: Collection[str], avoid: Collection[str]) -> str:
    """Of ``nodes``, the one with the fewest of ``hosts`` (their nodes); ``avoid`` ones last."""
    if not nodes:
        raise ClusterError("the Ray cluster has no live node for a session host")
    counts = dict.fromkeys(nodes, 0)
    for node in hosts:
        if node in counts:
            counts[node] += 1
    return min(nodes, key=lambda node: (node in avoid, counts[node], nodes.index(node)))


def host_actor(node: str, index: int, *args: Any) -> Any:
    """A session host pinned to ``node`` (Rule 4); never restarted (it would come back empty)."""
    cls = ray.remote(SessionHost)
    return cls.options(
        max_restarts=0,
        max_concurrency=MAX_CONCURRENCY,
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
    ).remote(index, *args)


def kill(actor: Any) -> None:
    """End an actor now (it is not restarted)."""
    ray.kill(actor, no_restart=True)
