"""MCP servers at the command line: a real server from the package index (mcp-server-time,
no network needed) through the installed command, ``amplifier mcp list``, and no server
process left behind when amplifier is killed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from amplifier.cli import app

from .test_bash_tool import wait_gone
from .test_cli_act import amplifier, tool
from .test_cli_interactive import AMPLIFIER, _env
from .test_cli_process import _imported_by
from .test_mcp import STUB, configure, stub
from .trusted import trusted

TIME_SERVER = {
    "command": str(Path(sys.executable).parent / "mcp-server-time"),
    "args": ["--local-timezone", "UTC"],
}


def test_run_calls_a_tool_of_the_time_server(home: Path, project: Path) -> None:
    """`amplifier run` starts mcp-server-time, calls its tool once allowed, and stops it;
    the server's output goes to its log, owner-only, not to the terminal."""
    configure(home, {"time": TIME_SERVER})
    done = amplifier(
        "run", "--allow", "mcp_time_*", tool("mcp_time_get_current_time", timezone="UTC"),
        cwd=project, home=home,
    )
    assert "mcp_time_get_current_time (ok):" in done.stdout
    assert '"timezone":"UTC"' in done.stdout.replace(" ", "")
    log = home / "logs" / "mcp" / "time.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert "starting time:" in log.read_text()


def test_a_server_printing_what_is_not_json_shows_nothing_on_the_terminal(
    home: Path, project: Path
) -> None:
    """A line that is not JSON on a server's stdout (a stray print): the call is answered,
    and the SDK's complaint about it goes nowhere near the terminal."""
    configure(project, {"stub": stub(timeout=5)})
    done = amplifier("run", "--yes", tool("mcp_stub_noise"), cwd=project, home=home)
    assert "mcp_stub_noise (ok): after the noise" in done.stdout
    assert "not JSON" not in done.stderr
    assert "Failed to parse" not in done.stderr


def test_a_server_that_cannot_be_reached_is_named_without_its_secret(
    home: Path, project: Path
) -> None:
    """An HTTP server whose url carries a token from a variable, unreachable: `mcp list`,
    its --json and a run's warning name it as written, never with the token."""
    configure(project, {"web": {"url": "http://127.0.0.1:9/mcp?token=${MCP_TOKEN}"}})
    env = {**_env(home, "asyncio"), "MCP_TOKEN": "S3CRET-TOKEN-987"}
    said = []
    for args in (["mcp", "list"], ["mcp", "list", "--json"], ["run", "--yes", "hello"]):
        done = subprocess.run(
            [str(AMPLIFIER), *args], cwd=project, env=env, capture_output=True, text=True,
            timeout=60,
        )
        said.append(done.stdout + done.stderr)
    assert all("http://127.0.0.1:9/mcp?token=${MCP_TOKEN}" in text for text in said[:2])
    assert not any("S3CRET" in text for text in said)


