"""Session features through the installed ``amplifier`` command: last use, search, names, tags."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .helpers import session_dirs
from .test_cli_process import amp


def _run(prompt: str, *, cwd: Path, home: Path, extra: tuple[str, ...] = ()) -> str:
    done = amp("run", prompt, "--json", *extra, cwd=cwd, home=home)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["session_id"])


def _ids(listing: str) -> list[str]:
    return [row["session_id"] for row in json.loads(listing)]


# -- last use ---------------------------------------------------------------------------


def test_continue_takes_the_session_used_last(home: Path, project: Path) -> None:
    """Run A, run B, resume A: `continue` goes on in A, the one used last, not B."""
    first = _run("first", cwd=project, home=home)
    _run("second", cwd=project, home=home)
    assert amp("session", "resume", first, "again", cwd=project, home=home).returncode == 0
    done = amp("continue", "and now?", "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session_id"] == first


def test_continue_says_the_newest_is_damaged_and_resumes_it(home: Path, project: Path) -> None:
    """The last used session's metadata is damaged: one line says so; no older one is taken."""
    _run("older", cwd=project, home=home)
    newest = _run("newest", cwd=project, home=home)
    (session_dirs(home)[newest] / "metadata.json").write_text("{ not json")
    done = amp("continue", "go on", "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session_id"] == newest
    notes = [line for line in done.stderr.splitlines() if newest in line]
    assert len(notes) == 1
    assert "damaged" in notes[0]
    assert "rebuilds" in notes[0]


def test_list_sorts_by_last_use_on_request(home: Path, project: Path) -> None:
    """`session list --sort used` puts the session used last first; the default stays created."""
    first = _run("first", cwd=project, home=home)
    second = _run("second", cwd=project, home=home)
    assert amp("session", "resume", first, "again", cwd=project, home=home).returncode == 0
    by_use = amp("session", "list", "--sort", "used", "--json", cwd=project, home=home)
    by_creation = amp("session", "list", "--json", cwd=project, home=home)
    assert _ids(by_use.stdout) == [first, second]
    assert _ids(by_creation.stdout) == [second, first]
    table = amp("session", "list", "--sort", "used", cwd=project, home=home).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "Created", "Used"]


# -- search -----------------------------------------------------------------------------


def test_search_finds_prompts_answers_and_tool_output(home: Path, project: Path) -> None:
    """`session search` finds a word in a prompt, in an answer and in a tool's output."""
    (project / "login.py").write_text('query = "SELECT * FROM users WHERE name=" + name\n')
    prompted = _run("is there sql injection in the login form?", cwd=project, home=home)
    read = _run('/tool read_file {"path": "login.py"}', cwd=project, home=home)
    done = amp("session", "search", "sql injection", "--json", cwd=project, home=home)
    hits = json.loads(done.stdout)
    assert {(hit["session_id"], hit["role"]) for hit in hits} == {
        (prompted, "user"),
        (prompted, "assistant"),
    }
    users = json.loads(amp("session", "search", "users", "--json", cwd=project, home=home).stdout)
    assert (read, "tool", "read_file") in {(h["session_id"], h["role"], h["tool"]) for h in users}


def test_search_shows_sub_session_hits_under_their_root(home: Path, project: Path) -> None:
    """A match in a sub-session is shown under its root, with the sub-session's id and agent."""
    root = _run("/delegate explorer: audit the password reset flow", cwd=project, home=home)
    done = amp("session", "search", "password reset", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(root)
    child = next(line for line in lines if "└─" in line)
    assert "_explorer [explorer]" in child
    below = lines[lines.index(child) + 1 :]
    pattern = re.compile(r"    #\d+ user: audit the \*\*password\*\* \*\*reset\*\* flow")
    assert any(pattern.fullmatch(line) for line in below), below


def test_search_keeps_to_this_project_unless_all(home: Path, project: Path, tmp_path: Path) -> None:
    """Without --all only this project's sessions match; with --all every project's do."""
    other = tmp_path / "other"
    other.mkdir()
    here = _run("a zebra here", cwd=project, home=home)
    there = _run("a zebra there", cwd=other, home=home)
    local = amp("session", "search", "zebra", "--json", cwd=project, home=home)
    everywhere = amp("session", "search", "zebra", "--all", "--json", cwd=project, home=home)
    assert {hit["session_id"] for hit in json.loads(local.stdout)} == {here}
    assert {hit["session_id"] for hit in json.loads(everywhere.stdout)} == {here, there}


def test_search_without_a_word_is_a_usage_error(home: Path, project: Path) -> None:
    """A query of punctuation only exits 2 with one line saying what is wrong."""
    done = amp("session", "search", '"" * -', cwd=project, home=home)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("Error: nothing to search for")
    assert len(done.stderr.strip().splitlines()) == 1
