"""Events are a closed union of models: what is written reads back as its model, unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

import amplifier
from amplifier.agents import EVENTS, ForeignEvent, ProviderResponded, ToolFinished, read_event
from amplifier.persistence import EventRecord


async def test_every_event_written_reads_back_as_its_model_unchanged(
    home: Path, project: Path
) -> None:
    """A session that delegates, changes files, runs a command, is refused and rewound: each
    event it wrote is one of the models, and the model gives back exactly the stored payload."""
    (project / "a.txt").write_text("old\n")
    prompt = "\n".join(
        [
            "/delegate explorer: /tool list_dir {}",
            "/tool edit_file " + json.dumps(
                {"file_path": "a.txt", "old_string": "old", "new_string": "new"}
            ),
            '/tool bash {"command": "echo hi"}',
            '/tool read_file {"path": "../outside"}',
        ]
    )
    rules = amplifier.Permissions(allow=["edit_file"], deny=["bash"])
    async with amplifier.open_runtime(
        home=home, cwd=project, durability="flush", permissions=rules
    ) as rt:
        async with rt.open_session() as session:
            await session.ask(prompt)
            with pytest.raises(amplifier.TurnFailed):
                await session.ask("/fail the provider is down")
        await amplifier.session_rewind(rt, session.id)
        async with rt.resume(session.id) as again:
            await again.ask("hello again")
        records = [event async for event in rt.events(session.id, tree=True)]
    seen = set()
    for record in records:
        event = read_event(record)
        assert not isinstance(event, ForeignEvent), record
        assert event.data() == record.data, record.event
        seen.add(record.event)
    expected = {
        "session:start", "session:resume", "prompt:submit", "prompt:complete", "session:end",
        "delegate:start", "delegate:end", "provider:request", "provider:response",
        "provider:error", "tool:pre", "tool:post", "approval:decision", "session:rewind",
    }
    assert expected <= seen
    assert seen <= {event.name for event in EVENTS}


def test_another_tools_event_or_a_damaged_one_is_foreign() -> None:
    """A record that is not ours, or whose payload no longer fits, never fails a reader."""
    now = datetime.now(UTC)
    theirs = EventRecord(ts=now, session_id="s", event="llm:request", data={"x": 1})
    damaged = EventRecord(ts=now, session_id="s", event="tool:post", data={"tool": 3})
    ours = EventRecord(
        ts=now, session_id="s", event="tool:post",
        data={"tool": "grep", "call_id": "c", "is_error": False, "result": "ok"},
    )
    assert read_event(theirs) == ForeignEvent("llm:request", {"x": 1})
    assert isinstance(read_event(damaged), ForeignEvent)
    assert read_event(ours) == ToolFinished(tool="grep", call_id="c", is_error=False, result="ok")


def test_an_older_writers_event_reads_with_the_fields_it_lacked_defaulted() -> None:
    """A provider:response written before stop_reason existed still counts as a model call."""
    record = EventRecord(
        seq=3, ts=datetime.now(UTC), session_id="s", event="provider:response",
        data={"provider": "openai", "model": "m", "round": 1, "latency_ms": 3.0,
              "usage": {"input_tokens": 5, "output_tokens": 1}, "tool_calls": []},
    )
    event = read_event(record)
    assert isinstance(event, ProviderResponded)
    assert (event.stop_reason, event.usage["input_tokens"]) == (None, 5)
