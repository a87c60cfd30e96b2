"""Sessions on a Ray cluster: the same answers, files, order and events as in-process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import amplifier

from .cluster_helpers import assert_one_total_order, stored_events

# One test worker runs every cluster test: one local cluster at a time on the machine.
pytestmark = pytest.mark.xdist_group("ray_cluster")

DELEGATING = "look at this\n/delegate explorer: list the files\n/delegate reviewer: check them"
SPREAD = "look at this\n/delegate explorer: list the files\n/delegate reviewer: /fail no access"

AMPLIFIER = Path(sys.executable).parent / "amplifier"

NO_RAY = """
import sys
attempts = []
class NoRay:  # records any attempt to import ray, even one that is caught
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            attempts.append(name)
        return None
sys.meta_path.insert(0, NoRay())
sys.argv = ["amplifier", "run", "hello"]
import amplifier.cli
try:
    amplifier.cli.main()
except SystemExit as exit:
    assert not exit.code, exit.code
assert not attempts and "ray" not in sys.modules, attempts
"""


def _without_ids(text: str) -> str:
    return re.sub(r"\d{8}T\d{6}Z|[0-9a-f]{16}", "ID", text)


Events = list[tuple[str, ...]]
"""Each session's event names, one tuple a session, sorted."""


def _by_session(events: list[amplifier.EventRecord]) -> Events:
    """Each session's event names, in order (sibling children interleave by chance)."""
    names: dict[str, list[str]] = {}
    for event in events:
        names.setdefault(event.session_id, []).append(event.event)
    return sorted(tuple(each) for each in names.values())


