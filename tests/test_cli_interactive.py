"""Interactive mode, driven through a real pseudo-terminal.

Every test starts the installed ``amplifier`` console script in a pty with
pexpect, as a person at a terminal would, once per event loop
(``AMPLIFIER_ASYNC_BACKEND``: asyncio, then trio). Status lines go to stderr,
which in a pty is the same terminal, so the patterns match both streams.
Answers come from the offline provider, except for the slow turns, which a
``FakeLLMServer`` answers through the project's ``slow`` profile.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pexpect
import pytest

from .fake_llm_server import BrokenStream, FakeLLMServer, Stall, Text
from .helpers import hangups_at_default
from .trusted import trusted

AMPLIFIER = Path(sys.executable).parent / "amplifier"
PROMPT = re.compile(r"\n(?:\x1b\[[0-9;?]*[A-Za-z])*>(?: |\x08|\x1b)")
"""The prompt: plain ``> ``, or the line editor's ``>`` drawn among terminal escapes."""
BANNER = re.compile(r"Amplifier: session (\S+) \(")
BANNER_END = "Type /help for help; Ctrl-D to leave.\r\n"

# The slow tests fork the CLI while the fake server's threads run; the child
# execs at once, so Python 3.12's warning about forking threads does not apply.
forks_with_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The event loop the CLI runs on."""
    return str(request.param)


def _env(home: Path, backend: str, *, cpr: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(AMPLIFIER_HOME=str(home), NO_COLOR="1", AMPLIFIER_ASYNC_BACKEND=backend)
    if not cpr:
        # A pty is no terminal emulator: nothing answers the line editor's cursor
        # position requests unless the test does (``Terminal.answer_cpr``).
        env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    return env


class Terminal:
    """One ``amplifier`` process in a pseudo-terminal, and everything it showed."""

    def __init__(
        self, args: Sequence[str], *, cwd: Path, home: Path, backend: str, cpr: bool = False
    ) -> None:
        self.shown = io.StringIO()
        self.child = pexpect.spawn(
            str(AMPLIFIER),
            list(args),
            cwd=str(cwd),
            env=_env(home, backend, cpr=cpr),
            encoding="utf-8",
            timeout=20,
            dimensions=(40, 200),
            preexec_fn=hangups_at_default,
        )
        self.child.delayafterclose = 0  # leave() waits for the exit itself
        self.child.logfile_read = self.shown

    @property
    def output(self) -> str:
        return self.shown.getvalue()

    def expect(self, pattern: str | re.Pattern[str]) -> re.Match[str]:
        """Wait for ``pattern`` (a regex); fail with the whole screen if it never comes."""
        try:
            self.child.expect(pattern)
        except (pexpect.TIMEOUT, pexpect.EOF) as exc:
            shown = getattr(pattern, "pattern", pattern)
            raise AssertionError(
                f"waited for {shown!r}, got {type(exc).__name__}; the terminal showed:\n"
                f"{self.output}"
            ) from None
        match: re.Match[str] = self.child.match
        return match

    def see(self, text: str) -> None:
        """Wait for ``text`` literally."""
        self.expect(re.escape(text))

    def prompt(self) -> None:
        self.expect(PROMPT)

    def answer_cpr(self) -> None:
        """Answer the line editor's cursor position request, as a terminal does."""
        self.expect(re.escape("\x1b[6n"))
        self.child.send("\x1b[1;1R")

    def session_id(self) -> str:
        return self.expect(BANNER).group(1)

    def send(self, line: str) -> None:
        self.child.sendline(line)

    def ask(self, line: str) -> None:
        """At a prompt: send ``line``, wait for the answer to end in the next prompt."""
        self.send(line)
        self.prompt()

    def leave(self) -> int:
        """Wait for the process to end; its exit code."""
        try:
            self.child.expect(pexpect.EOF, timeout=20)
        except pexpect.TIMEOUT:
            raise AssertionError(f"the process did not end; it showed:\n{self.output}") from None
        code = self.child.wait()
        self.child.close()
        return int(code)

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()


@contextlib.contextmanager
def interactive(
    args: Sequence[str], *, cwd: Path, home: Path, backend: str, cpr: bool = False
) -> Iterator[Terminal]:
    term = Terminal(args, cwd=cwd, home=home, backend=backend, cpr=cpr)
    try:
        yield term
    finally:
        term.close()


