"""One process per session: a second process is refused, a dead one never blocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from amplifier import RecoveryWarning, SessionLocked, SessionState
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import events, lines, session_dirs

HOLDER = """
import sys, anyio, amplifier

class Ticker:
    def prepare_session(self, agent, *, profile=None):
        return amplifier.SessionSetup(agent=agent or "default")

    async def on_resume(self, session):
        pass

    async def run_turn(self, turn):
        for n in range(int(sys.argv[5])):
            await turn.emit("tick", {"n": n})
            if n == 10:
                print("holding", flush=True)
        return "done"

async def main():
    home, cwd, session_id = sys.argv[1:4]
    async with amplifier.open_runtime(home=home, cwd=cwd, handler=Ticker()) as rt:
        async with rt.resume(session_id) as session:
            await session.ask("tick")
    print("released", flush=True)

anyio.run(main, backend=sys.argv[4])
"""


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


async def _stored_session(project: Path) -> str:
    async with open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("hello")
    return session.id


def _start_holder(
    home: Path, project: Path, session_id: str, backend: str, ticks: int
) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home), str(project), session_id, backend, str(ticks)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    return holder


async def test_second_process_is_refused_and_lines_never_interleave(
    home: Path, project: Path, anyio_backend: str
) -> None:
    """While one process writes a session, another gets an error naming it, and writes nothing."""
    session_id = await _stored_session(project)
    holder = _start_holder(home, project, session_id, anyio_backend, ticks=3000)
    try:
        refusals = 0
        async with open_runtime(cwd=project) as rt:
            for _ in range(5):
                with pytest.raises(SessionLocked, match=f"in use by process {holder.pid} on "):
                    await rt.resume(session_id)
                refusals += 1
        assert refusals == 5
    finally:
        out, _ = holder.communicate(timeout=30)
    assert holder.returncode == 0
    assert out.strip() == "released"
    ticks = [e["data"]["n"] for e in events(home, session_id) if e["event"] == "tick"]
    assert ticks == list(range(3000))
    for name in ("events.jsonl", "transcript.jsonl"):
        seqs = [r["seq"] for r in lines(session_dirs(home)[session_id] / name)]
        assert seqs == sorted(set(seqs))
    async with open_runtime(cwd=project) as rt, rt.resume(session_id) as again:
        assert (await again.ask("mine now")).text == "echo: mine now"


async def test_lock_of_a_killed_process_does_not_block(
    home: Path, project: Path, anyio_backend: str
) -> None:
    """A session whose owner was killed can be resumed at once; its records are all there."""
    session_id = await _stored_session(project)
    holder = _start_holder(home, project, session_id, anyio_backend, ticks=10**9)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecoveryWarning)  # a torn last tick may be set aside
        async with open_runtime(cwd=project) as rt, rt.resume(session_id) as again:
            assert (await again.ask("after the crash")).text == "echo: after the crash"
    ticks = [e["data"]["n"] for e in events(home, session_id) if e["event"] == "tick"]
    assert ticks[:11] == list(range(11))
    assert ticks == list(range(len(ticks)))
    assert not list((home / "journal").glob("*.journal")), "the dead journal was not replayed"


RACER = """
import sys, anyio, amplifier

async def main():
    home, cwd, session_id = sys.argv[1:4]
    echo = amplifier.EchoTurnHandler()
    async with amplifier.open_runtime(home=home, cwd=cwd, handler=echo) as rt:
        print("ready", flush=True)
        sys.stdin.readline()  # every racer starts at the same instant
        try:
            session = await rt.resume(session_id)
        except amplifier.SessionLocked as exc:
            print("refused", exc, flush=True)
            return
        print("won", flush=True)
        sys.stdin.readline()  # hold it until every racer has answered
        await session.close()

anyio.run(main, backend=sys.argv[4])
"""


async def test_processes_resuming_one_session_at_once_exactly_one_wins(
    home: Path, project: Path, anyio_backend: str
) -> None:
    """Several processes resuming one session at the same instant: one gets it, each other
    is refused with the winner's pid; again and again."""
    session_id = await _stored_session(project)
    for _ in range(4):
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(home), str(project), session_id, anyio_backend],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            for racer in racers:
                assert _line(racer) == "ready"
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write("go\n")
                racer.stdin.flush()
            said = {racer.pid: _line(racer) for racer in racers}
            winners = [pid for pid, line in said.items() if line == "won"]
            assert len(winners) == 1, said
            for pid, line in said.items():
                if pid != winners[0]:
                    assert line.startswith("refused"), said
                    assert f"process {winners[0]} on" in line, said
        finally:
            for racer in racers:
                racer.communicate("done\n", timeout=30)
        assert all(racer.returncode == 0 for racer in racers)
    resumes = [e for e in events(home, session_id) if e["event"] == "session:resume"]
    assert len(resumes) == 4


async def test_open_sessions_hold_no_file_descriptors(project: Path) -> None:
    """Thousands of open sessions cost a handful of descriptors in all (the runtime's lock)."""
    descriptors = Path("/proc/self/fd")
    if not descriptors.is_dir():
        pytest.skip("no /proc/self/fd to count descriptors with")
    async with open_runtime(cwd=project, durability="none") as rt:
        await (await rt.open_session()).ask("warm up")
        before = len(list(descriptors.iterdir()))
        sessions = []
        for _ in range(2000):
            sessions.append(await rt.open_session())
        await rt.flush()
        during = len(list(descriptors.iterdir()))
        assert all(s.state is SessionState.IDLE for s in sessions)
        assert (await sessions[-1].ask("still here")).text == "echo: still here"
    assert during - before <= 8, f"{during - before} more descriptors for 2,000 open sessions"
