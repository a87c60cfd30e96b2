"""Actors: the Runtime, session actors, mailboxes, delegation, ids.

Knows nothing of language models: every turn is answered by a pluggable
``TurnHandler``.
"""

from amplifier._exports import name_as_public as _name_as_public

from ._bus import Subscription
from ._delegation import Delegation, DelegationResult, DelegationStatus
from ._exceptions import (
    ChildSessionError,
    IllegalTransition,
    RuntimeClosed,
    SessionClosed,
    SessionError,
    SubscriberTooSlow,
    TurnCancelled,
    TurnFailed,
)
from ._history import HistoryTail
from ._lifecycle import SessionState
from ._messages import Reply
from ._runtime import Cleanup, Runtime, SessionOpening, open_runtime
from ._session import Session, SessionContext, Turn
from ._turns import EchoTurnHandler, SessionSetup, TurnHandler

__all__ = [
    "ChildSessionError",
    "Cleanup",
    "Delegation",
    "DelegationResult",
    "DelegationStatus",
    "EchoTurnHandler",
    "HistoryTail",
    "IllegalTransition",
    "Reply",
    "Runtime",
    "RuntimeClosed",
    "Session",
    "SessionClosed",
    "SessionContext",
    "SessionError",
    "SessionOpening",
    "SessionSetup",
    "SessionState",
    "SubscriberTooSlow",
    "Subscription",
    "Turn",
    "TurnCancelled",
    "TurnFailed",
    "TurnHandler",
    "open_runtime",
]

_name_as_public(globals(), __all__, "amplifier.runtime")
