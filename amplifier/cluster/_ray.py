"""Everything that touches Ray itself: connecting, the actors' options, awaiting a call.

This module imports ``ray``; nothing imports it unless a cluster is asked
for (``amplifier.open_runtime(cluster=...)``).

Rule: Ray's own messages (a worker died, a task retried) go to the
        ``amplifier.cluster`` logger, never to the driver's stdout: the
        command line prints the same output with or without a cluster.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
import ray._private.worker as _ray_worker
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ._exceptions import ClusterError
from ._host import SessionHost
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


def connect(address: str) -> bool:
    """Join the cluster at ``address`` ("auto": the running one, or a new local one).

    Blocking. True if this call connected (and the caller disconnects at
    the end); False if this process was connected already.
    """
    _ray_worker.print_to_stdstream = _to_log  # Rule 2 (looked up at each message)
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        ray.init(
            address=None if address == "auto" else address,
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=OBJECT_STORE_BYTES if address == "auto" else None,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"could not reach the Ray cluster at {address!r}: {exc}") from exc
    return True


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


def host_actor(index: int, *args: Any) -> Any:
    """A session host, on the nodes in turn; never restarted (it would come back empty)."""
    every: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    nodes = sorted(n["NodeID"] for n in every if n.get("Alive"))
    if not nodes:
        raise ClusterError("the Ray cluster has no live node")
    strategy = NodeAffinitySchedulingStrategy(node_id=nodes[index % len(nodes)], soft=True)
    cls = ray.remote(SessionHost)
    return cls.options(
        max_restarts=0,
        max_concurrency=MAX_CONCURRENCY,
        num_cpus=0,
        scheduling_strategy=strategy,
    ).remote(index, *args)


def kill(actor: Any) -> None:
    """End an actor now (it is not restarted)."""
    ray.kill(actor, no_restart=True)
