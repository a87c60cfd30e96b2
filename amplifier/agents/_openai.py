"""The ``openai`` provider: any OpenAI-compatible chat-completions endpoint.

OpenAI itself, or a local server (Ollama, vLLM, llama.cpp) through
``base_url``. The official SDK builds and sends the request, authenticates,
and retries 408/409/429/5xx answers and connection failures with backoff;
this module turns the history into wire messages and reads the event stream.

Rule 1: the event stream is read to its end, never dropped half-way. The
SDK's own ``AsyncStream`` stops at ``data: [DONE]`` without closing its
inner async generators, and httpx2 leaves one more behind when a body is
abandoned; on trio each of those is a ``ResourceWarning`` (an error under
``-W error``). Reading the raw body to its end, through
``with_streaming_response`` and ``aclosing``, finishes every generator, on
the normal path and on a malformed answer alike. Only a failure on the
caller's side (``on_text`` raising, or cancelled while in ``on_text``)
abandons a body; trio then closes the generator itself, with that warning.

Rule 2: no message carries the API key. Every ``ProviderError`` is built by
``Failures``, which blanks the key out of whatever a server said, and an
SDK exception whose text holds the key is not chained as the cause.

Errors, one line each:

    SDK timeout, read timeout mid-stream     ProviderTimeout      no answer within 120s
    4xx other than 408/409/429               ProviderRejected     HTTP 401: <server message>
    408/409/429/5xx, no connection           ProviderUnavailable  HTTP 503: ... (after 3 retries)
    not an event stream, a stream that
    breaks off, invalid JSON, missing fields ProviderMalformed    the stream broke off ...
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, assert_never

import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolMessageParam,
)
from pydantic import BaseModel, ConfigDict, ValidationError

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

DEFAULT_MODEL: Final = "gpt-5.4-mini"
ERRORS: Final = SdkErrors(
    timeout=openai.APITimeoutError,
    status=openai.APIStatusError,
    connection=openai.APIConnectionError,
    validation=openai.APIResponseValidationError,
    api=openai.APIError,
    base=openai.OpenAIError,
)

_OPENAI_HOST: Final = "api.openai.com"


class OpenAIProvider(SdkProvider[openai.AsyncOpenAI]):
    """A chat-completions endpoint, through the official ``openai`` SDK."""

    NAME = "openai"
    DEFAULT_MODEL = DEFAULT_MODEL
    ERRORS = ERRORS

    def _make_client(self, key: str, config: ProviderConfig) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=key,
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
        )

    def _send(
        self, request: ProviderRequest, model: str
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        tools = [_tool(spec) for spec in request.tools]
        # OpenAI's newer models refuse ``max_tokens``; the local servers
        # (Ollama, llama.cpp) only know ``max_tokens``.
        official = self._config.base_url is None or _OPENAI_HOST in self._config.base_url
        return self._client.chat.completions.with_streaming_response.create(
            model=model,
            messages=_messages(request),
            stream=True,
            stream_options={"include_usage": True},
            tools=tools if tools else openai.omit,
            max_completion_tokens=request.max_output_tokens if official else openai.omit,
            max_tokens=openai.omit if official else request.max_output_tokens,
        )

    def _parser(self, model: str, content_type: str) -> StreamParser:
        return _Stream(self._failures, model, content_type)


# -- the request ---------------------------------------------------------------


def _messages(request: ProviderRequest) -> list[ChatCompletionMessageParam]:
    """The history as chat-completions messages, instructions first as the system message."""
    wire: list[ChatCompletionMessageParam] = []
    if request.instructions:
        wire.append({"role": "system", "content": request.instructions})
    for message in request.messages:
        match message:
            case UserMessage():
                wire.append({"role": "user", "content": message.content})
            case AssistantMessage():
                wire.append(_assistant(message))
            case ToolResultMessage():
                wire.append(_tool_result(message))
            case _:
                assert_never(message)
    return wire


def _assistant(message: AssistantMessage) -> ChatCompletionAssistantMessageParam:
    if not message.tool_calls:
        return {"role": "assistant", "content": message.content}
    calls: list[ChatCompletionMessageFunctionToolCallParam] = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for call in message.tool_calls
    ]
    # ``null`` content is how the API writes "only tool calls".
    return {"role": "assistant", "content": message.content or None, "tool_calls": calls}


def _tool_result(message: ToolResultMessage) -> ChatCompletionToolMessageParam:
    # The wire has no error flag for tool results; without this prefix the
    # model could not tell a failed call from one that returned this text.
    content = f"Error: {message.content}" if message.is_error else message.content
    return {"role": "tool", "tool_call_id": message.tool_call_id, "content": content}


def _tool(spec: ToolSpec) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


# -- the answer ----------------------------------------------------------------


class _Wire(BaseModel):
    """Only the fields this module reads; anything else a server adds is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _FunctionDelta(_Wire):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(_Wire):
    index: int | None = None
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(_Wire):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(_Wire):
    index: int = 0
    delta: _Delta
    finish_reason: str | None = None


