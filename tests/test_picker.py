"""Picking a session to resume at the terminal: `session resume` with no ID, `continue --pick`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .test_cli_interactive import interactive
from .test_cli_process import amp

QUESTION = re.compile(r"Resume which session\? \[1-(\d+), Enter: 1, q: none\] ")


def _run(prompt: str, *, cwd: Path, home: Path) -> str:
    done = amp("run", prompt, "--json", cwd=cwd, home=home)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["session_id"])


@pytest.fixture
def used(home: Path, project: Path) -> tuple[str, str]:
    """Two sessions: the older one resumed since, so it is the one used last."""
    older = _run("the older one", cwd=project, home=home)
    newer = _run("the newer one", cwd=project, home=home)
    assert amp("session", "resume", older, "again", cwd=project, home=home).returncode == 0
    return older, newer


def test_resume_without_id_offers_sessions_by_last_use(
    used: tuple[str, str], home: Path, project: Path
) -> None:
    """`session resume` lists the recent sessions, used last first; a number resumes that one."""
    older, newer = used
    with interactive(["session", "resume"], cwd=project, home=home, backend="asyncio") as term:
        term.expect(re.escape(older) + r".*\r\n.*" + re.escape(newer))
        assert term.expect(QUESTION).group(1) == "2"
        term.send("2")
        assert term.session_id() == newer
        term.prompt()
        term.send("/exit")
        assert term.leave() == 0
    assert re.search(r"(?m)^ 1  " + re.escape(older), term.output)
    assert re.search(r"(?m)^ 2  " + re.escape(newer), term.output)


def test_continue_pick_with_a_prompt_answers_in_the_chosen_session(
    used: tuple[str, str], home: Path, project: Path
) -> None:
    """`continue --pick PROMPT`: Enter takes the first offered, and the turn runs there."""
    older, _ = used
    args = ["continue", "--pick", "what next?"]
    with interactive(args, cwd=project, home=home, backend="trio") as term:
        term.expect(QUESTION)
        term.send("")
        term.see("You asked: what next?")
        term.see(f"Session: {older}")
        assert term.leave() == 0


def test_declining_the_pick_resumes_nothing(
    used: tuple[str, str], home: Path, project: Path
) -> None:
    """A wrong answer is asked again; q leaves with status 0 and nothing resumed."""
    with interactive(["session", "resume"], cwd=project, home=home, backend="asyncio") as term:
        term.expect(QUESTION)
        term.send("7")
        term.see("Type a number from 1 to 2, or q.")
        term.expect(QUESTION)
        term.send("q")
        term.see("Nothing resumed.")
        assert term.leave() == 0


@pytest.mark.parametrize("args", [("session", "resume"), ("continue", "--pick")])
def test_picking_without_a_terminal_is_a_usage_error(
    home: Path, project: Path, args: tuple[str, ...]
) -> None:
    """With no terminal to ask on, no ID is a usage error: exit 2 and one line."""
    _run("something", cwd=project, home=home)
    done = amp(*args, cwd=project, home=home)
    assert done.returncode == 2
    assert done.stderr.startswith("Error: no session ID: give one")
    assert len(done.stderr.strip().splitlines()) == 1
