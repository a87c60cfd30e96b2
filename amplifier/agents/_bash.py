"""The ``bash`` tool: run a command in the session's project directory.

Rule 1: the command runs as ``/bin/bash -c`` in a process group of its own
        (a new session: no controlling terminal, so nothing it starts can
        read the user's keyboard), with stdin empty and stdout and stderr
        on one pipe, interleaved as they were written.
Rule 2: nothing it starts outlives the call. When the shell exits, what it
        left running in its group, or in a group of its own in its session (a
        job after ``set -m``), is killed; on a timeout or a cancelled
        turn (Ctrl-C, SIGTERM, a cancelled session) the whole group gets
        SIGTERM, then SIGKILL. And nothing outlives this process, even a
        SIGKILL of it: every group holds the read end of a pipe whose only
        writer is this process (the leash), and a watcher in the group kills
        the group when the pipe ends, which the kernel does when this
        process dies, however it dies; a second watcher, in a group of its
        own, kills every other group of the command's session (a job the
        shell put in a group of its own, after ``set -m``). Stopping a
        command, this process kills that watcher last, once the rest of the
        session is gone: dying part-way, it leaves the watcher to finish. (The
        parent-death signal of Linux
        would follow the thread that started the command, and trio starts
        commands from worker threads that come and go.) A program that
        leaves its group on purpose (``setsid``) leaves the leash too.
Rule 3: output is capped: the first and the last ``KEEP_BYTES`` are kept,
        and the result says how much was left out between them; no more
        than that is ever held in memory, however much the command prints.
Rule 4: the environment is this process's without the API keys of the
        configured providers (``ToolContext.environment``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import ClassVar

import anyio
from anyio.abc import ByteReceiveStream, Process
from pydantic import BaseModel, ConfigDict, Field

from ._exceptions import ToolFailed
from ._tools import MAX_TOOL_OUTPUT, ToolContext

DEFAULT_TIMEOUT = 120
MAX_TIMEOUT = 3600
KEEP_BYTES = MAX_TOOL_OUTPUT // 2 - 1024
"""Bytes of output kept at each end (Rule 3)."""
TERM_GRACE = 1.0
"""Seconds a stopped command has between SIGTERM and SIGKILL."""

_leash: tuple[int, int] | None = None

# $1 is the command. Two watchers wait for the leash (fd {fd}) to end, which happens only
# when this process dies. The first, in the command's group, kills that group (at once,
# itself included: nothing the group forks meanwhile escapes). The second, in a group of
# its own (set -m) and named ``LEASH_NAME`` (so that this process, stopping the command,
# leaves it for last: ``_signal_group``), kills every other group of the session ($$: the
# wrapper leads both), a job after `set -m`, each group at once, until a pass over /proc
# finds none left (zombies aside; at most 100 passes). The command runs with the leash
# closed, as the leader of the first group.
LEASH_NAME = "amplifier-leash"


def sweep(session: str, *spared: str) -> str:
    """Bash that kills every group of the session ``session`` but the ``spared`` ones (shell
    words), each group at once, until a pass over /proc finds none left (zombies aside; at
    most 100 passes). No single quote: it is quoted whole where it is a watcher's script."""
    kept = "".join(f' && ${{fields[2]}} != {group}' for group in spared)
    return f"""\
for _ in {{1..100}}; do
  found=
  for stat in /proc/[0-9]*/stat; do
    read -r line < "$stat" || continue
    fields=(${{line##*) }})
    [[ ${{fields[3]}} == {session}{kept} && ${{fields[0]}} != [ZX] ]] || continue
    kill -KILL -- "-${{fields[2]}}"; found=1
  done
  [[ $found ]] || break
  sleep 0.01
done
"""


def second_watcher(fd: int) -> str:
    """The shell line that starts the second watcher (``LEASH_NAME``) in a group of its own:
    when the leash (fd ``fd``) ends, it kills every other group of the session that ``$$``
    (the line's shell) leads. ``$!`` is its pid after the line."""
    watch = f"read -r -u {fd} _\n" + sweep('"$1"', '"$$"')
    assert "'" not in watch  # it is quoted whole
    return (
        f"set -m\n( exec -a {LEASH_NAME} /bin/bash -c '{watch}' {LEASH_NAME} \"$$\" ) "
        "</dev/null >/dev/null 2>&1 &\nset +m\n"
    )


_WRAPPER = """\
{{ read -r -u {fd} _; kill -KILL 0; }} </dev/null >/dev/null 2>&1 &
{second}exec {fd}<&-
exec /bin/bash -c "$1"
"""


