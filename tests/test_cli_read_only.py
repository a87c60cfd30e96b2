"""Reading commands write nothing: an empty home stays empty, a read-only store still reads.

Run through the installed ``amplifier`` command. As root, permission bits do
not bind, so there the command runs without the capabilities that bypass them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import session_dirs

AMPLIFIER = Path(sys.executable).parent / "amplifier"
_UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def amp(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prefix = _UNPRIVILEGED if os.geteuid() == 0 else []
    done = subprocess.run(
        [*prefix, str(AMPLIFIER), *args],
        cwd=cwd,
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return {**os.environ, "AMPLIFIER_HOME": str(home), "NO_COLOR": "1"}


def _contents(path: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def _set_writable(path: Path, writable: bool) -> None:
    for item in [path, *path.rglob("*")]:
        mode = item.stat().st_mode
        item.chmod(mode | 0o200 if writable else mode & ~0o222)


@pytest.fixture
def read_only_home(home: Path, project: Path, env: dict[str, str]) -> Iterator[str]:
    """A home holding one session (``hello there``), then made read-only; its session id."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot bind")
    done = amp("run", "hello there", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    (session_id,) = session_dirs(home)
    _set_writable(home, False)
    try:
        yield session_id
    finally:
        _set_writable(home, True)


@pytest.mark.parametrize(
    "args",
    [
        ("session", "list"),
        ("session", "list", "--all", "--tree"),
        ("session", "show", "2026"),
        ("session", "search", "hello"),
    ],
)
def test_reading_an_empty_home_creates_nothing(
    tmp_path: Path, project: Path, env: dict[str, str], args: tuple[str, ...]
) -> None:
    """`session list/show/search` with no sessions yet leave no ~/.amplifier behind."""
    user = tmp_path / "user"
    user.mkdir()
    env = {**env, "HOME": str(user)}
    del env["AMPLIFIER_HOME"]
    amp(*args, cwd=project, env=env)
    assert list(user.iterdir()) == []


def test_read_only_store_lists_its_sessions(
    read_only_home: str, home: Path, project: Path, env: dict[str, str]
) -> None:
    """`session list` on a home that cannot be written lists what it holds, and writes nothing."""
    (home / "index.sqlite3").unlink(missing_ok=True)
    before = _contents(home)
    done = amp("session", "list", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    assert read_only_home in done.stdout
    assert '"hello there"' in done.stdout
    assert done.stderr == ""
    assert _contents(home) == before


def test_read_only_store_shows_a_session(
    read_only_home: str, home: Path, project: Path, env: dict[str, str]
) -> None:
    """`session show PREFIX` on a home that cannot be written shows the transcript."""
    done = amp("session", "show", read_only_home[:20], cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    assert "You asked: hello there" in done.stdout
    assert done.stderr == ""


def test_read_only_store_searches_its_sessions(
    read_only_home: str, home: Path, project: Path, env: dict[str, str]
) -> None:
    """`session search` on a home that cannot be written finds the words it holds."""
    done = amp("session", "search", "hello", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    assert read_only_home in done.stdout
    assert "hello" in done.stdout


def test_read_only_store_refuses_a_turn_in_one_line(
    read_only_home: str, home: Path, project: Path, env: dict[str, str]
) -> None:
    """`continue` on a home that cannot be written: one error line, no false reassurance."""
    before = _contents(home)
    done = amp("continue", "more", cwd=project, env=env)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: ")
    assert "Permission denied" in done.stderr
    assert _contents(home) == before


@pytest.mark.filterwarnings("default::amplifier.StoreWarning")
def test_a_session_folder_that_cannot_be_written_fails_only_that_session(
    home: Path, project: Path, env: dict[str, str]
) -> None:
    """A session whose folder cannot be written fails to resume, and the journal of that
    attempt waits to be replayed: the other sessions of the home are resumed, renamed,
    tagged and deleted meanwhile (with a warning), and once the folder can be written
    again the journal is replayed and the session resumes."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot bind")
    for prompt in ("session B", "session A", "session C"):
        done = amp("run", prompt, cwd=project, env=env)
        assert done.returncode == 0, done.stderr
    by_prompt = {
        json.loads((folder / "metadata.json").read_text())["last_prompt"]: folder
        for folder in session_dirs(home).values()
    }
    blocked, other, gone = by_prompt["session A"], by_prompt["session B"], by_prompt["session C"]
    blocked.chmod(0o500)  # its files can be written, but nothing created or replaced in it
    try:
        done = amp("session", "resume", blocked.name, "two", cwd=project, env=env)
        assert done.returncode == 1
        for args in (
            ("session", "rename", other.name, "renamed"),
            ("session", "tag", other.name, "+kept"),
            ("session", "resume", other.name, "more"),
            ("session", "delete", gone.name, "--yes"),
        ):
            done = amp(*args, cwd=project, env=env)
            assert done.returncode == 0, (args, done.stderr)
            assert "were not replayed" in done.stderr
    finally:
        blocked.chmod(0o700)
    assert not gone.exists()
    meta = json.loads((other / "metadata.json").read_text())
    assert (meta["name"], meta["tags"], meta["last_prompt"]) == ("renamed", ["kept"], "more")
    done = amp("session", "resume", blocked.name, "three", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads((blocked / "metadata.json").read_text())["last_prompt"] == "three"
    assert not list((home / "journal").glob("*.journal"))
