"""The live view of a turn: sub-sessions and tool calls as they run, on stderr.

Shown by ``amplifier run`` on a terminal only (rich ``Live``), never in
piped or ``--json`` output. It appears with the first tool call or
delegation (a plain answer shows none), redraws a few times a second with
each item's status and elapsed time, and stays on screen, final, when the
turn ends. The events come from the session's in-process subscription,
exactly as they are persisted.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import orjson
from rich.console import Console, RenderableType
from rich.file_proxy import FileProxy
from rich.live import Live
from rich.text import Text
from rich.tree import Tree

from amplifier import AmplifierError, EventRecord, Session
from amplifier._errors import unwrap_single_error
from amplifier.agents import (
    ProviderFailed,
    ProviderRequested,
    ProviderResponded,
    ToolFinished,
    ToolStarted,
    read_event,
)
from amplifier.runtime import DelegateEnded, DelegateStarted, PromptCompleted

from ._approval import SCREEN
from ._render import safe

REFRESH_PER_SECOND = 8
CATCH_UP_SECONDS = 1.0
"""How long the view waits, after the turn returned, for the turn's last events."""
_MARK = {"running": "…", "ok": "✓", "completed": "✓", "error": "✗", "failed": "✗"}


@dataclass(slots=True)
class Item:
    """A tool call or a sub-session, with its status and when it started and ended."""

    label: str
    started: float
    status: str = "running"
    ended: float | None = None
    children: list[Item] = field(default_factory=list)
    activity: str = ""
    """What a running session is doing (waiting for the model, say)."""


class ProgressTree:
    """The state of the live view, fed one event at a time; ``render`` draws it."""

    def __init__(self, session_id: str, agent: str, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.root = Item(f"{session_id} [{safe(agent)}]", clock())
        self._sessions: dict[str, Item] = {session_id: self.root}
        self._calls: dict[str, Item] = {}
        self.shown = False
        """A tool call or delegation happened: there is a tree worth showing."""

    def apply(self, event: EventRecord) -> None:
        now = self._clock()
        owner = self._sessions.get(event.session_id)
        if owner is None:
            return
        match read_event(event):
            case ToolStarted(tool=tool, call_id=call_id, arguments=arguments) if tool != "delegate":
                # A delegation shows as its child, at its ``delegate:start``.
                item = Item(f"{safe(tool)} {_short(arguments)}", now)
                self._calls[call_id] = item
                owner.children.append(item)
                self.shown = True
            case ToolFinished(call_id=call_id, is_error=is_error):
                called = self._calls.get(call_id)
                if called is not None:
                    called.status = "error" if is_error else "ok"
                    called.ended = now
            case DelegateStarted(child_id=child_id, agent=agent, instruction=instruction):
                child = Item(f"{safe(agent)}: {_short(instruction)}", now)
                self._sessions[child_id] = child
                owner.children.append(child)
                self.shown = True
            case DelegateEnded(child_id=child_id, status=status):
                ended = self._sessions.get(child_id)
                if ended is not None:
                    ended.status = status
                    ended.ended = now
                    ended.activity = ""
            case ProviderRequested():
                owner.activity = "waiting for the model"
            case ProviderResponded() | ProviderFailed():
                owner.activity = ""
            case PromptCompleted(status=status) if owner is self.root:
                self.root.status = status
                self.root.ended = now
                self.root.activity = ""
            case _:
                pass

    def render(self) -> RenderableType:
        tree = Tree(self._line(self.root), guide_style="dim")
        self._grow(tree, self.root)
        return tree

    def _grow(self, branch: Tree, item: Item) -> None:
        for child in item.children:
            self._grow(branch.add(self._line(child)), child)

    def _line(self, item: Item) -> Text:
        end = item.ended if item.ended is not None else self._clock()
        elapsed = max(0.0, end - item.started)
        line = Text(f"{_MARK.get(item.status, '•')} ")
        line.append(item.label)
        style = {"running": "yellow", "ok": "green", "completed": "green"}.get(item.status, "red")
        line.append(f"  {item.status}", style=style)
        line.append(f"  {elapsed:.1f}s", style="dim")
        if item.activity:
            line.append(f"  ({item.activity})", style="dim")
        return line


def _short(value: object, width: int = 60) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = str(value)
    flat = " ".join(safe(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class _Lines(FileProxy):
    """Standard output while the tree is shown: whole lines, printed above the tree.

    A streamed answer flushes after every piece; rich's proxy would print
    each piece on a line of its own, so a flush waits for the line's end.
    """

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        """Print what is left of the last line."""
        super().flush()


@asynccontextmanager
async def live_progress(session: Session, console: Console) -> AsyncIterator[ProgressTree]:
    """Show the live tree of ``session``'s turn on ``console`` while the block runs.

    Subscribed before the block starts, so no event is missed; after the
    block, the view waits (``CATCH_UP_SECONDS`` at most) for the turn's own
    ``prompt:complete``, so the tree left on screen shows how each item
    ended, not where the view was when the answer came. Redrawn by
    a task of our own (rich's refresh thread would read the tree from
    another thread). Standard output, when it is a terminal too, is routed
    above the tree while it is shown, so streamed text and the tree do not
    overwrite each other.
    """
    meta = session.metadata
    state = ProgressTree(session.id, meta.agent, anyio.current_time)
    live = Live(
        console=console,
        auto_refresh=False,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    stdout = sys.stdout
    lines = _Lines(console, stdout) if stdout.isatty() else None

    # The block's own error (a failed or cancelled turn) leaves as itself, not in a group.
    with unwrap_single_error():
        async with anyio.create_task_group() as tg, session.subscribe(tree=True) as events:
            # Set when the turn's ``prompt:complete`` was applied, or no event will come.
            finished = anyio.Event()

            async def follow() -> None:
                try:
                    with contextlib.suppress(AmplifierError):  # fell behind: the view stops
                        async for event in events:
                            state.apply(event)
                            if state.root.ended is not None:
                                finished.set()
                            if state.shown and SCREEN.live is None:
                                stdout.flush()
                                live.start()
                                SCREEN.live = live
                                if lines is not None:
                                    sys.stdout = lines
                                tg.start_soon(redraw)
                finally:
                    finished.set()  # nothing more will come

            async def redraw() -> None:
                while True:
                    if live.is_started:  # not while a question has paused it (``_approval``)
                        live.update(state.render(), refresh=True)
                    await anyio.sleep(1 / REFRESH_PER_SECOND)

            tg.start_soon(follow)
            try:
                yield state
                with anyio.move_on_after(CATCH_UP_SECONDS):
                    await finished.wait()
            finally:
                tg.cancel_scope.cancel()
                SCREEN.live = None
                if live.is_started:
                    if lines is not None:
                        lines.finish()
                        sys.stdout = stdout
                    live.update(state.render(), refresh=True)
                    live.stop()