class BashArguments(BaseModel):
    """What ``bash`` takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str = Field(min_length=1, description="The command line, run by /bin/bash -c.")
    timeout: int = Field(
        default=DEFAULT_TIMEOUT,
        ge=1,
        le=MAX_TIMEOUT,
        description="Seconds before the command, and all it started, is stopped.",
    )


class Bash:
    """``bash``: run a command in the project directory; its output and exit code."""

    name: ClassVar[str] = "bash"
    description: ClassVar[str] = (
        "Run a shell command with /bin/bash -c in the project directory. Returns its "
        "output (stdout and stderr interleaved; long output keeps its beginning and its "
        "end) and the exit code. There is no input and no terminal. Anything the command "
        "leaves running in the background is stopped when it exits; the timeout "
        f"(default {DEFAULT_TIMEOUT} s) stops it and all it started."
    )
    Arguments: ClassVar[type[BaseModel]] = BashArguments
    side_effects: ClassVar[bool] = True
    subject: ClassVar[str | None] = "command"

    async def preview(self, arguments: BashArguments, context: ToolContext) -> str:
        return arguments.command

    async def run(self, arguments: BashArguments, context: ToolContext) -> str:
        output = _Output(KEEP_BYTES)
        leash = _leash_fd()
        try:
            # Shielded: cancelled half-way, the process would exist with no one to stop it.
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    ["/bin/bash", "-c", _wrapper(leash), "bash", arguments.command],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=context.root,
                    env=dict(context.environment) if context.environment is not None else None,
                    start_new_session=True,
                    pass_fds=(leash,),
                )
        except OSError as exc:
            raise ToolFailed(f"could not start /bin/bash: {exc.strerror or exc}") from None
        code: int | None = None
        try:
            with anyio.move_on_after(arguments.timeout):
                async with anyio.create_task_group() as tg:
                    assert process.stdout is not None
                    tg.start_soon(_collect, process.stdout, output)
                    code = await process.wait()
                    _signal_group(process.pid, signal.SIGKILL)  # what it left running (Rule 2)
        finally:
            with anyio.move_on_after(TERM_GRACE + 5, shield=True):
                if code is None:
                    await _stop(process)
                await process.aclose()
        text = output.text()
        if code is None:
            raise ToolFailed(
                f"{text}\n[timed out after {arguments.timeout} s: the command and everything "
                "it started were stopped]".lstrip("\n")
            )
        if code < 0:
            ending = f"killed by signal {-code} ({_signal_name(-code)})"
        else:
            ending = f"exit code {code}"
        return f"{text}\n[{ending}]" if text else f"[no output; {ending}]"


def _wrapper(leash: int) -> str:
    return _WRAPPER.format(fd=leash, second=second_watcher(leash))


def _leash_fd() -> int:
    """The read end of this process's leash (made once): see Rule 2."""
    global _leash
    if _leash is None:
        _leash = os.pipe()  # neither end is inherited, unless passed on purpose
    return _leash[0]


async def _collect(stream: ByteReceiveStream, output: _Output) -> None:
    async for chunk in stream:
        output.add(chunk)


async def _stop(process: Process) -> None:
    """SIGTERM to the whole group, a moment to end, then SIGKILL to whatever is left."""
    _signal_group(process.pid, signal.SIGTERM)
    with anyio.move_on_after(TERM_GRACE):
        await process.wait()
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


def _signal_group(group: int, signum: signal.Signals) -> None:
    """``signum`` to the command's group, and to every other group of its session: a job
    the shell put in a group of its own (``set -m``) is still in the session (Rule 2).

    The second watcher (``LEASH_NAME``) is killed last, once nothing else of the session
    is left (and never just asked to end): if this process dies part-way, the watcher
    finishes the work."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(group, signum)
    members: list[tuple[int, bool]] = []
    for _ in range(_PASSES):
        members = _in_session(group)
        others = [pid for pid, leash in members if not leash]
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signum)  # its whole group, at once
        if not others or signum != signal.SIGKILL:
            break
    if signum != signal.SIGKILL:
        return
    for pid, leash in members:  # the last pass found nothing else (or gave up)
        if leash:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


_PASSES = 100
"""Passes over the session's processes at most (each kills what the one before saw)."""


def _in_session(session: int) -> list[tuple[int, bool]]:
    """The live processes of ``session`` (Linux's ``/proc``; none found elsewhere), each
    with whether it is the second watcher; zombies left out."""
    found = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry.name}/stat", "rb") as file:
                    fields = file.read().rsplit(b") ", 1)[1].split()
                if int(fields[3]) != session or fields[0] in (b"Z", b"X"):
                    continue
                with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                    leash = file.read(len(LEASH_NAME) + 1) == LEASH_NAME.encode() + b"\0"
                found.append((int(entry.name), leash))
    return found


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


class _Output:
    """A command's output: its first and last ``keep`` bytes and how much there was (Rule 3)."""

    __slots__ = ("_head", "_keep", "_tail", "total")

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._keep - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > 2 * self._keep:
                del self._tail[: len(self._tail) - self._keep]

    def text(self) -> str:
        tail = self._tail[-self._keep :] if self._tail else b""
        left_out = self.total - len(self._head) - len(tail)
        head = self._head.decode("utf-8", errors="replace")
        if left_out <= 0:
            return (head + bytes(tail).decode("utf-8", errors="replace")).rstrip("\n")
        kept = f"{self._keep // 1024} KiB" if self._keep >= 1024 else f"{self._keep} bytes"
        note = (
            f"\n[... {left_out} bytes of output left out: the first and the last "
            f"{kept} of {self.total} bytes are shown ...]\n"
        )
        return head + note + bytes(tail).decode("utf-8", errors="replace").rstrip("\n")
