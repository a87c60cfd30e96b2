"""The ``anthropic`` provider: the Anthropic Messages API.

The official SDK builds and sends the request, authenticates, and retries
408/409/429/5xx (and 529 "overloaded") answers and connection failures with
backoff; this module turns the history into Messages-API turns and reads the
event stream (``message_start``, ``content_block_start/delta/stop``,
``message_delta``, ``message_stop``; ``ping`` and unknown events are skipped).

The Messages API wants user and assistant turns to alternate, and a tool's
result to come back in a *user* turn. So consecutive tool results and user
messages merge into one user turn (tool results first, as the API requires),
and an assistant turn with no text and no tool call is left out, as is an
empty text block.

Rule 1: the event stream is read to its end, never dropped half-way. The
SDK's ``AsyncStream`` leaves async generators unclosed when it is left
early, and httpx2 leaves one behind when a body is abandoned; on trio each
is a ``ResourceWarning`` (an error under ``-W error``). Reading the raw body
to its end, through ``with_streaming_response`` and ``aclosing``, finishes
every generator, on the normal path and on a malformed answer alike. Only a
failure on the caller's side (``on_text`` raising, or cancelled while in
``on_text``) abandons a body; trio then closes the generator itself, with
that warning.

Rule 2: no message carries the API key. Every ``ProviderError`` is built by
``Failures``, which blanks the key out of whatever a server said, and an
SDK exception whose text holds the key is not chained as the cause.

Errors, one line each:

    SDK timeout, read timeout mid-stream     ProviderTimeout      no answer within 120s
    4xx other than 408/409/429               ProviderRejected     HTTP 401: <server message>
    408/409/429/5xx, no connection           ProviderUnavailable  HTTP 529: ... (after 3 retries)
    an ``error`` event in the stream         ProviderUnavailable  the stream failed: overloaded_...
                                             (ProviderRejected if the request itself was refused)
    not an event stream, a stream that
    breaks off, invalid JSON, missing fields ProviderMalformed    the stream broke off ...
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal, assert_never

import anthropic
from anthropic.types import (
    MessageParam,
    TextBlockParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)
from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from ._exceptions import (
    ProviderRejected,
)
from ._messages import AssistantMessage, ToolCall, ToolResultMessage, Usage, UserMessage
from ._provider import ProviderRequest, ProviderResponse, ToolSpec
from ._provider_config import ProviderConfig
from ._wire import (
    EventStream,
    Failures,
    SdkErrors,
    SdkProvider,
    StreamingResponse,
    StreamParser,
    first_error,
)

DEFAULT_MODEL: Final = "claude-sonnet-5-5"
ERRORS: Final = SdkErrors(
    timeout=anthropic.APITimeoutError,
    status=anthropic.APIStatusError,
    connection=anthropic.APIConnectionError,
    validation=anthropic.APIResponseValidationError,
    api=anthropic.APIError,
    base=anthropic.AnthropicError,
)

_REJECTED_ERRORS: Final = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "not_found_error"}
)
"""Error types of an in-stream ``error`` event that retrying would not fix."""


class AnthropicProvider(SdkProvider[anthropic.AsyncAnthropic]):
    """The Messages API, through the official ``anthropic`` SDK."""

    NAME = "anthropic"
    DEFAULT_MODEL = DEFAULT_MODEL
    ERRORS = ERRORS

    def _make_client(self, key: str, config: ProviderConfig) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=key,
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
        )

    def _send(
        self, request: ProviderRequest, model: str
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        tools = [_tool(spec) for spec in request.tools]
        return self._client.messages.with_streaming_response.create(
            model=model,
            max_tokens=request.max_output_tokens,
            messages=_messages(request.messages),
            system=request.instructions if request.instructions else anthropic.omit,
            tools=tools if tools else anthropic.omit,
            stream=True,
        )

    def _parser(self, model: str, content_type: str) -> StreamParser:
        return _Stream(self._failures, model, content_type)


# -- the request ---------------------------------------------------------------

_Block = TextBlockParam | ToolUseBlockParam | ToolResultBlockParam


def _messages(
    history: Sequence[UserMessage | AssistantMessage | ToolResultMessage],
) -> list[MessageParam]:
    """The history as alternating user/assistant turns of content blocks."""
    turns: list[tuple[Literal["user", "assistant"], list[_Block]]] = []
    for message in history:
        role: Literal["user", "assistant"]
        blocks: list[_Block]
        match message:
            case UserMessage():
                role = "user"
                blocks = [_text(message.content)] if message.content else []
            case AssistantMessage():
                role = "assistant"
                blocks = [_text(message.content)] if message.content else []
                blocks += [_tool_use(call) for call in message.tool_calls]
            case ToolResultMessage():
                role = "user"
                blocks = [_tool_result(message)]
            case _:
                assert_never(message)
        if not blocks:
            continue  # the API refuses empty turns and empty text blocks
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    wire: list[MessageParam] = []
    for role, blocks in turns:
        if role == "user":
            # Tool results must open the user turn that answers the tool calls.
            blocks.sort(key=lambda block: block["type"] != "tool_result")
            wire.append({"role": "user", "content": blocks})
        else:
            wire.append({"role": "assistant", "content": blocks})
    return wire


def _text(text: str) -> TextBlockParam:
    return {"type": "text", "text": text}


def _tool_use(call: ToolCall) -> ToolUseBlockParam:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}


def _tool_result(message: ToolResultMessage) -> ToolResultBlockParam:
    return {
        "type": "tool_result",
        "tool_use_id": message.tool_call_id,
        "content": message.content,
        "is_error": message.is_error,
    }


def _tool(spec: ToolSpec) -> ToolParam:
    return {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}


# -- the answer ----------------------------------------------------------------


class _Wire(BaseModel):
    """Only the fields this module reads; anything else the API adds is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _StartUsage(_Wire):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _StartMessage(_Wire):
    model: str
    usage: _StartUsage


