"""A session's lifecycle, with the allowed transitions as data (STYLE rule 6).

STARTING ──> IDLE <──> RUNNING
    │         │          │
    └────────>CLOSING<───┘ ──> ENDED
"""

from __future__ import annotations

from enum import Enum

from ._exceptions import IllegalTransition


class SessionState(Enum):
    """Where a session is in its life (``Session.state``); ``ALLOWED`` says what may follow."""

    STARTING = "starting"
    """Files being created or opened; ``session:start``/``session:resume`` not yet written."""
    IDLE = "idle"
    """Waiting for a prompt."""
    RUNNING = "running"
    """A turn is in progress."""
    CLOSING = "closing"
    """Writing its final records."""
    ENDED = "ended"
    """``session:end`` written (or the attempt given up); the handle is dead."""


ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    SessionState.STARTING: frozenset({SessionState.IDLE, SessionState.CLOSING}),
    SessionState.IDLE: frozenset({SessionState.RUNNING, SessionState.CLOSING}),
    SessionState.RUNNING: frozenset({SessionState.IDLE, SessionState.CLOSING}),
    SessionState.CLOSING: frozenset({SessionState.ENDED}),
    SessionState.ENDED: frozenset(),
}


class Lifecycle:
    """The current state of one session, moved only along ``ALLOWED``."""

    __slots__ = ("_name", "state")

    def __init__(self, name: str) -> None:
        self._name = name
        self.state = SessionState.STARTING

    def move(self, to: SessionState) -> None:
        if to not in ALLOWED[self.state]:
            raise IllegalTransition(self._name, self.state.value, to.value)
        self.state = to
