"""Several real ``amplifier`` processes on one store at once.

Every test here drives the installed console script in separate OS processes
(``AMPLIFIER_HOME`` the test's home, the project as working directory, the
offline provider, ``NO_COLOR=1``), because what is proven is what happens
*between* processes: the session lock, the shared session index, the
journals of runtimes that die, and ``cleanup`` deciding what is in use.

- one session, two processes: the second is refused, naming the holder;
- different sessions of one project, at the same time: both complete;
- ``cleanup`` racing live sessions: they survive, reported as in use;
- the index after a crash (kept, lost, stale or damaged): listings give
  exactly the sessions on disk, and ``session reindex`` mends it.

The API-level lock tests are in ``test_locking.py``; ``delete`` refusing a
session in use is in ``test_cli_process.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import amplifier
from amplifier.runtime.lowlevel import is_root_id

from .helpers import lines, metadata, session_dirs, transcript

AMPLIFIER = Path(sys.executable).parent / "amplifier"
TIMEOUT = 60
LIST_DIR = '/tool list_dir {"path": "."}'
NESTED = f"/delegate default: /delegate explorer: {LIST_DIR}"
"""One line, one turn of the interactive prompt: a child that delegates to a grandchild."""
FAN_OUT = "\n".join([f"/delegate explorer: {LIST_DIR}"] * 3 + [NESTED] * 2)
"""Five concurrent delegations (seven sub-sessions) in one turn."""
COMPLETED = b'"event":"prompt:complete"'
STARTER = """
import sys, anyio
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

async def main():
    home, cwd, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for _ in range(count):
        async with open_runtime(home=home, cwd=cwd):
            pass
    print("started", count)

anyio.run(main)
"""


# -- running the command -----------------------------------------------------------


def _env(home: Path, backend: str = "asyncio") -> dict[str, str]:
    return {
        **os.environ,
        "AMPLIFIER_HOME": str(home),
        "AMPLIFIER_ASYNC_BACKEND": backend,
        "NO_COLOR": "1",
    }


def spawn(
    *args: str, home: Path, cwd: Path, backend: str = "asyncio", **popen: Any
) -> subprocess.Popen[str]:
    """Start ``amplifier ARGS`` (stdin closed, output piped unless ``popen`` says otherwise)."""
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        **popen,
    }
    return subprocess.Popen(
        [str(AMPLIFIER), *args], cwd=cwd, env=_env(home, backend), text=True, **options
    )


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for a spawned command (killed if it hangs); its stdout and stderr."""
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert "Traceback" not in (err or ""), err
    return out or "", err or ""


def amp(
    *args: str, home: Path, cwd: Path, backend: str = "asyncio"
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(AMPLIFIER), *args],
        cwd=cwd,
        env=_env(home, backend),
        input="",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def amp_json(*args: str, home: Path, cwd: Path) -> Any:
    done = amp(*args, "--json", home=home, cwd=cwd)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)


def new_session(prompt: str, *, home: Path, cwd: Path) -> str:
    return str(amp_json("run", prompt, home=home, cwd=cwd)["session_id"])


def listing(home: Path, cwd: Path, *flags: str) -> list[dict[str, Any]]:
    """``session list --limit 0 FLAGS --json``: every row, no page limit."""
    rows: list[dict[str, Any]] = amp_json(
        "session", "list", "--limit", "0", *flags, home=home, cwd=cwd
    )
    return rows


def ids_of(rows: list[dict[str, Any]]) -> list[str]:
    return [str(row["session_id"]) for row in rows]


# -- a session held open by an interactive process -----------------------------------