class _MessageStart(_Wire):
    type: Literal["message_start"]
    message: _StartMessage


class _ContentBlock(_Wire):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, JsonValue] | None = None


class _BlockStart(_Wire):
    type: Literal["content_block_start"]
    index: int
    content_block: _ContentBlock


class _BlockDelta(_Wire):
    type: str
    text: str | None = None
    partial_json: str | None = None


class _BlockDeltaEvent(_Wire):
    type: Literal["content_block_delta"]
    index: int
    delta: _BlockDelta


class _BlockStop(_Wire):
    type: Literal["content_block_stop"]
    index: int


class _MessageDeltaBody(_Wire):
    stop_reason: str | None = None


class _DeltaUsage(_Wire):
    output_tokens: int | None = None
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _MessageDelta(_Wire):
    type: Literal["message_delta"]
    delta: _MessageDeltaBody
    usage: _DeltaUsage | None = None


class _MessageStop(_Wire):
    type: Literal["message_stop"]


class _ErrorBody(_Wire):
    type: str = "error"
    message: str = ""


class _Error(_Wire):
    type: Literal["error"]
    error: _ErrorBody


_Event = Annotated[
    _MessageStart
    | _BlockStart
    | _BlockDeltaEvent
    | _BlockStop
    | _MessageDelta
    | _MessageStop
    | _Error,
    Field(discriminator="type"),
]
_EVENT: TypeAdapter[_Event] = TypeAdapter(_Event)
_KNOWN_EVENTS: Final = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
    }
)


@dataclass
class _BlockParts:
    """One content block as its deltas arrive: text, or a tool call's input JSON."""

    type: str
    text: list[str] = field(default_factory=list)
    id: str | None = None
    name: str | None = None
    start_input: dict[str, JsonValue] | None = None
    input_json: list[str] = field(default_factory=list)


