"""The ``bash`` tool: output, exit codes, and that nothing it starts outlives it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from amplifier.agents._bash import KEEP_BYTES, Bash, _Output
from amplifier.agents._exceptions import ToolFailed
from amplifier.agents._specs import AgentSpec
from amplifier.agents._tools import ToolContext, parse_arguments
from amplifier.runtime import Turn


@pytest.fixture
def context(project: Path) -> ToolContext:
    return ToolContext(
        root=project.resolve(), turn=cast(Turn, None), agent=AgentSpec(name="t"), call_id="c"
    )


async def bash(context: ToolContext, command: str, **arguments: Any) -> str:
    tool = Bash()
    return await tool.run(parse_arguments(tool, {"command": command, **arguments}), context)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie left for its parent to reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


async def test_bash_interleaves_stdout_and_stderr_and_gives_the_exit_code(
    context: ToolContext,
) -> None:
    """Output comes in the order it was written, on both streams, then the exit code."""
    result = await bash(context, "echo one; echo two >&2; echo three; exit 3")
    assert result == "one\ntwo\nthree\n[exit code 3]"


async def test_bash_runs_in_the_project_without_input_or_terminal(
    context: ToolContext, project: Path
) -> None:
    """The command runs in the project, reads no input, and leads a group of its own."""
    result = await bash(
        context, 'pwd; cat; test "$(ps -o sid= -p $$ | tr -d " ")" = "$$" && echo own-session'
    )
    assert result.splitlines()[0] == str(project.resolve())
    assert "own-session" in result


async def test_bash_keeps_the_head_and_tail_of_huge_output(
    context: ToolContext, trials: int | None
) -> None:
    """A command that prints a flood (a gigabyte with --trials) returns its two ends and how
    much was left out between them."""
    size = "1G" if trials else "64M"
    result = await bash(context, f"echo START; yes abcdefghij | head -c {size}; echo; echo END")
    assert result.startswith("START\nabcdefghij")
    assert result.endswith("END\n[exit code 0]")
    assert "bytes of output left out" in result
    assert len(result) < 2 * KEEP_BYTES + 1000


def test_bash_output_holds_no_more_than_its_two_ends() -> None:
    """However much arrives, memory holds the first and the last ends only."""
    output = _Output(1000)
    for _ in range(10_000):
        output.add(b"x" * 777)
        assert len(output._head) + len(output._tail) <= 3 * 1000
    assert output.total == 7_770_000
    assert "7768000 bytes of output left out" in output.text()


async def test_bash_stops_what_the_command_left_running(
    context: ToolContext, project: Path
) -> None:
    """A background child is stopped when the command's shell exits."""
    result = await bash(context, "sleep 60 & echo $! > bg.pid; echo started")
    assert result == "started\n[exit code 0]"
    assert wait_gone(int((project / "bg.pid").read_text()))


async def test_bash_stops_a_job_the_shell_put_in_a_group_of_its_own(
    context: ToolContext, project: Path
) -> None:
    """`set -m` gives a background job a process group of its own: it is stopped all the
    same when the shell exits, and the call does not wait for the output it held."""
    started = time.monotonic()
    result = await bash(context, "set -m; sleep 60 & echo $! > bg.pid; echo started", timeout=30)
    assert result == "started\n[exit code 0]"
    assert time.monotonic() - started < 10
    assert wait_gone(int((project / "bg.pid").read_text()))


async def test_bash_timeout_stops_the_command_and_all_it_started(
    context: ToolContext, project: Path
) -> None:
    """A command that never ends is stopped at its timeout, with its children."""
    started = time.monotonic()
    with pytest.raises(ToolFailed, match=r"timed out after 1 s"):
        await bash(context, "sleep 60 & echo $! > bg.pid; echo waiting; sleep 60", timeout=1)
    assert time.monotonic() - started < 10
    assert wait_gone(int((project / "bg.pid").read_text()))


async def test_bash_cancelled_mid_command_stops_the_whole_group(
    context: ToolContext, project: Path
) -> None:
    """Cancelling the call (a cancelled turn, Ctrl-C) stops the command and its children."""
    pid_file = project / "bg.pid"
    with anyio.move_on_after(30) as timer:
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await bash(context, "sleep 60 & echo $! > bg.pid; echo $$ > sh.pid; sleep 60")

            tg.start_soon(run)
            while not (project / "sh.pid").exists() or not pid_file.read_text():  # noqa: ASYNC110
                await anyio.sleep(0.01)  # written by the command: no event to wait on
            tg.cancel_scope.cancel()
    assert not timer.cancelled_caught
    assert wait_gone(int(pid_file.read_text()))
    assert wait_gone(int((project / "sh.pid").read_text()))


async def test_bash_command_that_cannot_run_says_so(context: ToolContext) -> None:
    """A missing program is the shell's own message and its exit code, for the model."""
    result = await bash(context, "no-such-program-amplifier")
    assert "command not found" in result
    assert result.endswith("[exit code 127]")


def test_bash_leash_is_not_inherited_by_other_programs() -> None:
    """Only a command started by the tool holds the leash: other children never do."""
    from amplifier.agents import _bash

    leash = _bash._leash_fd()
    assert not os.get_inheritable(leash)


_DIES_WHILE_STOPPING = """
import os, sys, anyio
from pathlib import Path
from typing import cast
from amplifier.agents._bash import Bash
from amplifier.agents._specs import AgentSpec
from amplifier.agents._tools import ToolContext, parse_arguments

root, after = Path(sys.argv[1]), int(sys.argv[2])
calls = 0
real_kill, real_killpg = os.kill, os.killpg

def counted(real):
    def signal(*args):
        global calls
        real(*args)
        calls += 1
        if calls == after:
            os._exit(9)  # this process dies right after that signal, as a SIGKILL would
    return signal

async def main():
    os.kill, os.killpg = counted(real_kill), counted(real_killpg)
    tool = Bash()
    context = ToolContext(root=root, turn=cast(object, None), agent=AgentSpec(name="t"),
                          call_id="c")
    command = "set -m; sleep 60 & echo $! > job.pid; sleep 60 & echo $! > bg.pid"
    await tool.run(parse_arguments(tool, {"command": command}), context)

anyio.run(main)
"""


@pytest.mark.parametrize("after", [1, 2, 3])
def test_this_process_dying_while_it_stops_a_command_leaves_nothing_running(
    project: Path, after: int
) -> None:
    """This process dies right after its first, second or third signal while stopping what
    a command left running (a job in a group of its own, one in the command's group): the
    watchers finish the work, and nothing is left."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _DIES_WHILE_STOPPING, str(project.resolve()), str(after)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 9, done.stderr
    for name in ("job.pid", "bg.pid"):
        assert wait_gone(int((project / name).read_text())), f"{name} survived"
