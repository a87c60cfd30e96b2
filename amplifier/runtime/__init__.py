"""Actors: the Runtime, session actors, mailboxes, delegation, ids.

Knows nothing of language models: every turn is answered by a pluggable
``TurnHandler``.
"""

from ._bus import EventBus, Subscription
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
from ._ids import agent_slug, is_child_id, is_root_id, new_child_id, new_root_id, span_of
from ._lifecycle import ALLOWED, Lifecycle, SessionState
from ._messages import Reply
from ._runtime import Cleanup, Runtime, SessionOpening, open_runtime, plan_cleanup
from ._session import Session, SessionContext, Turn
from ._turns import EchoTurnHandler, SessionSetup, TurnHandler

__all__ = [
    "ALLOWED",
    "ChildSessionError",
    "Cleanup",
    "Delegation",
    "DelegationResult",
    "DelegationStatus",
    "EchoTurnHandler",
    "EventBus",
    "HistoryTail",
    "IllegalTransition",
    "Lifecycle",
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
    "agent_slug",
    "is_child_id",
    "is_root_id",
    "new_child_id",
    "new_root_id",
    "open_runtime",
    "plan_cleanup",
    "span_of",
]
