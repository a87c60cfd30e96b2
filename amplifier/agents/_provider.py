"""The ``Provider`` protocol: how the agent loop talks to a model.

A provider turns a ``ProviderRequest`` (instructions, history, tool schemas)
into one ``ProviderResponse`` (an assistant message with text and/or tool
calls, plus usage). Text may be streamed as it arrives through ``on_text``.
Retries and timeouts are the provider's business; what escapes is a
``ProviderError`` subclass with a one-line reason. API keys live in the
provider object only: requests, responses and errors never carry them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ._messages import AssistantMessage, Message, Usage


class TextSink(Protocol):
    """Receives streamed text as it arrives (may be called many times per response).

    Any ``async def sink(text: str) -> None`` is one.
    """

    def __call__(self, text: str, /) -> Awaitable[None]: ...


class ToolSpec(BaseModel):
    """A tool as a model sees it: name, description, JSON schema of its arguments."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]


class ProviderRequest(BaseModel):
    """One model call: the agent's instructions, the history, the tools, the output limit."""

    model_config = ConfigDict(frozen=True)

    model: str
    instructions: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_output_tokens: int = Field(default=4096, gt=0)


class ProviderResponse(BaseModel):
    """What one model call returned: the answer, its usage, and why it stopped."""

    model_config = ConfigDict(frozen=True)

    message: AssistantMessage
    usage: Usage = Usage()
    stop_reason: str | None = None
    hit_limit: bool = False
    """The answer stopped at ``max_output_tokens`` (OpenAI's finish_reason
    ``length``, Anthropic's stop_reason ``max_tokens``): it may be incomplete."""


class Provider(Protocol):
    """A model endpoint. ``name`` is what events record (``openai``, ``offline``, ...)."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str:
        """The model used when a request does not name one."""
        ...

    async def complete(
        self, request: ProviderRequest, *, on_text: TextSink | None = None
    ) -> ProviderResponse:
        """Answer one request. Raises ``ProviderError`` (after the provider's own retries)."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


def tool_specs(specs: Sequence[ToolSpec]) -> tuple[ToolSpec, ...]:
    return tuple(sorted(specs, key=lambda spec: spec.name))
