"""Events as models: an event's name and its payload are one frozen model (STYLE rule 18).

Producers build an ``Event`` and hand it to ``emit``; the name lives in the
model's ``name``, in one place, and the payload is the model's fields, so a
renamed field fails at type-check time rather than in a reader.
``events.jsonl`` holds ``{"event": name, "data": fields}``, byte for byte
as before the models: fields keep their order, and a field declared with
``optional()`` is left out while it is None.

These are the runtime's own events; the agent loop's are in
``amplifier.agents``, which also holds the closed union of all of them and
the one ``TypeAdapter`` that reads them back.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


def _none(value: object) -> bool:
    return value is None


def optional() -> Any:
    """A field that is None unless given, and then not written at all."""
    return Field(default=None, exclude_if=_none)


class Event(BaseModel):
    """The base of every typed event: ``name`` is its ``event`` string.

    Reading is lenient: a newer writer's extra keys are ignored, and a field
    an older writer did not write yet takes its default. Writing is checked
    by the type checker, which knows every field's name and type.
    """

    # Built when first used: a command uses a few of them, and each costs start-up time.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    name: ClassVar[str]

    def data(self) -> dict[str, Any]:
        """The payload as stored."""
        return self.model_dump(mode="json")

    @classmethod
    def parse(cls, data: Any) -> Any:
        """The event again from a stored payload; ``ValidationError`` if it is not one."""
        return cls.model_validate(data)


class SessionStarted(Event):
    """``session:start``: a session was created; its configuration labels follow its fields."""

    model_config = ConfigDict(frozen=True, extra="allow", defer_build=True)
    name: ClassVar[str] = "session:start"

    session_id: str
    agent: str = "default"
    profile: str | None = None
    parent_id: str | None = None
    root_id: str = ""
    depth: int = 0
    cwd: str = ""


class SessionResumed(Event):
    """``session:resume``: a stored session was opened again, and what was found."""

    name: ClassVar[str] = "session:resume"

    messages: int = 0
    previous_status: str = ""
    metadata_rebuilt: bool = False
    children_dropped: list[str] = []
    torn_lines_set_aside: list[str] = []
    previous_config: dict[str, Any] = {}
    config: dict[str, Any] = {}


class PromptSubmitted(Event):
    """``prompt:submit``: a turn began with this prompt."""

    name: ClassVar[str] = "prompt:submit"

    prompt: str = ""
    turn: int | None = None


class PromptCompleted(Event):
    """``prompt:complete``: a turn ended: completed, failed (with its error) or cancelled."""

    name: ClassVar[str] = "prompt:complete"

    turn: int | None = None
    status: Literal["completed", "failed", "cancelled"]
    error: str | None = optional()
    traceback: str | None = optional()


class SessionEnded(Event):
    """``session:end``: the session ended, and how."""

    name: ClassVar[str] = "session:end"

    status: str
    error: str | None = optional()
    traceback: str | None = optional()


class DelegateStarted(Event):
    """``delegate:start``: a sub-session was created (or resumed) for an instruction."""

    name: ClassVar[str] = "delegate:start"

    child_id: str
    agent: str = ""
    instruction: str = ""
    resumed: bool = False


class DelegateEnded(Event):
    """``delegate:end``: a sub-session returned, and how."""

    name: ClassVar[str] = "delegate:end"

    child_id: str
    agent: str = ""
    status: str
    error: str | None = optional()
    traceback: str | None = optional()
