"""What the model is shown: a valid history that fits the window, even after 10,000 messages."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

import amplifier
import amplifier.agents._context as context_module
import amplifier.agents._messages as messages_module
import amplifier.persistence._reader as reader_module
from amplifier import ScriptedProvider
from amplifier.agents import (
    INTERRUPTED,
    AssistantMessage,
    Message,
    ScriptedTurn,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    fit,
    normalize,
    read_messages,
)
from amplifier.agents._context import Prepared, estimate_tokens
from amplifier.agents._messages import Parsed
from amplifier.runtime.lowlevel import open_local_runtime

from .helpers import FnHandler, events, first, session_dirs
from .trusted import trusted


def _call(call_id: str, name: str = "read_file") -> AssistantMessage:
    return AssistantMessage(tool_calls=(ToolCall(id=call_id, name=name, arguments={"path": "x"}),))


def _result(call_id: str, content: str = "ok") -> ToolResultMessage:
    return ToolResultMessage(tool_call_id=call_id, name="read_file", content=content)


def _assert_pairs_intact(messages: list[Message]) -> None:
    for index, message in enumerate(messages):
        if isinstance(message, AssistantMessage):
            following = messages[index + 1 : index + 1 + len(message.tool_calls)]
            assert [r.tool_call_id for r in following if isinstance(r, ToolResultMessage)] == [
                c.id for c in message.tool_calls
            ]
        if isinstance(message, ToolResultMessage):
            assert any(
                isinstance(m, AssistantMessage)
                and message.tool_call_id in {c.id for c in m.tool_calls}
                for m in messages[:index]
            )


def test_call_without_result_is_answered_as_interrupted() -> None:
    """A tool call a crash left unanswered is shown to the model with an explicit result."""
    history: list[Message] = [UserMessage(content="go"), _call("a")]
    shown = normalize(history)
    assert isinstance(shown[-1], ToolResultMessage)
    assert (shown[-1].content, shown[-1].is_error) == (INTERRUPTED, True)


def test_results_are_moved_next_to_their_call_and_orphans_dropped() -> None:
    """Results appended later (a repair) sit right after their call; results of no call go."""
    history: list[Message] = [
        UserMessage(content="go"),
        _call("a"),
        UserMessage(content="next"),
        _result("a", "late"),
        _result("ghost"),
    ]
    shown = normalize(history)
    assert [type(m).__name__ for m in shown] == [
        "UserMessage",
        "AssistantMessage",
        "ToolResultMessage",
        "UserMessage",
    ]
    _assert_pairs_intact(shown)


def test_call_ids_reused_across_turns_pair_with_their_own_results() -> None:
    """Providers that reuse ids turn after turn still get each call paired with its own result."""
    history: list[Message] = [
        UserMessage(content="one"),
        _call("call_1"),
        _result("call_1", "first"),
        UserMessage(content="two"),
        _call("call_1"),
        _result("call_1", "second"),
    ]
    shown = normalize(history)
    assert [m.content for m in shown if isinstance(m, ToolResultMessage)] == ["first", "second"]


def test_history_within_budget_is_unchanged() -> None:
    """Nothing is compacted while the history fits."""
    history: list[Message] = [UserMessage(content="hi"), AssistantMessage(content="hello")]
    assert fit(history, 1000) == (history, None)


def test_compaction_keeps_first_prompt_current_turn_and_pairs() -> None:
    """Over budget: the first prompt, current turn and call/result pairs survive; old turns go."""
    history: list[Message] = [UserMessage(content="the goal: fix the parser")]
    for n in range(200):
        history += [
            UserMessage(content=f"step {n}"),
            _call(f"c{n}"),
            _result(f"c{n}", "x" * 2000),
            AssistantMessage(content=f"done {n}"),
        ]
    history += [UserMessage(content="now summarise"), _call("last"), _result("last", "y" * 3000)]
    shown, compaction = fit(normalize(history), 4000)
    assert compaction is not None
    assert sum(estimate_tokens(m) for m in shown) <= 4000
    assert shown[0] == UserMessage(content="the goal: fix the parser")
    assert "earlier messages left out" in shown[1].content
    assert shown[-3:] == history[-3:]  # the current turn, untouched
    _assert_pairs_intact(shown)
    assert compaction.omitted > 0
    assert compaction.shortened > 0
    assert compaction.tokens_after < compaction.tokens_before


def test_oversized_current_turn_keeps_its_prompt_and_latest_rounds() -> None:
    """Even one huge turn is cut down to fit, keeping the prompt and the latest tool rounds."""
    history: list[Message] = [UserMessage(content="big job")]
    for n in range(50):
        history += [_call(f"c{n}"), _result(f"c{n}", "z" * 4000)]
    shown, compaction = fit(normalize(history), 3000)
    assert compaction is not None
    assert shown[0] == UserMessage(content="big job")
    assert "messages of this turn left out" in shown[1].content
    assert shown[-1].tool_call_id == "c49"  # type: ignore[union-attr]
    _assert_pairs_intact(shown)
    assert sum(estimate_tokens(m) for m in shown) <= 3000


async def test_resumed_session_with_ten_thousand_messages_completes_a_turn(
    home: Path, tmp_path: Path
) -> None:
    """A session with 10,000 stored messages resumes under a small window and answers."""
    project = tmp_path / "p"
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "tiny.yaml").write_text(
        "context_window: 6000\nmax_output_tokens: 500\n"
    )
    trusted(project)
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("first prompt: remember the goal")
    transcript = session_dirs(home)[session.id] / "transcript.jsonl"
    last = orjson.loads(transcript.read_bytes().splitlines()[-1])
    lines: list[bytes] = []
    seq = last["seq"]
    for n in range(2500):  # 4 messages a turn: 10,000 messages
        turn: list[dict[str, Any]] = [
            {"role": "user", "content": f"question {n}"},
            {
                "role": "assistant",
                "tool_calls": [{"id": f"t{n}", "name": "read_file", "arguments": {"path": "a"}}],
            },
            {
                "role": "tool",
                "tool_call_id": f"t{n}",
                "name": "read_file",
                "content": "data " * 200,
            },
            {"role": "assistant", "content": f"answer {n}"},
        ]
        for message in turn:
            seq += 1
            lines.append(orjson.dumps({"version": 1, "seq": seq, "ts": last["ts"], **message}))
    with transcript.open("ab") as f:
        f.write(b"\n".join(lines) + b"\n")

    provider = ScriptedProvider([ScriptedTurn(text="still here")])
    async with amplifier.open_runtime(cwd=project, provider=provider) as rt:
        async with rt.resume(session.id, profile="tiny") as again:
            reply = await again.ask("what was the goal?")
    assert reply.text == "still here"
    (request,) = provider.requests
    assert request.messages[0] == UserMessage(content="first prompt: remember the goal")
    assert request.messages[-1] == UserMessage(content="what was the goal?")
    assert sum(estimate_tokens(m) for m in request.messages) <= 6000
    _assert_pairs_intact(list(request.messages))
    assert "earlier messages left out" in request.messages[1].content
    compact = first(events(home, session.id), "context:compact")["data"]
    assert compact["history_read"] == "tail"


async def test_resume_and_next_turn_never_read_the_whole_transcript(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming a long session and answering reads only the end of its transcript."""
    project = tmp_path / "p"
    project.mkdir()
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("the first prompt")
    transcript = session_dirs(home)[session.id] / "transcript.jsonl"
    last = orjson.loads(transcript.read_bytes().splitlines()[-1])
    filler = [
        orjson.dumps(
            {
                "version": 1,
                "seq": last["seq"] + n,
                "ts": last["ts"],
                "role": "user",
                "content": "x" * 500,
            }
        )
        for n in range(1, 4001)
    ]
    with transcript.open("ab") as f:
        f.write(b"\n".join(filler) + b"\n")

    def whole_file_read(location: object) -> None:
        raise AssertionError("the whole transcript was read")

    read_file = reader_module.read_file

    def no_whole_transcript(path: Path) -> bytes:
        if path.name == "transcript.jsonl":
            raise AssertionError("the whole transcript was read")
        return read_file(path)

    monkeypatch.setattr(reader_module, "load_transcript", whole_file_read)
    monkeypatch.setattr(reader_module, "read_file", no_whole_transcript)
    provider = ScriptedProvider([ScriptedTurn(text="fine")])
    async with amplifier.open_runtime(cwd=project, provider=provider) as rt:
        async with rt.resume(session.id) as again:
            assert (await again.ask("next")).text == "fine"
    assert provider.requests[0].messages[0] == UserMessage(content="the first prompt")


