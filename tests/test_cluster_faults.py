"""Faults on a Ray cluster: a host, the persistence actor or the driver killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import amplifier

from .cluster_helpers import assert_one_total_order, stored_events
from .fake_llm_server import FakeLLMServer, Stall, Text, ToolUse

# One test worker runs every cluster test: one local cluster at a time on the machine.
pytestmark = pytest.mark.xdist_group("ray_cluster")

DRIVER = """
import sys, anyio, amplifier
async def main():
    async with amplifier.open_runtime(cluster=sys.argv[1], hosts=2) as rt:
        ids = []
        for _ in range(2):
            session = await rt.open_session()
            await session.ask("remember this")
            ids.append(session.id)
        print(" ".join(ids), flush=True)
        await anyio.sleep(600)
anyio.run(main)
"""


def _slow_profile(home: Path, server: FakeLLMServer) -> None:
    folder = home / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    url = server.openai_base_url
    (folder / "slow.yaml").write_text(
        f"provider: {{kind: openai, base_url: '{url}', model: m, max_retries: 0}}\n"
    )


async def test_cluster_host_killed_mid_turn_fails_the_turn_and_resumes_elsewhere(
    ray_cluster: str, home: Path, project: Path, server: FakeLLMServer
) -> None:
    """A host dying mid-turn fails that turn naming the session; it resumes on another host."""
    _slow_profile(home, server)
    server.plan(Stall(30), Text(("answered after the resume",)))
    failures: list[amplifier.TurnFailed] = []
    async with amplifier.open_runtime(
        home=home, cwd=project, cluster="auto", hosts=2, profile="slow"
    ) as rt:
        session = await rt.open_session()
        killed = rt.host_of(session)

        async def ask() -> None:
            with pytest.raises(amplifier.TurnFailed) as caught:
                await session.ask("hello")
            failures.append(caught.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            with anyio.fail_after(20):
                while not server.requests:  # noqa: ASYNC110 - another thread's list
                    await anyio.sleep(0.02)  # until the turn waits for the model
            os.kill(rt.hosts[killed].pid, signal.SIGKILL)
        assert session.id in str(failures[0])
        assert "died" in str(failures[0])
        async with rt.resume(session.id) as resumed:
            assert rt.host_of(resumed) != killed
            reply = await resumed.ask("again")
        assert reply.text == "answered after the resume"
    events = [record["event"] for record in stored_events(home)[session.id]]
    # The killed turn's prompt:submit was never acknowledged: it may or may not be there.
    assert events[0] == "session:start"
    assert "session:resume" in events
    assert_one_total_order(home)


DELEGATE = ToolUse(name="delegate", arguments={"agent": "explorer", "instruction": "look"})


async def _until_the_child_waits(server: FakeLLMServer) -> None:
    with anyio.fail_after(20):
        while len(server.requests) < 2:  # noqa: ASYNC110 - another thread's list
            await anyio.sleep(0.02)  # the parent's call, then the child's


async def test_cluster_spread_child_whose_host_dies_fails_only_the_delegation(
    ray_cluster: str, home: Path, project: Path, server: FakeLLMServer
) -> None:
    """A spread child's host dying mid-turn: the parent gets a failed result naming the child."""
    _slow_profile(home, server)
    server.plan(DELEGATE, Stall(30), Text(("the parent goes on",)))
    replies: list[amplifier.Reply] = []
    async with amplifier.open_runtime(
        home=home, cwd=project, cluster="auto", hosts=2, spread_children=True, profile="slow"
    ) as rt:
        session = await rt.open_session()
        assert rt.host_of(session) == 0

        async def ask() -> None:
            replies.append(await session.ask("hello"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await _until_the_child_waits(server)
            os.kill(rt.hosts[1].pid, signal.SIGKILL)
        assert replies[0].text == "the parent goes on"
    parent = stored_events(home)[session.id]
    end = next(record for record in parent if record["event"] == "delegate:end")
    child_id = end["data"]["child_id"]
    assert end["data"]["status"] == "failed"
    assert f"the host of sub-session {child_id} died" in end["data"]["error"]
    assert child_id in json.dumps(server.requests[2].body)  # the model saw the failed result
    child = stored_events(home)[child_id]
    assert [record["event"] for record in child[:2]] == ["session:start", "prompt:submit"]
    assert all(record["seq"] < end["seq"] for record in child)  # fenced before the end
    assert child[-1]["event"] == "session:end"  # ended by the fence, before the parent's end
    assert child[-1]["data"]["status"] == "failed"
    assert parent[-1]["event"] == "session:end"
    assert parent[-1]["data"]["status"] == "completed"
    assert_one_total_order(home)


@pytest.mark.parametrize("backend", ["trio"])  # a host killed costs seconds: one loop
def test_cluster_spread_child_never_started_sends_the_user_to_the_parent(
    ray_cluster: str, home: Path, project: Path, backend: str
) -> None:
    """A child whose host died before creating it: it never started; the user resumes the parent."""
    replies: list[amplifier.Reply] = []
    anyio.run(_ask_while_the_childs_host_dies_first, home, project, replies, backend=backend)
    session_id = replies[0].session_id
    parent = stored_events(home)[session_id]
    end = next(record for record in parent if record["event"] == "delegate:end")
    child_id = end["data"]["child_id"]
    assert end["data"]["status"] == "failed"
    assert f"sub-session {child_id} never started" in end["data"]["error"]
    assert f"amplifier session resume {session_id}" in end["data"]["error"]
    assert child_id not in stored_events(home)
    assert "never started" in replies[0].text  # the parent's turn went on
    assert_one_total_order(home)


async def _ask_while_the_childs_host_dies_first(
    home: Path, project: Path, replies: list[amplifier.Reply]
) -> None:
    """Ask a delegating turn whose child goes to a host that dies before it runs anything."""
    async with amplifier.open_runtime(
        home=home, cwd=project, cluster="auto", hosts=2, spread_children=True
    ) as rt:
        session = await rt.open_session()
        assert rt.host_of(session) == 0
        frozen = rt.hosts[1].pid
        os.kill(frozen, signal.SIGSTOP)  # it takes the child's call, and never runs it
        try:
            async with session.subscribe(tree=False) as feed, anyio.create_task_group() as tg:

                async def ask() -> None:
                    replies.append(await session.ask("look\n/delegate explorer: list the files"))

                tg.start_soon(ask)
                with anyio.fail_after(20):
                    async for event in feed:
                        if event.event == "delegate:start":
                            break
                await anyio.sleep(0.3)  # the call is on its way to the stopped host
                os.kill(frozen, signal.SIGKILL)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGKILL)  # never left stopped


async def test_cluster_cancelling_a_turn_cancels_its_spread_child_first(
    ray_cluster: str, home: Path, project: Path, server: FakeLLMServer
) -> None:
    """Cancelling a turn ends its child on another host, then the parent records it."""
    _slow_profile(home, server)
    server.plan(DELEGATE, Stall(30), Text(("still here",)))
    async with amplifier.open_runtime(
        home=home, cwd=project, cluster="auto", hosts=2, spread_children=True, profile="slow"
    ) as rt:
        session = await rt.open_session()

        async def ask() -> None:
            with pytest.raises(amplifier.TurnCancelled):
                await session.ask("hello")

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await _until_the_child_waits(server)
            session.cancel()
        assert await rt.children_per_host() == [0, 1]
        assert (await session.ask("again")).text == "still here"
    parent = stored_events(home)[session.id]
    end = next(record for record in parent if record["event"] == "delegate:end")
    child = stored_events(home)[end["data"]["child_id"]]
    assert end["data"]["status"] == "cancelled"
    assert child[-1]["event"] == "session:end"
    assert child[-1]["data"]["status"] == "cancelled"
    assert child[-1]["seq"] < end["seq"]


async def test_cluster_persistence_actor_killed_restarts_and_seq_goes_on(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """Killed, the persistence actor comes back: nothing half-applied, no seq reused or lower."""
    import ray

    async with amplifier.open_runtime(home=home, cwd=project, cluster="auto", hosts=2) as rt:
        before = [await rt.open_session() for _ in range(2)]
        for session in before:
            await session.ask("first")
        await rt.flush()
        highest = max(r["seq"] for records in stored_events(home).values() for r in records)
        name = next(
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["name"].startswith("amplifier-persistence-")
        )
        service = ray.get_actor(name, namespace="amplifier")
        pid, _ = await anyio.to_thread.run_sync(ray.get, service.describe.remote())
        os.kill(pid, signal.SIGKILL)
        # A session opened before the restart is told so, clearly, and no answer is faked.
        with pytest.raises(amplifier.TurnFailed, match="persistence service"):
            await before[0].ask("second")
        with anyio.fail_after(60):
            while True:
                try:
                    after = await rt.open_session()
                    break
                except amplifier.PersistenceError:
                    await anyio.sleep(0.2)  # still restarting
        await after.ask("after the restart")
        async with rt.resume(before[1].id) as resumed:
            reply = await resumed.ask("second")
        assert reply.turn == 2
    stored = stored_events(home)
    assert min(r["seq"] for r in stored[after.id]) > highest
    assert_one_total_order(home)


async def _restart_persistence(rt: amplifier.Runtime) -> None:
    """Kill the runtime's persistence service; return once Ray has it back."""
    import ray

    os.kill(rt.persistence_pid, signal.SIGKILL)  # type: ignore[attr-defined]
    names = [
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["name"].startswith("amplifier-persistence-")
    ]
    with anyio.fail_after(60):
        while True:
            try:  # only this runtime's: the others' were killed as their runtimes closed
                for name in names:
                    service = ray.get_actor(name, namespace="amplifier")
                    await anyio.to_thread.run_sync(ray.get, service.describe.remote())
                return
            except (ray.exceptions.RayActorError, ValueError):
                await anyio.sleep(0.2)  # still restarting


@pytest.mark.parametrize("backend", ["asyncio"])  # a restart costs seconds: one loop
def test_cluster_idle_session_ends_through_a_restarted_persistence_actor(
    ray_cluster: str, home: Path, project: Path, backend: str
) -> None:
    """A session idle while the persistence actor restarted still records its end on close."""

    async def main() -> amplifier.Session:
        async with amplifier.open_runtime(
            home=home, cwd=project, cluster="auto", hosts=1
        ) as rt:
            session = await rt.open_session()
            await session.ask("first")
            await _restart_persistence(rt)
            await session.close()
        return session

    session = anyio.run(main, backend=backend)
    records = stored_events(home)[session.id]
    assert records[-1]["event"] == "session:end"
    assert records[-1]["data"]["status"] == "completed"
    stored = json.loads((session.location.directory / "metadata.json").read_text())
    assert stored["status"] == "completed"
    assert_one_total_order(home)


@pytest.mark.parametrize("backend", ["trio"])  # a restart costs seconds: one loop
def test_cluster_resumed_session_whose_turn_was_not_stored_keeps_its_status(
    ray_cluster: str, home: Path, project: Path, backend: str
) -> None:
    """A resumed session's turn lost to a persistence restart leaves it with the status it had."""

    async def main() -> amplifier.Session:
        async with amplifier.open_runtime(home=home, cwd=project) as local:
            async with local.open_session() as earlier:
                await earlier.ask("first")
        async with amplifier.open_runtime(
            home=home, cwd=project, cluster="auto", hosts=1
        ) as rt:
            session = await rt.resume(earlier.id)
            await _restart_persistence(rt)
            with pytest.raises(amplifier.TurnFailed, match="persistence service") as caught:
                await session.ask("second")
            # As the command line does: a turn that could not be stored says nothing of the
            # session, which its cause tells.
            assert isinstance(caught.value.__cause__, amplifier.PersistenceRestarted)
            await session.close(status="failed", error=caught.value.reason, keep_previous=True)
        return session

    session = anyio.run(main, backend=backend)
    records = stored_events(home)[session.id]
    assert records[-1]["event"] == "session:end"
    assert records[-1]["data"]["status"] == "completed"
    stored = json.loads((session.location.directory / "metadata.json").read_text())
    assert stored["status"] == "completed"


@pytest.mark.filterwarnings("ignore::amplifier.RecoveryWarning")  # the replay says so
def test_cluster_driver_killed_leaves_its_sessions_resumable(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """A driver killed with its cluster sessions open: each resumes afterwards with its history."""
    errors = project / "driver.err"
    with errors.open("w") as stderr:
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, ray_cluster],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert driver.stdout is not None
        ids = driver.stdout.readline().split()
        assert len(ids) == 2, errors.read_text()[-3000:]
    finally:
        driver.kill()
        driver.wait()
        if driver.stdout is not None:
            driver.stdout.close()

    async def resume(session_id: str) -> amplifier.Reply:
        with anyio.fail_after(45):
            while True:  # until Ray has ended the dead driver's actors
                try:
                    async with amplifier.open_runtime(home=home, cwd=project) as rt:
                        async with rt.resume(session_id) as session:
                            return await session.ask("what did I say?")
                except (amplifier.SessionLocked, amplifier.SessionNotFound):
                    # Its persistence actor, still alive, holds the session: in use, or
                    # in its journal only until Ray ends it and the journal is replayed.
                    await anyio.sleep(0.25)

    for session_id in ids:
        reply = anyio.run(resume, session_id)
        assert reply.turn == 2  # the turn before the kill is in its history


class _RefusingPeer:
    """A host whose ``run_child`` raises before the child starts, as a Ray actor's would."""

    def __init__(self) -> None:
        import ray

        @ray.remote
        def refuse_child_here(ticket: str) -> None:
            raise ValueError(f"no room for child {ticket}")

        self._refuse = refuse_child_here

    @property
    def run_child(self) -> _RefusingPeer:
        return self

    def remote(self, run: object, ticket: str) -> object:
        return self._refuse.remote(ticket)


async def test_cluster_spread_child_that_cannot_start_keeps_its_hosts_traceback(
    ray_cluster: str,
) -> None:
    """A spread child refused by its host: the failure names it and keeps where the host raised."""
    from types import SimpleNamespace

    from amplifier.cluster._spread import ChildSpreader

    spreader = ChildSpreader(0, persistence=None)
    spreader.spread([(None, "writer-0"), (_RefusingPeer(), "writer-1")])
    run = SimpleNamespace(location=SimpleNamespace(session_id="parent_child"), create=None)
    launch = spreader.place(run)  # type: ignore[arg-type]
    assert launch is not None  # the next host, not this one
    outcome = await launch()
    assert outcome.status == "failed"
    assert outcome.error == "sub-session parent_child: no room for child 0/1"
    assert outcome.trace is not None
    assert "refuse_child_here" in outcome.trace  # the host's own frame
    assert "ValueError: no room for child 0/1" in outcome.trace
