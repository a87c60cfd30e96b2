"""Agents that act, through the installed command: the sessions workflow, asking at the
terminal, and nothing left behind when the command is killed mid-command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import events, transcript
from .test_bash_tool import wait_gone
from .test_cli_interactive import AMPLIFIER, _env, interactive

AUTH = '''import sqlite3


def find_user(db: sqlite3.Connection, name: str):
    return db.execute(f"SELECT * FROM users WHERE name = '{name}'").fetchone()
'''
FIXED = 'db.execute("SELECT * FROM users WHERE name = ?", (name,))'
TEST = """import sqlite3
from auth import find_user

db = sqlite3.connect(":memory:")
db.execute("CREATE TABLE users (name TEXT)")
db.execute("INSERT INTO users VALUES ('alice')")
assert find_user(db, "alice") == ("alice",)
assert find_user(db, "x' OR '1'='1") is None
print("tests passed")
"""


def amplifier(
    *args: str, cwd: Path, home: Path, backend: str = "asyncio", code: int = 0
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(AMPLIFIER), *args],
        cwd=cwd,
        env=_env(home, backend),
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    return done


def _written(path: Path) -> bool:
    """A pid file the command wrote whole (it may exist empty for a moment)."""
    try:
        return path.read_text().endswith("\n")
    except FileNotFoundError:
        return False


def tool(name: str, **arguments: object) -> str:
    return f"/tool {name} {json.dumps(arguments)}"


def test_the_sessions_workflow_runs_end_to_end(home: Path, project: Path) -> None:
    """Analyse, fix the injection with edit_file, write a test, run it with bash, see the diff,
    rewind: each step through the installed command, as the sessions documentation goes."""
    (project / "auth.py").write_text(AUTH)
    run = amplifier("run", tool("read_file", path="auth.py"), cwd=project, home=home)
    assert "read_file (ok)" in run.stdout
    session_id = run.stderr.split("Session: ")[1].split()[0]
    old = "db.execute(f\"SELECT * FROM users WHERE name = '{name}'\")"
    amplifier(
        "continue", "--allow", "edit_file(auth.py)", tool("edit_file", file_path="auth.py",
        old_string=old, new_string=FIXED), cwd=project, home=home,
    )
    assert FIXED in (project / "auth.py").read_text()
    amplifier(
        "continue", "--allow", "write_file(tests/**)",
        tool("write_file", file_path="tests/test_auth.py", content=TEST), cwd=project, home=home,
    )
    ran = amplifier(
        "continue", "--allow", "bash(PYTHONPATH=. python3 tests/*)",
        tool("bash", command="PYTHONPATH=. python3 tests/test_auth.py"), cwd=project, home=home,
    )
    assert "tests passed [exit code 0]" in ran.stdout
    diff = json.loads(amplifier("session", "diff", session_id, "--json", cwd=project,
                                home=home).stdout)
    assert {f["path"]: f["state"] for f in diff["files"]} == {
        "auth.py": "modified",
        "tests/test_auth.py": "created",
    }
    assert diff["bash_calls_untracked"] == 1
    rewound = amplifier("session", "rewind", session_id, "--yes", cwd=project, home=home)
    assert "Restored auth.py" in rewound.stdout
    assert "Removed tests/test_auth.py" in rewound.stdout
    assert "changes made by bash commands are not tracked" in rewound.stderr
    assert (project / "auth.py").read_text() == AUTH
    assert not (project / "tests/test_auth.py").exists()


def test_without_a_terminal_asking_is_denied_and_said_once(home: Path, project: Path) -> None:
    """Piped: both calls that ask are denied, stderr says so once, naming the flags."""
    prompt = "\n".join(
        [tool("write_file", file_path="a.txt", content="a"), tool("bash", command="touch b")]
    )
    done = amplifier("run", "--json", prompt, cwd=project, home=home)
    document = json.loads(done.stdout)
    assert document["status"] == "completed"
    assert done.stderr.count("asked for permission with no terminal") == 1
    assert "--allow RULE or --yes" in done.stderr
    assert not (project / "a.txt").exists()
    assert not (project / "b").exists()


@pytest.mark.parametrize("args", [["--allow", "bash("], ["--deny", ""]])
def test_a_bad_rule_on_the_command_line_is_one_line_and_exit_2(
    home: Path, project: Path, args: list[str]
) -> None:
    """A rule that does not parse: one error line, exit 2, no session made."""
    done = amplifier("run", *args, "hi", cwd=project, home=home, code=2)
    assert done.stderr.count("\n") == 1
    assert "not a permission rule" in done.stderr or "empty" in done.stderr
    assert not (home / "projects").exists()


def test_rewind_without_a_terminal_needs_yes(home: Path, project: Path) -> None:
    """Like delete, rewind will not change files unasked: piped, it wants --yes."""
    run = amplifier("run", "--yes", tool("write_file", file_path="a.txt", content="a"),
                    cwd=project, home=home)
    session_id = run.stderr.split("Session: ")[1].split()[0]
    done = amplifier("session", "rewind", session_id, cwd=project, home=home, code=2)
    assert "pass --yes" in done.stderr
    assert (project / "a.txt").exists()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_at_a_terminal_the_user_answers_yes_no_and_always(
    home: Path, project: Path, backend: str
) -> None:
    """The question shows who asks and the diff; y runs, n refuses, a is asked only once."""
    prompt = "\n".join(
        [
            tool("write_file", file_path="yes.txt", content="yes"),
            "/delegate default: " + tool("write_file", file_path="no.txt", content="no"),
        ]
    )
    with interactive(["run", prompt], cwd=project, home=home, backend=backend) as term:
        for _ in range(2):
            match = term.expect(r"(default > default \(\S+\)|default) asks to call write_file")
            if "default > default" in match.group(0):
                term.see("+no")
                term.send("n")
            else:
                term.see("+yes")
                term.send("y")
        assert term.leave() == 0
    assert (project / "yes.txt").read_text() == "yes"
    assert not (project / "no.txt").exists()
    again = "\n".join(tool("bash", command=f"echo {n} >> log") for n in (1, 1))
    with interactive(["run", again], cwd=project, home=home, backend=backend) as term:
        term.see("asks to run bash")
        term.send("a")
        assert term.leave() == 0
    assert term.output.count("asks to run bash") == 1
    assert (project / "log").read_text() == "1\n1\n"


def test_keys_typed_before_a_question_do_not_answer_it(home: Path, project: Path) -> None:
    """`y` and Enter typed while the command starts (meant for something else) are dropped
    when the question is shown: only what is typed after it answers."""
    with interactive(
        ["run", tool("bash", command="touch ran")], cwd=project, home=home, backend="asyncio"
    ) as term:
        term.send("y")  # before the question: the command is still loading
        term.see("Allow? [y]es")
        assert not (project / "ran").exists()
        term.send("n")
        assert term.leave() == 0
    assert not (project / "ran").exists()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_at_a_question_withdraws_it(home: Path, project: Path, backend: str) -> None:
    """Ctrl-C while asked: the question is withdrawn, nothing runs, the session is resumable."""
    with interactive(
        ["run", tool("write_file", file_path="a.txt", content="a")],
        cwd=project, home=home, backend=backend,
    ) as term:
        term.see("Allow? [y]es")
        term.child.sendintr()
        term.see("question withdrawn")
        assert term.leave() == 130
    assert not (project / "a.txt").exists()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigkill_mid_command_leaves_no_process_and_resume_repairs_the_call(
    home: Path, project: Path, backend: str
) -> None:
    """Killing amplifier with SIGKILL mid-command kills the command and its children, a job
    the shell put in a group of its own (``set -m``) too; the call was on record before it
    ran, and resume answers it "interrupted; outcome unknown"."""
    command = (
        "set -m; sleep 300 & echo $! > job.pid; set +m; "
        "sleep 300 & echo $! > bg.pid; echo $$ > sh.pid; sleep 300"
    )
    process = subprocess.Popen(
        [str(AMPLIFIER), "run", "--yes", tool("bash", command=command)],
        cwd=project,
        env=_env(home, backend),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (_written(project / "bg.pid") and _written(project / "sh.pid")):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)
    time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    for name in ("job.pid", "bg.pid", "sh.pid"):
        assert wait_gone(int((project / name).read_text())), f"{name} survived"
    # The killed run's folder may not be built yet (its records are in its journal, and
    # the files follow within the write-behind's delay): continuing replays the journal.
    amplifier("continue", "what happened?", cwd=project, home=home, backend=backend)
    (session_dir,) = (home / "projects").glob("*/sessions/*")
    log = events(home, session_dir.name)
    called = next(e for e in log if e["event"] == "tool:pre")["data"]["call_id"]
    decisions = [e for e in log if e["event"] == "approval:decision"]
    assert decisions[0]["data"]["call_id"] == called
    results = [m for m in transcript(home, session_dir.name) if m.get("role") == "tool"]
    assert results[0]["tool_call_id"] == called
    assert "interrupted; outcome unknown" in results[0]["content"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_mid_command_stops_it_and_its_children(
    home: Path, project: Path, signum: signal.Signals
) -> None:
    """Ctrl-C or SIGTERM while bash runs: the command and what it started are stopped, and
    the command line ends as the signal asks (130, 143)."""
    command = "sleep 300 & echo $! > bg.pid; echo $$ > sh.pid; sleep 300"
    process = subprocess.Popen(
        [str(AMPLIFIER), "run", "--yes", tool("bash", command=command)],
        cwd=project,
        env=_env(home, "asyncio"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (_written(project / "bg.pid") and _written(project / "sh.pid")):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signum
    assert "Traceback" not in stderr
    for name in ("bg.pid", "sh.pid"):
        assert wait_gone(int((project / name).read_text())), f"{name} survived"


def test_interactive_mode_takes_the_permission_flags(home: Path, project: Path) -> None:
    """`amplifier --allow RULE` (interactive) runs matching calls without asking."""
    with interactive(["--allow", "write_file(*.txt)"], cwd=project, home=home,
                     backend="asyncio") as term:
        term.prompt()
        term.ask(tool("write_file", file_path="a.txt", content="a"))
        term.send("/exit")
        assert term.leave() == 0
    assert "asks to" not in term.output
    assert (project / "a.txt").read_text() == "a"


def test_a_question_pauses_the_live_progress_display() -> None:
    """While a question is on screen the live tree stops redrawing, and comes back after."""
    import io

    from rich.console import Console
    from rich.live import Live

    from amplifier.cli._approval import SCREEN

    live = Live(console=Console(file=io.StringIO(), force_terminal=True), auto_refresh=False)
    live.start()
    SCREEN.live = live
    try:
        with SCREEN.paused():
            assert not live.is_started
        assert live.is_started
    finally:
        SCREEN.live = None
        live.stop()