class _ChunkUsage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(_Wire):
    model: str | None = None
    choices: list[_Choice]
    usage: _ChunkUsage | None = None


@dataclass
class _CallParts:
    """One tool call as its fragments arrive."""

    id: str | None
    name: str | None
    arguments: list[str] = field(default_factory=list)


class _Stream(EventStream):
    """One answer's events; see ``EventStream``."""

    def __init__(self, failures: Failures, model: str, content_type: str) -> None:
        super().__init__(failures, model, content_type)
        self._text: list[str] = []
        self._calls: list[_CallParts] = []
        self._usage = Usage()
        self._finish: str | None = None

    def _event(self, payload: str) -> list[str]:
        if payload.strip() == "[DONE]":
            return []
        try:
            document = json.loads(payload)
        except ValueError as exc:
            raise self._failures.malformed(
                f"an event is not valid JSON ({exc}): {payload[:80]!r}"
            ) from None
        if isinstance(document, dict) and document.get("error"):
            error = document["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise self._failures.unavailable(f"the stream failed: {message}")
        try:
            chunk = _Chunk.model_validate(document)
        except ValidationError as exc:
            raise self._failures.malformed(
                f"an event is not a chat-completion chunk ({first_error(exc)}): {payload[:80]!r}"
            ) from None
        if chunk.model:
            self._model = chunk.model
        if chunk.usage is not None:
            self._usage = Usage(
                input_tokens=chunk.usage.prompt_tokens,
                output_tokens=chunk.usage.completion_tokens,
            )
        pieces: list[str] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # only one answer is asked for
            # A refusal is the model's answer too: the user should see it.
            for text in (choice.delta.content, choice.delta.refusal):
                if text:
                    self._text.append(text)
                    pieces.append(text)
            for fragment in choice.delta.tool_calls or ():
                self._call_fragment(fragment)
            if choice.finish_reason is not None:
                self._finish = choice.finish_reason
        return pieces

    def _call_fragment(self, fragment: _ToolCallDelta) -> None:
        index = fragment.index
        if index is None:
            # Some compatible servers leave out ``index``: a fragment with a
            # new id starts a call, one without an id continues the last.
            starts = fragment.id is not None and all(p.id != fragment.id for p in self._calls)
            index = len(self._calls) if starts or not self._calls else len(self._calls) - 1
        while len(self._calls) <= index:
            self._calls.append(_CallParts(id=None, name=None))
        parts = self._calls[index]
        if fragment.id:
            parts.id = fragment.id
        if fragment.function is not None:
            if fragment.function.name:
                parts.name = fragment.function.name
            if fragment.function.arguments:
                parts.arguments.append(fragment.function.arguments)

    def result(self) -> ProviderResponse:
        self._check(complete=self._finish is not None)
        limit = self._finish == "length"
        calls = tuple(
            self._tool_call(number, parts, limit=limit) for number, parts in enumerate(self._calls)
        )
        return ProviderResponse(
            message=AssistantMessage(
                content="".join(self._text),
                tool_calls=calls,
                provider=self._failures.provider,
                model=self._model,
            ),
            usage=self._usage,
            stop_reason=self._finish,
            hit_limit=limit,
        )

    def _tool_call(self, number: int, parts: _CallParts, *, limit: bool) -> ToolCall:
        if not parts.name:
            raise self._failures.malformed(f"tool call {number} has no function name")
        arguments = self._failures.tool_arguments(
            "".join(parts.arguments), f"the arguments of tool call {parts.name!r}", limit=limit
        )
        return ToolCall(
            id=parts.id or f"call_{number}",
            name=parts.name,
            arguments=arguments or {},
            cut_off=arguments is None,
        )
