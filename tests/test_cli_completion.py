"""Completion and parsing of what is typed: shell completion of the commands' arguments,
slash commands and their arguments, and ``@path`` mentions (called directly: fast)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import amplifier
from amplifier.cli import _slash
from amplifier.cli._complete import complete_agent, complete_profile, complete_session
from amplifier.cli._interactive import Names
from amplifier.cli._mentions import MAX_BYTES, attach, complete_path

from .test_cli_interactive import AMPLIFIER


@pytest.fixture
def sessions(project: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two sessions of the project, the second named "auth fix"; run from the project."""
    monkeypatch.chdir(project)

    async def make() -> list[str]:
        made = []
        async with amplifier.open_runtime(cwd=project, durability="none") as rt:
            for name in (None, "auth fix"):
                async with rt.open_session(name=name) as session:
                    await session.ask("look at the login code")
                    made.append(session.id)
        return made

    return anyio.run(make)


def test_shell_completion_offers_session_ids_with_their_name(sessions: list[str]) -> None:
    """Tab after 'session show' offers this project's ids, the named one described by its name."""
    offered = dict(complete_session(""))
    assert offered[sessions[1]] == "auth fix"
    assert offered[sessions[0]] == "look at the login code"


def test_shell_completion_completes_an_id_prefix_and_a_name(sessions: list[str]) -> None:
    """A typed id prefix or the start of a name narrows the offer to that session."""
    prefix = sessions[1][:-3]
    assert [value for value, _ in complete_session(prefix)] == [sessions[1]]
    assert complete_session("auth") == [("auth fix", sessions[1])]


def test_shell_completion_without_a_store_offers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sessions yet (no store at all): nothing offered, and no error."""
    monkeypatch.setenv("AMPLIFIER_HOME", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    assert complete_session("") == []


def test_shell_completion_offers_agents_and_profiles(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--agent offers the agents, the project's own too; --profile the profiles."""
    agents = project / ".amplifier" / "agents"
    agents.mkdir(parents=True)
    (agents / "reviewer.md").write_text("---\nname: reviewer\n---\nReview the code.\n")
    monkeypatch.chdir(project)
    assert "explorer" in complete_agent("")
    assert complete_agent("rev") == ["reviewer"]
    assert "base" in complete_profile("")
    assert complete_profile("zzz") == []


def test_installed_shell_completion_offers_session_ids(
    sessions: list[str], project: Path, home: Path
) -> None:
    """The installed command, asked as bash asks it, answers with the session ids."""
    env = {
        **os.environ,
        "AMPLIFIER_HOME": str(home),
        "_AMPLIFIER_COMPLETE": "complete_bash",
        "COMP_WORDS": "amplifier session show ",
        "COMP_CWORD": "3",
    }
    done = subprocess.run(
        [str(AMPLIFIER)], cwd=project, env=env, capture_output=True, text=True, timeout=30
    )
    assert set(sessions) <= set(done.stdout.split())


# -- slash commands ----------------------------------------------------------------


def _chat(root: Path, **names: Any) -> Any:
    return SimpleNamespace(names=Names(**names), root=root)


@pytest.mark.parametrize(
    "text",
    [
        "/delegate explorer: look",
        "/tool read_file {}",
        "/fail boom",
        "/sleep 5",
        "/etc/hosts: what is this?",
        "hello /cost",
        "/exit status 137 from my container\nWhat does this mean?",
        "/help\nplease explain",
    ],
)
def test_model_directives_and_paths_are_prompts(text: str) -> None:
    """The offline provider's directives, a path, and text of several lines (a paste) that
    starts like a command are sent to the model, not run here."""
    assert _slash.parse(text) is None


def test_slash_command_is_parsed_with_its_argument() -> None:
    """'/rename auth fix' is the rename command with 'auth fix'; /QUIT is /exit."""
    command, _, argument = _slash.parse("/rename auth fix") or (None, "", "")
    assert command is not None
    assert (command.name, argument) == ("rename", "auth fix")
    quit_ = _slash.parse("/QUIT")
    assert quit_ is not None
    assert quit_[0] is not None
    assert quit_[0].name == "exit"


def test_unknown_slash_command_names_every_known_one() -> None:
    """An unknown command's message lists every command."""
    parsed = _slash.parse("/cots")
    assert parsed is not None
    assert parsed[0] is None
    message = _slash.unknown(parsed[1])
    assert all(f"/{command.name}" in message for command in _slash.COMMANDS)


def test_completion_of_a_slash_command(tmp_path: Path) -> None:
    """'/re' offers /resume, /rename and /rewind, each replacing what was typed."""
    offered = list(_slash.completions("/re", _chat(tmp_path)))
    assert [(text, start) for text, start, _ in offered] == [
        ("/resume", -3),
        ("/rename", -3),
        ("/rewind", -3),
    ]