def test_run_without_cluster_never_imports_ray(home: Path, project: Path) -> None:
    """A plain ``amplifier run`` never loads Ray, so it starts as fast as without the extra."""
    done = subprocess.run(
        [sys.executable, "-c", NO_RAY], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Session:" in done.stderr


async def _answered_in_process(home: Path, project: Path, prompt: str) -> tuple[str, str, Events]:
    """A new in-process session asked ``prompt``: its id, its answer, its tree's events."""
    async with amplifier.open_runtime(home=home, cwd=project) as rt:
        async with rt.open_session() as local:
            reply = await local.ask(prompt)
        return local.id, reply.text, await _tree_events(rt, local)


async def _tree_events(rt: amplifier.Runtime, session: amplifier.Session) -> Events:
    return _by_session([e async for e in rt.events(session.id, tree=True)])


async def test_cluster_session_answers_like_in_process(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """A delegating turn on the cluster answers and records exactly what it does in-process."""
    local_id, expected, local_events = await _answered_in_process(home, project, DELEGATING)
    async with amplifier.open_runtime(home=home, cwd=project, cluster="auto", hosts=2) as rt:
        async with rt.open_session() as remote:
            reply = await remote.ask(DELEGATING)
            # An end no metadata can hold is refused before the close, on a host as here.
            with pytest.raises(amplifier.UsageError, match="'bogus' is not one of"):
                await remote.close(status="bogus")  # type: ignore[arg-type]
        remote_events = await _tree_events(rt, remote)
        listed = {row.session_id for row in await rt.sessions()}
    assert _without_ids(reply.text) == _without_ids(expected)
    assert remote_events == local_events
    assert {local_id, remote.id} <= listed


async def test_cluster_seq_is_one_total_order_across_hosts(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """Sessions on two hosts share one strictly increasing seq; children follow their parents."""
    async with amplifier.open_runtime(home=home, cwd=project, cluster="auto", hosts=2) as rt:
        sessions = [await rt.open_session() for _ in range(4)]
        assert sorted(rt.host_of(s) for s in sessions) == [0, 0, 1, 1]

        async def turns(session: amplifier.Session) -> None:
            for _ in range(2):
                await session.ask(DELEGATING)

        async with anyio.create_task_group() as tg:
            for session in sessions:
                tg.start_soon(turns, session)
    assert_one_total_order(home)
    assert len(stored_events(home)) == 4 * 5  # each root made 4 children


async def test_cluster_spread_children_answer_like_in_process(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """Children spread to other hosts give the parent the same results and records as in-process."""
    _, expected, local_events = await _answered_in_process(home, project, SPREAD)
    async with amplifier.open_runtime(
        home=home, cwd=project, cluster="auto", hosts=2, spread_children=True
    ) as rt:
        async with rt.open_session() as remote:
            assert rt.host_of(remote) == 0
            reply = await remote.ask(SPREAD)
        remote_events = await _tree_events(rt, remote)
        assert await rt.children_per_host() == [1, 1]  # one child stayed, one went to host 1
    assert _without_ids(reply.text) == _without_ids(expected)
    assert "failed: offline: no access" in reply.text
    assert remote_events == local_events


async def test_cluster_spread_children_keep_the_causal_order_on_disk(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """Parents on one host, children on another: one seq order, and parents refer first."""
    async with amplifier.open_runtime(
        home=home, cwd=project, cluster="auto", hosts=2, spread_children=True
    ) as rt:
        sessions = [await rt.open_session() for _ in range(4)]
        async with anyio.create_task_group() as tg:
            for session in sessions:
                tg.start_soon(session.ask, DELEGATING)
        # Each host kept one child of each of its two roots and took one from the other's.
        assert await rt.children_per_host() == [4, 4]
    assert_one_total_order(home)
    events = stored_events(home)
    for session in sessions:
        records = events[session.id]
        started = [r["data"]["child_id"] for r in records if r["event"] == "delegate:start"]
        parent = json.loads((session.location.directory / "metadata.json").read_text())
        assert sorted(parent["children"]) == sorted(started)
        for child_id in started:
            folder = session.location.directory.parent / child_id
            child = json.loads((folder / "metadata.json").read_text())
            assert (child["parent_id"], child["status"]) == (session.id, "completed")


async def test_cluster_failed_turn_keeps_its_cause_and_the_hosts_traceback(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """A turn failing on a host raises ``TurnFailed`` from the error that failed it there."""
    async with amplifier.open_runtime(home=home, cwd=project, cluster="auto", hosts=1) as rt:
        async with rt.open_session() as session:
            with pytest.raises(amplifier.TurnFailed) as caught:
                await session.ask("/fail no access")
    cause = caught.value.__cause__
    assert isinstance(cause, amplifier.ProviderError)
    assert "no access" in str(cause)
    notes = "\n".join(getattr(cause, "__notes__", []))
    assert "Raised in session host 0" in notes
    assert "_offline.py" in notes  # where the provider raised it


def test_cluster_hosts_apply_the_permission_rules(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """Rules given to a cluster runtime reach its hosts: an allowed write runs, a denied
    command does not, and a call that would ask is denied: no approval reaches a host.
    (One event loop: the rules apply on the hosts' own.)"""
    rules = amplifier.Permissions(allow=["write_file(*.txt)"], deny=["bash"])
    prompt = "\n".join(
        [
            '/tool write_file {"file_path": "ok.txt", "content": "ok"}',
            '/tool bash {"command": "touch no"}',
            '/tool write_file {"file_path": "asks.py", "content": "x"}',
        ]
    )

    async def ask() -> str:
        async with amplifier.open_runtime(
            home=home,
            cwd=project,
            cluster="auto",
            hosts=1,
            permissions=rules,
            approve=lambda request: True,
        ) as rt:
            async with rt.open_session() as session:
                return (await session.ask(prompt)).text

    reply = anyio.run(ask)
    assert (project / "ok.txt").read_text() == "ok"
    assert not (project / "no").exists()
    assert not (project / "asks.py").exists()
    assert "refuses this call" in reply
    assert "no terminal or approve callback reaches this session" in reply


async def test_cluster_new_roots_go_to_the_least_loaded_host(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """A new session goes to the host with the fewest open sessions."""
    async with amplifier.open_runtime(home=home, cwd=project, cluster="auto", hosts=2) as rt:
        first, second, third = [await rt.open_session() for _ in range(3)]
        assert [rt.host_of(s) for s in (first, second, third)] == [0, 1, 0]
        await first.close()
        await third.close()
        fourth = await rt.open_session()
        assert rt.host_of(fourth) == 0
        assert [host.roots for host in rt.hosts] == [1, 1]


async def test_cluster_streamed_text_reaches_a_slow_reader_whole(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """A caller slow to take each streamed piece still gets the whole answer, in order."""
    streamed: list[str] = []

    async def show(piece: str) -> None:
        await anyio.sleep(0.02)  # the host's answer comes back before the pieces are taken
        streamed.append(piece)

    async with amplifier.open_runtime(home=home, cwd=project, cluster="auto", hosts=1) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(DELEGATING, on_text=show)
    assert "".join(streamed) == reply.text


async def test_cluster_subscribers_see_events_and_streamed_text(
    ray_cluster: str, home: Path, project: Path
) -> None:
    """Subscribers get the turn's events (children's too) and the answer streams as it comes."""
    streamed: list[str] = []

    async def show(piece: str) -> None:
        streamed.append(piece)

    async with amplifier.open_runtime(home=home, cwd=project, cluster="auto", hosts=1) as rt:
        async with rt.open_session() as session:
            async with session.subscribe(tree=True) as feed:
                reply = await session.ask(DELEGATING, on_text=show)
                seen = []
                with anyio.fail_after(10):
                    async for event in feed:
                        seen.append(event)
                        if event.event == "prompt:complete" and event.session_id == session.id:
                            break
    assert "".join(streamed) == reply.text
    kinds = [event.event for event in seen]
    assert kinds.count("delegate:start") == 2
    assert {e.session_id for e in seen if e.event == "session:start"} >= {
        e.data["child_id"] for e in seen if e.event == "delegate:start"
    }
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)


@pytest.mark.parametrize("backend", ["asyncio"])
def test_cluster_opening_without_a_host_is_refused(backend: str, home: Path) -> None:
    """Asking for zero hosts is a usage error, before anything starts."""
    async def main() -> None:
        async with amplifier.open_runtime(home=home, cluster="auto", hosts=0):
            pass

    with pytest.raises(amplifier.UsageError, match="at least one host"):
        anyio.run(main, backend=backend)


def _amp(*args: str, cwd: Path, backend: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMPLIFIER_ASYNC_BACKEND": backend, **env_vars}
    done = subprocess.run(
        [str(AMPLIFIER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize("backend", ["trio"])  # the bridged backend; asyncio: the API tests
def test_cluster_cli_run_joins_the_running_cluster_and_prints_what_in_process_prints(
    ray_cluster: str, home: Path, project: Path, tmp_path: Path, backend: str
) -> None:
    """``amplifier run --cluster auto`` joins the cluster RAY_ADDRESS names, says so, and
    prints what a run without it prints; show finds the session."""
    local = _amp("run", DELEGATING, cwd=project, backend=backend)
    elsewhere = tmp_path / "ray-tmp"  # no `ray start` record there: RAY_ADDRESS names it
    elsewhere.mkdir()
    named = {"RAY_ADDRESS": ray_cluster, "RAY_TMPDIR": str(elsewhere)}
    remote = _amp("run", "--cluster", "auto", DELEGATING, cwd=project, backend=backend, **named)
    assert remote.returncode == local.returncode == 0, remote.stderr
    assert _without_ids(remote.stdout) == _without_ids(local.stdout)
    joined, _, rest = remote.stderr.partition("\n")
    assert joined == f"Joined the Ray cluster at {ray_cluster} (from RAY_ADDRESS)"
    assert _without_ids(rest) == _without_ids(local.stderr)  # nothing of Ray's own
    session_id = re.findall(r"Session: (\S+)", remote.stderr)[-1]
    shown = _amp("session", "show", session_id, cwd=project, backend=backend)
    assert shown.returncode == 0, shown.stderr
    assert "explorer" in shown.stdout
