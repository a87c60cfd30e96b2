"""Every event as a model, and the closed union they are read back as (STYLE rule 18).

The runtime's events (``session:*``, ``prompt:*``, ``delegate:*``) are in
``amplifier.runtime``; the agent loop's are here: model calls, tool calls,
permissions, context, file history. ``AnyEvent`` is the closed union of
both, and ``read_event`` the one place a stored record becomes its model:

    match read_event(record):
        case ToolFinished(tool=tool, is_error=True):
            ...
        case ForeignEvent():
            ...   # another tool's event (the Amplifier CLI's), or a damaged one

Rule: a record that is not one of ours, or whose payload no longer fits
its model, is a ``ForeignEvent`` holding the raw payload: readers never
fail on what another writer put in a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from amplifier.persistence import EventRecord
from amplifier.runtime import (
    DecidedBy,
    DelegateEnded,
    DelegateStarted,
    Event,
    PromptCompleted,
    PromptSubmitted,
    SessionEnded,
    SessionResumed,
    SessionStarted,
    optional,
)


class FileChange(BaseModel):
    """One file a tool changed: where, and the content hashes before and after.

    ``before`` names the content kept in the session's ``file-history``
    (None: the file did not exist); ``after`` is the SHA-256 of what the
    tool wrote (None: the file was removed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    path: str
    """Relative to the session's project directory."""
    before: str | None = None
    after: str | None = None


class ProviderRequested(Event):
    """``provider:request``: a model call began (what it was given)."""

    name: ClassVar[str] = "provider:request"

    provider: str = ""
    model: str = ""
    round: int = 0
    messages: int = 0
    tools: list[str] = []


class ProviderResponded(Event):
    """``provider:response``: a model call answered (usage, latency, the calls it made)."""

    name: ClassVar[str] = "provider:response"

    provider: str = ""
    model: str = ""
    round: int = 0
    latency_ms: float = 0.0
    usage: dict[str, Any] = {}
    stop_reason: str | None = None
    tool_calls: list[str] = []


class ProviderFailed(Event):
    """``provider:error``: a model call failed after its retries."""

    name: ClassVar[str] = "provider:error"

    provider: str = ""
    model: str = ""
    round: int = 0
    latency_ms: float = 0.0
    error: str


class ProviderLimited(Event):
    """``provider:limit``: an answer stopped at the output-token limit."""

    name: ClassVar[str] = "provider:limit"

    provider: str = ""
    model: str = ""
    round: int = 0
    max_output_tokens: int = 0
    stop_reason: str | None = None
    answer_cut: bool = False
    tool_calls_cut: list[str] = []


class ToolStarted(Event):
    """``tool:pre``: a tool call is about to be judged and run."""

    name: ClassVar[str] = "tool:pre"

    tool: str
    call_id: str
    arguments: dict[str, Any] = {}
    mcp_server: str | None = optional()
    """For an MCP server's tool: the server, and the tool's own name there."""
    mcp_tool: str | None = optional()


class ToolFinished(Event):
    """``tool:post``: a tool call ended; ``file`` is the file it changed, if any."""

    name: ClassVar[str] = "tool:post"

    tool: str
    mcp_server: str | None = optional()
    mcp_tool: str | None = optional()
    call_id: str
    is_error: bool = False
    latency_ms: float | None = optional()
    result: str = ""
    result_chars: int | None = optional()
    file: FileChange | None = optional()
    traceback: str | None = optional()


class ContextCompacted(Event):
    """``context:compact``: the history shown to the model was shortened to fit its window."""

    name: ClassVar[str] = "context:compact"

    round: int = 0
    history_read: Literal["tail", "all"] = "all"
    messages_before: int | None = optional()
    messages_after: int | None = optional()
    tokens_before: int | None = optional()
    tokens_after: int | None = optional()
    omitted_messages: int | None = optional()
    shortened_tool_results: int | None = optional()


class TurnLimited(Event):
    """``turn:limit``: a turn stopped at the profile's ``max_rounds``."""

    name: ClassVar[str] = "turn:limit"

    rounds: int = 0


class SessionRepaired(Event):
    """``session:repair``: resume answered the calls a crash left without a result."""

    name: ClassVar[str] = "session:repair"

    tool_results_added: int = 0
    unreadable_messages: int = 0


class ApprovalRequested(Event):
    """``approval:request``: a tool call asked whoever opened the session tree."""

    name: ClassVar[str] = "approval:request"

    call_id: str
    tool: str
    rule: str
    shown: str
    """The command, or the diff the edit would make, as whoever was asked saw it."""


class ApprovalDecided(Event):
    """``approval:decision``: whether a tool call may run, and who decided."""

    name: ClassVar[str] = "approval:decision"

    call_id: str
    tool: str
    decision: Literal["allow", "deny"]
    decided_by: DecidedBy
    rule: str
    reason: str | None = optional()
    granted: str | None = optional()
    """The rule granted to the session for good ("always for this session")."""


class SessionRewound(Event):
    """``session:rewind``: files the session tree changed were restored."""

    name: ClassVar[str] = "session:rewind"

    since_seq: int
    turn: int | None = optional()
    files: tuple[FileChange, ...]
    """Each file restored: ``before`` is what it held (kept, so the rewind can be
    rewound), ``after`` what it holds now."""
    forced: tuple[str, ...] = ()
    """Files restored although someone had changed them since (``--force``)."""


@dataclass(frozen=True, slots=True)
class ForeignEvent:
    """A record that is none of ours (another tool's), or whose payload is damaged."""

    name: str
    data: dict[str, Any]


EVENTS: tuple[type[Event], ...] = (
    SessionStarted,
    SessionResumed,
    PromptSubmitted,
    PromptCompleted,
    SessionEnded,
    DelegateStarted,
    DelegateEnded,
    ProviderRequested,
    ProviderResponded,
    ProviderFailed,
    ProviderLimited,
    ToolStarted,
    ToolFinished,
    ContextCompacted,
    TurnLimited,
    SessionRepaired,
    ApprovalRequested,
    ApprovalDecided,
    SessionRewound,
)
"""Every event Amplifier writes, by model."""

AnyEvent: TypeAlias = (
    SessionStarted
    | SessionResumed
    | PromptSubmitted
    | PromptCompleted
    | SessionEnded
    | DelegateStarted
    | DelegateEnded
    | ProviderRequested
    | ProviderResponded
    | ProviderFailed
    | ProviderLimited
    | ToolStarted
    | ToolFinished
    | ContextCompacted
    | TurnLimited
    | SessionRepaired
    | ApprovalRequested
    | ApprovalDecided
    | SessionRewound
)
"""The closed union of every event of ours; ``read_event`` tells them apart by name."""

_BY_NAME: dict[str, type[Event]] = {event.name: event for event in EVENTS}


def read_event(record: EventRecord) -> AnyEvent | ForeignEvent:
    """The stored ``record`` as its model (see the module's Rule)."""
    model = _BY_NAME.get(record.event)
    if model is None:
        return ForeignEvent(record.event, dict(record.data))
    try:
        return cast(AnyEvent, model.model_validate(record.data))
    except ValidationError:
        return ForeignEvent(record.event, dict(record.data))