async def test_every_turn_sees_its_history_exactly_as_stored(tmp_path: Path) -> None:
    """Turn after turn, the history a handler is given is the stored transcript's end."""
    project = tmp_path / "p"
    project.mkdir()
    seen: list[tuple[Any, Any, Any]] = []

    async def turn_fn(turn: amplifier.Turn) -> str:
        whole = await turn.session.history_tail(max_bytes=10**9)
        short = await turn.session.history_tail(max_bytes=600)
        stored = await turn.session.history()  # read from the file
        seen.append((whole, short, stored))
        for n in range(3):
            result = {"role": "tool", "name": "t", "tool_call_id": f"c{n}", "content": "o" * 90}
            await turn.record(result)
        return f"answer {turn.number}"

    async with open_local_runtime(cwd=project, handler=FnHandler(turn_fn)) as rt:
        async with rt.open_session() as session:
            for n in range(6):
                await session.ask(f"prompt {n}")
    for whole, short, stored in seen:
        assert whole.complete
        assert whole.messages == stored
        assert short.messages == stored[-len(short.messages) :]
        # A line is the message and the store's stamp (about 60 bytes) before it.
        assert sum(len(orjson.dumps(m)) + 60 for m in short.messages) >= 600 or short.complete
        if not short.complete:
            assert short.first == stored[0]


