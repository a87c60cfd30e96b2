"""Actors: the Runtime, session actors, mailboxes, delegation, ids.

Knows nothing of language models: every turn is answered by a pluggable
``TurnHandler``.
"""

from amplifier._exports import name_as_public as _name_as_public

from ._approval import ApprovalDecision, ApprovalRequest, Approver, DecidedBy
from ._bus import Subscription
from ._delegation import Delegation, DelegationResult, DelegationStatus
from ._events import (
    DelegateEnded,
    DelegateStarted,
    Event,
    PromptCompleted,
    PromptSubmitted,
    SessionEnded,
    SessionResumed,
    SessionStarted,
    optional,
)
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
from ._protocols import Runtime, Session, SessionOpening
from ._runtime import Cleanup, HeldSession
from ._turn import SessionContext, Turn
from ._turns import EchoTurnHandler, SessionSetup, TurnHandler

__all__ = [
    "ApprovalDecision",
    "ApprovalRequest",
    "Approver",
    "ChildSessionError",
    "Cleanup",
    "DecidedBy",
    "DelegateEnded",
    "DelegateStarted",
    "Delegation",
    "DelegationResult",
    "DelegationStatus",
    "EchoTurnHandler",
    "Event",
    "HeldSession",
    "HistoryTail",
    "IllegalTransition",
    "PromptCompleted",
    "PromptSubmitted",
    "Reply",
    "Runtime",
    "RuntimeClosed",
    "Session",
    "SessionClosed",
    "SessionContext",
    "SessionEnded",
    "SessionError",
    "SessionOpening",
    "SessionResumed",
    "SessionSetup",
    "SessionStarted",
    "SessionState",
    "SubscriberTooSlow",
    "Subscription",
    "Turn",
    "TurnCancelled",
    "TurnFailed",
    "TurnHandler",
    "optional",
]

_name_as_public(globals(), __all__, "amplifier.runtime")