def test_completion_of_command_arguments(tmp_path: Path) -> None:
    """/agent offers agents, /model the profile's models, /resume ids and names (spaces too),
    /tag the tags to remove."""
    chat = _chat(
        tmp_path,
        agents=["default", "explorer"],
        models=["gpt-5.4", "gpt-5.4-mini"],
        sessions=[("20261201T0000Z-aa", "auth fix"), ("auth fix", "20261201T0000Z-aa")],
        tags=["security"],
    )
    assert [t for t, _, _ in _slash.completions("/agent ex", chat)] == ["explorer"]
    assert [t for t, _, _ in _slash.completions("/model gpt-5.4-", chat)] == ["gpt-5.4-mini"]
    assert [(t, s) for t, s, _ in _slash.completions("/resume auth f", chat)] == [("auth fix", -6)]
    assert [t for t, _, _ in _slash.completions("/tag +x -", chat)] == ["-security"]


def test_completion_of_a_path_mention(tmp_path: Path) -> None:
    """'@sr' offers the folder src/, '@src/m' the file in it; hidden files only when asked."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("")
    (tmp_path / ".env").write_text("")
    chat = _chat(tmp_path)
    assert [t for t, _, _ in _slash.completions("read @sr", chat)] == ["@src/"]
    assert [t for t, _, _ in _slash.completions("read @src/m", chat)] == ["@src/main.py"]
    assert [t for t, _, _ in _slash.completions("@", chat)] == ["@src/"]
    assert [t for t, _, _ in _slash.completions("@.e", chat)] == ["@.env"]


def test_completion_offers_no_name_a_mention_cannot_hold(tmp_path: Path) -> None:
    """A mention ends at a space: 'my notes.txt' is not offered for '@my' (it would attach
    nothing), 'my_notes.txt' is."""
    (tmp_path / "my notes.txt").write_text("")
    (tmp_path / "my_notes.txt").write_text("")
    chat = _chat(tmp_path)
    assert [t for t, _, _ in _slash.completions("read @my", chat)] == ["@my_notes.txt"]


# -- @path -------------------------------------------------------------------------


def test_mention_attaches_the_file_once(tmp_path: Path) -> None:
    """A file mentioned twice is attached once, after the prompt; punctuation is no part of it."""
    (tmp_path / "a.py").write_text("print('a')\n")
    result = attach("compare @a.py, then @a.py again", tmp_path)
    assert result.attached == ["a.py"]
    assert result.prompt == (
        "compare @a.py, then @a.py again\n\n<file path=\"a.py\">\nprint('a')\n\n</file>"
    )


def test_mention_of_a_large_file_is_cut_with_a_note(tmp_path: Path) -> None:
    """A file over the limit is cut there; the attachment and the person both say so."""
    (tmp_path / "big.txt").write_text("x" * (MAX_BYTES + 10))
    result = attach("@big.txt", tmp_path)
    assert f"[cut: the first {MAX_BYTES:,} of {MAX_BYTES + 10:,} bytes]" in result.prompt
    assert result.notes == [f"@big.txt: {MAX_BYTES + 10:,} bytes; only the first 100,000 attached"]


def test_mention_leaving_the_project_is_refused(tmp_path: Path) -> None:
    """A path out of the project, or a link pointing out, is not read."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "secret").write_text("s3cret")
    (project / "link").symlink_to(tmp_path / "secret")
    result = attach("@../secret and @link", project)
    assert result.prompt == "@../secret and @link"
    assert result.notes == [
        "@../secret: outside the project; not attached",
        "@link: outside the project; not attached",
    ]


def test_mention_of_nothing_or_an_email_stays_as_typed(tmp_path: Path) -> None:
    """'mail me@example.com' has no mention; '@nosuch' is left as typed, with a note."""
    assert attach("mail me@example.com", tmp_path).notes == []
    result = attach("see @nosuch", tmp_path)
    assert (result.prompt, result.notes) == (
        "see @nosuch",
        ["@nosuch: no such file in the project; left as typed"],
    )


def test_mention_of_a_binary_file_is_not_attached(tmp_path: Path) -> None:
    """A file with NUL bytes is not text: not attached, and the person is told."""
    (tmp_path / "image.png").write_bytes(b"\x89PNG\x00\x00")
    result = attach("@image.png", tmp_path)
    assert (result.attached, result.notes) == ([], ["@image.png: not a text file; not attached"])


@pytest.mark.timeout(10)
def test_mention_of_what_no_file_can_be_named_or_a_fifo_is_not_attached(tmp_path: Path) -> None:
    """A name too long for the file system, or holding a NUL, names nothing: left as typed.
    A FIFO is not read (that would wait for a writer for ever): not attached, with a note.
    Completing such a name offers nothing."""
    os.mkfifo(tmp_path / "pipe")
    long = "a" * 300
    result = attach(f"see @{long} and @a\x00b and @pipe", tmp_path)
    assert result.prompt == f"see @{long} and @a\x00b and @pipe"
    assert result.notes == [
        f"@{long}: no such file in the project; left as typed",
        "@a\x00b: no such file in the project; left as typed",
        "@pipe: not a regular file; not attached",
    ]
    assert complete_path("a\x00b/", tmp_path) == []
    assert complete_path(long + "/", tmp_path) == []
