"""Settings and prompts a program gets wrong: refused at once, with what would be right."""

from __future__ import annotations

from pathlib import Path

import pytest

import amplifier


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
async def test_ask_with_an_empty_prompt_is_refused(
    home: Path, project: Path, prompt: str
) -> None:
    """`ask("")` is refused as the command line refuses an empty prompt, and the session goes on."""
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            with pytest.raises(amplifier.UsageError, match="empty"):
                await session.ask(prompt)
            reply = await session.ask("hello")
    assert reply.turn == 1
