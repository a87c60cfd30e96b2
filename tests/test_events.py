"""Events are a closed union of models: what is written reads back as its model, unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import orjson
import pytest

import amplifier
from amplifier.agents import (
    EVENTS,
    FileChange,
    ForeignEvent,
    ProviderResponded,
    ToolFinished,
    read_event,
)
from amplifier.persistence import EventRecord
from amplifier.runtime import Event
from amplifier.runtime._events import encode


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


def _sample(annotation: Any) -> Any:
    """A value of ``annotation`` holding what JSON needs converting (for its dict fields)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is str:
        return 'é "quoted"\n\x00'
    if annotation is int:
        return 7
    if annotation is float:
        return 2.5
    if annotation is bool:
        return True
    if annotation is FileChange:
        return FileChange(path="a.txt", before="1" * 64)
    if origin is Literal:
        return args[-1]
    if origin in (UnionType, Union):
        return _sample(next(arg for arg in args if arg is not type(None)))
    if origin is list:
        return [_sample(args[0]), _sample(args[0])]
    if origin is tuple:
        return (_sample(args[0]),)
    if origin is dict:
        return {
            "when": datetime(2026, 12, 7, 14, 0, 0, 123456, tzinfo=UTC),
            "naive": datetime(2026, 12, 7, 14, 0),
            "path": Path("src") / "a.py",
            "pair": (1, "two"),
            "once": {3},
            "raw": b"bytes",
            "nothing": None,
            "deep": {"x": [1.0, float("nan"), float("inf")], 5: "int key"},
            "change": FileChange(path="b.txt", after="2" * 64),
        }
    raise AssertionError(f"no sample for {annotation!r}")


@pytest.mark.parametrize("model", EVENTS, ids=lambda model: model.name)
def test_each_event_is_encoded_exactly_as_its_stored_payload(model: type[Event]) -> None:
    """An event's JSON, encoded straight from its fields, is byte for byte the JSON of its
    payload as stored (``data()``): with every field given, with the optional ones left
    out, and with values JSON cannot hold as they are (times, paths, tuples, sets, bytes,
    non-finite numbers, non-string keys, nested models)."""
    full = {name: _sample(info.annotation) for name, info in model.model_fields.items()}
    required = {
        name: value for name, value in full.items() if model.model_fields[name].is_required()
    }
    extra = {"labels": {"team": "core"}} if model.model_config.get("extra") == "allow" else {}
    for fields in (full, required, {**required, **extra}):
        event = model(**fields)
        assert encode(event) == orjson.dumps(event.data()), fields
