"""The installed ``amplifier`` console script in real processes: pipes, exit codes, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import amplifier

from .helpers import session_dirs

AMPLIFIER = Path(sys.executable).parent / "amplifier"


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The event loop the CLI runs on (it honours AMPLIFIER_ASYNC_BACKEND)."""
    return str(request.param)


def amp(
    *args: str, cwd: Path, home: Path, backend: str = "asyncio", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMPLIFIER_HOME": str(home), "AMPLIFIER_ASYNC_BACKEND": backend}
    done = subprocess.run(
        [str(AMPLIFIER), *args],
        cwd=cwd,
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_fresh_machine_run_then_list(home: Path, project: Path, backend: str) -> None:
    """The README's first command works, and `session list` then shows that session."""
    done = amp("run", "Summarise what this runtime does", cwd=project, home=home, backend=backend)
    assert done.returncode == 0
    assert "You asked: Summarise what this runtime does" in done.stdout
    session_id = done.stderr.splitlines()[0].removeprefix("Session: ")
    listing = amp("session", "list", cwd=project, home=home, backend=backend)
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[1].startswith(session_id)
    assert '"Summarise what this runtime does"' in listing.stdout


def test_prompt_piped_on_stdin(home: Path, project: Path, backend: str) -> None:
    """`echo hi | amplifier run` answers the piped prompt."""
    done = amp("run", cwd=project, home=home, backend=backend, stdin="from a pipe\n")
    assert done.returncode == 0
    assert "You asked: from a pipe" in done.stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("run", "fine"), 0),
        (("run", "/fail broken"), 1),
        (("session", "show", "../../etc/passwd"), 2),
        (("session", "show", "20990101T000000Z-0000000000000000"), 1),
        (("run", "x", "--profile", "missing"), 2),
        (("no-such-command",), 2),
    ],
)
def test_exit_codes(home: Path, project: Path, args: tuple[str, ...], code: int) -> None:
    """0 done, 1 a failure, 2 a usage error, each with a one-line message for errors."""
    done = amp(*args, cwd=project, home=home)
    assert done.returncode == code, done.stderr
    if code == 1:
        assert len([line for line in done.stderr.splitlines() if line.startswith("Error:")]) == 1


def test_json_output_parses(home: Path, project: Path, backend: str) -> None:
    """--json output of run, list and show is one JSON document each."""
    run = json.loads(amp("run", "hi", "--json", cwd=project, home=home, backend=backend).stdout)
    listing = json.loads(amp("session", "list", "--json", cwd=project, home=home).stdout)
    show = json.loads(
        amp("session", "show", run["session_id"], "--json", cwd=project, home=home).stdout
    )
    assert listing[0]["session_id"] == run["session_id"]
    assert show["metadata"]["status"] == "completed"


def test_amplifier_home_moves_the_store(tmp_path: Path, project: Path) -> None:
    """AMPLIFIER_HOME decides where sessions are stored."""
    elsewhere = tmp_path / "elsewhere"
    amp("run", "hi", cwd=project, home=elsewhere)
    assert len(session_dirs(elsewhere)) == 1


async def test_session_in_use_is_not_deleted_or_cleaned_up(home: Path, project: Path) -> None:
    """While a session is open elsewhere, delete refuses and cleanup leaves it alone."""
    old = datetime.now(UTC) - timedelta(days=90)
    async with amplifier.open_runtime(cwd=project, clock=lambda: old) as rt:
        async with rt.open_session() as session:
            await session.ask("working on it")
            delete = await anyio.to_thread.run_sync(
                lambda: amp("session", "delete", session.id, "--yes", cwd=project, home=home)
            )
            cleanup = await anyio.to_thread.run_sync(
                lambda: amp("session", "cleanup", "--json", cwd=project, home=home)
            )
            assert session.id in session_dirs(home)
    assert delete.returncode == 1
    assert f"session {session.id} is in use by" in delete.stderr
    report = json.loads(cleanup.stdout)
    assert report["deleted"] == []
    assert report["in_use"] == [session.id]
    after = amp("session", "cleanup", "--json", cwd=project, home=home)
    assert json.loads(after.stdout)["deleted"] == [session.id]
