"""The live view of `amplifier run`: a tree of tool calls and sub-sessions, on terminals only."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from rich.console import Console

from amplifier import EventRecord, Session
from amplifier.agents import ProviderRequested, ProviderResponded, ToolFinished, ToolStarted
from amplifier.cli._progress import CATCH_UP_SECONDS, ProgressTree, live_progress
from amplifier.runtime import DelegateEnded, DelegateStarted, Event, PromptCompleted

from .test_cli_interactive import Terminal, interactive
from .test_cli_process import amp

ROOT = "20260101T000000Z-00000000000000aa"
CHILD = "00000000000000aa-00000000000000bb_explorer"
PROMPT = '/delegate explorer: /tool list_dir {}\n/tool read_file {"path": "notes.txt"}'


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _event(session_id: str, event: Event) -> EventRecord:
    """``event`` as the session's subscription delivers it: stored, with its name."""
    return EventRecord(
        seq=1,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        session_id=session_id,
        event=event.name,
        data=event.data(),
    )


def _screen(tree: ProgressTree) -> list[str]:
    out = Console(file=io.StringIO(), width=100, color_system=None, legacy_windows=False)
    out.print(tree.render())
    text = out.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in text.splitlines()]


def test_tree_shows_each_call_and_sub_session_with_status_and_elapsed_time() -> None:
    """Running items count up from their start; finished ones keep how long they took."""
    clock = FakeClock()
    tree = ProgressTree(ROOT, "default", clock)
    tree.apply(_event(ROOT, ToolStarted(tool="read_file", call_id="c1", arguments={"path": "a"})))
    tree.apply(_event(ROOT, DelegateStarted(child_id=CHILD, agent="explorer", instruction="go")))
    clock.now += 0.5
    tree.apply(_event(ROOT, ToolFinished(tool="read_file", call_id="c1", is_error=False)))
    tree.apply(_event(CHILD, ToolStarted(tool="grep", call_id="c2", arguments={"pattern": "x"})))
    tree.apply(_event(CHILD, ProviderRequested()))
    clock.now += 1.25
    tree.apply(_event(CHILD, ToolFinished(tool="grep", call_id="c2", is_error=True)))
    assert _screen(tree) == [
        f"… {ROOT} [default]  running  1.8s",
        '├── ✓ read_file {"path":"a"}  ok  0.5s',
        "└── … explorer: go  running  1.8s  (waiting for the model)",
        '    └── ✗ grep {"pattern":"x"}  error  1.2s',
    ]
    tree.apply(_event(ROOT, DelegateEnded(child_id=CHILD, agent="explorer", status="completed")))
    tree.apply(_event(ROOT, PromptCompleted(turn=1, status="completed")))
    clock.now += 10
    assert _screen(tree)[0] == f"✓ {ROOT} [default]  completed  1.8s"
    assert _screen(tree)[2] == "└── ✓ explorer: go  completed  1.8s"


def test_a_plain_answer_has_no_tree_to_show() -> None:
    """Without a tool call or a delegation there is nothing to show."""
    tree = ProgressTree(ROOT, "default", FakeClock())
    tree.apply(_event(ROOT, ProviderRequested()))
    tree.apply(_event(ROOT, ProviderResponded()))
    assert not tree.shown


@dataclass
class _Meta:
    agent: str = "default"


class _Subscribed:
    """A session whose events arrive when the test sends them, as its subscription would."""

    def __init__(self, events: MemoryObjectReceiveStream[EventRecord]) -> None:
        self.id = ROOT
        self.metadata = _Meta()
        self._events = events

    @asynccontextmanager
    async def subscribe(self, **_: Any) -> AsyncIterator[MemoryObjectReceiveStream[EventRecord]]:
        yield self._events