# -- a long session prepares each call in the time of what it added ---------------------


def _random_messages(rng: random.Random, calls: list[str]) -> list[Message]:
    """A few messages of any kind: prompts, answers, tool calls and results (some orphans,
    some calls left without one)."""
    out: list[Message] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.25:
            out.append(UserMessage(content=f"prompt {rng.random()}"))
        elif kind < 0.45:
            out.append(AssistantMessage(content="x" * rng.randint(0, 400)))
        elif kind < 0.75:
            ids = [f"c{rng.randint(0, 30)}" for _ in range(rng.randint(1, 3))]
            calls.extend(ids)
            out.append(
                AssistantMessage(
                    tool_calls=tuple(ToolCall(id=i, name="t", arguments={}) for i in ids)
                )
            )
        else:
            out.append(_result(rng.choice(calls) if calls else "orphan", "o" * rng.randint(0, 300)))
    return out


def test_a_history_prepared_call_by_call_is_the_history_normalized_at_once() -> None:
    """Whether the history grew by a turn or a tool round, got a notice before its prompt,
    or was replaced by its end (a summary, a window), each call sees it normalized and
    measured exactly as if all of it were done again."""
    rng = random.Random(20261207)
    for _ in range(150):
        prepared, history, calls = Prepared(), list[Message](), list[str]()
        for _ in range(25):
            change = rng.random()
            if change < 0.1 and history:
                history = history[rng.randrange(len(history)) :]
            elif change < 0.15 and history:
                history.insert(len(history) - 1, UserMessage(content="notice"))
            else:
                history.extend(_random_messages(rng, calls))
            got, tokens = prepared.normalized(list(history))
            want = normalize(history)
            assert got == want
            assert tokens == sum(estimate_tokens(m) for m in want)


def _cli_records(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Transcript records as ours and as the Amplifier CLI writes them (a tool result
    without its tool's name, which the call before it gives; content as blocks)."""
    records: list[dict[str, Any]] = []
    for index in range(n):
        kind = rng.random()
        if kind < 0.3:
            records.append({"role": "user", "content": [{"type": "text", "text": f"p{index}"}]})
        elif kind < 0.6:
            call = {"id": f"t{index}", "name": f"tool{index % 3}", "arguments": {}}
            records.append({"role": "assistant", "content": "", "tool_calls": [call]})
            records.append({"role": "tool", "tool_call_id": f"t{index}", "content": {"ok": 1}})
        elif kind < 0.9:
            records.append({"role": "assistant", "content": f"a{index}"})
        else:
            records.append({"role": "system", "content": "not a message"})
    return records


def test_history_read_turn_after_turn_reads_as_the_whole_history_read_at_once() -> None:
    """Records read turn after turn (more each time, a window that moved on, equal copies)
    read as they do in the whole history read at once: a CLI tool result is named by its
    call even once the window has left the call behind."""
    rng = random.Random(7)
    for _ in range(60):
        parsed, whole, start = Parsed(), _cli_records(rng, 5), 0
        read_messages(whole, parsed=parsed)  # a window leaves behind only what was read
        for _ in range(12):
            change = rng.random()
            if change < 0.15:
                start = rng.randrange(start, len(whole))
            elif change < 0.2:
                whole = [dict(r) for r in whole]  # equal, not the same objects
            else:
                whole = whole + _cli_records(rng, rng.randint(1, 5))
            assert read_messages(whole[start:], parsed=parsed) == read_messages(whole)[start:]


async def test_a_turn_of_a_long_session_prepares_only_what_the_turn_before_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turn 60 of a session normalizes and reads as many messages as turn 10: those the
    turn before added, not the whole history again (a long session's turns cost the same)."""
    seen = 0
    normalize_pieces, read_records = context_module.normalize, messages_module._read

    def normalized(history: Any) -> Any:
        nonlocal seen
        seen += len(history)
        return normalize_pieces(history)

    def read(records: Any, *args: Any) -> Any:
        nonlocal seen
        seen += len(records)
        return read_records(records, *args)

    monkeypatch.setattr(context_module, "normalize", normalized)
    monkeypatch.setattr(messages_module, "_read", read)
    per_turn: list[int] = []
    project = tmp_path / "p"
    project.mkdir()
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            for _ in range(60):
                seen = 0
                await session.ask("/delegate explorer: look")
                per_turn.append(seen)
    assert len(set(per_turn[10:])) == 1, per_turn
