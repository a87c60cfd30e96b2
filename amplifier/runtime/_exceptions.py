"""Errors raised by the runtime (sessions, turns, delegation).

AmplifierError
└── SessionError                a session could not do what was asked
    ├── TurnFailed              the turn handler raised; the session goes on
    ├── TurnCancelled           the turn was cancelled; the session goes on
    ├── ChildSessionError       a delegated child failed (carries the child's id)
    ├── SubscriberTooSlow       an event subscriber fell too far behind and was cut off
    └── RuntimeClosed           the runtime has shut down
UsageError
├── SessionClosed               the session handle was closed (by you)
└── IllegalTransition           a lifecycle step that the current state does not allow
"""

from __future__ import annotations

from amplifier._errors import AmplifierError, UsageError


class SessionError(AmplifierError):
    """A session could not carry out a request."""

    def __init__(self, session_id: str, message: str) -> None:
        self.session_id = session_id
        super().__init__(message)


class TurnFailed(SessionError):
    """The turn handler raised while answering a prompt; the session itself goes on.

    Raised ``from`` the exception that failed the turn: ``__cause__`` is it,
    with its traceback.
    """

    def __init__(self, session_id: str, reason: str) -> None:
        self.reason = reason
        super().__init__(session_id, f"turn failed in session {session_id}: {reason}")


class TurnCancelled(SessionError):
    """The turn was cancelled before it finished; what it wrote so far is kept."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id, f"turn cancelled in session {session_id}")


class ChildSessionError(SessionError):
    """A delegated child session failed, timed out or was cancelled.

    ``session_id`` is the child's id, so the failure can be traced to its files.
    """

    def __init__(self, session_id: str, agent: str, reason: str) -> None:
        self.agent = agent
        self.reason = reason
        super().__init__(session_id, f"sub-session {session_id} ({agent}) failed: {reason}")


class SubscriberTooSlow(SessionError):
    """An event subscription was cut off because its reader fell too far behind.

    Every event is still in ``events.jsonl``; read it with ``Runtime.events``.
    """


class RuntimeClosed(SessionError):
    """The runtime shut down before the request could be carried out."""


class SessionClosed(UsageError):
    """The session handle was closed; open or resume the session again to use it."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"session {session_id} is closed")


class IllegalTransition(UsageError):
    """A lifecycle step was asked of a state that does not allow it."""

    def __init__(self, what: str, current: str, wanted: str) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(f"{what} is {current}; it cannot become {wanted}")


def describe_error(exc: BaseException) -> str:
    """One line for an error: Amplifier's own say enough; others are named by type."""
    text = str(exc)
    if isinstance(exc, AmplifierError | UsageError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
