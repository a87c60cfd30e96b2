"""Asking the person at the terminal whether a tool call may run.

The runtime hands every question of the session tree, from any depth, to
the command's ``approve`` callback. At a terminal (stdin and stderr are
terminals, and no ``--json``) the question is shown on stderr: which
session asks (its agent and sub-session path), the command or the diff,
and the rule that asked; the answer is typed: yes, no, or always for this
session.

Rule 1: one question at a time: questions from concurrent sub-sessions
        queue; the sessions that do not ask go on meanwhile.
Rule 2: the live progress display pauses while a question is shown.
Rule 3: a question whose turn is cancelled (Ctrl-C) is withdrawn at once:
        the answer is read from the terminal on the event loop, never in a
        thread that would go on reading after the question is gone.
Rule 4: without a terminal nobody can answer: every such call is denied,
        and stderr says so once per command, naming the flags that allow.
Rule 5: only what is typed after the question is shown answers it: keys
        typed before (during the turn: a ``y`` and Enter meant for something
        else) are dropped first, so nothing is approved unseen.
"""

from __future__ import annotations

import contextlib
import os
import sys
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio

from ._render import safe

if TYPE_CHECKING:
    from rich.live import Live

    from amplifier import ApprovalDecision, ApprovalRequest

_SHOWN_LINES = 40
"""Lines of a command or diff shown in a question; the rest is counted."""


class Screen:
    """What shares stderr with questions: the live progress display, if one is running."""

    def __init__(self) -> None:
        self.live: Live | None = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop redrawing the live display (Rule 2) until the block ends."""
        live = self.live
        if live is None or not live.is_started:
            yield
            return
        live.stop()
        try:
            yield
        finally:
            live.start()


SCREEN = Screen()
"""The command's one screen (a process runs one command)."""


def at_a_terminal(as_json: bool) -> bool:
    """Whether a person can be asked: stdin and stderr are terminals, and no --json."""
    return not as_json and sys.stdin.isatty() and sys.stderr.isatty()


def approver(as_json: bool) -> Callable[[ApprovalRequest], object]:
    """The ``approve`` callback for this command: the terminal, or nobody (Rule 4)."""
    return TerminalApprover() if at_a_terminal(as_json) else NobodyApprover()


class NobodyApprover:
    """Denies every call that asks: nobody can answer (Rule 4)."""

    def __init__(self) -> None:
        self._told = False

    def __call__(self, request: ApprovalRequest) -> ApprovalDecision:
        from amplifier import ApprovalDecision

        if not self._told:
            self._told = True
            sys.stderr.write(
                f"Note: {safe(request.tool)} asked for permission with no terminal to ask at; "
                "it was denied (and so is any other call that asks). --allow RULE or --yes "
                "lets such calls run.\n"
            )
            sys.stderr.flush()
        return ApprovalDecision(
            allowed=False,
            decided_by="no one",
            reason="no one could approve it (no terminal): the command line's --allow "
            f"{_quoted(request.always_rule or request.tool)} or --yes would allow it",
        )


class TerminalApprover:
    """Asks at the terminal, one question at a time (Rules 1-3)."""

    def __init__(self) -> None:
        self._lock = anyio.Lock()

    async def __call__(self, request: ApprovalRequest) -> ApprovalDecision:
        from amplifier import ApprovalDecision

        async with self._lock:
            with SCREEN.paused():
                _show(request)
                try:
                    answer = await _answer(request)
                except anyio.get_cancelled_exc_class():
                    sys.stderr.write("\n(question withdrawn: the turn was cancelled)\n")
                    sys.stderr.flush()
                    raise
        if answer == "always":
            return ApprovalDecision(allowed=True, always=True, decided_by="user")
        return ApprovalDecision(allowed=answer == "yes", decided_by="user")


def _show(request: ApprovalRequest) -> None:
    path = " > ".join(request.agents) if request.agents else request.agent
    where = f"{path} ({request.session_id})" if len(request.sessions) > 1 else path
    lines = request.shown.splitlines() or [""]
    shown = lines[:_SHOWN_LINES]
    if len(lines) > _SHOWN_LINES:
        shown.append(f"[... {len(lines) - _SHOWN_LINES} more lines]")
    body = "\n".join(f"    {safe(line)}" for line in shown)
    action = "run" if request.tool == "bash" else "call"
    sys.stderr.write(
        f"\n{safe(where)} asks to {action} {safe(request.tool)}:\n{body}\n"
        f"  (asked by the rule: {safe(request.rule)})\n"
    )
    sys.stderr.flush()


async def _answer(request: ApprovalRequest) -> str:
    """``yes``, ``no`` or ``always``, as typed (Enter or Ctrl-D: no)."""
    always = request.always_rule or request.tool
    drop_typed_ahead()
    while True:
        sys.stderr.write(f"Allow? [y]es, [n]o, [a]lways for this session ({safe(always)}): ")
        sys.stderr.flush()
        line = await read_line()
        answer = line.strip().lower()
        if line == "":
            sys.stderr.write("\n")
            return "no"
        if answer in ("y", "yes"):
            return "yes"
        if answer in ("n", "no", ""):
            return "no"
        if answer in ("a", "always"):
            return "always"
        sys.stderr.write("Type y, n or a.\n")


def drop_typed_ahead() -> None:
    """Drop what the terminal holds unread (Rule 5)."""
    with contextlib.suppress(OSError, termios.error):
        termios.tcflush(sys.stdin.fileno(), termios.TCIFLUSH)


async def read_line() -> str:
    """One line from the terminal, read on the event loop (Rule 3); empty at its end."""
    fd = sys.stdin.fileno()
    data = bytearray()
    while not data.endswith(b"\n"):
        await anyio.wait_readable(fd)
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", errors="replace")


def _quoted(rule: str) -> str:
    return f"'{rule}'" if any(c in rule for c in " *?()[]$&;|<>\"") else rule
