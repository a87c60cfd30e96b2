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
    *args: str,
    cwd: Path,
    home: Path,
    backend: str = "asyncio",
    stdin: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AMPLIFIER_HOME": str(home),
        "AMPLIFIER_ASYNC_BACKEND": backend,
        **(extra_env or {}),
    }
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


async def test_cleanup_that_keeps_a_session_in_use_says_so(home: Path, project: Path) -> None:
    """cleanup --days 0 with the only session in use: 'Kept ... (in use)', and no claim
    that no session is that old."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("working on it")
        done = await anyio.to_thread.run_sync(
            lambda: amp("session", "cleanup", "--days", "0", cwd=project, home=home)
        )
    assert done.returncode == 0
    assert done.stdout.splitlines() == [f"Kept {session.id} (in use)"]
    assert done.stderr.strip() == "Nothing deleted: the sessions older than 0 days are in use."


def test_resume_interactive_takes_piped_lines_one_prompt_each(home: Path, project: Path) -> None:
    """`session resume ID --interactive` with stdin piped: each line is a turn of its own."""
    first = amp("run", "--json", "first", cwd=project, home=home)
    session_id = json.loads(first.stdout)["session_id"]
    done = amp(
        "session",
        "resume",
        session_id,
        "--interactive",
        cwd=project,
        home=home,
        stdin="second\nthird\n",
    )
    assert done.returncode == 0, done.stderr
    assert "You asked: second" in done.stdout
    assert "You asked: third" in done.stdout
    show = json.loads(amp("session", "show", session_id, "--json", cwd=project, home=home).stdout)
    prompts = [m["content"] for m in show["transcript"] if m["role"] == "user"]
    assert prompts == ["first", "second", "third"]


def test_resume_with_stdin_empty_but_not_piped_is_interactive(home: Path, project: Path) -> None:
    """stdin /dev/null (no input given at all) is not a piped prompt: resume is interactive
    and leaves at once, exit 0."""
    first = amp("run", "--json", "first", cwd=project, home=home)
    session_id = json.loads(first.stdout)["session_id"]
    done = subprocess.run(
        [str(AMPLIFIER), "session", "resume", session_id],
        cwd=project,
        env={**os.environ, "AMPLIFIER_HOME": str(home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"Amplifier: session {session_id}" in done.stderr


def importing(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """``python -X importtime ARGS`` with stdin empty and the store at ``home``: each
    module imported is a line of stderr that starts ``import time:``."""
    env = {**os.environ, "AMPLIFIER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _imported_by(*args: str, cwd: Path, home: Path) -> set[str]:
    """The modules the installed command imports to run ``args``."""
    done = importing(str(AMPLIFIER), *args, cwd=cwd, home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.parametrize("args", [("--help",), ("session", "list")], ids=["help", "list"])
def test_command_that_calls_no_model_imports_no_provider_sdk(
    home: Path, project: Path, args: tuple[str, ...]
) -> None:
    """`--help` and `session list` start without importing the openai, anthropic or mcp SDK."""
    amp("run", "hi", cwd=project, home=home)  # a session to list
    imported = _imported_by(*args, cwd=project, home=home)
    assert "amplifier.cli" in imported  # what was measured is the command
    assert not {"openai", "anthropic", "mcp"} & imported


def test_help_imports_only_the_command_line(home: Path, project: Path) -> None:
    """`--help` loads the command line alone: not the runtime, nor any pydantic model."""
    imported = _imported_by("--help", cwd=project, home=home)
    assert "amplifier.cli._app" in imported
    assert not {
        "amplifier.runtime",
        "amplifier.persistence",
        "pydantic.main",
        "prompt_toolkit",
    } & imported


def test_offline_run_imports_only_what_a_turn_needs(home: Path, project: Path) -> None:
    """An offline `run` starts without the Ray backend, usage reports, file history or scripts."""
    imported = _imported_by("run", "hi", cwd=project, home=home)
    assert "amplifier.agents._loop" in imported  # what was measured is a turn
    assert not {
        "amplifier.cluster",
        "amplifier.agents._usage",
        "amplifier.agents._file_history",
        "amplifier.agents._scripted",
        "amplifier.agents._function_tools",
        "docstring_parser",
        "openai",
        "anthropic",
    } & imported


def _run_bytes(*args: bytes, cwd: Path, home: Path, stdin: bytes = b"") -> tuple[int, str, str]:
    """The command with raw bytes as arguments and stdin, as a shell passes them."""
    env = {**os.environ, "AMPLIFIER_HOME": str(home)}
    done = subprocess.run(
        [os.fsencode(AMPLIFIER), *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return done.returncode, stdout, stderr


@pytest.mark.parametrize("where", ["argument", "stdin"])
def test_prompt_that_is_not_utf8_is_answered_and_stored(
    home: Path, project: Path, where: str
) -> None:
    """Bytes that are not UTF-8 in a prompt become U+FFFD; the turn is answered and kept."""
    prompt = b"caf\xe9 au lait"
    args = (b"run", b"--json", *([prompt] if where == "argument" else []))
    code, stdout, stderr = _run_bytes(
        *args, cwd=project, home=home, stdin=prompt if where == "stdin" else b""
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert "You asked: caf\ufffd au lait" in document["response"]
    (folder,) = session_dirs(home).values()
    users = [
        json.loads(line)["content"]
        for line in (folder / "transcript.jsonl").read_text().splitlines()
        if json.loads(line)["role"] == "user"
    ]
    assert users == ["caf\ufffd au lait"]


def test_failed_turn_shows_no_traceback_without_debug(home: Path, project: Path) -> None:
    """A turn that fails says so in one line; no traceback reaches the terminal."""
    done = amp("run", "/fail boom", cwd=project, home=home)  # amp refuses any traceback
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if line.startswith("Error:")] == [
        "Error: offline: boom"
    ]


@pytest.mark.parametrize("how", ["--debug", "AMPLIFIER_DEBUG=1"])
def test_failed_turn_shows_its_traceback_with_debug(home: Path, project: Path, how: str) -> None:
    """`--debug` (or AMPLIFIER_DEBUG=1) shows where a failed turn failed, then the one line."""
    env = {**os.environ, "AMPLIFIER_HOME": str(home)}
    env.pop("AMPLIFIER_DEBUG", None)
    flags = ["--debug"] if how == "--debug" else []
    if how != "--debug":
        env["AMPLIFIER_DEBUG"] = "1"
    done = subprocess.run(
        [str(AMPLIFIER), *flags, "run", "/fail boom"],
        cwd=project,
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last):" in done.stderr
    assert "ProviderError: offline: boom" in done.stderr
    assert "Error: offline: boom" in done.stderr


def test_cluster_without_ray_installed_is_one_line_naming_the_extra(
    home: Path, project: Path, tmp_path: Path
) -> None:
    """`run --cluster` where Ray is not installed: exit 2, one line saying what to
    install, no traceback, and nothing stored."""
    missing = tmp_path / "without-ray" / "ray"
    missing.mkdir(parents=True)
    # First on the path: importing ray fails as it does where it is not installed.
    (missing / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n"
    )
    done = amp(
        "run",
        "--cluster",
        "auto",
        "hello",
        cwd=project,
        home=home,
        extra_env={"PYTHONPATH": str(missing.parent)},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: running on a cluster needs Ray: pip install 'amplifier[ray]'"
    ]
    assert done.stdout == ""
    assert session_dirs(home) == {}