def cli(
    args: Sequence[str], *, cwd: Path, home: Path, backend: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """One non-interactive run of the command line (``stdin`` piped in, if given); fails the
    test on a non-zero exit."""
    done = subprocess.run(
        [str(AMPLIFIER), *args],
        cwd=cwd,
        env=_env(home, backend),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"amplifier {' '.join(args)}: {done.returncode}\n{done.stderr}"
    return done


def show(session_id: str, *, cwd: Path, home: Path, backend: str) -> dict[str, Any]:
    args = ["session", "show", session_id, "--json", "--events"]
    done = cli(args, cwd=cwd, home=home, backend=backend)
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def earlier_session(prompt: str, *, cwd: Path, home: Path, backend: str) -> str:
    """A session with one turn already in it (``amplifier run``); its id."""
    done = cli(["run", prompt], cwd=cwd, home=home, backend=backend)
    found = re.search(r"Session: (\S+)", done.stderr)
    assert found, done.stderr
    return found.group(1)


def user_prompts(document: dict[str, Any]) -> list[str]:
    return [r["content"] for r in document["transcript"] if r["role"] == "user"]


# -- a turn, leaving ---------------------------------------------------------------


def test_interactive_turn_shows_the_answer_and_prompts_again(
    backend: str, project: Path, home: Path
) -> None:
    """A prompt typed at '> ' gets its answer, then a new '> ' for the next one."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        term.prompt()
        term.send("hello there")
        term.see("You asked: hello there")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


@pytest.mark.parametrize("command", ["/exit", "/quit"])
def test_exit_command_leaves_and_keeps_the_conversation(
    backend: str, project: Path, home: Path, command: str
) -> None:
    """/exit (or /quit) ends the program with status 0, and the turns are saved."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        session_id = term.session_id()
        term.prompt()
        term.ask("keep this")
        term.send(command)
        assert term.leave() == 0
    document = show(session_id, cwd=project, home=home, backend=backend)
    assert user_prompts(document) == ["keep this"]
    assert document["status"] == "completed"


def test_ctrl_d_leaves(backend: str, project: Path, home: Path) -> None:
    """Ctrl-D at the prompt ends the program with status 0."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        term.prompt()
        term.child.sendeof()
        assert term.leave() == 0


def test_ctrl_c_once_at_the_prompt_only_warns(backend: str, project: Path, home: Path) -> None:
    """One Ctrl-C at an empty prompt says how to leave and keeps the session open."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        term.prompt()
        term.child.sendintr()  # the very moment the first prompt shows
        term.see("(Ctrl-C again, or Ctrl-D, to leave)")
        term.prompt()
        term.send("still here?")
        term.see("You asked: still here?")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


def test_ctrl_c_twice_at_the_prompt_leaves(backend: str, project: Path, home: Path) -> None:
    """A second Ctrl-C in a row at the prompt ends the program with status 0."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        term.prompt()
        term.child.sendintr()
        term.see("(Ctrl-C again, or Ctrl-D, to leave)")
        term.prompt()
        term.child.sendintr()
        assert term.leave() == 0


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_right_at_start_never_kills_the_program(
    backend: str, project: Path, home: Path, attempt: int
) -> None:
    """Ctrl-C the instant the prompt shows, then twice more (the last one lands during
    shutdown): the program warns, then leaves cleanly with status 0."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        term.prompt()
        term.child.sendintr()
        term.see("(Ctrl-C again, or Ctrl-D, to leave)")
        term.prompt()
        term.child.sendintr()
        term.child.sendintr()  # absorbed while the runtime closes, not fatal
        assert term.leave() == 0
        assert "Traceback" not in term.output


def test_help_command_prints_help_without_asking_the_model(
    backend: str, project: Path, home: Path
) -> None:
    """/help lists the commands and keys; it is not sent to the model as a prompt."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        session_id = term.session_id()
        term.prompt()
        term.send("/help")
        term.see("Commands:")
        term.see("/exit, /quit")
        term.see("Ctrl-C while an answer is coming cancels that turn")
        term.prompt()
        term.ask("hello")
        term.send("/exit")
        assert term.leave() == 0
    assert "You asked: /help" not in term.output
    assert user_prompts(show(session_id, cwd=project, home=home, backend=backend)) == ["hello"]


# -- live view of delegations --------------------------------------------------------


def test_delegation_shows_the_sub_session_running_then_completed(
    backend: str, project: Path, home: Path
) -> None:
    """While a turn delegates, the screen names the sub-session running, then completed."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        session_id = term.session_id()
        term.prompt()
        term.send("/delegate explorer: summarise nothing")
        child_id = term.expect(r"\[sub-session\] explorer running: (\S+)").group(1)
        term.see(f"[sub-session] explorer completed: {child_id}")
        # Typed ahead: read at the next prompt, whenever the turn's answer ends.
        term.send("/exit")
        assert term.leave() == 0
    tree = show(session_id, cwd=project, home=home, backend=backend)["tree"]
    assert [row["session_id"] for row in tree] == [session_id, child_id]
    assert tree[1]["metadata"]["agent"] == "explorer"


# -- continue and resume without a prompt ---------------------------------------------


def test_continue_without_prompt_shows_recent_history_first(
    backend: str, project: Path, home: Path
) -> None:
    """'amplifier continue' reopens the last session and shows its conversation first."""
    earlier = earlier_session("first question", cwd=project, home=home, backend=backend)
    with interactive(["continue"], cwd=project, home=home, backend=backend) as term:
        assert term.session_id() == earlier
        # The history comes right after the banner, before the first prompt.
        term.see(BANNER_END + "> first question\r\n")
        term.see("You asked: first question")
        term.prompt()
        term.send("second question")
        term.see("You asked: second question")
        term.see("This session has seen 2 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


def test_continue_no_history_shows_none(backend: str, project: Path, home: Path) -> None:
    """'amplifier continue --no-history' goes straight to the prompt of the last session."""
    earlier = earlier_session("first question", cwd=project, home=home, backend=backend)
    with interactive(["continue", "--no-history"], cwd=project, home=home, backend=backend) as term:
        assert term.session_id() == earlier
        term.expect(re.escape(BANNER_END[:-1]) + PROMPT.pattern)  # the prompt, right away
        term.send("second question")
        term.see("This session has seen 2 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert "first question" not in term.output


def test_session_resume_without_prompt_is_interactive(
    backend: str, project: Path, home: Path
) -> None:
    """'amplifier session resume ID' opens that session at a prompt, history first."""
    earlier = earlier_session("first question", cwd=project, home=home, backend=backend)
    with interactive(
        ["session", "resume", earlier], cwd=project, home=home, backend=backend
    ) as term:
        assert term.session_id() == earlier
        term.see(BANNER_END + "> first question\r\n")
        term.prompt()
        term.send("next question")
        term.see("You asked: next question")
        term.see("This session has seen 2 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


# -- Ctrl-C during a slow turn ---------------------------------------------------------


@pytest.fixture
def llm(project: Path) -> Iterator[FakeLLMServer]:
    """A local model server that the project's ``slow`` profile answers through."""
    with FakeLLMServer() as server:
        profiles = project / ".amplifier" / "profiles"
        profiles.mkdir(parents=True)
        (profiles / "slow.yaml").write_text(
            f"provider: {{kind: openai, base_url: '{server.openai_base_url}', model: m, "
            "timeout: 60, max_retries: 0}\n"
        )
        trusted(project)
        yield server


def cancel_a_slow_turn(term: Terminal, llm: FakeLLMServer) -> str:
    """Ctrl-C a turn the model is slow to answer, then ask again; the session's id."""
    llm.plan(Stall(30), Text(pieces=("back ", "again")))
    session_id = term.session_id()
    term.prompt()
    term.send("slow question")
    deadline = time.monotonic() + 10
    while not llm.requests:  # the turn is now waiting for the model
        assert time.monotonic() < deadline, f"no request reached the model:\n{term.output}"
        time.sleep(0.01)
    term.child.sendintr()
    term.see("[cancelled")
    term.prompt()
    term.send("are you there?")
    term.see("back again")
    term.prompt()
    term.send("/exit")
    assert term.leave() == 0
    return session_id


@forks_with_threads
def test_ctrl_c_cancels_a_slow_turn_and_the_session_goes_on(
    backend: str, project: Path, home: Path, llm: FakeLLMServer
) -> None:
    """Ctrl-C while waiting for an answer stops that turn at once; the next prompt works."""
    with interactive(["--profile", "slow"], cwd=project, home=home, backend=backend) as term:
        started = time.monotonic()
        cancel_a_slow_turn(term, llm)
        assert time.monotonic() - started < 15  # not the model's 30 s stall
    assert "[cancelled: what the turn wrote is kept; the session goes on]" in term.output
    assert len(llm.requests) == 2


@forks_with_threads
def test_ctrl_c_cancelled_turn_is_recorded_then_the_next_completes(
    backend: str, project: Path, home: Path, llm: FakeLLMServer
) -> None:
    """The session keeps both prompts, the cancelled turn marked cancelled, the next completed."""
    with interactive(["--profile", "slow"], cwd=project, home=home, backend=backend) as term:
        session_id = cancel_a_slow_turn(term, llm)
    document = show(session_id, cwd=project, home=home, backend=backend)
    assert user_prompts(document) == ["slow question", "are you there?"]
    answers = [r["content"] for r in document["transcript"] if r["role"] == "assistant"]
    assert answers == ["back again"]
    completes = [e["data"] for e in document["events"] if e["event"] == "prompt:complete"]
    assert [(c["turn"], c["status"]) for c in completes] == [(1, "cancelled"), (2, "completed")]


@forks_with_threads
def test_ctrl_c_cancelled_session_resumes_later(
    backend: str, project: Path, home: Path, llm: FakeLLMServer
) -> None:
    """After a cancelled turn and /exit, 'amplifier session resume ID PROMPT' carries on.

    Resuming takes the session's own profile (``slow``, as configured now);
    ``--profile`` picks another.
    """
    with interactive(["--profile", "slow"], cwd=project, home=home, backend=backend) as term:
        session_id = cancel_a_slow_turn(term, llm)
    llm.plan(Text(pieces=("resumed ", "on the slow profile")))
    done = cli(["session", "resume", session_id, "again?"], cwd=project, home=home, backend=backend)
    assert "resumed on the slow profile" in done.stdout
    args = ["session", "resume", session_id, "and now?", "--profile", "base"]
    offline = cli(args, cwd=project, home=home, backend=backend)
    assert "You asked: and now?" in offline.stdout
    assert "This session has seen 4 prompt(s)" in offline.stdout


@forks_with_threads
def test_run_in_a_terminal_puts_a_stream_error_on_its_own_line(
    backend: str, project: Path, home: Path, llm: FakeLLMServer
) -> None:
    """A stream that breaks after some text: the error starts a new line, not glued to it."""
    llm.plan(BrokenStream())
    with interactive(
        ["run", "--profile", "slow", "tell me"], cwd=project, home=home, backend=backend
    ) as term:
        term.see("Error: openai: ")
        assert term.leave() == 1
    assert "Hello\r\nError: openai: " in term.output


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_sigterm_or_sighup_at_the_prompt_ends_the_session_and_exits(
    backend: str, project: Path, home: Path, signum: int, code: int
) -> None:
    """SIGTERM or SIGHUP while interactive mode waits for a prompt: the session's final
    records are written, then the program exits 128 + the signal's number."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        session_id = term.session_id()
        term.prompt()
        term.ask("keep this")
        term.child.kill(signum)
        assert term.leave() == code
    document = show(session_id, cwd=project, home=home, backend=backend)
    assert user_prompts(document) == ["keep this"]
    assert document["events"][-1]["event"] == "session:end"
    assert document["status"] == "cancelled"


@pytest.mark.parametrize("during", ["a turn", "the prompt"])
def test_a_terminal_that_goes_away_cancels_the_session_and_exits_129(
    backend: str, project: Path, home: Path, during: str
) -> None:
    """The terminal window closed during a turn, or at the prompt: the hangup ends the
    session as cancelled and the program exits 129, though nothing can be written to the
    terminal any more."""
    term = Terminal([], cwd=project, home=home, backend=backend)
    try:
        session_id = term.session_id()
        term.prompt()
        term.ask("keep this")
        if during == "a turn":
            term.send("/sleep 30")
            time.sleep(1.0)  # the turn is under way: no event of the program to wait on
        os.close(term.child.child_fd)  # the terminal goes away: SIGHUP, then EIO on writes
        term.child.child_fd = -1
        deadline = time.monotonic() + 30
        while (status := os.waitpid(term.child.pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the program did not end"
            time.sleep(0.05)
        term.child.terminated = True
    finally:
        if term.child.child_fd != -1:
            term.close()
    assert os.waitstatus_to_exitcode(status[1]) == 129
    document = show(session_id, cwd=project, home=home, backend=backend)
    assert user_prompts(document)[0] == "keep this"
    assert document["status"] == "cancelled"


def test_a_home_that_cannot_be_written_offers_nothing_to_resume(
    project: Path, tmp_path: Path
) -> None:
    """AMPLIFIER_HOME is a file: each turn says it could not be stored, and leaving says
    nothing could be, exits 1 and gives no resume hint for a session that is not there."""
    home = tmp_path / "not-a-folder"
    home.write_text("a file\n")
    with interactive([], cwd=project, home=home, backend="asyncio") as term:
        term.prompt()
        term.send("first prompt")
        term.see("Error: ")
        term.prompt()
        term.child.sendeof()
        assert term.leave() == 1
    assert "Error: nothing of this session could be stored" in term.output
    assert "Resume with" not in term.output
    assert home.read_text() == "a file\n"


def test_delete_asks_on_a_terminal_and_no_keeps_the_session(
    backend: str, project: Path, home: Path
) -> None:
    """On a terminal, delete asks first: 'n' keeps the session, 'y' deletes it."""
    session_id = earlier_session("keep me?", cwd=project, home=home, backend=backend)
    with interactive(
        ["session", "delete", session_id], cwd=project, home=home, backend=backend
    ) as term:
        term.see(f"Delete session {session_id}?")
        term.send("n")
        term.see("Nothing deleted.")
        assert term.leave() == 0  # the user chose: not a failure
    assert show(session_id, cwd=project, home=home, backend=backend)["session_id"] == session_id
    with interactive(
        ["session", "delete", session_id], cwd=project, home=home, backend=backend
    ) as term:
        term.see(f"Delete session {session_id}?")
        term.send("y")
        term.see(f"Deleted {session_id}")
        assert term.leave() == 0