def test_mcp_list_in_a_new_home_makes_its_folders_owner_only(
    home: Path, project: Path
) -> None:
    """The first commands of a home may be trusting the project and `mcp list`: the home
    the trust record makes and the logs' folders `mcp list` makes are owner-only, as every
    folder of the home is."""
    assert not home.exists()
    configure(project, {"stub": stub()})  # trusted: the record is the home's first file
    assert not (home / "logs").exists()
    mcp_list(project, code=0)
    for folder in (home, home / "logs", home / "logs" / "mcp"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_server_that_exits_at_start_is_described_in_its_own_words(
    home: Path, project: Path
) -> None:
    """A server that exits while starting: `mcp list` gives its last logged line, as for
    any other start failure, without the name of an exception class."""
    configure(project, {"s": {"command": "/bin/sh",
                              "args": ["-c", "echo fatal: cannot start >&2; exit 1"]}})
    lines = mcp_list(project, code=1).stdout.splitlines()
    assert lines[0] == "s: does not start: it exited: fatal: cannot start"


def mcp_list(project: Path, *args: str, code: int) -> Any:
    """`amplifier mcp list` through typer's test runner, from inside the project."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        result = CliRunner().invoke(app, ["mcp", "list", *args])
    finally:
        os.chdir(cwd)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_mcp_list_shows_each_server_where_it_is_configured_and_whether_it_starts(
    home: Path, project: Path
) -> None:
    """A server that starts lists its tools; one that does not says why, and the exit is 1."""
    user = configure(home, {"stub": stub()})
    mine = configure(project, {"gone": {"command": "no-such-mcp-server"}})
    lines = mcp_list(project, code=1).stdout.splitlines()
    assert lines[:4] == [
        "gone: does not start: command not found: no-such-mcp-server",
        "  stdio: no-such-mcp-server",
        f"  configured in {mine}",
        f"  log: {home}/logs/mcp/gone.log",
    ]
    assert lines[4:7] == [
        "stub: starts, 11 tools",
        f"  stdio: {sys.executable} -I {STUB}",
        f"  configured in {user}",
    ]
    assert any(
        line.startswith("  mcp_stub_echo ") and line.endswith(" Say the text back.")
        for line in lines
    )
    assert "stub started, pid" in (home / "logs" / "mcp" / "stub.log").read_text()


def test_mcp_list_json_is_one_document_of_the_servers(home: Path, project: Path) -> None:
    """--json: each server with its source, whether it started, why not, and its tools."""
    configure(project, {"gone": {"command": "no-such-mcp-server"}, "stub": stub()})
    listed = json.loads(mcp_list(project, "--json", code=1).stdout)
    gone, started = listed["servers"]
    assert (gone["name"], gone["started"], gone["error"]) == (
        "gone", False, "command not found: no-such-mcp-server"
    )
    assert (started["name"], started["started"], started["error"]) == ("stub", True, None)
    assert {
        "name": "mcp_stub_pid",
        "tool": "pid",
        "description": "The server's process id.",
        "taken_by": None,
    } in started["tools"]
    assert listed["problems"] == []


def test_mcp_list_of_an_invalid_mcp_json_is_one_line_naming_it(home: Path, project: Path) -> None:
    """A broken file is one warning line with the file and the problem, never a traceback."""
    (project / ".amplifier").mkdir()
    (project / ".amplifier" / "mcp.json").write_text('{"mcpServers": []}')
    trusted(project)
    assert mcp_list(project, code=1).stderr.splitlines()[0] == (
        f'Warning: {project}/.amplifier/mcp.json: "mcpServers" must be an object of servers '
        "by name"
    )


def test_sigkill_of_amplifier_leaves_no_mcp_server_running(home: Path, project: Path) -> None:
    """Killing amplifier with SIGKILL mid-call kills the server it started, and its group.

    On trio, which starts processes from worker threads that come and go (the case
    that rules out the parent-death signal); the leash does not depend on the loop.
    """
    configure(project, {"stub": stub()})
    pidfile = project / "server.pid"
    process = subprocess.Popen(
        [str(AMPLIFIER), "run", "--yes", tool("mcp_stub_hang", pidfile=str(pidfile))],
        cwd=project,
        env=_env(home, "trio"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()):
        assert time.monotonic() < deadline, "the server never got the call"
        time.sleep(0.02)
    server = int(pidfile.read_text())
    group = os.getpgid(server)
    members = [
        int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _group_of(int(pid)) == group
    ]
    assert server in members
    assert len(members) >= 2  # the server, and what keeps it on its leash
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    for pid in members:
        assert wait_gone(pid), f"process {pid} of the server's group survived"


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_offline_run_without_mcp_servers_does_not_import_the_sdk(
    home: Path, project: Path
) -> None:
    """With no server configured, a run never imports the mcp SDK (start-up stays as it was)."""
    imported = _imported_by("run", "hello", cwd=project, home=home)
    assert "amplifier.agents._loop" in imported  # what was measured is a turn
    assert not {name for name in imported if name == "mcp" or name.startswith("mcp.")}
