"""Choosing a session to resume at the terminal: `session resume` with no ID, `continue --pick`.

The recent root sessions of this project, the one used last first, are
listed on stderr with a number each; the person types a number (Enter: the
first), ``q`` or Ctrl-D to leave without resuming, Ctrl-C to interrupt.
Lines are read by ``LineReader``'s daemon thread, so a Ctrl-C, which
arrives as a signal on the event loop, is never stuck behind a blocked read.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio
from rich.text import Text

from amplifier import Runtime, SessionSummary

from ._interactive import Line, LineReader
from ._render import console, label, one_line, when

PICK = 10
"""How many recent sessions are offered."""

@dataclass(frozen=True, slots=True)
class Choice:
    """What the person chose: a session, none (declined), or Ctrl-C."""

    session_id: str | None = None
    interrupted: bool = False


def on_a_terminal() -> bool:
    """The person can see the list and answer it."""
    return sys.stdin.isatty() and sys.stderr.isatty()


async def recent_sessions(rt: Runtime) -> list[SessionSummary]:
    """This project's root sessions, the one used last first."""
    return await rt.sessions(limit=PICK, roots_only=True, sort="used")


def show_choices(rows: Sequence[SessionSummary]) -> None:
    """One numbered line per session: number, id, last use, name and tags, last prompt.

    Lines rather than a table: a table too wide for the screen shrinks
    every column, the number and the id too, where only the prompt should
    give way.
    """
    out = console(stderr=True)
    for number, row in enumerate(rows, start=1):
        meta = row.metadata
        line = Text(f"{number:>2}  ", style="bold")
        line.append(row.session_id)
        line.append(f"  {when(meta.updated) if meta else '?':<16}", style="dim")
        labels = label(meta)
        if labels:
            line.append(f"  {labels}", style="bold")
        room = out.width - line.cell_len - 4
        if meta is None:
            line.append("  (damaged metadata)")
        elif meta.last_prompt and room > 8:
            line.append(f'  "{one_line(meta.last_prompt, room)}"')
        out.print(line, no_wrap=True, overflow="ellipsis")


async def choose(rows: Sequence[SessionSummary], interrupts: AsyncIterator[int]) -> Choice:
    """The id the person picks from ``rows``, or why there is none."""
    show_choices(rows)
    send, lines = anyio.create_memory_object_stream[Line](1)
    reader = LineReader(send)
    result: list[Choice] = []
    async with lines, anyio.create_task_group() as tg:

        async def watch() -> None:
            async for _ in interrupts:
                result.append(Choice(interrupted=True))
                tg.cancel_scope.cancel()
                return

        async def ask() -> None:
            while True:
                sys.stderr.write(f"Resume which session? [1-{len(rows)}, Enter: 1, q: none] ")
                sys.stderr.flush()
                reader.request()
                try:
                    kind, text = await lines.receive()
                except anyio.EndOfStream:
                    kind, text = "eof", None
                answer = (text or "").strip().lower() if kind == "line" else "q"
                if answer in ("q", "quit"):
                    if kind == "eof":
                        sys.stderr.write("\n")
                    result.append(Choice())
                    break
                if answer == "":
                    answer = "1"
                if answer.isdigit() and 1 <= int(answer) <= len(rows):
                    result.append(Choice(rows[int(answer) - 1].session_id))
                    break
                sys.stderr.write(f"Type a number from 1 to {len(rows)}, or q.\n")
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(ask)
    return result[0] if result else Choice(interrupted=True)
