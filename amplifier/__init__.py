"""Amplifier: an async, actor-style runtime for AI-agent sessions.

The public API is what this module exports; everything else may change.

Rule: each public name is imported from the layer that defines it on first
use (PEP 562), so ``import amplifier`` (and the command line's ``--help``,
which imports ``amplifier.cli``) costs almost nothing; ``_EXPORTS`` says
where each name lives.
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from amplifier._errors import AmplifierError, UsageError
    from amplifier.agents import (
        AgentSpec,
        AgentWarning,
        ConfigError,
        Profile,
        ProviderError,
        ScriptedProvider,
        UnknownAgent,
        UnknownProfile,
        UsageReport,
        session_usage,
    )
    from amplifier.cluster import open_runtime
    from amplifier.persistence import (
        AmbiguousSessionId,
        CorruptSession,
        Durability,
        EventRecord,
        InvalidSessionId,
        PersistenceError,
        RecoveryWarning,
        SearchHit,
        SessionLocked,
        SessionMetadata,
        SessionNotFound,
        SessionSummary,
        StoreWarning,
        TranscriptRecord,
        WriteFailed,
    )
    from amplifier.runtime import (
        ChildSessionError,
        Delegation,
        DelegationResult,
        EchoTurnHandler,
        Reply,
        Runtime,
        RuntimeClosed,
        Session,
        SessionClosed,
        SessionContext,
        SessionError,
        SessionSetup,
        SessionState,
        SubscriberTooSlow,
        Turn,
        TurnCancelled,
        TurnFailed,
        TurnHandler,
    )

_EXPORTS: dict[str, tuple[str, ...]] = {
    "amplifier._errors": ("AmplifierError", "UsageError"),
    "amplifier.agents": (
        "AgentSpec",
        "AgentWarning",
        "ConfigError",
        "Profile",
        "ProviderError",
        "ScriptedProvider",
        "UnknownAgent",
        "UnknownProfile",
        "UsageReport",
        "session_usage",
    ),
    "amplifier.cluster": ("open_runtime",),
    "amplifier.persistence": (
        "AmbiguousSessionId",
        "CorruptSession",
        "Durability",
        "EventRecord",
        "InvalidSessionId",
        "PersistenceError",
        "RecoveryWarning",
        "SearchHit",
        "SessionLocked",
        "SessionMetadata",
        "SessionNotFound",
        "SessionSummary",
        "StoreWarning",
        "TranscriptRecord",
        "WriteFailed",
    ),
    "amplifier.runtime": (
        "ChildSessionError",
        "Delegation",
        "DelegationResult",
        "EchoTurnHandler",
        "Reply",
        "Runtime",
        "RuntimeClosed",
        "Session",
        "SessionClosed",
        "SessionContext",
        "SessionError",
        "SessionSetup",
        "SessionState",
        "SubscriberTooSlow",
        "Turn",
        "TurnCancelled",
        "TurnFailed",
        "TurnHandler",
    ),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "AgentSpec",
    "AgentWarning",
    "AmbiguousSessionId",
    "AmplifierError",
    "ChildSessionError",
    "ConfigError",
    "CorruptSession",
    "Delegation",
    "DelegationResult",
    "Durability",
    "EchoTurnHandler",
    "EventRecord",
    "InvalidSessionId",
    "PersistenceError",
    "Profile",
    "ProviderError",
    "RecoveryWarning",
    "Reply",
    "Runtime",
    "RuntimeClosed",
    "ScriptedProvider",
    "SearchHit",
    "Session",
    "SessionClosed",
    "SessionContext",
    "SessionError",
    "SessionLocked",
    "SessionMetadata",
    "SessionNotFound",
    "SessionSetup",
    "SessionState",
    "SessionSummary",
    "StoreWarning",
    "SubscriberTooSlow",
    "TranscriptRecord",
    "Turn",
    "TurnCancelled",
    "TurnFailed",
    "TurnHandler",
    "UnknownAgent",
    "UnknownProfile",
    "UsageError",
    "UsageReport",
    "WriteFailed",
    "open_runtime",
    "session_usage",
]


def __getattr__(name: str) -> _Any:
    """The public name ``name``, imported from its layer on first use (see the Rule)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'amplifier' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
