"""Provider faults from a local server: bounded retries, a failed turn on record, never a hang.

Every provider (openai, anthropic) is pointed at ``FakeLLMServer`` through a
project profile with small limits (``timeout`` 0.5 s, ``max_retries`` 2), so a
fault costs seconds, not minutes. Every wait of every test has a deadline
(``anyio.fail_after``): a hang fails the test instead of holding CI. After
each fault the session is resumed in a fresh runtime and answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

import amplifier
from amplifier import TurnCancelled, TurnFailed

from .fake_llm_server import (
    BrokenStream,
    FakeLLMServer,
    Kind,
    Reply,
    Stall,
    Status,
    Text,
    ToolUse,
)
from .helpers import events, lines, metadata, session_dirs, transcript
from .trusted import trusted

TIMEOUT = 0.5
MAX_RETRIES = 2
DEADLINE = 15.0
"""Seconds any one turn may take, however the server misbehaves (backoff included)."""


@pytest.fixture
def project(
    tmp_path: Path, server: FakeLLMServer, kind: Kind, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A project whose 'live' profile points the provider at the local server, small limits."""
    root = tmp_path / "project"
    (root / ".amplifier" / "profiles").mkdir(parents=True)
    url = server.openai_base_url if kind == "openai" else server.anthropic_base_url
    (root / ".amplifier" / "profiles" / "live.yaml").write_text(
        f"provider: {{kind: {kind}, model: test-model, base_url: '{url}', "
        f"timeout: {TIMEOUT}, max_retries: {MAX_RETRIES}}}\n"
    )
    monkeypatch.setenv("OPENAI_API_KEY" if kind == "openai" else "ANTHROPIC_API_KEY", "sk-test")
    return trusted(root)


async def _failed_turn(project: Path, prompt: str) -> tuple[str, TurnFailed, float]:
    """Ask once, expecting the turn to fail within the deadline: (session id, error, seconds)."""
    started = anyio.current_time()
    with anyio.fail_after(DEADLINE):
        async with (
            amplifier.open_runtime(cwd=project, profile="live") as rt,
            rt.open_session() as session,
        ):
            with pytest.raises(TurnFailed) as caught:
                await session.ask(prompt)
    return session.id, caught.value, anyio.current_time() - started


async def _resume_and_ask(project: Path, session_id: str, prompt: str) -> str:
    with anyio.fail_after(DEADLINE):
        async with (
            amplifier.open_runtime(cwd=project, profile="live") as rt,
            rt.resume(session_id) as again,
        ):
            return (await again.ask(prompt)).text


def _assert_failure_recorded(home: Path, session_id: str, kind: Kind, error: str) -> None:
    """provider:error and a failed prompt:complete on disk, every file whole."""
    for path in session_dirs(home)[session_id].glob("*.jsonl"):
        lines(path)
    stored = events(home, session_id)
    errors = [e["data"] for e in stored if e["event"] == "provider:error"]
    assert len(errors) == 1
    assert errors[0]["provider"] == kind
    assert errors[0]["error"] in error
    completes = [e["data"] for e in stored if e["event"] == "prompt:complete"]
    assert [c["status"] for c in completes] == ["failed"]
    assert errors[0]["error"] in completes[0]["error"]
    assert metadata(home, session_id)["status"] == "completed"  # the session itself ended well


def _plan_then_answer(server: FakeLLMServer, *faults: Reply) -> None:
    server.plan(*faults, Text(pieces=("back ", "again")))


def _statuses(home: Path, session_id: str) -> list[Any]:
    return [
        e["data"]["status"] for e in events(home, session_id) if e["event"] == "prompt:complete"
    ]


