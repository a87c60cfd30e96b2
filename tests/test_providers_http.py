"""The openai and anthropic providers, against a local server speaking their wire formats.

No test reaches the internet: every provider is pointed at a ``FakeLLMServer``
on 127.0.0.1, through the official SDKs' real HTTP stack. Tests that hold for
both providers run once per provider (``kind``); the wire shape of a request
is checked per provider.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from amplifier.agents import (
    AssistantMessage,
    ConfigError,
    ProviderConfig,
    ProviderMalformed,
    ProviderRejected,
    ProviderRequest,
    ProviderTimeout,
    ProviderUnavailable,
    ToolCall,
    ToolResultMessage,
    ToolSpec,
    UserMessage,
)
from amplifier.agents._anthropic import AnthropicProvider
from amplifier.agents._openai import OpenAIProvider

from .fake_llm_server import (
    BrokenStream,
    FakeLLMServer,
    Garbage,
    Kind,
    Stall,
    Status,
    Text,
    ToolUse,
)

KEY = "sk-test-5f1c2d9e8a7b6c4d3e2f1a0b"
WEATHER = ToolSpec(
    name="weather",
    description="The weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def make(
    kind: Kind,
    server: FakeLLMServer,
    *,
    timeout: float = 5.0,
    max_retries: int = 0,
) -> OpenAIProvider | AnthropicProvider:
    """A provider of ``kind`` pointed at ``server`` (never at the real API)."""
    base_url = server.openai_base_url if kind == "openai" else server.anthropic_base_url
    config = ProviderConfig(
        kind=kind,
        base_url=base_url,
        api_key=SecretStr(KEY),
        timeout=timeout,
        max_retries=max_retries,
    )
    return OpenAIProvider(config) if kind == "openai" else AnthropicProvider(config)


def ask(prompt: str = "Hello?", *, tools: tuple[ToolSpec, ...] = ()) -> ProviderRequest:
    return ProviderRequest(
        model="test-model",
        instructions="Be brief.",
        messages=(UserMessage(content=prompt),),
        tools=tools,
    )


def history() -> ProviderRequest:
    """Two tool calls (one failed), a user follow-up, and a call made without any text."""
    return ProviderRequest(
        model="test-model",
        instructions="Be brief.",
        tools=(WEATHER,),
        max_output_tokens=321,
        messages=(
            UserMessage(content="Weather in Paris and Atlantis?"),
            AssistantMessage(
                content="Let me check.",
                tool_calls=(
                    ToolCall(id="call_1", name="weather", arguments={"city": "Paris"}),
                    ToolCall(id="call_2", name="weather", arguments={"city": "Atlantis"}),
                ),
            ),
            ToolResultMessage(tool_call_id="call_1", name="weather", content="sunny"),
            ToolResultMessage(
                tool_call_id="call_2", name="weather", content="no such city", is_error=True
            ),
            UserMessage(content="And Oslo?"),
            AssistantMessage(
                tool_calls=(ToolCall(id="call_3", name="weather", arguments={"city": "Oslo"}),)
            ),
            ToolResultMessage(tool_call_id="call_3", name="weather", content="rain"),
        ),
    )


# -- answers -----------------------------------------------------------------------


async def test_provider_streams_text_pieces_in_order(kind: Kind, server: FakeLLMServer) -> None:
    """Text reaches ``on_text`` piece by piece, and the pieces make up the answer."""
    server.plan(Text(("Hel", "lo, ", "world."), input_tokens=12, output_tokens=4))
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    async with make(kind, server) as provider:
        response = await provider.complete(ask(), on_text=on_text)
    assert pieces == ["Hel", "lo, ", "world."]
    assert response.message.content == "".join(pieces)
    assert response.message.provider == kind
    assert response.message.tool_calls == ()
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 4)
    assert response.stop_reason in {"stop", "end_turn"}


async def test_provider_reports_the_model_the_server_used(
    kind: Kind, server: FakeLLMServer
) -> None:
    """The answer names the model that actually answered, not just the one asked for."""
    server.plan(Text(("Hi",), model="test-model-2025-01-01"))
    async with make(kind, server) as provider:
        response = await provider.complete(ask())
    assert response.message.model == "test-model-2025-01-01"
    assert server.requests[0].body["model"] == "test-model"


async def test_provider_parses_a_streamed_tool_call(kind: Kind, server: FakeLLMServer) -> None:
    """A tool call streamed in fragments comes back as one call with parsed arguments."""
    arguments = {"city": "Paris", "units": "metric", "days": 3}
    server.plan(ToolUse("weather", arguments, id="call_9", text="Checking."))
    async with make(kind, server) as provider:
        response = await provider.complete(ask(tools=(WEATHER,)))
    assert response.message.tool_calls == (
        ToolCall(id="call_9", name="weather", arguments=arguments),
    )
    assert response.message.content == "Checking."
    assert response.stop_reason in {"tool_calls", "tool_use"}


async def test_provider_refuses_tool_arguments_that_are_not_json(
    kind: Kind, server: FakeLLMServer
) -> None:
    """Broken tool-call JSON is a malformed answer that names the tool, not a crash."""
    server.plan(ToolUse("weather", {}, raw_arguments='{"city": "Par'))
    async with make(kind, server) as provider:
        with pytest.raises(ProviderMalformed, match=r"'weather'.*not valid JSON"):
            await provider.complete(ask(tools=(WEATHER,)))


async def test_provider_marks_a_tool_call_cut_off_by_the_output_limit(
    kind: Kind, server: FakeLLMServer
) -> None:
    """A call whose JSON the output-token limit cut off comes back marked, not as an error."""
    server.plan(ToolUse("weather", {}, raw_arguments='{"city": "Par', limit=True))
    async with make(kind, server) as provider:
        response = await provider.complete(ask(tools=(WEATHER,)))
    (call,) = response.message.tool_calls
    assert (call.name, call.arguments, call.cut_off) == ("weather", {}, True)
    assert response.hit_limit


async def test_provider_says_when_an_answer_stopped_at_the_output_limit(
    kind: Kind, server: FakeLLMServer
) -> None:
    """A text answer stopped by the output-token limit is returned, and says so."""
    server.plan(Text(("Once upon",), limit=True), Text(("The end.",)))
    async with make(kind, server) as provider:
        cut = await provider.complete(ask())
        whole = await provider.complete(ask())
    assert (cut.message.content, cut.hit_limit) == ("Once upon", True)
    assert (whole.message.content, whole.hit_limit) == ("The end.", False)


# -- what is sent ------------------------------------------------------------------


async def test_openai_sends_history_in_chat_completions_shape(server: FakeLLMServer) -> None:
    """Instructions, tool calls and their results reach OpenAI as system/assistant/tool messages."""
    server.plan(Text(("ok",)))
    async with make("openai", server) as provider:
        await provider.complete(history())
    body = server.requests[0].body
    for message in body["messages"]:
        for call in message.get("tool_calls", ()):
            # Arguments travel as a JSON string; compare them decoded.
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Atlantis?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                _openai_call("call_1", {"city": "Paris"}),
                _openai_call("call_2", {"city": "Atlantis"}),
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: no such city"},
        {"role": "user", "content": "And Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [_openai_call("call_3", {"city": "Oslo"})],
        },
        {"role": "tool", "tool_call_id": "call_3", "content": "rain"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": WEATHER.description,
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 321  # a base_url endpoint: the field local servers know


def _openai_call(call_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "weather", "arguments": arguments},
    }


async def test_anthropic_sends_history_as_alternating_turns(server: FakeLLMServer) -> None:
    """Tool results and the next prompt reach Anthropic as one user turn, tool results first."""
    server.plan(Text(("ok",)))
    async with make("anthropic", server) as provider:
        await provider.complete(history())
    body = server.requests[0].body
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Atlantis?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                _anthropic_call("call_1", {"city": "Paris"}),
                _anthropic_call("call_2", {"city": "Atlantis"}),
            ],
        },
        {
            "role": "user",
            "content": [
                _anthropic_result("call_1", "sunny", is_error=False),
                _anthropic_result("call_2", "no such city", is_error=True),
                {"type": "text", "text": "And Oslo?"},
            ],
        },
        # No empty text block before a call made without words.
        {"role": "assistant", "content": [_anthropic_call("call_3", {"city": "Oslo"})]},
        {"role": "user", "content": [_anthropic_result("call_3", "rain", is_error=False)]},
    ]
    assert body["tools"] == [
        {"name": "weather", "description": WEATHER.description, "input_schema": WEATHER.parameters}
    ]
    assert body["stream"] is True
    assert body["max_tokens"] == 321


def _anthropic_call(call_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "weather", "input": arguments}


def _anthropic_result(call_id: str, content: str, *, is_error: bool) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error}


async def test_openai_sends_the_key_as_a_bearer_token(server: FakeLLMServer) -> None:
    """OpenAI gets the key in ``Authorization: Bearer``."""
    server.plan(Text(("ok",)))
    async with make("openai", server) as provider:
        await provider.complete(ask())
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_anthropic_sends_the_key_and_api_version(server: FakeLLMServer) -> None:
    """Anthropic gets the key (``x-api-key`` or, from SDK 2.x, a bearer token) and a version."""
    server.plan(Text(("ok",)))
    async with make("anthropic", server) as provider:
        await provider.complete(ask())
    headers = server.requests[0].headers
    sent = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
    assert sent == KEY
    assert headers["anthropic-version"]


async def test_openai_local_endpoint_needs_no_key(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Ollama-style ``base_url`` works without any key configured."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.plan(Text(("ok",)))
    config = ProviderConfig(kind="openai", base_url=server.openai_base_url, max_retries=0)
    async with OpenAIProvider(config) as provider:
        response = await provider.complete(ask())
    assert response.message.content == "ok"


@pytest.mark.parametrize("provider_class", [OpenAIProvider, AnthropicProvider])
def test_provider_without_key_names_the_variable_to_set(
    provider_class: type[OpenAIProvider | AnthropicProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real API without a key is a configuration error that says which variable to set."""
    kind: Kind = "openai" if provider_class is OpenAIProvider else "anthropic"
    monkeypatch.delenv(f"{kind.upper()}_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=f"{kind.upper()}_API_KEY"):
        provider_class(ProviderConfig(kind=kind))


# -- failures ----------------------------------------------------------------------


async def test_provider_retries_a_server_error(kind: Kind, server: FakeLLMServer) -> None:
    """A 500 followed by an answer is retried by the SDK: the user just gets the answer."""
    server.plan(Status(500, "the server fell over"), Text(("recovered",)))
    async with make(kind, server, max_retries=1) as provider:
        response = await provider.complete(ask())
    assert response.message.content == "recovered"
    assert len(server.requests) == 2


async def test_provider_unavailable_after_the_retries(kind: Kind, server: FakeLLMServer) -> None:
    """A server that keeps failing is reported as unavailable, with its message and the retries."""
    # ``retry-after-ms`` is the servers' own hint; it keeps this test quick.
    busy = Status(503, "overloaded, come back later", headers={"retry-after-ms": "20"})
    server.plan(busy, busy)
    async with make(kind, server, max_retries=1) as provider:
        with pytest.raises(ProviderUnavailable) as caught:
            await provider.complete(ask())
    assert str(caught.value) == (
        f"{kind}: HTTP 503: overloaded, come back later (request req_fake) (after 1 retry)"
    )
    assert len(server.requests) == 2


async def test_provider_times_out_quickly(kind: Kind, server: FakeLLMServer) -> None:
    """A server that does not answer fails the call after the configured timeout, not later."""
    server.plan(Stall(30))
    started = anyio.current_time()
    async with make(kind, server, timeout=0.5) as provider:
        with pytest.raises(ProviderTimeout, match=r"no answer within 0\.5s"):
            await provider.complete(ask())
    assert anyio.current_time() - started < 5


async def test_provider_times_out_when_a_stream_goes_silent(
    kind: Kind, server: FakeLLMServer
) -> None:
    """A stream that stops sending mid-answer times out too, after the text so far was shown."""
    server.plan(Text(("Hel", "lo"), stall=30))
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    async with make(kind, server, timeout=0.5) as provider:
        with pytest.raises(ProviderTimeout, match=r"no answer within 0\.5s"):
            await provider.complete(ask(), on_text=on_text)
    assert pieces == ["Hel"]


async def test_provider_lets_cancellation_through(kind: Kind, server: FakeLLMServer) -> None:
    """Cancelling a call mid-stream is a cancellation, not an error; the provider stays usable."""
    server.plan(Text(("Hel", "lo"), stall=30), Text(("again",)))
    async with make(kind, server) as provider:
        with anyio.move_on_after(0.3) as scope:
            await provider.complete(ask())
        assert scope.cancelled_caught
        response = await provider.complete(ask())
    assert response.message.content == "again"


async def test_provider_rejects_a_body_that_is_not_an_event_stream(
    kind: Kind, server: FakeLLMServer
) -> None:
    """A 200 with a body that is not the wire format is malformed, and says what came instead."""
    server.plan(Garbage(b"<html>proxy login</html>"))
    async with make(kind, server) as provider:
        with pytest.raises(ProviderMalformed, match=r"not an event stream.*proxy login"):
            await provider.complete(ask())


@pytest.mark.parametrize("chunked", [False, True], ids=["body-ends", "chunk-cut"])
async def test_provider_rejects_a_stream_that_breaks_off(
    kind: Kind, server: FakeLLMServer, chunked: bool
) -> None:
    """A stream cut off in the middle of an event is malformed, even after some text arrived."""
    server.plan(BrokenStream(chunked=chunked))
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    async with make(kind, server) as provider:
        with pytest.raises(ProviderMalformed, match="broke off"):
            await provider.complete(ask(), on_text=on_text)
    assert pieces == ["Hello"]


async def test_provider_reports_an_auth_failure_as_rejected(
    kind: Kind, server: FakeLLMServer
) -> None:
    """A 401 is rejected at once (no retry), with the server's own explanation."""
    server.plan(Status(401, "invalid api key"))
    async with make(kind, server, max_retries=2) as provider:
        with pytest.raises(ProviderRejected, match="HTTP 401: invalid api key"):
            await provider.complete(ask())
    assert len(server.requests) == 1


async def test_provider_never_shows_the_key_in_errors(kind: Kind, server: FakeLLMServer) -> None:
    """Even a server that echoes the key back gets an error without it, traceback included."""
    server.plan(Status(401, f"Incorrect API key provided: {KEY}."))
    async with make(kind, server) as provider:
        with pytest.raises(ProviderRejected) as caught:
            await provider.complete(ask())
    assert "Incorrect API key provided: ***." in str(caught.value)
    assert KEY not in "".join(traceback.format_exception(caught.value))


async def test_provider_reports_an_unreachable_server_as_unavailable(kind: Kind) -> None:
    """Nobody listening at ``base_url`` is unavailable, naming where it tried to connect."""
    with FakeLLMServer() as gone:
        pass  # a port that was just in use, now closed
    async with make(kind, gone) as provider:
        with pytest.raises(ProviderUnavailable, match=r"cannot reach http://127\.0\.0\.1"):
            await provider.complete(ask())


# -- lifecycle ---------------------------------------------------------------------


async def test_provider_close_is_idempotent_and_final(kind: Kind, server: FakeLLMServer) -> None:
    """Closing twice is fine; asking a closed provider is refused plainly."""
    provider = make(kind, server)
    await provider.aclose()
    await provider.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await provider.complete(ask())
    assert server.requests == []


async def test_provider_default_models(server: FakeLLMServer) -> None:
    """Without a model in the profile, each provider names a sensible default."""
    async with make("openai", server) as openai, make("anthropic", server) as anthropic:
        assert (openai.model, anthropic.model) == ("gpt-5.4-mini", "claude-sonnet-5-5")
