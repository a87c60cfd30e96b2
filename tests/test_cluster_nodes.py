"""A Ray cluster of three nodes (a head and two workers, each its own raylet), as users run one.

Each test runs on one event-loop backend: what they check is where Ray puts
things and what survives a node, not the loop (``test_cluster.py`` runs the
same API on both), and each runtime on three nodes costs seconds. The node
a test removes comes back before the next test that uses the cluster (the
removal comes last, so CI does not pay for it).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

import amplifier
from amplifier.cluster import HostInfo

from .cluster_helpers import assert_one_total_order, stored_events
from .conftest import RAY_GROUP, RayNodes
from .fake_llm_server import FakeLLMServer, Stall, Text

pytestmark = pytest.mark.xdist_group(RAY_GROUP)

AMPLIFIER = Path(sys.executable).parent / "amplifier"


def _live_nodes() -> set[str]:
    import ray

    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def _slow_profile(home: Path, server: FakeLLMServer) -> None:
    folder = home / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    url = server.openai_base_url
    (folder / "slow.yaml").write_text(
        f"provider: {{kind: openai, base_url: '{url}', model: m, max_retries: 0}}\n"
    )


@pytest.mark.parametrize("backend", ["trio"])
def test_cluster_dead_host_is_replaced_on_another_node(
    ray_nodes: RayNodes, home: Path, project: Path, backend: str
) -> None:
    """A host that dies is replaced on a node without one, and new sessions go there."""

    async def main() -> None:
        async with amplifier.open_runtime(home=home, cwd=project, cluster="auto", hosts=2) as rt:
            hosts: list[HostInfo] = rt.hosts  # type: ignore[attr-defined]
            first, _second = [await rt.open_session() for _ in range(2)]
            dead = hosts[rt.host_of(first)]
            os.kill(dead.pid, signal.SIGKILL)
            with anyio.fail_after(60):
                while len(rt.hosts) < 3:  # type: ignore[attr-defined]  # noqa: ASYNC110 - polled
                    await anyio.sleep(0.1)
            replacement = rt.hosts[2]  # type: ignore[attr-defined]
            assert replacement.alive
            assert replacement.node not in {host.node for host in hosts}  # the free node
            third = await rt.open_session()
            assert rt.host_of(third) == 2
            assert (await third.ask("still here?")).turn == 1

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio"])
def test_cluster_worker_node_removed_mid_turn_then_resumed(
    ray_nodes: RayNodes, home: Path, project: Path, server: FakeLLMServer, backend: str
) -> None:
    """A worker node removed mid-turn fails that turn; the session resumes on another node.

    Its two hosts are on two nodes, one of them a worker (where its session runs)."""
    _slow_profile(home, server)
    server.plan(Stall(30), Text(("answered after the resume",)))
    workers = {node.node_id: node for node in ray_nodes.cluster.worker_nodes}

    async def main() -> tuple[str, str, str]:
        async with amplifier.open_runtime(
            home=home, cwd=project, cluster="auto", hosts=2, profile="slow"
        ) as rt:
            hosts: list[HostInfo] = rt.hosts  # type: ignore[attr-defined]
            assert len({host.node for host in hosts}) == 2
            sessions = [await rt.open_session() for _ in range(2)]  # one on each host
            session = next(s for s in sessions if hosts[rt.host_of(s)].node in workers)
            lost = hosts[rt.host_of(session)].node
            failures: list[amplifier.TurnFailed] = []

            async def ask() -> None:
                with pytest.raises(amplifier.TurnFailed) as caught:
                    await session.ask("hello")
                failures.append(caught.value)

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                with anyio.fail_after(20):
                    while not server.requests:  # noqa: ASYNC110 - another thread's list
                        await anyio.sleep(0.02)  # until the turn waits for the model
                await anyio.to_thread.run_sync(ray_nodes.cluster.remove_node, workers[lost])
            assert session.id in str(failures[0])
            async with rt.resume(session.id) as resumed:
                where = rt.hosts[rt.host_of(resumed)].node  # type: ignore[attr-defined]
                reply = await resumed.ask("again")
            assert reply.text == "answered after the resume"
            return session.id, where, lost

    session_id, where, lost = anyio.run(main, backend=backend)
    assert where != lost
    ends = [
        (record["event"], record["data"].get("status"))
        for record in stored_events(home)[session_id]
        if record["event"] in ("session:end", "session:resume")
    ]
    # Ended by the fence when its node went, then resumed and ended by the second run.
    assert ends == [
        ("session:end", "failed"),
        ("session:resume", None),
        ("session:end", "completed"),
    ]
    assert_one_total_order(home)