async def test_server_error_storm_stops_after_max_retries(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """A provider answering 500 again and again costs max_retries+1 requests, then a clear error."""
    _plan_then_answer(server, *[Status(500, "the server is on fire")] * (MAX_RETRIES + 1))
    session_id, error, _ = await _failed_turn(project, "hello?")
    assert len(server.requests) == MAX_RETRIES + 1
    message = str(error)
    assert "\n" not in message
    assert f"{kind}: HTTP 500: the server is on fire" in message
    assert f"after {MAX_RETRIES} retries" in message
    _assert_failure_recorded(home, session_id, kind, message)


async def test_server_error_storm_then_the_session_resumes_and_answers(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """After a turn lost to a 5xx storm, resuming the session gets an answer, history kept."""
    # retry-after-ms skips the SDKs' backoff (the storm test above pays it): a faster test.
    storm = Status(503, "overloaded", headers={"retry-after-ms": "10"})
    _plan_then_answer(server, *[storm] * (MAX_RETRIES + 1))
    session_id, _, _ = await _failed_turn(project, "first question")
    assert await _resume_and_ask(project, session_id, "second question") == "back again"
    assert "first question" in str(server.requests[-1].body)  # the history went back too
    assert _statuses(home, session_id) == ["failed", "completed"]
    assert transcript(home, session_id)[-1]["content"] == "back again"


async def test_rate_limit_with_retry_after_is_retried_after_the_wait(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """A 429 saying 'retry after 1 s' is waited out and retried; the user just gets the answer."""
    server.plan(Status(429, "slow down", headers={"retry-after": "1"}), Text(pieces=("ok",)))
    started = anyio.current_time()
    with anyio.fail_after(DEADLINE):
        async with (
            amplifier.open_runtime(cwd=project, profile="live") as rt,
            rt.open_session() as session,
        ):
            assert (await session.ask("hello")).text == "ok"
    # The SDKs' own first backoff is at most 0.5 s: waiting ~1 s means Retry-After was honoured.
    assert anyio.current_time() - started >= 0.9
    assert len(server.requests) == 2
    assert _statuses(home, session.id) == ["completed"]


@pytest.mark.parametrize("chunked", [False, True], ids=["connection-close", "chunked"])
async def test_truncated_stream_fails_the_turn_and_the_session_resumes(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind, chunked: bool
) -> None:
    """A stream cut off mid-event fails the turn at once, clearly; resuming answers."""
    _plan_then_answer(server, BrokenStream(chunked=chunked))
    session_id, error, _ = await _failed_turn(project, "tell me")
    assert "broke off" in str(error)
    assert len(server.requests) == 1  # a half-streamed answer is not silently retried
    _assert_failure_recorded(home, session_id, kind, str(error))
    assert await _resume_and_ask(project, session_id, "again") == "back again"
    assert _statuses(home, session_id) == ["failed", "completed"]


@pytest.mark.parametrize("chunked", [False, True], ids=["connection-close", "chunked"])
async def test_text_streamed_before_the_stream_broke_is_kept(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind, chunked: bool
) -> None:
    """The text that arrived before a stream broke off is in the transcript, marked cut off."""
    server.plan(BrokenStream(chunked=chunked))
    session_id, _, _ = await _failed_turn(project, "tell me")
    (kept,) = [m for m in transcript(home, session_id) if m["role"] == "assistant"]
    assert (kept["content"], kept["cut_off"], kept["provider"]) == ("Hello", "failed", kind)


async def test_tool_call_cut_off_by_the_output_limit_goes_back_to_the_model(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """A tool call cut off mid-JSON by the output limit is not run and does not fail the turn:
    the model gets an error result saying the output hit the limit, and tries again."""
    server.plan(
        ToolUse("read_file", {}, raw_arguments='{"path": "READ', limit=True),
        Text(pieces=("done",)),
    )
    with anyio.fail_after(DEADLINE):
        async with (
            amplifier.open_runtime(cwd=project, profile="live") as rt,
            rt.open_session() as session,
        ):
            assert (await session.ask("read the readme")).text == "done"
    (result,) = [m for m in transcript(home, session.id) if m["role"] == "tool"]
    assert result["is_error"]
    assert "output-token limit" in result["content"]
    assert "output-token limit" in json.dumps(server.requests[1].body)
    limits = [e["data"] for e in events(home, session.id) if e["event"] == "provider:limit"]
    assert [(d["round"], d["tool_calls_cut"], d["answer_cut"]) for d in limits] == [
        (1, ["read_file"], False)
    ]
    (post,) = [e["data"] for e in events(home, session.id) if e["event"] == "tool:post"]
    assert (post["tool"], post["is_error"]) == ("read_file", True)


async def test_answer_cut_off_by_the_output_limit_is_recorded(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """An answer stopped by the output limit completes the turn, marked cut off in the reply
    and the transcript, with an event."""
    server.plan(Text(pieces=("Once upon",), limit=True))
    with anyio.fail_after(DEADLINE):
        async with (
            amplifier.open_runtime(cwd=project, profile="live") as rt,
            rt.open_session() as session,
        ):
            reply = await session.ask("a story")
    assert (reply.text, reply.cut_off) == ("Once upon", "output_limit")
    (answer,) = [m for m in transcript(home, session.id) if m["role"] == "assistant"]
    assert answer["cut_off"] == "output_limit"
    limits = [e["data"] for e in events(home, session.id) if e["event"] == "provider:limit"]
    assert [(d["answer_cut"], d["max_output_tokens"]) for d in limits] == [(True, 4096)]
    assert _statuses(home, session.id) == ["completed"]


async def test_stream_stalling_mid_answer_times_out_and_the_session_resumes(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """An answer that stops half-way fails after the timeout, not never; resuming answers."""
    _plan_then_answer(server, Text(pieces=("Hello", " there"), stall=30.0))
    session_id, error, took = await _failed_turn(project, "tell me")
    assert f"{kind}: no answer within {TIMEOUT:g}s" in str(error)
    assert took < TIMEOUT + 5  # the timeout, not the 30 s stall
    _assert_failure_recorded(home, session_id, kind, str(error))
    assert await _resume_and_ask(project, session_id, "again") == "back again"
    assert _statuses(home, session_id) == ["failed", "completed"]


async def test_cancelled_turn_keeps_the_text_streamed_so_far(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """Cancelled mid-answer: the text streamed so far is kept as an assistant message marked
    cut off; the session goes on."""
    _plan_then_answer(server, Text(pieces=("Hello", " there"), stall=30.0))
    with anyio.fail_after(DEADLINE):
        async with (
            amplifier.open_runtime(cwd=project, profile="live") as rt,
            rt.open_session() as session,
        ):

            async def cancel_on_first_piece(piece: str) -> None:
                session.cancel()

            with pytest.raises(TurnCancelled):
                await session.ask("tell me", on_text=cancel_on_first_piece)
            assert (await session.ask("again")).text == "back again"
    kept = [m for m in transcript(home, session.id) if m["role"] == "assistant"]
    assert [(m["content"], m.get("cut_off")) for m in kept] == [
        ("Hello", "cancelled"),
        ("back again", None),
    ]
    assert _statuses(home, session.id) == ["cancelled", "completed"]


async def test_timeout_storm_stops_after_max_retries(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """A provider that never answers is tried max_retries+1 times, each bounded by the timeout."""
    _plan_then_answer(server, *[Stall(30.0)] * (MAX_RETRIES + 1))
    session_id, error, took = await _failed_turn(project, "anyone?")
    assert len(server.requests) == MAX_RETRIES + 1
    assert f"{kind}: no answer within {TIMEOUT:g}s (after {MAX_RETRIES} retries)" in str(error)
    assert took < (MAX_RETRIES + 1) * TIMEOUT + 5
    _assert_failure_recorded(home, session_id, kind, str(error))
