"""What travels through a session's mailbox, and what comes back (STYLE rule 5).

Commands are verbs (``Prompt``, ``Close``); outcomes are facts in the past
tense (``Answered``, ``Failed``, ``Cancelled``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from anyio.streams.memory import MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field

from amplifier.persistence import EndStatus


class Reply(BaseModel):
    """The answer to one prompt."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    text: str
    turn: int
    """1-based number of the turn within the session (across resumes)."""


class Answered(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["answered"] = "answered"
    reply: Reply


class Failed(BaseModel):
    """The turn failed: ``reason`` in one line, and the exception that failed it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    kind: Literal["failed"] = "failed"
    reason: str
    error: BaseException | None = None
    """The exception itself, with its traceback: raised again ``from`` it to the caller."""


class Cancelled(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["cancelled"] = "cancelled"


Outcome = Annotated[Answered | Failed | Cancelled, Field(discriminator="kind")]


class Prompt(BaseModel):
    """Answer ``text``; first record ``context`` (messages handed over by a delegating parent)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    kind: Literal["prompt"] = "prompt"
    text: str
    context: tuple[dict[str, Any], ...] = ()
    reply: MemoryObjectSendStream[Answered | Failed | Cancelled]
    on_text: Callable[[str], Awaitable[None]] | None = None
    """Receives the answer's text as it streams in (not persisted: the final message is)."""
    durable: bool = True
    """The turn's records are committed before the answer is sent. A delegating parent
    asks with False: what it writes next is ordered after the child's records anyway."""


class Close(BaseModel):
    """Write ``session:end`` with ``status`` and stop."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["close"] = "close"
    status: EndStatus = "completed"
    error: str | None = None
    keep_previous: bool = False
    """A resumed session ends with the status and error it had before (``Session.close``)."""


SessionMessage = Annotated[Prompt | Close, Field(discriminator="kind")]
