"""The installed ``amplifier`` command as a new user meets it: what it keeps, what it says,
what it refuses, how it exits.

Sessions a test only needs to exist are made through the API in-process (fast);
what the test is about goes through the installed console script, as in
``test_cli_process``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import pexpect
import pytest

import amplifier

from .helpers import metadata, session_dirs, transcript
from .test_cli_process import AMPLIFIER, amp
from .trusted import trusted


def made(project: Path, prompt: str = "real work", **options: Any) -> str:
    """A stored session of ``project`` that answered ``prompt``; its id."""

    agent = options.pop("agent", None)

    async def make() -> str:
        async with amplifier.open_runtime(cwd=project, durability="none", **options) as rt:
            async with rt.open_session(agent=agent) as session:
                await session.ask(prompt)
        return session.id

    return anyio.run(make)


def start(*args: str, cwd: Path, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(AMPLIFIER), *args],
        cwd=cwd,
        env={**os.environ, "AMPLIFIER_HOME": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: Any, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def model_called(home: Path, suffix: str = "") -> bool:
    """A session whose id ends with ``suffix`` has asked its model (its turn is running)."""
    return any(
        name.endswith(suffix) and b"provider:request" in _read(folder / "events.jsonl")
        for name, folder in session_dirs(home).items()
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def interrupted(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


# -- what is kept, what continue takes ----------------------------------------------------


def test_continue_after_an_interactive_session_left_at_once_goes_on_with_the_real_one(
    home: Path, project: Path
) -> None:
    """`amplifier </dev/null` keeps no empty session; `continue` goes on with the real work."""
    real = made(project)
    left = amp(cwd=project, home=home)
    assert left.returncode == 0, left.stderr
    assert "Resume with" not in left.stderr
    assert set(session_dirs(home)) == {real}
    done = amp("continue", "and then?", "--json", cwd=project, home=home)
    assert json.loads(done.stdout)["session_id"] == real


async def test_latest_passes_over_a_session_that_never_got_a_prompt(
    home: Path, project: Path
) -> None:
    """A session killed before its first prompt never stands in for the conversation."""
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as real:
            await real.ask("real work")
        async with rt.open_session():
            pass
        found = await rt.latest()
    assert found is not None
    assert found.session_id == real.id


def test_continue_from_a_subdirectory_takes_the_projects_session_and_says_so(
    home: Path, project: Path
) -> None:
    """`continue` in project/src finds no session there and goes on with project's."""
    real = made(project)
    below = project / "src" / "deep"
    below.mkdir(parents=True)
    done = amp("continue", "go on", "--json", cwd=below, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session_id"] == real
    assert f"continuing the one of {project}, the nearest parent" in done.stderr


def test_list_names_each_sessions_agent(home: Path, project: Path) -> None:
    """`session list` has an Agent column."""
    made(project, agent="explorer")
    lines = amp("session", "list", cwd=project, home=home).stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "Created", "Agent"]
    assert lines[1].split()[3] == "explorer"


def test_list_by_a_tag_no_session_has_says_so(home: Path, project: Path) -> None:
    """`session list --tag nosuch` says no session has that tag, not that there are none."""
    made(project)
    done = amp("session", "list", "--tag", "nosuch", cwd=project, home=home)
    assert done.returncode == 0
    assert done.stderr.strip().startswith("No session of this project has the tag 'nosuch'")


# -- broken and misspelt configuration -----------------------------------------------------


def _spec(project: Path, name: str, text: str) -> Path:
    path = project / ".amplifier" / "agents" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _profile(project: Path, name: str, text: str) -> Path:
    path = project / ".amplifier" / "profiles" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    trusted(project)  # the user's own project: its profiles are used
    return path


