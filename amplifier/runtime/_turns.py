"""What runs inside a turn: the ``TurnHandler`` protocol, and the trivial handler.

The runtime knows nothing of language models. A session hands each prompt
to its Runtime's turn handler, which answers it through a ``Turn``: it can
record messages, emit events and delegate to child sessions. The agent loop
(``amplifier.agents``) is one such handler; ``EchoTurnHandler`` is another,
for tests and for trying the runtime without any model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._turn import SessionContext, Turn


@dataclass(frozen=True, slots=True)
class SessionSetup:
    """What a handler says a new (or resumed) session of an agent is.

    The limits and ``scrub`` are the session's own (its profile's, for the
    agent loop); None leaves the Runtime's. A session's sub-sessions share
    its setup.
    """

    agent: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Descriptive labels for metadata and ``session:start`` (provider, model, ...)."""
    max_depth: int | None = None
    """How deep delegation from this session may nest (None: the Runtime's ``max_depth``)."""
    max_children: int | None = None
    """Children this session runs at once (None: the Runtime's ``max_children``)."""
    scrub: Callable[[str], str] | None = None
    """Applied to every string of the session's events and to its last prompt, after
    the Runtime's own ``scrub`` (e.g. a redactor of the secrets of the session's profile)."""
    screen: Callable[[bytes], bool] | None = None
    """A quick look at one event's data, as the JSON it is stored as: False only when
    ``scrub`` would change none of its strings, and the event is then stored as it is,
    uncopied (None: every string goes through ``scrub``). Most events hold no secret."""


class TurnHandler(Protocol):
    """Answers prompts for every session of a Runtime."""

    def prepare_session(self, agent: str | None, *, profile: str | None = None) -> SessionSetup:
        """Resolve ``agent`` (None: the default one) for a session about to open or resume.

        ``profile`` is the session's own (None: it records none). Raise a
        ``UsageError`` for an agent or profile that does not exist; the
        session is then not opened and nothing is written.
        """
        ...

    async def on_resume(self, session: SessionContext) -> None:
        """Called once when a stored session is loaded again, before its first turn.

        The place to repair a turn that a crash cut off (DESIGN.md, Resume).
        """

    async def run_turn(self, turn: Turn) -> str:
        """Answer ``turn.prompt``; return the final answer's text.

        Record the assistant's messages with ``turn.record`` as they happen.
        Raising fails the turn (the session goes on); cancellation is
        delivered here as the backend's cancellation exception.
        """
        ...


class EchoTurnHandler:
    """Answers every prompt with ``echo: <prompt>``. Knows no model; never fails."""

    def prepare_session(self, agent: str | None, *, profile: str | None = None) -> SessionSetup:
        return SessionSetup(agent=agent or "default")

    async def on_resume(self, session: SessionContext) -> None:
        return None

    async def run_turn(self, turn: Turn) -> str:
        text = f"echo: {turn.prompt}"
        await turn.record({"role": "assistant", "content": text})
        return text
