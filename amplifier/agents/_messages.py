"""The conversation as stored in ``transcript.jsonl`` and sent to providers.

One line of the transcript is one ``Message``: a discriminated union on
``role``, (de)serialised through one ``TypeAdapter`` (STYLE: pydantic-ai's
messages). The store adds ``version``/``seq``/``ts`` around these fields and
knows nothing else about them.

    user        a prompt (or the context a delegating parent handed over)
    assistant   the model's answer: text and/or tool calls
    tool        the result of one tool call, matched by ``tool_call_id``

Rule: the Amplifier CLI shares the store and reads our lines as its own
      messages, so every line carries ``content`` (``""`` when there is none)
      and every tool call its name under ``tool`` beside ``name``. Its lines
      read as ours: content blocks become text and tool calls, ``tool`` is the
      tool's name, a result without a name takes its call's, and output that
      is not a string becomes JSON text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from amplifier._exports import describe


class ToolCall(BaseModel):
    """One call the model asked for."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, JsonValue] = {}
    cut_off: bool = False
    """The output-token limit cut its arguments off mid-JSON: ``arguments`` is
    empty, and the call is answered with an error instead of being run."""


class Usage(BaseModel):
    """Tokens one model call took in and gave out, as its provider reported them."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0


class UserMessage(BaseModel):
    """A prompt: what the person (or a delegating parent) asked."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["user"] = "user"
    content: str

    @property
    def size(self) -> int:
        """Characters the model is shown."""
        return len(self.content) + 16


CutOff = Literal["cancelled", "failed", "output_limit"]
"""Why an answer stops short: its turn was cancelled, its stream failed, or it
reached the profile's ``max_output_tokens``."""


class AssistantMessage(BaseModel):
    """A model's answer: its text, the tools it calls, and who answered.

    ``cut_off`` says why an answer is incomplete: its turn was cancelled, its
    stream failed, or it reached the output-token limit.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["assistant"] = "assistant"
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    provider: str | None = None
    model: str | None = None
    cut_off: CutOff | None = None
    """Why the answer stops short, if it does: the text is what had arrived."""
    summary: bool = False
    """A summary of the conversation before it, asked for (``compact_session``): later
    turns show the model the summary in place of what it sums up."""

    @cached_property
    def size(self) -> int:
        """Characters the model is shown: the text and every call (kept: histories are long)."""
        calls = sum(len(c.name) + len(str(c.arguments)) + 16 for c in self.tool_calls)
        return len(self.content) + 16 + calls


class ToolResultMessage(BaseModel):
    """What a tool call returned (``is_error``: the tool failed, and this says why)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False

    @property
    def size(self) -> int:
        """Characters the model is shown."""
        return len(self.content) + 16


Message = Annotated[UserMessage | AssistantMessage | ToolResultMessage, Field(discriminator="role")]
describe(
    Message,
    "A message of a conversation, by its ``role``: a ``UserMessage``, an ``AssistantMessage`` "
    "or a ``ToolResultMessage``.",
)
MESSAGE = TypeAdapter(Message)


def to_record(message: UserMessage | AssistantMessage | ToolResultMessage) -> dict[str, Any]:
    """The transcript fields of ``message`` (defaults left out, so lines stay short).

    ``content`` and each call's ``tool`` are always there (the module's Rule).
    """
    fields = message.model_dump(mode="json", exclude_defaults=True)
    record: dict[str, Any] = {"role": message.role, "content": message.content, **fields}
    if isinstance(message, AssistantMessage) and message.tool_calls:
        record["tool_calls"] = [
            {"id": call.id, "name": call.name, "tool": call.name, "arguments": call.arguments}
            for call in message.tool_calls
        ]
    return record


def parse_history(
    records: Iterable[Mapping[str, Any]], *, parsed: Parsed | None = None
) -> tuple[list[UserMessage | AssistantMessage | ToolResultMessage], int]:
    """Messages from transcript records, and how many records were not messages.

    The count lets the caller say that something was skipped instead of
    silently dropping it. ``parsed``: see ``read_messages``.
    """
    read = read_messages(records, parsed=parsed)
    messages = [message for message in read if message is not None]
    return messages, len(read) - len(messages)


