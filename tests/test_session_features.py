"""Session features through the installed ``amplifier`` command: last use, search, names, tags."""

from __future__ import annotations

import json
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
