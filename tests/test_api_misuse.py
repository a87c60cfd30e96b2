"""Settings and prompts a program gets wrong: refused at once, with what would be right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import amplifier

from .helpers import events


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("provider", "gpt", "offline, scripted, openai, anthropic"),
        ("durability", "fast", "fsync, flush, none"),
        ("durability", "fsnyc", "fsync, flush, none"),
    ],
)
async def test_open_runtime_refuses_an_unknown_setting_naming_the_valid_ones(
    home: Path, project: Path, option: str, value: str, valid: str
) -> None:
    """`open_runtime(provider="gpt")` raises ConfigError listing the kinds; nothing is stored."""
    with pytest.raises(amplifier.ConfigError, match=valid):
        async with amplifier.open_runtime(cwd=project, **{option: value}):
            pass
    assert not home.exists()


@pytest.mark.parametrize("prompt", [None, 123, b"x"])
async def test_ask_with_a_prompt_that_is_not_text_raises_type_error(
    home: Path, project: Path, prompt: object
) -> None:
    """`ask(None)`, `ask(123)`, `ask(b"x")` raise TypeError and store no message."""
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            with pytest.raises(TypeError, match="a prompt is a str"):
                await session.ask(prompt)  # type: ignore[arg-type]
            assert session.metadata.turns == 0
        assert await rt.transcript(session.id) == []


@pytest.mark.parametrize("prompt", ["", "  \n"])
async def test_ask_with_an_empty_prompt_is_refused(home: Path, project: Path, prompt: str) -> None:
    """`ask("")` is refused as the command line refuses an empty prompt, and the session goes on."""
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            with pytest.raises(amplifier.UsageError, match="empty"):
                await session.ask(prompt)
            reply = await session.ask("hello")
    assert reply.turn == 1


UNSTORABLE = "caf\udce9"
"""A lone surrogate: how ``os.listdir`` gives a file name that is not UTF-8; no record holds it."""


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        (lambda rt, s: rt.rename(s.id, UNSTORABLE), "UTF-8"),
        (lambda rt, s: s.set_attributes({"file": UNSTORABLE}), "UTF-8"),
        (lambda rt, s: s.set_attributes({"model": 5}), "must be text, not int"),
        (lambda rt, s: s.close(status="failed", error=f"open {UNSTORABLE} failed"), "UTF-8"),
        (lambda rt, s: s.close(status="bogus"), "'completed', 'cancelled', 'failed'"),
    ],
    ids=["rename", "attribute", "attribute-not-text", "close-error", "close-status"],
)
async def test_a_change_a_session_cannot_store_is_refused_and_the_session_goes_on(
    home: Path, project: Path, change: Any, refused: str
) -> None:
    """A name, an attribute, or an end that the session's metadata cannot hold raises
    UsageError before anything changes: the session answers and ends as usual, and is
    listed healthy (not damaged, not left active)."""
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("hi")
            with pytest.raises(amplifier.UsageError, match=refused):
                await change(rt, session)
            assert session.metadata.attributes.get("file") is None
            await session.ask("again")
        rows = await rt.sessions()
    assert [(row.session_id, row.status, row.problem) for row in rows] == [
        (session.id, "completed", None)
    ]
    assert rows[0].metadata is not None
    assert rows[0].metadata.turns == 2
    assert [event["event"] for event in events(home, session.id)][-1] == "session:end"


async def test_open_session_refuses_attributes_that_are_not_text(home: Path, project: Path) -> None:
    """`open_session(attributes={"model": 5})` raises UsageError and stores nothing."""
    async with amplifier.open_runtime(cwd=project) as rt:
        with pytest.raises(amplifier.UsageError, match="attribute 'model' must be text"):
            await rt.open_session(attributes={"model": 5})  # type: ignore[dict-item]
        assert await rt.sessions() == []
