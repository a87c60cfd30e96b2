"""The ``delegate`` tool: hand an instruction to another agent, run as a child session."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ._exceptions import ToolFailed
from ._messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    parse_history,
)
from ._specs import AgentCatalog
from ._tools import ToolContext

RECENT_MESSAGES = 6
CONTEXT_CHARS = 24_000
"""The most context handed to a child; older text is left out."""


class DelegateArguments(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str = Field(description="Name of the agent to hand the work to.")
    instruction: str = Field(description="What the agent should do, self-contained.")
    context: Literal["none", "recent", "all"] = Field(
        default="none",
        description="How much of this conversation the agent sees: none, recent messages, all.",
    )
    session_id: str | None = Field(
        default=None,
        description="Continue an earlier sub-session (its session_id) instead of a new one.",
    )


class DelegateTool:
    """Runs the instruction in a sub-session; returns ``{session_id, agent, status, response}``."""

    name: ClassVar[str] = "delegate"
    description: ClassVar[str] = (
        "Hand a self-contained instruction to another agent, which works on it in its own "
        "sub-session and returns its answer. Several delegate calls in one response run at the "
        "same time. Returns JSON: session_id, agent, status (completed, failed, cancelled, "
        "timed_out), response."
    )
    Arguments: ClassVar[type[BaseModel]] = DelegateArguments
    side_effects: ClassVar[bool] = False
    """Its sub-session's own tool calls ask for themselves."""
    subject: ClassVar[str | None] = "agent"

    def __init__(
        self, catalog: AgentCatalog, *, child_timeout: Callable[[ToolContext], float | None]
    ) -> None:
        """``child_timeout``: how long a child of the calling session may take (its profile)."""
        self._catalog = catalog
        self._child_timeout = child_timeout

    async def run(self, arguments: DelegateArguments, context: ToolContext) -> str:
        caller = context.agent
        if arguments.agent not in self._catalog:
            raise ToolFailed(
                f"unknown agent {arguments.agent!r}; available: {', '.join(self._catalog.names)}"
            )
        if arguments.agent not in caller.agents:
            allowed = ", ".join(caller.agents) or "no agents"
            raise ToolFailed(
                f"agent {caller.name!r} may not delegate to {arguments.agent!r}; "
                f"it may delegate to: {allowed}"
            )
        handed: list[dict[str, str]] = []
        if arguments.context != "none":
            tail = await context.turn.session.history_tail(max_bytes=CONTEXT_CHARS * 4)
            history, _ = parse_history(tail.messages)
            text = render_context(history, recent=arguments.context == "recent")
            if text:
                handed.append(
                    {
                        "role": "user",
                        "content": f"Context from session {context.turn.session.id}:\n\n{text}",
                    }
                )
        result = await context.turn.delegate(
            arguments.agent,
            arguments.instruction,
            session_id=arguments.session_id,
            context=handed,
            timeout=self._child_timeout(context),
        )
        payload = orjson.dumps(result.as_tool_result()).decode()
        if not result.ok:
            raise ToolFailed(payload)
        return payload


def cancelled_result(call: ToolCall) -> ToolResultMessage:
    """The result of a delegation whose turn was cancelled before it finished.

    Its sub-session was cancelled with the turn (and says so in its own
    records); the model is told the same, not that the outcome is unknown.
    """
    agent = call.arguments.get("agent")
    payload = {
        "agent": agent if isinstance(agent, str) else None,
        "status": "cancelled",
        "response": None,
        "error": "the turn was cancelled before this sub-session finished; "
        "it ended cancelled too",
    }
    return ToolResultMessage(
        tool_call_id=call.id,
        name=call.name,
        content=orjson.dumps(payload).decode(),
        is_error=True,
    )


def render_context(history: list[Message], *, recent: bool) -> str:
    """The conversation's text (prompts and answers) as a child should read it."""
    spoken = [
        m
        for m in history
        if isinstance(m, UserMessage) or (isinstance(m, AssistantMessage) and m.content)
    ]
    if recent:
        spoken = spoken[-RECENT_MESSAGES:]
    lines = [f"[{m.role}] {m.content}" for m in spoken]
    text = "\n\n".join(lines)
    if len(text) > CONTEXT_CHARS:
        text = "[earlier conversation left out]\n\n" + text[-CONTEXT_CHARS:]
    return text
