"""The conversation as stored in ``transcript.jsonl`` and sent to providers.

One line of the transcript is one ``Message``: a discriminated union on
``role``, (de)serialised through one ``TypeAdapter`` (STYLE: pydantic-ai's
messages). The store adds ``version``/``seq``/``ts`` around these fields and
knows nothing else about them.

    user        a prompt (or the context a delegating parent handed over)
    assistant   the model's answer: text and/or tool calls
    tool        the result of one tool call, matched by ``tool_call_id``
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError


class ToolCall(BaseModel):
    """One call the model asked for."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    cut_off: bool = False
    """The output-token limit cut its arguments off mid-JSON: ``arguments`` is
    empty, and the call is answered with an error instead of being run."""


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0


class UserMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["user"] = "user"
    content: str


CutOff = Literal["cancelled", "failed", "output_limit"]
"""Why an answer stops short: its turn was cancelled, its stream failed, or it
reached the profile's ``max_output_tokens``."""


class AssistantMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    provider: str | None = None
    model: str | None = None
    cut_off: CutOff | None = None
    """Why the answer stops short, if it does: the text is what had arrived."""


class ToolResultMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


Message = Annotated[UserMessage | AssistantMessage | ToolResultMessage, Field(discriminator="role")]
MESSAGE = TypeAdapter(Message)


def to_record(message: UserMessage | AssistantMessage | ToolResultMessage) -> dict[str, Any]:
    """The transcript fields of ``message`` (defaults left out, so lines stay short)."""
    fields = message.model_dump(mode="json", exclude_defaults=True)
    return {"role": message.role, **fields}


def parse_history(
    records: Iterable[Mapping[str, Any]],
) -> tuple[list[UserMessage | AssistantMessage | ToolResultMessage], int]:
    """Messages from transcript records, and how many records were not messages.

    The count lets the caller say that something was skipped instead of
    silently dropping it.
    """
    messages: list[UserMessage | AssistantMessage | ToolResultMessage] = []
    skipped = 0
    for record in records:
        try:
            messages.append(MESSAGE.validate_python(record))
        except ValidationError:
            skipped += 1
    return messages, skipped
