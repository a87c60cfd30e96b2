"""Turn handlers and file readers shared by the tests."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import orjson

from amplifier import SessionContext, SessionSetup, Turn

TurnFunction = Callable[[Turn], Awaitable[str]]


class FnHandler:
    """A turn handler whose turns run ``fn``; records the answer as the assistant message."""

    def __init__(self, fn: TurnFunction | None = None) -> None:
        self.fn = fn
        self.resumed: list[str] = []

    def prepare_session(self, agent: str | None, *, profile: str | None = None) -> SessionSetup:
        return SessionSetup(agent=agent or "default")

    async def on_resume(self, session: SessionContext) -> None:
        self.resumed.append(session.id)

    async def run_turn(self, turn: Turn) -> str:
        text = await self.fn(turn) if self.fn is not None else f"echo: {turn.prompt}"
        await turn.record({"role": "assistant", "content": text})
        return text


def session_dirs(home: Path) -> dict[str, Path]:
    """Every session folder under ``home``, by id."""
    return {p.name: p for p in home.glob("projects/*/sessions/*") if p.is_dir()}


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, parsed; fails the test on any bad or torn line."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with a torn line"
    return [orjson.loads(line) for line in data.splitlines()]


def events(home: Path, session_id: str) -> list[dict[str, Any]]:
    return lines(session_dirs(home)[session_id] / "events.jsonl")


def transcript(home: Path, session_id: str) -> list[dict[str, Any]]:
    return lines(session_dirs(home)[session_id] / "transcript.jsonl")


def metadata(home: Path, session_id: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(
        (session_dirs(home)[session_id] / "metadata.json").read_bytes()
    )
    return document


def names(records: list[dict[str, Any]]) -> list[str]:
    return [r["event"] for r in records]


def first(records: list[dict[str, Any]], event: str, **data: Any) -> dict[str, Any]:
    """The first event named ``event`` whose data contains ``data``."""
    for record in records:
        if record["event"] == event and all(record["data"].get(k) == v for k, v in data.items()):
            return record
    raise AssertionError(f"no {event} with {data} in {names(records)}")


async def until(condition: Callable[[], bool]) -> None:
    """Wait (10 s at most) until ``condition`` holds: state another thread or process
    changes, which no event of this loop announces."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - another process's state, or a thread's
            await anyio.sleep(0.01)


def hangups_at_default() -> None:
    """In a started process, before it runs: SIGHUP at its default, as a terminal's
    hang-up finds a program. Under ``nohup`` the suite ignores SIGHUP, and a process it
    starts would inherit that (the command line keeps a signal it was started ignoring
    ignored), so a test of what SIGHUP does would not test it."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
