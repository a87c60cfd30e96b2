"""The write-behind's own process: it writes while the Runtime works, dies with it, and a
writer that dies alone costs nothing acknowledged.

A Runtime that keeps writing starts a writer process for its session files
(``amplifier/persistence/_writer.py``); these tests find it as a child process of the
test (Linux's ``/proc``) and judge it by what a user sees: sessions listed, shown and
resumed, warnings, and processes left behind.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import functools
import os
import signal
import subprocess
import sys
import termios
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

import amplifier
from amplifier import StoreWarning
from amplifier.persistence import _actor, _materialise, _writer
from amplifier.persistence._ownership import JOURNAL_SUFFIX, runtime_alive

from .helpers import events, session_dirs, until

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="finds the writer through Linux's /proc"
)

INDEX = "index.sqlite3"


def writer_pids(pid: int) -> list[int]:
    """The writer processes among the children of process ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"amplifier.persistence._writer" in command:
                found.append(int(child))
    return found


def has_written(pid: int) -> bool:
    """The process holds the session index open: it has written a round of session files."""
    try:
        return any(os.readlink(fd).endswith(INDEX) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


async def task(rt: amplifier.Runtime) -> str:
    async with rt.open_session() as session:
        await session.ask("/delegate explorer: go")
        return session.id


@contextlib.asynccontextmanager
async def writing_through_its_writer(
    home: Path, project: Path, durability: str, done: list[str]
) -> AsyncIterator[tuple[amplifier.Runtime, int]]:
    """A Runtime once its writer has written a round, and the writer's pid (tasks run
    meanwhile go to ``done``); a ``StoreWarning`` inside fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        async with amplifier.open_runtime(home=home, cwd=project, durability=durability) as rt:
            yield rt, await until_the_writer_writes(rt, done)


async def until_the_writer_writes(rt: amplifier.Runtime, done: list[str]) -> int:
    """Run agent tasks until the writer process has written a round; its pid."""
    with anyio.fail_after(30):
        while True:
            done.append(await task(rt))
            pids = writer_pids(os.getpid())
            if pids and has_written(pids[0]):
                return pids[0]


def reading_a_pipe(pid: int) -> bool:
    """The process waits in the kernel to read from a pipe."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text().endswith("pipe_read")
    except OSError:
        return False


def sent_to(writer: int) -> int:
    """Bytes this process sent the writer that it has not read (what its input pipe holds)."""
    pipe = os.readlink(f"/proc/{writer}/fd/0")
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == pipe:
                unread = array.array("i", [0])
                fcntl.ioctl(int(fd.name), termios.FIONREAD, unread)
                return unread[0]
    return 0


async def until_idle(writer: int) -> None:
    """Until the writer has waited for its next round for 0.3 s: the Runtime has nothing more
    behind (its rounds follow each other 50 ms apart while there is)."""
    with anyio.fail_after(10):
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 0.3:
            if not reading_a_pipe(writer):
                idle_since = time.monotonic()
            await anyio.sleep(0.005)


async def kill_the_writer_holding_a_round(rt: amplifier.Runtime, done: list[str]) -> None:
    """SIGKILL the writer between taking a round and answering it: stopped once it has
    written and waits for its next round (tasks run meanwhile go to ``done``), sent a round
    (one task's: it fits in the pipe whole), then killed."""
    writer = await until_the_writer_writes(rt, done)
    await until_idle(writer)
    os.kill(writer, signal.SIGSTOP)
    done.append(await task(rt))
    await until(lambda: sent_to(writer) > 0)  # a round, whole: smaller than the pipe holds
    os.kill(writer, signal.SIGKILL)


@contextlib.contextmanager
def store_warnings() -> Iterator[list[str]]:
    """The messages of the ``StoreWarning``s given inside, every one, once it is left."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        yield messages
    messages += [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


async def all_there(
    home: Path,
    project: Path,
    done: list[str],
    *,
    left: Literal["nothing", "a journal", "a killed runtime"] = "nothing",
) -> None:
    """Every task's session and its child are listed with their turn and their transcript.

    ``left``: what the Runtime that wrote them left behind. A journal is replayed by the
    next Runtime, which says so; after a kill there may be nothing left to replay, and the
    task in flight has sessions too (interrupted).
    """
    async with contextlib.AsyncExitStack() as stack:
        if left == "a journal":
            stack.enter_context(pytest.warns(amplifier.RecoveryWarning, match="restored"))
        elif left == "a killed runtime":
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", "restored", amplifier.RecoveryWarning)
        reader = await stack.enter_async_context(amplifier.open_runtime(home=home, cwd=project))
        listed = {s.session_id: s for s in await reader.sessions()}
        for session_id in done:
            summary = listed[session_id]
            assert summary.metadata is not None
            assert summary.metadata.turns == 1, session_id
            transcript = await reader.transcript(session_id)
            assert [r.role for r in transcript][-1] == "assistant", session_id
        in_flight = 2 if left == "a killed runtime" else 0
        assert 2 * len(done) <= len(listed) <= 2 * len(done) + in_flight


@pytest.fixture
def starts_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer from the first round (a Runtime starts one after a few)."""
    monkeypatch.setattr(_writer, "START_AFTER", 1)


@pytest.mark.parametrize("durability", ["fsync", "none"])
async def test_the_writer_writes_what_a_runtime_stores_and_goes_with_it(
    tmp_path: Path, project: Path, durability: str, starts_at_once: None
) -> None:
    """Sessions written by the writer list and resume like any; the terminal's signals do not
    stop it (the Runtime does), and no process is left once the Runtime closes."""
    home = tmp_path / "home"
    done: list[str] = []
    async with writing_through_its_writer(home, project, durability, done) as (rt, writer):
        for sent in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(writer, sent)  # Ctrl-C, a hang-up: the whole process group gets them
        for _ in range(20):
            done.append(await task(rt))
        assert alive(writer)
        # Another Runtime sees them while this one runs: written behind, by the writer.
        await until(lambda: len(session_dirs(home)) >= 2 * len(done))
    assert not alive(writer)
    assert writer_pids(os.getpid()) == []
    await all_there(home, project, done)


@pytest.mark.parametrize("durability", ["fsync", "none"])
async def test_a_writer_killed_between_rounds_is_replaced_by_the_runtimes_thread(
    tmp_path: Path, project: Path, durability: str, starts_at_once: None
) -> None:
    """SIGKILL the writer while it waits for its next round: it had written all it was asked,
    so the Runtime's own thread writes on, without a warning, and nothing is left to replay."""
    home = tmp_path / "home"
    done: list[str] = []
    async with writing_through_its_writer(home, project, durability, done) as (rt, writer):
        await until_idle(writer)
        os.kill(writer, signal.SIGKILL)
        for _ in range(20):
            done.append(await task(rt))
    assert writer_pids(os.getpid()) == []
    await all_there(home, project, done)


async def test_a_writer_that_dies_holding_a_round_loses_nothing_acknowledged(
    tmp_path: Path, project: Path, starts_at_once: None
) -> None:
    """SIGKILL the writer while it holds a round: its files are in an unknown state, so the
    Runtime warns, writes nothing more behind, and the next Runtime writes everything from the
    journal."""
    home = tmp_path / "home"
    done: list[str] = []
    with store_warnings() as messages:
        async with amplifier.open_runtime(home=home, cwd=project, durability="fsync") as rt:
            await kill_the_writer_holding_a_round(rt, done)
            for _ in range(20):
                done.append(await task(rt))
    assert any("writing the session files died" in m for m in messages), messages
    assert any("next runtime" in m for m in messages), messages
    assert writer_pids(os.getpid()) == []
    await all_there(home, project, done, left="a journal")


async def tasks_until_one_fails(rt: amplifier.Runtime) -> None:
    """Tasks until one raises (one whose records were taken before the death answers)."""
    with anyio.fail_after(10):
        while True:
            await task(rt)
            await anyio.sleep(0.01)


async def test_without_a_journal_a_writer_dying_with_a_round_fails_the_next_turn_saying_so(
    tmp_path: Path, project: Path, starts_at_once: None
) -> None:
    """Durability none keeps no journal to write from: once the writer died holding a round, a
    turn that would be stored fails with one clear error, and closing says what was lost."""
    with store_warnings() as messages:
        async with amplifier.open_runtime(
            home=tmp_path / "home", cwd=project, durability="none"
        ) as rt:
            await kill_the_writer_holding_a_round(rt, [])
            with pytest.raises(amplifier.TurnFailed, match="writing the session files died"):
                await tasks_until_one_fails(rt)
    assert any("no journal" in m and "is lost" in m for m in messages), messages
    assert writer_pids(os.getpid()) == []


SCRIPT = """
import faulthandler, os, signal, sys, anyio, amplifier
faulthandler.register(signal.SIGUSR1)  # where it is, should it not end
# Ctrl-C as at a terminal, whatever this test was started with (a shell runs a command it
# puts in the background with SIGINT ignored, and a program inherits that).
signal.signal(signal.SIGINT, signal.default_int_handler)
from amplifier.persistence import _writer
_writer.START_AFTER = 1

async def main():
    async with amplifier.open_runtime(home=sys.argv[1], cwd=sys.argv[2], durability="fsync") as rt:
        while True:
            async with rt.open_session() as session:
                await session.ask("/delegate explorer: go")
            print(session.id, flush=True)

anyio.run(main)
"""


FORKING = """
import os, sys, time, anyio, amplifier
from pathlib import Path
from amplifier.persistence import _writer
_writer.START_AFTER = int(sys.argv[3])

def has_a_child():
    tasks = Path("/proc/self/task").iterdir()
    return any((task / "children").read_text().split() for task in tasks)

async def main():
    forked = None
    async with amplifier.open_runtime(home=sys.argv[1], cwd=sys.argv[2], durability="fsync") as rt:
        for n in range(10**9):
            async with rt.open_session() as session:
                await session.ask("/delegate explorer: go")
            print(session.id, flush=True)
            if n >= 20 and forked is None and (has_a_child() or _writer.START_AFTER > 1):
                # a program's own worker, forked as multiprocessing does on Linux
                child = os.fork()
                if child == 0:  # not holding the test's pipe either
                    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                    time.sleep(60)
                    os._exit(0)
                print("forked", child, flush=True)
                forked = child

anyio.run(main)
"""


@pytest.mark.parametrize("with_writer", [True, False], ids=["writer", "no-writer"])
def test_a_child_forked_by_the_program_keeps_neither_the_writer_nor_the_lock(
    tmp_path: Path, project: Path, with_writer: bool
) -> None:
    """A program that forks (multiprocessing's workers, on Linux) hands each child copies of
    its descriptors: the writer's pipe and the journal, whose lock is the Runtime's. Killed,
    the Runtime's process must take both with it while the child lives on: the writer exits,
    and the next Runtime replays the journal. (With the copies, the writer ran on and the
    journal stayed locked, its records out of every other Runtime's reach, for as long as
    the child lived.)"""
    home = tmp_path / "home"
    process = subprocess.Popen(
        [sys.executable, "-c", FORKING, str(home), str(project), "1" if with_writer else "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    done: list[str] = []
    forked = writer = None
    try:
        deadline = time.monotonic() + 30
        while (
            forked is None
            or len(done) < 30
            or (with_writer and (writer is None or not has_written(writer)))
        ):
            assert time.monotonic() < deadline, (
                "the Runtime never forked, or its writer never wrote"
            )
            line = process.stdout.readline().strip()
            if line.startswith("forked "):
                forked = int(line.split()[1])
            else:
                done.append(line)
            pids = writer_pids(process.pid)
            writer = pids[0] if pids else writer
        process.kill()
        process.wait()
        done += [line.strip() for line in process.stdout if line.strip()]
        process.stdout.close()
        deadline = time.monotonic() + 10
        while writer is not None and alive(writer):
            assert time.monotonic() < deadline, "the writer outlived its Runtime"
            time.sleep(0.02)
        (journal,) = (home / "journal").glob("*.journal")
        assert not runtime_alive(home, journal.name.removesuffix(JOURNAL_SUFFIX))
        assert alive(forked)
        anyio.run(functools.partial(all_there, home, project, done, left="a killed runtime"))
        assert alive(forked)
    finally:
        if process.poll() is None:
            process.kill()
        if forked is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(forked, signal.SIGKILL)


@pytest.mark.parametrize(
    ("sent", "to_the_group"),
    [
        pytest.param(signal.SIGKILL, False, id="SIGKILL"),
        pytest.param(signal.SIGKILL, True, id="SIGKILL-group"),
        pytest.param(signal.SIGTERM, True, id="SIGTERM-group"),
        pytest.param(signal.SIGINT, True, id="Ctrl-C"),
    ],
)
def test_the_writer_exits_when_its_runtime_is_killed(
    tmp_path: Path, project: Path, sent: signal.Signals, to_the_group: bool
) -> None:
    """Kill the Runtime's process mid-work (alone, or with its process group as a terminal
    does): its writer goes too, and what it acknowledged is all there for the next Runtime."""
    home = tmp_path / "home"
    with (tmp_path / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(home), str(project)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    assert process.stdout is not None
    done: list[str] = []
    deadline = time.monotonic() + 30
    writer = None
    while writer is None or not has_written(writer) or len(done) < 50:
        assert time.monotonic() < deadline, "the writer never wrote"
        done.append(process.stdout.readline().strip())
        pids = writer_pids(process.pid)
        writer = pids[0] if pids else writer
    if to_the_group:
        os.killpg(process.pid, sent)
    else:
        os.kill(process.pid, sent)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGUSR1)
        time.sleep(1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the Runtime did not end: {(tmp_path / 'stderr').read_text()[-6000:]}")
    # A task the signal interrupted may still have answered: it is acknowledged too.
    done += [line.strip() for line in process.stdout if line.strip()]
    process.stdout.close()
    deadline = time.monotonic() + 10
    while alive(writer):
        assert time.monotonic() < deadline, "the writer outlived its Runtime"
        time.sleep(0.02)

    anyio.run(functools.partial(all_there, home, project, done, left="a killed runtime"))


@pytest.mark.parametrize("durability", ["fsync", "none"])
async def test_a_runtime_used_at_a_persons_pace_starts_no_writer(
    tmp_path: Path,
    project: Path,
    durability: Literal["fsync", "none"],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rule 1: turns far apart leave nothing behind once written, so their rounds never come
    back to back and no writer process starts, however many turns there are. A writer used
    to start at the third round of a Runtime's life: an interactive session had a second
    interpreter from its third turn on, for rounds its own thread wrote in milliseconds.
    (A round that runs past its time is the other way a writer starts: on a disk slowed by
    other work, one can, so none is given a deadline here.)"""
    deadline = _actor.WRITE_ROUND_SECONDS
    monkeypatch.setattr(_actor, "WRITE_ROUND_SECONDS", 3600.0)
    home = tmp_path / "home"
    async with amplifier.open_runtime(home=home, cwd=project, durability=durability) as rt:
        actor = rt._store._actor  # type: ignore[attr-defined]
        async with rt.open_session() as session:
            await until(lambda: not actor._writing)  # its folder is built
            for n in range(6):
                await session.ask(f"question {n}")
                await until(lambda: not actor._writing)  # the files hold it all
        assert writer_pids(os.getpid()) == []
        monkeypatch.setattr(_actor, "WRITE_ROUND_SECONDS", deadline)
        await until_the_writer_writes(rt, [])  # tasks back to back still start one


async def test_a_frozen_application_starts_no_copy_of_itself_to_write(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule 1: in an application frozen by PyInstaller or cx_Freeze (``sys.frozen``) the
    executable is the application, not an interpreter: starting a writer would start the
    application again, with the writer's arguments. Its rounds, which start a writer
    anywhere else, are written by the Runtime's thread, every one of them."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(_writer, "START_AFTER", 1)  # any round would start one elsewhere
    started: list[object] = []
    popen = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(args[0])
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording)
    home = tmp_path / "home"
    done: list[str] = []
    async with amplifier.open_runtime(home=home, cwd=project) as rt:
        actor = rt._store._actor  # type: ignore[attr-defined]
        for _ in range(3):
            done += [await task(rt), await task(rt)]
            await until(lambda: not actor._writing)  # a round has written them
        assert writer_pids(os.getpid()) == []
    assert started == []
    await all_there(home, project, done)


@pytest.mark.parametrize("durability", ["fsync", "none"])
async def test_a_thread_that_writes_slowly_hands_the_rounds_to_a_writer_at_once(
    tmp_path: Path,
    project: Path,
    durability: Literal["fsync", "none"],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beside a loop that never idles (turns back to back on the offline provider), the
    Runtime's thread waits for the interpreter's lock after each system call: here each of
    its segments takes 5 ms. Its round stops in time and the writer starts at once, where
    it used to wait for three rounds, each longer than the last (a round takes what came
    during the one before): the files followed the journal by seconds, then by more, and
    what waited for them grew in memory."""
    slow = _materialise.Materialiser._write_segment

    def starved(self: _materialise.Materialiser, *args: object) -> None:
        time.sleep(0.005)
        slow(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_materialise.Materialiser, "_write_segment", starved)
    home = tmp_path / "home"
    done: list[str] = []
    async with amplifier.open_runtime(home=home, cwd=project, durability=durability) as rt:
        with anyio.fail_after(60):
            while not (pids := writer_pids(os.getpid())) or not has_written(pids[0]):
                assert len(done) < 600, "no writer has taken over the rounds"
                done.append(await task(rt))
    await all_there(home, project, done)


@pytest.mark.parametrize("durability", ["fsync", "none"])
async def test_rounds_that_run_out_of_time_leave_the_rest_to_the_next(
    tmp_path: Path,
    project: Path,
    durability: Literal["fsync", "none"],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every round written in the Runtime's thread stops at its first barrier (its time is
    up at once), and so starts a writer: every session is there all the same, listed (the
    index rows the thread left reach the writer), and every record once, in order."""
    monkeypatch.setattr(_actor, "WRITE_ROUND_SECONDS", 0.0)
    home = tmp_path / "home"
    done: list[str] = []
    async with amplifier.open_runtime(home=home, cwd=project, durability=durability) as rt:
        await until_the_writer_writes(rt, done)
        for _ in range(20):
            done.append(await task(rt))
    await all_there(home, project, done)
    for session_id in session_dirs(home):
        seqs = [record["seq"] for record in events(home, session_id)]
        assert seqs == sorted(set(seqs)), session_id


async def test_the_writer_imports_nothing_from_the_project(
    tmp_path: Path, project: Path, starts_at_once: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer runs where the command runs, the project: a json.py there (a cloned
    repository's) is not what its imports find."""
    monkeypatch.chdir(project)
    marker = tmp_path / "imported"
    (project / "json.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('not the json module')\n"
    )
    done: list[str] = []
    async with writing_through_its_writer(tmp_path / "home", project, "none", done):
        pass
    assert not marker.exists()
    await all_there(tmp_path / "home", project, done)
