"""Interactive mode's line editor and slash commands, driven through a real pseudo-terminal.

Keys, a bracketed paste, history across runs, completion, ``@path`` and each
slash command, as a person types them. What depends on the event loop (the
editor's thread, Ctrl-C, signals) runs on asyncio and trio here and in
tests/test_cli_interactive.py; what the commands do is the same on both
(the API under them is tested on both), so those run once, on asyncio.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from .fake_llm_server import FakeLLMServer, Text
from .helpers import events, metadata, session_dirs, transcript
from .test_cli_interactive import (
    AMPLIFIER,
    _env,
    cli,
    earlier_session,
    forks_with_threads,
    interactive,
)
from .trusted import trusted

ENTER = "\r"
PASTE = "\x1b[200~{}\x1b[201~"
ASYNCIO = "asyncio"


def prompts(home: Path, session_id: str) -> list[str]:
    """The prompts the session stored, from its transcript file (none before the first; a
    session left without any is not kept)."""
    folder = session_dirs(home).get(session_id)
    if folder is None or not (folder / "transcript.jsonl").exists():
        return []
    return [r["content"] for r in transcript(home, session_id) if r["role"] == "user"]


@pytest.fixture
def llm(project: Path) -> Iterator[FakeLLMServer]:
    """A local model server that the project's ``slow`` profile (model ``m``) answers through."""
    with FakeLLMServer() as server:
        profiles = project / ".amplifier" / "profiles"
        profiles.mkdir(parents=True)
        (profiles / "slow.yaml").write_text(
            f"provider: {{kind: openai, base_url: '{server.openai_base_url}', model: m, "
            "timeout: 60, max_retries: 0}\n"
        )
        trusted(project)
        yield server


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The event loop the CLI runs on (the line editor runs in a thread of its own)."""
    return str(request.param)


def test_emacs_keys_edit_the_line(project: Path, home: Path) -> None:
    """Ctrl-A goes to the start of the line, Ctrl-K cuts to its end: the edited line is sent."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.child.send("world and more\x1b[D")  # Left arrow, no ^[[D in the line
        term.child.send("\x01hello \x05\x08\x08\x08\x08\x08\x08\x08\x08\x08")  # ^A, ^E, 9 x BS
        term.child.send(ENTER)
        term.see("You asked: hello world")
        term.prompt()
        term.child.sendeof()
        assert term.leave() == 0
    assert prompts(home, session_id) == ["hello world"]


def test_bracketed_paste_is_one_prompt(project: Path, home: Path) -> None:
    """Three pasted lines, then Enter: one turn whose prompt holds all three lines."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.child.send(PASTE.format("first line\nsecond line\nthird line"))
        term.child.send(ENTER)
        term.see("This session has seen 1 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, session_id) == ["first line\nsecond line\nthird line"]


def test_escape_enter_starts_a_new_line(project: Path, home: Path) -> None:
    """Esc-Enter adds a line to the prompt; Enter sends both lines as one prompt."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.child.send("one\x1b\rtwo" + ENTER)
        term.see("This session has seen 1 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, session_id) == ["one\ntwo"]


def test_multi_line_delegate_pasted_runs_both_delegations(project: Path, home: Path) -> None:
    """The README's two-line /delegate prompt, pasted: one turn, two sub-sessions."""
    lines = "/delegate explorer: look at a\n/delegate explorer: look at b"
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.child.send(PASTE.format(lines) + ENTER)
        term.see("This session has seen 1 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, session_id) == [lines]
    assert len(session_dirs(home)) == 3  # the session and its two sub-sessions


def test_history_comes_back_in_the_next_run(project: Path, home: Path) -> None:
    """A prompt typed in one run is there with Up in the next run in the same project."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.prompt()
        term.ask("remember this prompt")
        term.child.sendeof()
        assert term.leave() == 0
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.prompt()
        term.child.send("\x1b[A" + ENTER)  # Up, Enter
        term.see("You asked: remember this prompt")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


def test_ctrl_r_finds_an_earlier_prompt(project: Path, home: Path) -> None:
    """Ctrl-R and a few letters find an earlier prompt; Enter takes it, Enter sends it."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.prompt()
        term.ask("the needle prompt")
        term.ask("something else")
        term.child.send("\x12needle")
        term.see("needle")
        term.child.send(ENTER + ENTER)
        term.see("You asked: the needle prompt")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


def test_history_file_is_owner_only_and_holds_no_key(project: Path, home: Path) -> None:
    """A key typed in a prompt is not written to the history, and only its owner reads it."""
    key = "sk-proj-" + "A1b2C3d4" * 5
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.prompt()
        term.ask(f"use the key {key} please")
        term.send("/exit")
        assert term.leave() == 0
    (path,) = (home / "history").iterdir()
    text = path.read_text()
    assert "use the key [REDACTED] please" in text
    assert key not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_history_file_that_cannot_be_kept_leaves_the_history_in_memory(
    project: Path, home: Path
) -> None:
    """A folder where the history file belongs: one warning line, and the prompts are
    answered and remembered (Up brings the last one back) for the rest of the run."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.prompt()
        term.ask("first")
        term.send("/exit")
        assert term.leave() == 0
    (path,) = (home / "history").iterdir()
    path.unlink()
    path.mkdir()
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.see(f"Warning: the prompt history cannot be kept in {path}: Is a directory;")
        term.prompt()
        term.ask("second")
        term.child.send("\x1b[A" + ENTER)  # Up: the prompt typed before
        term.see("This session has seen 2 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert term.output.count("Warning: the prompt history") == 1
    assert prompts(home, session_id) == ["second", "second"]
    assert path.is_dir()


def test_tab_completes_a_slash_command(project: Path, home: Path) -> None:
    """'/cos' and Tab becomes /cost, which shows the session's usage."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.prompt()
        term.child.send("/cos\t")
        term.see("t")  # what completion added
        term.child.send(ENTER)
        term.see("Usage:")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


def test_path_mention_outside_the_project_is_not_attached(project: Path, home: Path) -> None:
    """@../secret.txt is refused with a note; the prompt goes as typed."""
    (project.parent / "secret.txt").write_text("do not send\n")
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.send("what is in @../secret.txt")
        term.see("@../secret.txt: outside the project; not attached")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, session_id) == ["what is in @../secret.txt"]


# -- slash commands ------------------------------------------------------------------


def test_unknown_slash_command_is_not_sent_and_lists_the_known(project: Path, home: Path) -> None:
    """/cots says it is unknown and names the commands; the model is not asked."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.send("/cots")
        term.see("Unknown command /cots. Commands: /help, /cost, /model")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, session_id) == []


def test_cost_shows_tokens_of_the_session_and_its_tree(project: Path, home: Path) -> None:
    """/cost after a delegating turn: the session's tokens, and its tree's."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.prompt()
        term.ask("/delegate explorer: look around")
        term.send("/cost")
        term.expect(r"Usage: +\d+ in / \d+ out tokens, 2 model call\(s\)")
        term.expect(r"with sub-sessions: \d+ in / \d+ out, 3 call\(s\)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


@forks_with_threads
def test_model_switches_the_model_of_the_next_turn(
    project: Path, home: Path, llm: FakeLLMServer
) -> None:
    """/model names the models of the profile; /model NAME makes the next turn ask NAME."""
    llm.plan(Text(pieces=("answered",)))
    with interactive(["--profile", "slow"], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.send("/model")
        term.see("Model: openai/m. Models the profile names: m.")
        term.prompt()
        term.send("/model bigger-model")
        term.see("Model: bigger-model from the next turn (was openai/m).")
        term.prompt()
        term.send("hello")
        term.see("answered")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert [request.body["model"] for request in llm.requests] == ["bigger-model"]
    assert metadata(home, session_id)["attributes"]["model"] == "bigger-model"


def test_model_of_the_offline_provider_cannot_change(project: Path, home: Path) -> None:
    """The offline provider has one model: /model NAME says so and changes nothing."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.ask("hello")  # a session without a prompt is not kept
        term.send("/model other")
        term.see("Error: the offline provider has one model")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert metadata(home, session_id)["attributes"]["model"] == "offline"


def test_agent_lists_agents_and_starts_a_session_with_another(project: Path, home: Path) -> None:
    """/agent names the agents; /agent explorer opens a new session of that agent."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        first = term.session_id()
        term.prompt()
        term.send("/agent")
        term.see("Agent: default. Agents: ")
        term.see("explorer")
        term.prompt()
        term.ask("a question for the default agent")
        term.send("/agent explorer")
        second = term.session_id()
        term.see(f"the previous one stays resumable: {first}")
        term.prompt()
        term.ask("a question for the explorer")
        term.send("/exit")
        assert term.leave() == 0
    assert second != first
    assert f"Resume with: amplifier session resume {second}" in term.output
    assert metadata(home, second)["agent"] == "explorer"


def test_tools_lists_the_agents_tools(project: Path, home: Path) -> None:
    """/tools names the agent's tools and says which ask before they run."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.prompt()
        term.send("/tools")
        term.see("Tools of agent default (profile base):")
        term.expect(r"read_file +\S")
        term.expect(r"bash +.*\(asks first, unless a rule allows it\)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0


def test_compact_summarises_and_the_next_turn_sees_only_the_summary(
    project: Path, home: Path
) -> None:
    """/compact asks for a summary; the next turn's model sees it, not the turns before."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.ask("first question")
        term.ask("second question")
        term.send("/compact")
        term.see("(compacted: the next turns see this summary")
        term.prompt()
        term.send("after compacting")
        term.see("This session has seen 2 prompt(s)")  # the request to compact, and this one
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert len(prompts(home, session_id)) == 4  # the transcript keeps every prompt
    assert [r.get("summary") for r in transcript(home, session_id)].count(True) == 1


def test_clear_starts_a_new_session_and_keeps_the_old(project: Path, home: Path) -> None:
    """/clear: the next prompt goes to a new session; the old one keeps its turn."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        first = term.session_id()
        term.prompt()
        term.ask("in the first")
        term.send("/clear")
        second = term.session_id()
        term.see(f"The previous one stays resumable: /resume {first}")
        term.prompt()
        term.send("in the second")
        term.see("This session has seen 1 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, first) == ["in the first"]
    assert prompts(home, second) == ["in the second"]
    assert metadata(home, first)["status"] == "completed"


def test_sessions_opened_by_clear_or_agent_and_left_unused_are_not_kept(
    project: Path, home: Path
) -> None:
    """`amplifier`, `/clear`, `/agent explorer`, `/clear`, then Ctrl-D: none of the four
    sessions got a prompt, and none is kept (as `amplifier` then Ctrl-D keeps none), nor
    is a resume hint given; the one given a prompt, and one resumed, are kept."""
    earlier = earlier_session("the earlier question", cwd=project, home=home, backend=ASYNCIO)
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.session_id()
        term.prompt()
        for command in ("/clear", "/agent explorer", "/clear"):
            term.send(command)
            term.session_id()
            term.prompt()
        assert "stays resumable" not in term.output
        term.child.sendeof()
        assert term.leave() == 0
    assert "Resume with" not in term.output
    assert list(session_dirs(home)) == [earlier]
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.session_id()
        term.prompt()
        term.ask("kept")
        term.send("/clear")
        term.session_id()
        term.prompt()
        term.send(f"/resume {earlier}")
        term.session_id()
        term.prompt()
        term.send("/clear")
        term.session_id()
        term.prompt()
        term.child.sendeof()
        assert term.leave() == 0
    assert "Resume with" not in term.output
    kept = {prompts(home, session_id)[0] for session_id in session_dirs(home)}
    assert kept == {"the earlier question", "kept"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_while_a_command_asks_leaves_without_an_answer(
    project: Path, home: Path, signum: int
) -> None:
    """SIGTERM or SIGHUP while /resume asks which session: the question is dropped, nothing
    is resumed, and the program leaves as it does at the prompt (128 + the signal)."""
    earlier_session("the earlier question", cwd=project, home=home, backend=ASYNCIO)
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.ask("mine")
        term.send("/resume")
        term.see("Resume which session?")
        term.child.kill(signum)
        assert term.leave() == 128 + signum
    assert metadata(home, session_id)["status"] == "cancelled"
    assert term.output.count("Amplifier: session") == 1  # nothing resumed


def test_resume_picks_another_session(project: Path, home: Path) -> None:
    """/resume lists the recent sessions; typing 1 switches to the one used last."""
    earlier = earlier_session("the earlier question", cwd=project, home=home, backend=ASYNCIO)
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        term.session_id()
        term.prompt()
        term.send("/resume")
        term.see("Resume which session? [1-1, Enter: 1, q: none]")
        term.send("1")
        assert term.session_id() == earlier
        term.see("> the earlier question")  # its recent history
        term.prompt()
        term.send("and now?")
        term.see("This session has seen 2 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert f"Resume with: amplifier session resume {earlier}" in term.output


def test_rename_and_tag_label_the_open_session(project: Path, home: Path) -> None:
    """/rename and /tag change the session that is open, as list then shows."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.send("/rename auth fix")
        term.see("Named: auth fix")
        term.prompt()
        term.send("/tag +security +draft")
        term.see("Tags: #security #draft")
        term.prompt()
        term.send("/tag -draft")
        term.see("Tags: #security")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    meta = metadata(home, session_id)
    assert (meta["name"], meta["tags"]) == ("auth fix", ["security"])


def test_rename_clear_takes_the_name_away(project: Path, home: Path) -> None:
    """/rename --clear takes the session's name away, as `session rename ID --clear` does;
    it is no name of its own."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.ask("keep me")
        term.send("/rename auth fix")
        term.see("Named: auth fix")
        term.prompt()
        term.send("/rename --clear")
        term.see("The session has no name now.")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert metadata(home, session_id).get("name") is None


def _write(path: str, content: str) -> str:
    return f"/tool write_file {json.dumps({'file_path': path, 'content': content})}"


def test_diff_shows_and_rewind_restores_the_files_changed(project: Path, home: Path) -> None:
    """/diff shows the file a turn wrote; /rewind, answered y, removes it, and the
    session goes on."""
    with interactive(["--yes"], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.ask(_write("made.txt", "new content\n"))
        assert (project / "made.txt").exists()
        term.send("/diff")
        term.see("made.txt  created  +1 -0")
        term.see("+new content")
        term.prompt()
        term.send("/rewind")
        term.see("Rewind 1 file(s)? [y/N]")
        term.send("y")
        term.see("Removed made.txt")
        term.prompt()
        term.send("still here?")
        term.see("This session has seen 2 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert not (project / "made.txt").exists()
    assert [e["event"] for e in events(home, session_id)].count("session:rewind") == 1


def test_slash_commands_work_with_piped_lines(project: Path, home: Path) -> None:
    """With stdin piped, /rename and /cost run, and only the prompt reaches the model."""
    done = cli([], cwd=project, home=home, backend=ASYNCIO, stdin="/rename piped\nhi\n/cost\n/no\n")
    session_id = done.stderr.split("Amplifier: session ")[1].split()[0]
    assert "Named: piped" in done.stderr
    assert "Usage:" in done.stdout
    assert "Unknown command /no" in done.stderr
    assert prompts(home, session_id) == ["hi"]
    assert metadata(home, session_id)["name"] == "piped"


def test_a_command_given_what_it_does_not_take_does_nothing_and_says_so(
    project: Path, home: Path
) -> None:
    """`/exit now please` does not leave, `/clear all` opens no session, `/diff foo` shows
    nothing: each says what it takes, and the session goes on."""
    stdin = "hi\n/exit now please\n/clear all\n/diff foo\nstill here\n"
    done = cli([], cwd=project, home=home, backend=ASYNCIO, stdin=stdin)
    session_id = done.stderr.split("Amplifier: session ")[1].split()[0]
    assert "Error: /exit takes nothing after it; nothing was done" in done.stderr
    assert "Error: /clear takes nothing after it; nothing was done" in done.stderr
    assert "Error: /diff takes --stat or nothing, not 'foo'" in done.stderr
    assert done.stderr.count("Amplifier: session ") == 1
    assert prompts(home, session_id) == ["hi", "still here"]


def test_bottom_line_shows_the_session_and_its_tokens(project: Path, home: Path) -> None:
    """At a terminal that reports the cursor, the bottom line names the agent and model,
    and counts the tokens after a turn."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO, cpr=True) as term:
        term.answer_cpr()
        term.see("default · offline/offline · 0 in / 0 out tokens")
        term.child.send("hello" + ENTER)
        term.see("You asked: hello")
        term.answer_cpr()
        term.expect(r"default · offline/offline · [1-9]\d* in / [1-9]\d* out tokens")
        term.child.sendeof()
        assert term.leave() == 0


def test_a_tool_question_is_answered_at_the_terminal_between_prompts(
    backend: str, project: Path, home: Path
) -> None:
    """While a turn runs the editor lets go of the terminal: a tool's question reads 'y',
    and Ctrl-C at the next question withdraws it; the prompt comes back each time."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        term.prompt()
        term.send(_write("yes.txt", "y"))
        term.see("Allow? [y]es")
        term.send("y")
        term.prompt()
        term.send(_write("no.txt", "n"))
        term.see("Allow? [y]es")
        term.child.sendintr()
        term.see("(question withdrawn: the turn was cancelled)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert (project / "yes.txt").read_text() == "y"
    assert not (project / "no.txt").exists()


def test_ctrl_c_at_a_half_typed_prompt_drops_it(backend: str, project: Path, home: Path) -> None:
    """Ctrl-C with text typed: the text is dropped, not sent, and the session goes on."""
    with interactive([], cwd=project, home=home, backend=backend) as term:
        session_id = term.session_id()
        term.prompt()
        term.child.send("half typed")
        term.child.sendintr()
        term.see("(Ctrl-C again, or Ctrl-D, to leave)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, session_id) == []


def test_ctrl_c_on_a_new_draft_after_ctrl_c_drops_it_and_stays(project: Path, home: Path) -> None:
    """Ctrl-C twice in a row leaves, but not a Ctrl-C that drops a draft typed after the
    first: that one drops it, and the program stays; Ctrl-C on the empty line then leaves."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.child.send("first draft")
        term.child.sendintr()
        term.see("(Ctrl-C again, or Ctrl-D, to leave)")
        term.prompt()
        term.child.send("a second draft")
        term.child.sendintr()
        term.see("(Ctrl-C again, or Ctrl-D, to leave)")
        term.prompt()
        term.ask("still here")
        term.child.sendintr()
        term.see("(Ctrl-C again, or Ctrl-D, to leave)")
        term.prompt()
        term.child.sendintr()
        assert term.leave() == 0
    assert prompts(home, session_id) == ["still here"]


def test_ctrl_z_at_the_prompt_does_nothing(project: Path, home: Path) -> None:
    """Ctrl-Z at the prompt neither suspends nor puts a control character in the prompt."""
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        term.child.sendcontrol("z")
        term.child.send("hello" + ENTER)
        term.see("This session has seen 1 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, session_id) == ["hello"]


def test_no_history_file_without_a_terminal(project: Path, home: Path) -> None:
    """Piped lines are not kept in the history: it holds what a person typed."""
    cli([], cwd=project, home=home, backend=ASYNCIO, stdin="a piped prompt\n")
    assert not (home / "history").exists()


def test_one_turn_at_a_terminal_never_loads_the_line_editor(project: Path, home: Path) -> None:
    """'amplifier run' in a terminal does not import prompt_toolkit (start-up time)."""
    child = pexpect.spawn(
        sys.executable,
        ["-X", "importtime", str(AMPLIFIER), "run", "hi"],
        cwd=str(project),
        env=_env(home, ASYNCIO),
        encoding="utf-8",
        timeout=30,
    )
    out = child.read()
    child.close()
    assert "You asked: hi" in out
    assert "prompt_toolkit" not in out


def test_what_the_terminal_types_is_a_prompt_whatever_its_bytes(project: Path, home: Path) -> None:
    """Bytes that are not UTF-8 become U+FFFD and the prompt is answered; a mention of a
    FIFO is not read (which would wait for ever), and one of a name too long for any file
    stays as typed: each prompt is answered and the program goes on."""
    os.mkfifo(project / "pipe")
    long = "a" * 300
    with interactive([], cwd=project, home=home, backend=ASYNCIO) as term:
        session_id = term.session_id()
        term.prompt()
        os.write(term.child.child_fd, b"ab\xffcd" + ENTER.encode())
        term.see("This session has seen 1 prompt(s)")
        term.prompt()
        term.send("look at @pipe")
        term.see("@pipe: not a regular file; not attached")
        term.see("This session has seen 2 prompt(s)")
        term.prompt()
        term.send(f"and @{long}")
        term.see("no such file in the project; left as typed")
        term.see("This session has seen 3 prompt(s)")
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert prompts(home, session_id) == ["ab\ufffdcd", "look at @pipe", f"and @{long}"]