class _Stream(EventStream):
    """One answer's events; see ``EventStream``."""

    def __init__(self, failures: Failures, model: str, content_type: str) -> None:
        super().__init__(failures, model, content_type)
        self._started = False
        self._stopped = False
        self._blocks: dict[int, _BlockParts] = {}
        # Input as the API counts it: fresh, written to the cache, read from it.
        self._input_tokens = [0, 0, 0]
        self._output_tokens = 0
        self._stop_reason: str | None = None

    def _event(self, payload: str) -> list[str]:
        try:
            document = json.loads(payload)
        except ValueError as exc:
            raise self._failures.malformed(
                f"an event is not valid JSON ({exc}): {payload[:80]!r}"
            ) from None
        kind = document.get("type") if isinstance(document, dict) else None
        if not isinstance(kind, str):
            raise self._failures.malformed(f"an event has no type: {payload[:80]!r}")
        if kind not in _KNOWN_EVENTS:
            return []  # ``ping``, and event types newer than this module
        try:
            event = _EVENT.validate_python(document)
        except ValidationError as exc:
            raise self._failures.malformed(
                f"a {kind} event is not in the Messages format ({first_error(exc)})"
            ) from None
        if not self._started and not isinstance(event, _MessageStart | _Error):
            raise self._failures.malformed(f"the stream starts with {kind}, not message_start")
        match event:
            case _MessageStart(message=message):
                self._started = True
                self._model = message.model
                usage = message.usage
                self._count_input(
                    usage.input_tokens,
                    usage.cache_creation_input_tokens,
                    usage.cache_read_input_tokens,
                )
                self._output_tokens = usage.output_tokens
            case _BlockStart(index=index, content_block=block):
                self._blocks[index] = _BlockParts(
                    type=block.type, id=block.id, name=block.name, start_input=block.input
                )
                if block.type == "text" and block.text:
                    self._blocks[index].text.append(block.text)
                    return [block.text]
            case _BlockDeltaEvent(index=index, delta=delta):
                parts = self._blocks.get(index)
                if parts is None:
                    raise self._failures.malformed(
                        f"a delta for block {index}, which never started"
                    )
                if delta.type == "text_delta" and delta.text:
                    parts.text.append(delta.text)
                    return [delta.text]
                if delta.type == "input_json_delta" and delta.partial_json:
                    parts.input_json.append(delta.partial_json)
            case _BlockStop():
                pass
            case _MessageDelta(delta=delta, usage=usage):
                if delta.stop_reason is not None:
                    self._stop_reason = delta.stop_reason
                if usage is not None:
                    # Counts here are totals so far, not increments.
                    if usage.output_tokens is not None:
                        self._output_tokens = usage.output_tokens
                    self._count_input(
                        usage.input_tokens,
                        usage.cache_creation_input_tokens,
                        usage.cache_read_input_tokens,
                    )
            case _MessageStop():
                self._stopped = True
            case _Error(error=error):
                reason = f"the stream failed: {error.type}: {error.message}"
                if error.type in _REJECTED_ERRORS:
                    raise ProviderRejected(self._failures.provider, self._failures.clean(reason))
                raise self._failures.unavailable(reason)
            case _:
                assert_never(event)
        return []

    def _count_input(self, *counts: int | None) -> None:
        """Update the input counts the event reports (cached tokens are input too)."""
        for position, count in enumerate(counts):
            if count is not None:
                self._input_tokens[position] = count

    def result(self) -> ProviderResponse:
        self._check(complete=self._stopped)
        text: list[str] = []
        calls: list[ToolCall] = []
        for index in sorted(self._blocks):
            parts = self._blocks[index]
            if parts.type == "text":
                text.extend(parts.text)
            elif parts.type == "tool_use":
                calls.append(self._tool_call(index, parts, limit=self._hit_limit))
        return ProviderResponse(
            message=AssistantMessage(
                content="".join(text),
                tool_calls=tuple(calls),
                provider=self._failures.provider,
                model=self._model,
            ),
            usage=Usage(input_tokens=sum(self._input_tokens), output_tokens=self._output_tokens),
            stop_reason=self._stop_reason,
            hit_limit=self._hit_limit,
        )

    @property
    def _hit_limit(self) -> bool:
        return self._stop_reason == "max_tokens"

    def _tool_call(self, index: int, parts: _BlockParts, *, limit: bool) -> ToolCall:
        if not parts.id or not parts.name:
            raise self._failures.malformed(f"tool_use block {index} has no id or no name")
        raw = "".join(parts.input_json)
        if not raw.strip():
            # A tool called without arguments streams no input at all.
            return ToolCall(id=parts.id, name=parts.name, arguments=parts.start_input or {})
        arguments = self._failures.tool_arguments(
            raw, f"the input of tool call {parts.name!r}", limit=limit
        )
        return ToolCall(
            id=parts.id, name=parts.name, arguments=arguments or {}, cut_off=arguments is None
        )