class Holder:
    """An interactive ``amplifier`` process (stdin a pipe) with a session open.

    ``args`` is ``["session", "resume", ID]`` to hold a stored session, or
    ``[]`` for a new one (``amplifier`` with no command). While it runs, the
    session's lock is held by that process. ``feed`` types a prompt again and
    again from a thread (the next one once the previous turn is complete), so
    the holder is writing its session throughout; ``close`` types ``/exit``
    and waits for the process to leave.
    """

    def __init__(
        self, args: list[str], *, home: Path, cwd: Path, logs: Path, backend: str = "asyncio"
    ) -> None:
        self.out = logs.with_suffix(".out")
        self.err = logs.with_suffix(".err")
        self.sent = 0
        self._base = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = spawn(
                *args,
                home=home,
                cwd=cwd,
                backend=backend,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + TIMEOUT
        while "Type /help" not in self.err.read_text():
            assert self.proc.poll() is None, f"the holder left: {self.err.read_text()}"
            assert time.monotonic() < deadline, "the holder never opened its session"
            time.sleep(0.01)
        opened = re.search(r"Amplifier: session (\S+) \(", self.err.read_text())
        assert opened is not None, self.err.read_text()
        self.session_id = opened.group(1)
        # A new session's folder is built behind the journal, within 50 ms.
        while self.session_id not in session_dirs(home):
            assert time.monotonic() < deadline, "the holder's session never appeared"
            time.sleep(0.01)
        self.events = session_dirs(home)[self.session_id] / "events.jsonl"

    @classmethod
    def resume(cls, session_id: str, *, home: Path, cwd: Path, logs: Path) -> Holder:
        args = ["session", "resume", session_id, "--no-history", "--interactive"]
        return cls(args, home=home, cwd=cwd, logs=logs)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def completed(self) -> int:
        """Turns completed in the session so far (as its event log says)."""
        try:
            return self.events.read_bytes().count(COMPLETED)
        except FileNotFoundError:  # a new session's files are written behind, within 50 ms
            return 0

    def feed(self, prompt: str) -> None:
        self._base = base = self.completed()

        def run() -> None:
            assert self.proc.stdin is not None
            while not self._stop.is_set():
                if self.completed() - base >= self.sent:
                    self.proc.stdin.write(prompt + "\n")
                    self.proc.stdin.flush()
                    self.sent += 1
                time.sleep(0.01)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait_for_turns(self, count: int) -> None:
        """Until ``count`` of the fed turns are complete."""
        deadline = time.monotonic() + TIMEOUT
        while self.completed() - self._base < count:
            assert self.proc.poll() is None, f"the holder left: {self.err.read_text()}"
            assert time.monotonic() < deadline, "the holder never answered"
            time.sleep(0.01)

    def close(self) -> int:
        """Stop typing, leave with /exit; the exit code."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT)
        assert self.proc.stdin is not None
        self.proc.stdin.write("/exit\n")
        self.proc.stdin.close()
        code = self.proc.wait(TIMEOUT)
        assert "Traceback" not in self.err.read_text(), self.err.read_text()
        return code

    def kill(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


# -- reading the store -------------------------------------------------------------


def assert_files_consistent(home: Path, session_ids: set[str]) -> None:
    """Every line of every file parses (no torn or interleaved line), seq strictly increasing."""
    dirs = session_dirs(home)
    for session_id in session_ids:
        for name in ("events.jsonl", "transcript.jsonl"):
            seqs = [record["seq"] for record in lines(dirs[session_id] / name)]
            assert seqs == sorted(set(seqs)), f"{session_id}/{name}: seq not strictly increasing"
        assert not list(dirs[session_id].glob("*.torn-*")), f"{session_id}: torn lines"


def tree_on_disk(home: Path, root_id: str) -> set[str]:
    """The root and every session whose metadata names it as root."""
    return {
        session_id
        for session_id, folder in session_dirs(home).items()
        if orjson.loads((folder / "metadata.json").read_bytes())["root_id"] == root_id
    }


def index_rows(home: Path) -> dict[str, str | None]:
    """The session index's rows, id -> parent id (read while no process runs)."""
    db = sqlite3.connect(home / "index.sqlite3")
    try:
        return {
            str(sid): parent
            for sid, parent in db.execute("SELECT session_id, parent_id FROM sessions")
        }
    finally:
        db.close()


def remove_index(home: Path) -> None:
    for path in home.glob("index.sqlite3*"):
        path.unlink()


def journals(home: Path) -> list[Path]:
    return sorted((home / "journal").glob("*.journal"))


def clone_sessions(home: Path, template: str, count: int, *, newest: datetime) -> list[str]:
    """``count`` copies of a finished root session without children, newest first.

    Each copy has its own id and is one minute older than the one before
    (created and updated then). Building folders directly is how a store of
    hundreds of sessions is made in a fraction of a second; ``session
    reindex`` then indexes them.
    """
    source = session_dirs(home)[template]
    document = orjson.loads((source / "metadata.json").read_bytes())
    assert document["children"] == []
    made = []
    for n in range(count):
        when = newest - timedelta(minutes=n)
        session_id = f"{when:%Y%m%dT%H%M%S}Z-{n:016x}"
        folder = source.with_name(session_id)
        folder.mkdir(mode=0o700)
        for name in ("events.jsonl", "transcript.jsonl"):
            shutil.copyfile(source / name, folder / name)
            (folder / name).chmod(0o600)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        (folder / "metadata.json").write_bytes(
            orjson.dumps(
                {**document, "session_id": session_id, "root_id": session_id}
                | {"created": stamp, "updated": stamp}
            )
        )
        (folder / "metadata.json").chmod(0o600)
        made.append(session_id)
    return made


def aged_sessions(project: Path, days: float, prompts: list[str]) -> list[str]:
    """Root sessions created and last updated ``days`` ago (the API's clock), one per prompt."""
    moment = datetime.now(UTC) - timedelta(days=days)

    async def make() -> list[str]:
        made = []
        async with amplifier.open_runtime(cwd=project, clock=lambda: moment) as rt:
            for prompt in prompts:
                async with rt.open_session() as session:
                    await session.ask(prompt)
                made.append(session.id)
        return made

    return anyio.run(make)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    """Holders started by a test; any still running at the end are killed."""
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.kill()


# -- 1. two processes on one session ---------------------------------------------------


def test_second_process_on_a_live_session_is_refused_naming_the_holder(
    home: Path, project: Path, tmp_path: Path, holders: list[Holder]
) -> None:
    """While one `amplifier` process is working in a session, every command that would
    open it in another process (`run --resume`, by id or prefix, with --json;
    `session resume` with a prompt or interactive; `continue`) exits 1 with one
    error line naming the holder's pid and host, and writes nothing; the
    holder's files keep whole lines and strictly increasing seq, and the
    session is resumable once it is free."""
    session_id = new_session("hello", home=home, cwd=project)
    holder = Holder.resume(session_id, home=home, cwd=project, logs=tmp_path / "holder")
    holders.append(holder)
    holder.feed(NESTED)
    holder.wait_for_turns(1)
    attempts = {
        "run --resume": ["run", "--resume", session_id, "refused"],
        "run --resume PREFIX --json": ["run", "--resume", session_id[:24], "--json", "refused"],
        "session resume ID PROMPT": ["session", "resume", session_id, "refused"],
        "session resume ID": ["session", "resume", session_id],
        "continue PROMPT": ["continue", "refused"],
    }
    before = holder.completed()
    # One after the other: commands that start at the same instant can trip over each
    # other's journal (see test_runtimes_starting_at_the_same_instant_all_start).
    results = {}
    for name, args in attempts.items():
        proc = spawn(*args, home=home, cwd=project)
        results[name] = (proc, *finish(proc))
    during = holder.completed() - before
    assert holder.close() == 0, holder.err.read_text()

    expected = re.compile(
        rf"Error: session {session_id} is in use by process {holder.pid} "
        rf"on {re.escape(socket.gethostname())} \(since \d\d:\d\d:\d\d\)"
    )
    for name, (proc, out, err) in results.items():
        assert proc.returncode == 1, (name, out, err)
        error_lines = [line for line in err.splitlines() if line.strip()]
        assert len(error_lines) == 1, (name, err)
        assert expected.fullmatch(error_lines[0]), (name, err)
        if "--json" in attempts[name]:
            assert json.loads(out) == {
                "error": error_lines[0].removeprefix("Error: "),
                "exit_code": 1,
            }
    assert during > 0, "the holder was not writing while the others were refused"

    tree = tree_on_disk(home, session_id)
    assert len(tree) == 1 + 2 * holder.sent  # every turn made a child and a grandchild
    assert_files_consistent(home, tree)
    prompts = [m["content"] for m in transcript(home, session_id) if m["role"] == "user"]
    assert prompts == ["hello"] + [NESTED] * holder.sent
    log = lines(session_dirs(home)[session_id] / "events.jsonl")
    assert [e["event"] for e in log].count("session:resume") == 1
    assert not any("refused" in json.dumps(e["data"]) for e in log)
    assert metadata(home, session_id)["status"] == "completed"

    again = amp_json("session", "resume", session_id, "mine now", home=home, cwd=project)
    assert (again["status"], again["turn"]) == ("completed", holder.sent + 2)


# -- 2. two processes on different sessions of one project -----------------------------


def test_two_processes_on_different_sessions_of_one_project_both_complete(
    home: Path, project: Path, tmp_path: Path, holders: list[Holder]
) -> None:
    """Two interactive `amplifier` processes in one project (one on asyncio, one on
    trio), each with a new session, answering delegation turns at the same time:
    while they work `session list` shows both as active; both leave with exit 0;
    both sessions and every sub-session are complete, listed, and in the shared
    index; parents and children name each other; seq increases within every file;
    no journal is left behind."""
    first, second = (
        Holder([], home=home, cwd=project, logs=tmp_path / name, backend=backend)
        for name, backend in (("first", "asyncio"), ("second", "trio"))
    )
    holders += [first, second]
    first.feed(NESTED)
    second.feed(NESTED)
    during = {row["session_id"]: row["status"] for row in listing(home, project)}
    first.wait_for_turns(6)
    second.wait_for_turns(6)
    assert first.close() == 0, first.err.read_text()
    assert second.close() == 0, second.err.read_text()
    roots = [first.session_id, second.session_id]
    assert during == dict.fromkeys(roots, "active")

    spans = []
    for root in roots:
        log = lines(session_dirs(home)[root] / "events.jsonl")
        submitted = [e["ts"] for e in log if e["event"] == "prompt:submit"]
        completed = [e["ts"] for e in log if e["event"] == "prompt:complete"]
        spans.append((submitted[0], completed[-1]))
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end, "the two processes never worked at the same time"
    assert b_start < a_end, "the two processes never worked at the same time"

    on_disk = set(session_dirs(home))
    trees = [tree_on_disk(home, root) for root in roots]
    assert trees[0] | trees[1] == on_disk
    for tree, holder in zip(trees, (first, second), strict=True):
        assert len(tree) == 1 + 2 * holder.sent  # each turn: a child and a grandchild
    listed = listing(home, project)
    assert sorted(ids_of(listed)) == sorted(roots)
    assert {row["status"] for row in listed} == {"completed"}
    assert sorted(row["metadata"]["turns"] for row in listed) == sorted([first.sent, second.sent])
    assert sorted(ids_of(listing(home, project, "--tree"))) == sorted(on_disk)

    rows = index_rows(home)
    assert set(rows) == on_disk
    for session_id in on_disk:
        document = metadata(home, session_id)
        assert document["status"] == "completed"
        assert rows[session_id] == document["parent_id"]
        for child in document["children"]:
            assert metadata(home, child)["parent_id"] == session_id
    assert_files_consistent(home, on_disk)
    assert journals(home) == []


def test_runtimes_starting_at_the_same_instant_all_start(home: Path, project: Path) -> None:
    """Processes that start runtimes on one home at the same moment all start (each
    opens and closes 200 runtimes, four processes at once): none fails with
    "could not write session files: Resource temporarily unavailable", the error
    an `amplifier` command started together with another can end with."""
    for _ in range(2):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", STARTER, str(home), str(project), "200"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [(proc, *proc.communicate(timeout=TIMEOUT)) for proc in procs]
        for proc, out, err in results:
            assert proc.returncode == 0, err.strip().splitlines()[-1:]
            assert out.strip() == "started 200"
        assert journals(home) == []


# -- 3. cleanup racing live sessions ---------------------------------------------------


def test_cleanup_racing_live_sessions_leaves_them_and_reports_them_in_use(
    home: Path, project: Path, tmp_path: Path, holders: list[Holder]
) -> None:
    """`session cleanup` run while other processes hold sessions (one writing turns
    that spawn sub-sessions, one holding a sub-session of an old tree) removes the
    old finished sessions and the ones past --days, never a live session, its
    sub-sessions or its tree; `--json` lists the live ones under `in_use`, text
    says "Kept ID (in use)". Afterwards they are intact and resume."""
    done, live, tree_root = aged_sessions(
        project,
        40,
        [f"/delegate explorer: {LIST_DIR}", f"/delegate explorer: {LIST_DIR}", NESTED],
    )
    done_child = metadata(home, done)["children"][0]
    held_child = metadata(home, tree_root)["children"][0]
    recent = new_session("recent", home=home, cwd=project)
    writer = Holder.resume(live, home=home, cwd=project, logs=tmp_path / "writer")
    holders.append(writer)
    idle = Holder.resume(held_child, home=home, cwd=project, logs=tmp_path / "idle")
    holders.append(idle)
    writer.feed(NESTED)
    writer.wait_for_turns(1)
    live_trees = tree_on_disk(home, live) | tree_on_disk(home, tree_root)
    before = writer.completed()

    week = amp_json("session", "cleanup", "--days", "7", home=home, cwd=project)
    assert sorted(week["deleted"]) == sorted([done, done_child])
    assert set(week["in_use"]) <= {held_child} | tree_on_disk(home, live)
    everything = amp_json("session", "cleanup", "--days", "0", home=home, cwd=project)
    assert everything["deleted"] == [recent]
    # In use: the idle holder's sub-session; the writer's tree is in use too, or (touched
    # after cleanup's cutoff, as it writes all the time) not old: either way, kept.
    assert held_child in everything["in_use"]
    assert set(everything["in_use"]) <= {held_child} | tree_on_disk(home, live)
    text = amp("session", "cleanup", "--days", "0", home=home, cwd=project)
    assert text.returncode == 0, text.stderr
    assert f"Kept {held_child} (in use)" in text.stdout.splitlines()
    kept = {
        line.removeprefix("Kept ").removesuffix(" (in use)") for line in text.stdout.splitlines()
    }
    assert all(line.endswith(" (in use)") for line in text.stdout.splitlines()), text.stdout
    assert kept <= {held_child} | tree_on_disk(home, live)
    assert writer.completed() > before, "the live session was not writing during the cleanups"
    assert set(session_dirs(home)) >= live_trees

    assert writer.close() == 0, writer.err.read_text()
    assert idle.close() == 0, idle.err.read_text()
    survivors = set(session_dirs(home))
    assert survivors == tree_on_disk(home, live) | tree_on_disk(home, tree_root)
    assert survivors >= live_trees
    assert len(tree_on_disk(home, live)) == 2 + 2 * writer.sent
    assert_files_consistent(home, survivors)
    prompts = [m["content"] for m in transcript(home, live) if m["role"] == "user"]
    assert prompts[1:] == [NESTED] * writer.sent
    for session_id in (live, held_child):
        reply = amp_json("session", "resume", session_id, "still here", home=home, cwd=project)
        assert reply["status"] == "completed"

    last = amp_json("session", "cleanup", "--days", "0", home=home, cwd=project)
    assert (sorted(last["deleted"]), last["in_use"]) == (sorted(survivors), [])
    assert session_dirs(home) == {}


@pytest.mark.timeout(180)  # 1,500 sessions and three processes on a busy machine
def test_session_resumed_while_cleanup_runs_is_not_deleted(home: Path, project: Path) -> None:
    """A session that a user resumes and works in while `cleanup --days 7` is running
    (after cleanup listed it as old, before cleanup reached it) is not old any more:
    it is not deleted, and the turn the user was told completed is kept."""
    template = new_session("template", home=home, cwd=project)
    clones = clone_sessions(home, template, 1500, newest=datetime.now(UTC) - timedelta(days=10))
    assert amp_json("session", "reindex", home=home, cwd=project)["indexed"] == len(clones) + 1
    cleanup = spawn("session", "cleanup", "--days", "7", "--json", home=home, cwd=project)
    newest = session_dirs(home)[clones[0]]
    deadline = time.monotonic() + TIMEOUT
    while newest.exists():
        assert cleanup.poll() is None, "cleanup ended before the sessions were resumed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    # Deleting has begun, newest first: the oldest go last.
    targets = clones[-2:]
    resumed = [
        spawn("run", "--resume", target, "--json", "one more turn", home=home, cwd=project)
        for target in targets
    ]
    outcomes = [(proc, *finish(proc)) for proc in resumed]
    out, err = finish(cleanup)
    assert cleanup.returncode == 0, err
    report = json.loads(out)
    for target, (proc, reply, _) in zip(targets, outcomes, strict=True):
        if proc.returncode == 0:
            assert json.loads(reply)["status"] == "completed"
            assert target in session_dirs(home), f"{target}: answered, then deleted"
            assert target not in report["deleted"]
    assert not set(report["deleted"]) & set(session_dirs(home))


def test_two_cleanups_at_once_both_succeed_and_share_the_work(home: Path, project: Path) -> None:
    """Two `session cleanup --days 0` processes started together both exit 0, every
    old session is removed, and each is reported deleted by exactly one of them."""
    template = new_session("template", home=home, cwd=project)
    for _ in range(3):
        clones = clone_sessions(home, template, 200, newest=datetime.now(UTC) - timedelta(days=1))
        amp_json("session", "reindex", home=home, cwd=project)
        procs = [
            spawn("session", "cleanup", "--days", "0", "--json", home=home, cwd=project)
            for _ in range(2)
        ]
        results = [(proc, *finish(proc)) for proc in procs]
        for proc, _, err in results:
            assert proc.returncode == 0, err
        reports = [json.loads(out)["deleted"] for _, out, _ in results]
        assert not set(reports[0]) & set(reports[1]), "a session reported deleted twice"
        assert set(reports[0]) | set(reports[1]) >= set(clones)
        assert session_dirs(home) == {}
        template = new_session("template", home=home, cwd=project)


# -- 4. the index after a crash ----------------------------------------------------------


def test_index_after_a_killed_run_lists_exactly_the_sessions_on_disk(
    home: Path, project: Path, tmp_path: Path
) -> None:
    """After `amplifier run` is SIGKILLed in the middle of nested delegations, `session
    list --all` shows exactly the root folders on disk and `--tree` every folder,
    the killed one as interrupted, the same on a second listing; with the index
    removed, the same again; with a stale index from before the crash, the killed
    session is still found by id and `session reindex` restores the same listing;
    and the killed session resumes."""
    earlier = new_session(FAN_OUT, home=home, cwd=project)
    snapshot = tmp_path / "stale-index"
    snapshot.mkdir()
    for path in home.glob("index.sqlite3*"):
        shutil.copy2(path, snapshot / path.name)
    before = set(session_dirs(home))

    # Long enough that four folders built behind are well before its end.
    work = "\n".join([NESTED] * 400)
    crashed = spawn("run", "--json", work, home=home, cwd=project)
    deadline = time.monotonic() + TIMEOUT
    while not journals(home) or len(set(session_dirs(home)) - before) < 4:
        assert crashed.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    crashed.send_signal(signal.SIGKILL)
    finish(crashed)
    assert crashed.returncode == -signal.SIGKILL

    # The first listing replays the dead journal: sessions it holds whose
    # folders were not built yet appear now.
    tree = listing(home, project, "--all", "--tree")
    on_disk = set(session_dirs(home))
    (killed,) = {s for s in on_disk - before if is_root_id(s)}
    roots = {s for s in on_disk if is_root_id(s)}
    assert roots == {earlier, killed}
    assert len(ids_of(tree)) == len(on_disk)
    assert set(ids_of(tree)) == on_disk
    assert set(ids_of(listing(home, project, "--all"))) == roots
    assert {row["session_id"]: row["status"] for row in tree}[killed] == "interrupted"
    assert journals(home) == [], "the dead runtime's journal was not replayed"
    assert listing(home, project, "--all", "--tree") == tree

    remove_index(home)
    assert listing(home, project, "--all", "--tree") == tree
    assert (home / "index.sqlite3").exists()

    remove_index(home)
    for path in snapshot.iterdir():
        shutil.copy2(path, home / path.name)
    shown = amp_json("session", "show", killed, home=home, cwd=project)
    assert shown["session_id"] == killed
    assert amp_json("session", "reindex", home=home, cwd=project) == {"indexed": len(on_disk)}
    assert listing(home, project, "--all", "--tree") == tree
    assert set(index_rows(home)) == on_disk

    reply = amp_json("session", "resume", killed, "go on", home=home, cwd=project)
    assert (reply["status"], reply["turn"]) == ("completed", 2)
    statuses = {row["session_id"]: row["status"] for row in listing(home, project, "--all")}
    assert statuses == {earlier: "completed", killed: "completed"}


def test_listing_works_with_a_damaged_index_file(home: Path, project: Path) -> None:
    """With garbage bytes in place of `index.sqlite3`, `session list` (roots and --tree)
    still shows exactly the sessions on disk, ids and prefixes are still found,
    and a new `run` works and is listed."""
    first = new_session(FAN_OUT, home=home, cwd=project)
    remove_index(home)
    (home / "index.sqlite3").write_bytes(b"not a database, a crash left this\n" * 300)
    on_disk = set(session_dirs(home))
    assert set(ids_of(listing(home, project, "--tree"))) == on_disk
    assert ids_of(listing(home, project)) == [first]
    assert amp_json("session", "show", first[:22], home=home, cwd=project)["session_id"] == first
    second = new_session("after the damage", home=home, cwd=project)
    assert ids_of(listing(home, project)) == [second, first]
    assert set(ids_of(listing(home, project, "--all", "--tree"))) == set(session_dirs(home))


def test_reindex_repairs_a_damaged_index_file(home: Path, project: Path) -> None:
    """`session reindex` over an `index.sqlite3` full of garbage exits 0, indexes every
    session on disk, and leaves a working index that lists them all."""
    new_session(FAN_OUT, home=home, cwd=project)
    remove_index(home)
    (home / "index.sqlite3").write_bytes(b"not a database, a crash left this\n" * 300)
    on_disk = set(session_dirs(home))
    done = amp("session", "reindex", "--json", home=home, cwd=project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"indexed": len(on_disk)}
    assert set(index_rows(home)) == on_disk
    assert set(ids_of(listing(home, project, "--tree"))) == on_disk


def test_index_of_a_process_killed_while_building_it_is_not_trusted(
    home: Path, project: Path
) -> None:
    """A process killed while it builds the index for the first time (the file created,
    its rows not yet committed) does not leave the next `session list` showing
    fewer sessions than there are on disk."""
    template = new_session("template", home=home, cwd=project)
    clone_sessions(home, template, 300, newest=datetime.now(UTC) - timedelta(days=1))
    on_disk = set(session_dirs(home))
    trials = 0
    deadline = time.monotonic() + TIMEOUT
    while trials < 3:
        assert time.monotonic() < deadline
        remove_index(home)
        proc = spawn("session", "list", "--all", "--json", home=home, cwd=project)
        while not (home / "index.sqlite3").exists() and proc.poll() is None:
            time.sleep(0.0002)
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        if proc.returncode != -signal.SIGKILL:
            continue  # it finished before it could be killed: try again
        trials += 1
        assert set(ids_of(listing(home, project, "--all"))) == on_disk