async def _turn_whose_end_arrives_after(delay: float | None) -> tuple[ProgressTree, float]:
    """Run the live view over a turn that returns at once; its last events come ``delay``
    seconds later (None: never). The view, and how long it stayed after the turn returned."""
    send, receive = anyio.create_memory_object_stream[EventRecord](16)
    session = cast(Session, _Subscribed(receive))
    out = Console(file=io.StringIO(), width=100, color_system=None)

    async def end_of_turn() -> None:
        if delay is None:
            return
        await anyio.sleep(delay)
        await send.send(_event(ROOT, ToolFinished(tool="grep", call_id="c1")))
        await send.send(_event(ROOT, PromptCompleted(turn=1, status="completed")))

    async with send, receive, anyio.create_task_group() as tg:
        async with live_progress(session, out) as tree:
            await send.send(_event(ROOT, ToolStarted(tool="grep", call_id="c1")))
            tg.start_soon(end_of_turn)
            returned = anyio.current_time()
        return tree, anyio.current_time() - returned


@pytest.mark.virtual_time
async def test_live_view_ends_showing_how_the_turn_ended() -> None:
    """The tree left on screen shows each call finished, even when its events come late."""
    tree, stayed = await _turn_whose_end_arrives_after(0.25)
    assert stayed == pytest.approx(0.25)
    assert _screen(tree)[0].startswith(f"✓ {ROOT} [default]  completed")
    assert _screen(tree)[1].startswith("└── ✓ grep {}  ok")


@pytest.mark.virtual_time
async def test_live_view_stops_waiting_for_an_end_that_never_comes() -> None:
    """A turn whose end is never seen holds the command up no longer than the catch-up time."""
    tree, stayed = await _turn_whose_end_arrives_after(None)
    assert stayed == pytest.approx(CATCH_UP_SECONDS)
    assert _screen(tree)[0].startswith(f"… {ROOT} [default]  running")


def test_run_on_a_terminal_shows_the_live_tree_and_a_resume_hint(
    project: Path, home: Path
) -> None:
    """On a terminal, `run` draws its calls and sub-sessions as they finish, then the hint."""
    (project / "notes.txt").write_text("hello\n")
    term = Terminal(["run", PROMPT], cwd=project, home=home, backend="asyncio")
    try:
        term.see("✓ explorer: /tool list_dir {}  completed")
        assert term.leave() == 0
    finally:
        term.close()
    screen = term.output
    assert re.search(r"└── ✓ list_dir \{\}  ok  \d+\.\ds", screen)
    assert re.search(r'✓ read_file \{"path":"notes.txt"\}  ok  \d+\.\ds', screen)
    assert re.search(r"Resume with: amplifier session resume 20\d{6}T\d{6}Z-[0-9a-f]{16}", screen)


def test_piped_and_json_runs_carry_no_tree(project: Path, home: Path) -> None:
    """Piped, `run` prints the answer and two status lines; --json prints one document."""
    (project / "notes.txt").write_text("hello\n")
    piped = amp("run", PROMPT, cwd=project, home=home)
    as_json = amp("run", PROMPT, "--json", cwd=project, home=home)
    for done in (piped, as_json):
        assert done.returncode == 0, done.stderr
        assert "──" not in done.stdout + done.stderr
    session_id = piped.stderr.splitlines()[0].removeprefix("Session: ")
    assert piped.stderr.splitlines() == [
        f"Session: {session_id}",
        f"Resume with: amplifier session resume {session_id}",
    ]
    assert json.loads(as_json.stdout)["status"] == "completed"
    assert as_json.stderr == ""


def test_leaving_an_interactive_session_prints_the_resume_hint(project: Path, home: Path) -> None:
    """After /exit, the interactive session says how to come back to it."""
    with interactive([], cwd=project, home=home, backend="trio") as term:
        session_id = term.session_id()
        term.prompt()
        term.ask("hello")
        term.send("/exit")
        term.see(f"Resume with: amplifier session resume {session_id}")
        assert term.leave() == 0


def test_interactive_sub_session_lines_show_control_characters_escaped() -> None:
    """A sub-session's line never lets a stored name's escape sequence reach the terminal."""
    from amplifier.cli._interactive import _describe

    name = "explorer\x1b]0;pwned\x07"
    started = _describe(_event(ROOT, DelegateStarted(child_id=CHILD, agent=name, instruction="go")))
    ended = _describe(
        _event(ROOT, DelegateEnded(child_id=CHILD, agent=name, status="failed", error="x\x1b[2J"))
    )
    for line in (started, ended):
        assert line is not None
        assert "\x1b" not in line
        assert "\x07" not in line
        assert "explorer\\x1b]0;pwned\\x07" in line
