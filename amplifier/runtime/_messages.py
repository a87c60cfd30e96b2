"""What travels through a session's mailbox, and what comes back (STYLE rule 5).

Commands are verbs (``Prompt``, ``Close``, ``Relabel``); outcomes are facts in the past
tense (``Answered``, ``Failed``, ``Cancelled``). They never leave the
process and are built only by the runtime: plain dataclasses, without
validation. ``Reply`` is handed to callers: a pydantic model, like every
public record. A message that is answered carries the ``Pending`` its
answer is put in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict

from amplifier._errors import UsageError
from amplifier.persistence import EndStatus, SessionMetadata


class Reply(BaseModel):
    """The answer to one prompt."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    text: str
    turn: int
    """1-based number of the turn within the session (across resumes)."""
    cut_off: str | None = None
    """Why the answer stops short, as its turn handler says (the agent loop:
    ``output_limit``, the profile's ``max_output_tokens``); None if it is whole."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Answered:
    reply: Reply


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The turn failed: ``reason`` in one line, and the exception that failed it."""

    reason: str
    error: BaseException | None = None
    """The exception itself, with its traceback: raised again ``from`` it to the caller."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    pass


Outcome = Answered | Failed | Cancelled

T = TypeVar("T")


class Pending(Generic[T]):
    """The one answer to a message: put once by the session, waited for by whoever asked.

    An event and a slot. A memory stream of one item did the same with three
    objects, and its ``receive`` takes two scheduler steps where it has to
    wait (a checkpoint, then the wait): this waits in one.
    """

    __slots__ = ("_done", "abandoned", "decided", "value")

    def __init__(self) -> None:
        self._done = anyio.Event()
        self.value: T | None = None
        self.abandoned = False
        """Whoever asked stopped waiting (cancelled): no answer will be read."""
        self.decided = False
        """The answer is settled and being recorded: cancelling the wait no longer changes
        it (whoever asked waits for it instead)."""

    def put(self, value: T) -> None:
        """Answer; an answer put after the first, or after ``close``, is dropped."""
        if not self._done.is_set():
            self.value = value
            self._done.set()

    def close(self) -> None:
        """Stop without an answer (if none was put): whoever waits is told there is none."""
        self._done.set()

    async def wait(self) -> T | None:
        """The answer, or None if it was closed without one. Checkpoint."""
        await self._done.wait()
        return self.value


def check_prompt(prompt: object) -> str:
    """``prompt`` if it can be asked: ``TypeError`` if it is not a string, ``UsageError`` if
    it has no text (the command line refuses an empty prompt the same way)."""
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt is a str, not {type(prompt).__name__}")
    if not prompt.strip():
        raise UsageError("a prompt needs some text: it is empty")
    return prompt


@dataclass(frozen=True, slots=True, kw_only=True)
class Prompt:
    """Answer ``text``; first record ``context`` (messages handed over by a delegating parent)."""

    text: str
    context: tuple[dict[str, Any], ...] = ()
    reply: Pending[Outcome]
    on_text: Callable[[str], Awaitable[None]] | None = None
    """Receives the answer's text as it streams in (not persisted: the final message is)."""
    durable: bool = True
    """The turn's records are committed before the answer is sent. A delegating parent
    asks with False: what it writes next is ordered after the child's records anyway."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """Write ``session:end`` with ``status`` and stop."""

    status: EndStatus = "completed"
    error: str | None = None
    keep_previous: bool = False
    """A resumed session ends with the status and error it had before (``Session.close``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Relabel:
    """Apply ``change`` to the session's metadata (name, tags, attributes) and write it."""

    change: Callable[[SessionMetadata], None]
    reply: Pending[SessionMetadata | Exception]
    """The metadata as written, or the failure that kept it from being written."""


SessionMessage = Prompt | Close | Relabel