def test_session_commands_go_on_beside_a_broken_spec_with_one_warning(
    home: Path, project: Path
) -> None:
    """A spec with a YAML error: `session show` works and one warning names path:line."""
    real = made(project)
    path = _spec(project, "x", "---\nname: [oops\n---\n")
    done = amp("session", "show", real, cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    (warning,) = done.stderr.splitlines()
    assert warning.startswith(f"Warning: {path}:2: invalid front matter")


@pytest.mark.parametrize(
    "name", ["mcp.json", "profiles/team.yaml", "agents/helper.md"], ids=["mcp", "profile", "agent"]
)
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_configuration_file_that_is_no_file_is_a_warning_not_a_hang(
    home: Path, project: Path, name: str, kind: str
) -> None:
    """A FIFO, or a link to /dev/zero, where a project's configuration file belongs: the
    command does its work with one warning naming it, without waiting on the FIFO or
    reading the device for ever."""
    path = project / ".amplifier" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    done = amp("run", "hello", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert "You asked: hello" in done.stdout
    assert f"{path}" in done.stderr
    assert "not a regular file" in done.stderr


def test_a_broken_profile_leaves_the_others_usable(home: Path, project: Path) -> None:
    """A profile with a YAML error: `run` under base answers, with one warning naming it."""
    path = _profile(project, "odd", "provider: {kind: openai\n")
    done = amp("run", "hello", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert "You asked: hello" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"Warning: {path}:")


def test_the_command_that_needs_a_broken_spec_fails_naming_it(home: Path, project: Path) -> None:
    """`run --agent x` with x.md broken exits 2 with the file's path:line."""
    path = _spec(project, "x", "---\nname: [oops\n---\n")
    done = amp("run", "--agent", "x", "hi", cwd=project, home=home)
    assert done.returncode == 2
    assert f"Error: {path}:2: invalid front matter" in done.stderr


def test_a_spec_naming_a_tool_that_does_not_exist_is_refused_at_load(
    home: Path, project: Path
) -> None:
    """`tools: [read_file, no_such_tool_ever]` is reported as path:line, not at call time."""
    path = _spec(
        project, "writer", "---\nname: writer\ntools:\n  - read_file\n  - no_such_tool_ever\n---\n"
    )
    done = amp("run", "--agent", "writer", "hi", cwd=project, home=home)
    assert done.returncode == 2
    assert f"Error: {path}:5: tools: unknown tool 'no_such_tool_ever'; available: " in done.stderr


def test_a_profile_denying_a_misspelt_tool_is_refused_at_load(home: Path, project: Path) -> None:
    """`tools: {deny: [grpe]}` does not quietly leave grep allowed: path:line, exit 2."""
    path = _profile(project, "strict", "extends: dev\ntools:\n  deny: [glob, grpe]\n")
    done = amp("run", "--profile", "strict", "hi", cwd=project, home=home)
    assert done.returncode == 2
    assert f"Error: {path}:3: tools.deny: unknown tool 'grpe'; available: " in done.stderr


async def test_a_spec_delegating_to_an_agent_that_does_not_exist_is_reported(
    home: Path, project: Path
) -> None:
    """`agents: [ghost]` warns with path:line when the runtime opens; the agent is left out."""
    path = _spec(project, "lead", "---\nname: lead\ntools: [delegate]\nagents: [ghost]\n---\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with amplifier.open_runtime(cwd=project, durability="none") as rt:
            with pytest.raises(amplifier.ConfigError, match="unknown agent 'ghost'"):
                await rt.open_session(agent="lead")
    (warning,) = caught
    assert warning.category is amplifier.ConfigWarning
    assert str(warning.message).startswith(f"{path}:4: agents: unknown agent 'ghost'")


def test_resuming_a_session_whose_profile_is_gone_names_it(home: Path, project: Path) -> None:
    """The profile file of a session was deleted: `continue` names it and suggests --profile."""
    path = _profile(project, "t6", "extends: base\n")
    made(project, profile="t6")
    path.unlink()
    done = amp("continue", "again", cwd=project, home=home)
    assert done.returncode == 2
    assert "was created with the profile 't6', which no longer exists" in done.stderr
    assert "--profile" in done.stderr


# -- output: --json, pipes, --debug, export ----------------------------------------------


def test_json_run_whose_turn_failed_prints_no_session_line(home: Path, project: Path) -> None:
    """With --json, stderr carries the error only: no "Session:" line, no resume hint."""
    done = amp("run", "/fail the provider is down", "--json", cwd=project, home=home)
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "failed"
    assert done.stderr.splitlines() == ["Error: offline: the provider is down"]


def test_json_run_cancelled_by_ctrl_c_prints_no_resume_hint(home: Path, project: Path) -> None:
    """Ctrl-C during `run "/sleep 30" --json`: exit 130, a document on stdout, nothing else."""
    process = start("run", "/sleep 30", "--json", cwd=project, home=home)
    wait_for(lambda: model_called(home))
    code, out, err = interrupted(process)
    assert code == 130
    assert json.loads(out)["status"] == "cancelled"
    assert "Resume with" not in err
    assert err == ""


@pytest.mark.parametrize("args", [("run", "hi"), ("session", "list"), ("--help",), ("--version",)])
def test_a_reader_that_goes_away_is_not_an_error(
    home: Path, project: Path, args: tuple[str, ...]
) -> None:
    """`amplifier run hi | true`: no "Broken pipe" message, and the outcome decides: exit 0."""
    made(project)
    process = start(*args, cwd=project, home=home)
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written
    with process.stderr:
        err = process.stderr.read()
    process.wait(timeout=30)
    assert process.returncode == 0, err
    assert "Broken pipe" not in err
    assert "Exception ignored" not in err


@pytest.mark.parametrize(
    "args",
    [("session", "list", "--json"), ("run", "--json", "hi"), ("--help",), ("--version",)],
)
def test_output_that_cannot_be_written_is_one_error_line(
    home: Path, project: Path, args: tuple[str, ...]
) -> None:
    """`amplifier session list --json > /dev/full`: one `Error:` line and exit 1, no
    traceback, however the output is made (a document, help, the version)."""
    made(project)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [str(AMPLIFIER), *args],
            cwd=project,
            env={**os.environ, "AMPLIFIER_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "Error: No space left on device"
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr


@pytest.mark.parametrize(
    ("closing", "code", "prompts"),
    [("<&-", 2, []), ("<&- hi", 0, ["hi"]), (">&- hi", 0, ["hi"]), ("2>&- hi", 0, ["hi"])],
)
def test_a_command_started_without_a_standard_stream_runs_as_without_a_reader(
    home: Path, project: Path, closing: str, code: int, prompts: list[str]
) -> None:
    """`amplifier run hi <&-` (or `>&-`, `2>&-`): the missing stream is empty, or its output
    goes nowhere; the command runs, no traceback, and only what was asked is stored
    (`run <&-` has no prompt: exit 2, nothing stored)."""
    redirect, _, prompt = closing.partition(" ")
    (project / "err").write_text("")
    errors = "" if redirect.startswith("2") else '2>"$1"'  # stderr closed: nothing to read
    done = subprocess.run(
        [
            "sh",
            "-c",
            f'"$0" run {prompt} {redirect} {errors}',
            str(AMPLIFIER),
            str(project / "err"),
        ],
        cwd=project,
        env={**os.environ, "AMPLIFIER_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    said = (project / "err").read_text()
    assert done.returncode == code, said
    assert "Traceback" not in said
    assert "internal error" not in said
    stored = [transcript(home, sid)[0]["content"] for sid in session_dirs(home)]
    assert stored == prompts


def test_debug_after_the_command_is_taken(home: Path, project: Path) -> None:
    """`amplifier run --debug "/fail boom"` shows the traceback, as `--debug run` does."""
    done = subprocess.run(
        [str(AMPLIFIER), "run", "--debug", "/fail boom"],
        cwd=project,
        env={**os.environ, "AMPLIFIER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "No such option" not in done.stderr


def test_export_json_is_one_document(home: Path, project: Path) -> None:
    """`session export ID --json` prints the export as one JSON document."""
    real = made(project)
    done = amp("session", "export", real, "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session_id"] == real


def test_export_refuses_to_overwrite_a_file_without_force(home: Path, project: Path) -> None:
    """`session export -o notes.md` of an existing file exits 2 and leaves the file as it was."""
    real = made(project)
    kept = project / "notes.md"
    kept.write_text("mine")
    done = amp("session", "export", real, "-o", "notes.md", cwd=project, home=home)
    assert done.returncode == 2
    assert "--force" in done.stderr
    assert kept.read_text() == "mine"


# -- Ctrl-C and sub-sessions ---------------------------------------------------------------


def test_a_sub_session_cancelled_by_ctrl_c_is_reported_cancelled_to_its_parent(
    home: Path, project: Path
) -> None:
    """Ctrl-C while a sub-agent works: the parent's tool result says cancelled, as the child."""
    process = start("run", "/delegate explorer: /sleep 30", cwd=project, home=home)
    wait_for(lambda: model_called(home, "_explorer"))
    code, _, _ = interrupted(process)
    assert code == 130
    (parent,) = [sid for sid in session_dirs(home) if not sid.endswith("_explorer")]
    (child,) = [sid for sid in session_dirs(home) if sid.endswith("_explorer")]
    (result,) = [m for m in transcript(home, parent) if m["role"] == "tool"]
    assert json.loads(result["content"])["status"] == "cancelled"
    assert "outcome unknown" not in result["content"]
    assert metadata(home, child)["status"] == "cancelled"


def test_offline_sleep_takes_the_time_it_asks_for() -> None:
    """`/sleep 90` makes the offline provider's answer take 90 s (a slow turn to interrupt)."""
    from trio.testing import MockClock

    from amplifier.agents import OfflineProvider, ProviderRequest, UserMessage

    request = ProviderRequest(
        model="offline", instructions="", messages=(UserMessage(content="/sleep 90\nhi"),)
    )

    async def answer() -> tuple[float, str]:
        started = anyio.current_time()
        response = await OfflineProvider().complete(request)
        return anyio.current_time() - started, response.message.content

    clock = MockClock(autojump_threshold=0)  # virtual time: exact, and instant
    took, text = anyio.run(answer, backend="trio", backend_options={"clock": clock})
    assert took == 90
    assert "You asked: /sleep 90" in text


# -- cleanup at a terminal ------------------------------------------------------------------


def test_cleanup_at_a_terminal_asks_first(home: Path, project: Path) -> None:
    """`session cleanup` on a terminal asks, with the count and dates; "n" deletes nothing."""
    real = made(project)
    child = pexpect.spawn(
        str(AMPLIFIER),
        ["session", "cleanup", "--days", "0"],
        cwd=str(project),
        env={**os.environ, "AMPLIFIER_HOME": str(home), "NO_COLOR": "1"},
        encoding="utf-8",
        timeout=20,
    )
    child.expect(r"Delete 1 session\(s\), last used \d{4}-\d\d-\d\d \d\d:\d\d\? \[y/N\]")
    child.sendline("n")
    child.expect("Nothing deleted.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert real in session_dirs(home)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_failure_inside_a_task_group_is_one_line_like_any_other(
    backend: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command whose work fails inside a task group (the interactive mode runs in one)
    ends with one line and its exit code, as when it fails outside one; several failures
    at once are one line too, never a traceback."""
    import typer

    from amplifier.cli._running import execute

    monkeypatch.setenv("AMPLIFIER_ASYNC_BACKEND", backend)

    def failing(*errors: BaseException) -> Any:
        async def main(interrupts: Any) -> None:
            async with anyio.create_task_group() as tg:
                for error in errors:

                    async def fail(error: BaseException = error) -> None:
                        raise error

                    tg.start_soon(fail)

        return main

    cases: list[tuple[tuple[BaseException, ...], int, str]] = [
        ((ValueError("bad value"),), 1, "Error: internal error: ValueError: bad value"),
        ((amplifier.UsageError("no such thing"),), 2, "Error: no such thing"),
        ((OSError(36, "File name too long", "x"),), 1, "Error: File name too long: x"),
        (
            (ValueError("one"), ValueError("one")),
            1,
            "Error: internal error: 2 errors at once, the first ValueError: one",
        ),
    ]
    for errors, code, said in cases:
        with pytest.raises(typer.Exit) as ended:
            execute(failing(*errors))
        assert ended.value.exit_code == code
        err = capsys.readouterr().err
        assert err.startswith(said), err
        assert len(err.splitlines()) == 1, err


def test_an_interruption_among_failures_is_what_ended_the_command() -> None:
    """Ctrl-C with errors that followed from it, in nested groups: the command was
    interrupted (exit 130), not failed."""
    from amplifier.cli._running import _unwrapped

    interrupt = KeyboardInterrupt()
    inner = BaseExceptionGroup("inner", [interrupt])
    group = BaseExceptionGroup("outer", [ValueError("after it"), inner])
    assert _unwrapped(group) is interrupt
