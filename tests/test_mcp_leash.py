"""Nothing an MCP server starts outlives amplifier: a job the server put in a process group of
its own (``set -m``) goes when the server is stopped, and when amplifier is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import amplifier

from .test_bash_tool import alive, wait_gone
from .test_cli_act import tool
from .test_cli_interactive import AMPLIFIER, _env
from .test_mcp import ALLOW_MCP, STUB, configure

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the leash is Linux's")


def _server_with_a_job(project: Path) -> dict[str, Any]:
    """The stub server, started by a shell that first leaves a job in a group of its own."""
    script = (
        f"set -m; sleep 300 & echo $! > {project}/job.pid; set +m; "
        f"exec {sys.executable} -I {STUB}"
    )
    return {"command": "/bin/bash", "args": ["-c", script]}


def _job(project: Path) -> int:
    pidfile = project / "job.pid"
    deadline = time.monotonic() + 30
    while not pidfile.read_text().endswith("\n") if pidfile.exists() else True:
        assert time.monotonic() < deadline, "the server never started its job"
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    assert alive(pid)
    assert os.getpgid(pid) == pid  # a group of its own
    return pid


@pytest.mark.anyio
async def test_a_stopped_server_leaves_no_job_running(home: Path, project: Path) -> None:
    configure(home, {"stub": _server_with_a_job(project)})
    async with amplifier.open_runtime(
        home=home, cwd=project, durability="none", permissions=ALLOW_MCP
    ) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(tool("mcp_stub_echo", text="hi"))
            assert "hi" in reply.text
        job = _job(project)
    assert wait_gone(job), "the server's job outlived its Runtime"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigkill_of_amplifier_leaves_no_job_of_a_server_running(
    home: Path, project: Path, backend: str
) -> None:
    configure(home, {"stub": _server_with_a_job(project)})
    pidfile = project / "server.pid"
    process = subprocess.Popen(
        [str(AMPLIFIER), "run", "--yes", tool("mcp_stub_hang", pidfile=str(pidfile))],
        cwd=project,
        env=_env(home, backend),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text()):
            assert time.monotonic() < deadline, "the server never got the call"
            time.sleep(0.02)
        job = _job(project)
        server = int(pidfile.read_text())
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert wait_gone(server), "the server survived"
        assert wait_gone(job), "the server's job survived"
    finally:
        if process.poll() is None:
            process.kill()