class Parsed:
    """The records a session read last and what each read as (``read_messages``).

    A session reads the same end of its history turn after turn, longer by
    what the turn before added: only that is read again.
    """

    __slots__ = ("names", "read", "records", "summarised")

    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []
        self.read: list[UserMessage | AssistantMessage | ToolResultMessage | None] = []
        self.names: dict[str, str] = {}
        """Tool call id -> tool name, of every call in ``read``."""
        self.summarised = False
        """``read`` holds a summary (an assistant message marked ``summary``)."""


def read_messages(
    records: Iterable[Mapping[str, Any]], *, parsed: Parsed | None = None
) -> list[UserMessage | AssistantMessage | ToolResultMessage | None]:
    """One message per record, in order; None for a record that is not a message.

    Records the Amplifier CLI wrote are read as ours (the module's Rule).
    ``parsed`` remembers the records read before: those that the new ones
    continue are not read again, and any other already read is found by
    identity; it is left holding exactly ``records``.
    """
    records = list(records)
    if parsed is None:
        return _read(records, {}, {})
    done = len(parsed.records)
    if done and records[:done] == parsed.records:  # equal items: identical, mostly
        names = dict(parsed.names)
        new = _read(records[done:], names, {})
        read, summarised = parsed.read + new, parsed.summarised or _summarised(new)
    else:
        known = {id(r): (r, m) for r, m in zip(parsed.records, parsed.read, strict=True)}
        names = {}
        read = _read(records, names, known)
        summarised = _summarised(read)
    parsed.records, parsed.read, parsed.names = records, read, names
    parsed.summarised = summarised
    return list(read)


def _summarised(read: Iterable[Message | None]) -> bool:
    return any(isinstance(m, AssistantMessage) and m.summary for m in read)


def _read(
    records: Iterable[Mapping[str, Any]],
    names: dict[str, str],
    known: Mapping[int, tuple[Mapping[str, Any], Message | None]],
) -> list[UserMessage | AssistantMessage | ToolResultMessage | None]:
    """``read_messages`` of ``records``: ``names`` gets their calls' tool names, and a record
    in ``known`` (by identity) reads as it did."""
    read: list[UserMessage | AssistantMessage | ToolResultMessage | None] = []
    for record in records:
        was = known.get(id(record))
        if was is not None and was[0] is record:
            message = was[1]
        else:
            try:
                message = MESSAGE.validate_python(_as_ours(record, names))
            except ValidationError:
                message = None
        if message is None:
            read.append(None)
            continue
        if isinstance(message, AssistantMessage):
            names.update((call.id, call.name) for call in message.tool_calls)
        read.append(message)
    return read


def _as_ours(record: Mapping[str, Any], names: Mapping[str, str]) -> Mapping[str, Any]:
    """``record`` in our shape; a line of ours comes back as it is."""
    role = record.get("role")
    content = record.get("content")
    if role == "user" and not isinstance(content, str):
        return {**record, "content": _text(content)}
    if role == "assistant":
        calls = record.get("tool_calls")
        if isinstance(content, str) and (
            not calls or all(isinstance(c, dict) and "name" in c for c in calls)
        ):
            return record
        if not isinstance(calls, list) or not calls:
            calls = _block_calls(content)
        return {**record, "content": _text(content), "tool_calls": [_call(c) for c in calls]}
    if role == "tool":
        if isinstance(content, str) and isinstance(record.get("name"), str):
            return record
        call_id = record.get("tool_call_id")
        name = record.get("name")
        if not isinstance(name, str):
            name = names.get(call_id, "tool") if isinstance(call_id, str) else "tool"
        output = content if isinstance(content, str) else orjson.dumps(content).decode()
        return {**record, "name": name, "content": output}
    return record


def _text(content: object) -> str:
    """The text of content that is a string or a list of blocks (thinking is left out)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n\n".join(
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def _block_calls(content: object) -> list[object]:
    """Tool calls carried only as content blocks (``tool_call``, or Anthropic's ``tool_use``)."""
    if not isinstance(content, list):
        return []
    return [
        {"id": b.get("id"), "name": b.get("name"), "arguments": b.get("input")}
        for b in content
        if isinstance(b, dict) and b.get("type") in ("tool_call", "tool_use")
    ]


def _call(call: object) -> object:
    """One tool call in our shape: the name from ``name`` or ``tool``, arguments an object."""
    if not isinstance(call, dict):
        return call
    name = call.get("name")
    if not isinstance(name, str):
        name = call.get("tool")
    arguments = call.get("arguments", call.get("input"))
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            arguments = {"input": arguments}
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        arguments = {"input": arguments}
    return {"id": call.get("id"), "name": name, "arguments": arguments}
