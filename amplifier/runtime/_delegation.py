"""Delegation: a session hands an instruction to a named agent running as a child session."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from amplifier._exports import describe

from ._exceptions import ChildSessionError

DelegationStatus = Literal["completed", "failed", "cancelled", "timed_out"]
describe(DelegationStatus, "How a delegated child session ended, as its parent learns it.")


class Delegation(BaseModel):
    """A request to run ``instruction`` in a child session of ``agent``."""

    model_config = ConfigDict(frozen=True)

    agent: str = Field(min_length=1)
    instruction: str
    session_id: str | None = None
    """Continue this existing child (it must be a child of the delegating session)."""
    context: tuple[dict[str, Any], ...] = ()
    """Messages recorded into the child's transcript before the instruction."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds the child may take; then it is cancelled and the result is ``timed_out``."""


class DelegationResult(BaseModel):
    """What a child session returned: its id, always, so its files can be found."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    agent: str
    status: DelegationStatus
    response: str | None = None
    error: str | None = None
    traceback: str | None = None
    """The formatted traceback of the child's failure, when an exception failed it."""
    _cause: BaseException | None = PrivateAttr(default=None)
    """The exception that failed the child (set where the child ran in this process)."""

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def exception(self) -> ChildSessionError | None:
        """The child's failure wrapped with its id, or None if it completed.

        Its ``__cause__`` is the exception that failed the child, with its
        traceback, when the child ran in this process.
        """
        if self.ok:
            return None
        wrapped = ChildSessionError(self.session_id, self.agent, self.error or self.status)
        wrapped.__cause__ = self._cause
        return wrapped

    def as_tool_result(self) -> dict[str, str | None]:
        """``{session_id, agent, status, response}`` (plus ``error``), as a tool returns it."""
        result: dict[str, str | None] = {
            "session_id": self.session_id,
            "agent": self.agent,
            "status": self.status,
            "response": self.response,
        }
        if self.error is not None:
            result["error"] = self.error
        return result
