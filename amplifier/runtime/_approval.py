"""Asking whoever opened a session tree whether a tool call may run.

A session at any depth asks through its parents' actors, each adding
itself to the question's path, up to the root, and the root asks the
Runtime's ``approve`` callback: the command line's terminal, or a program.
Nothing else in the tree waits for the answer; cancelling the asking turn
withdraws the question (the await is cancelled wherever it is).

Rule 1: no one to ask (no callback, or a session placed outside its
        parent's Runtime) means denied, ``decided_by="no one"``, never a wait.
Rule 2: a callback that fails denies, with the failure as the reason; it
        never fails the turn.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from amplifier._exports import describe
from amplifier._log import log_failure

DecidedBy = Literal["rule", "user", "callback", "no one"]
describe(DecidedBy, "Who decided whether a tool call ran: a rule, the user, a callback, no one.")


class ApprovalRequest(BaseModel):
    """A tool call that asks to run: what it would do, and who asks."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    """The session that asks (it may be a sub-session at any depth)."""
    agent: str
    tool: str
    arguments: Mapping[str, Any]
    shown: str
    """What the call would do, for a person: the command, or the diff an edit would make."""
    rule: str
    """The permission rule that asked (``bash``, ``write_file(src/**)``, ...)."""
    call_id: str = ""
    sessions: tuple[str, ...] = ()
    """The session ids from the root down to the one that asks."""
    agents: tuple[str, ...] = ()
    """Their agents, in the same order."""
    always_rule: str = ""
    """The rule that answering "always for this session" would grant."""


class ApprovalDecision(BaseModel):
    """The answer to an ``ApprovalRequest``."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    reason: str | None = None
    """Why, in words the model reads (it gets them with a denial)."""
    always: bool = False
    """Allowed, and the request's ``always_rule`` granted to the asking session for good."""
    decided_by: DecidedBy = "callback"


class Approver(Protocol):
    """What ``open_runtime(approve=...)`` takes: a callable, sync or async, given an
    ``ApprovalRequest`` and answering ``True``, ``False`` or an ``ApprovalDecision``."""

    def __call__(
        self, request: ApprovalRequest, /
    ) -> Awaitable[bool | ApprovalDecision] | bool | ApprovalDecision: ...


NO_ONE = (
    "no one could approve it (no terminal or approve callback reaches this session): "
    "allow it with a rule (--allow, or a profile's permissions.allow) or --yes"
)


async def decide(approve: Approver | None, request: ApprovalRequest) -> ApprovalDecision:
    """What ``approve`` says of ``request``, as a decision (Rules 1 and 2)."""
    if approve is None:
        return ApprovalDecision(allowed=False, reason=NO_ONE, decided_by="no one")
    try:
        answer = approve(request)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as exc:
        log_failure(f"the approve callback failed on {request.tool} in {request.session_id}", exc)
        return ApprovalDecision(
            allowed=False, reason=f"the approval callback failed: {type(exc).__name__}: {exc}"
        )
    if isinstance(answer, ApprovalDecision):
        return answer
    if isinstance(answer, bool):
        return ApprovalDecision(allowed=answer)
    return ApprovalDecision(
        allowed=False,
        reason=f"the approval callback answered {type(answer).__name__}, not True/False",
    )
