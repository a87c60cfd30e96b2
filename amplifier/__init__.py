"""Amplifier: an async, actor-style runtime for AI-agent sessions.

The public API is what this module exports; everything else may change.

Rule: each public name is imported from the layer that defines it on first
use (PEP 562), so ``import amplifier`` (and the command line's ``--help``,
which imports ``amplifier.cli``) costs almost nothing; ``_exports`` says
where each name lives, and makes each say ``amplifier`` (STYLE rule 17).
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from amplifier import _exports

if _TYPE_CHECKING:
    from amplifier._errors import (
        AmplifierError,
        UsageError,
    )
    from amplifier.agents import (
        AgentSpec,
        AgentWarning,
        AssistantMessage,
        ConfigError,
        ConfigWarning,
        Message,
        Price,
        Profile,
        Provider,
        ProviderConfig,
        ProviderError,
        ProviderKind,
        ProviderRequest,
        ProviderResponse,
        ScriptedCall,
        ScriptedProvider,
        ScriptedTurn,
        SessionUsage,
        TextSink,
        Tokens,
        ToolCall,
        ToolPolicy,
        ToolResultMessage,
        ToolSpec,
        TurnUsage,
        UnknownAgent,
        UnknownProfile,
        Usage,
        UsageReport,
        UserMessage,
        session_usage,
    )
    from amplifier.cluster import (
        ClusterError,
        ClusterUnavailable,
        HostLost,
        PersistenceRestarted,
        PersistenceUnavailable,
        open_runtime,
    )
    from amplifier.persistence import (
        AmbiguousSessionId,
        Clock,
        CorruptSession,
        Durability,
        EndStatus,
        EventRecord,
        InvalidSessionId,
        PersistenceError,
        RecoveryReport,
        RecoveryWarning,
        SearchHit,
        SessionLocation,
        SessionLocked,
        SessionMetadata,
        SessionNotFound,
        SessionSort,
        SessionStatus,
        SessionSummary,
        StoreWarning,
        TranscriptRecord,
        WriteFailed,
    )
    from amplifier.runtime import (
        ChildSessionError,
        Cleanup,
        Delegation,
        DelegationResult,
        DelegationStatus,
        EchoTurnHandler,
        HistoryTail,
        IllegalTransition,
        Reply,
        Runtime,
        RuntimeClosed,
        Session,
        SessionClosed,
        SessionContext,
        SessionError,
        SessionOpening,
        SessionSetup,
        SessionState,
        SubscriberTooSlow,
        Subscription,
        Turn,
        TurnCancelled,
        TurnFailed,
        TurnHandler,
    )

_HOME = _exports.HOME

__all__ = [
    "AgentSpec",
    "AgentWarning",
    "AmbiguousSessionId",
    "AmplifierError",
    "AssistantMessage",
    "ChildSessionError",
    "Cleanup",
    "Clock",
    "ClusterError",
    "ClusterUnavailable",
    "ConfigError",
    "ConfigWarning",
    "CorruptSession",
    "Delegation",
    "DelegationResult",
    "DelegationStatus",
    "Durability",
    "EchoTurnHandler",
    "EndStatus",
    "EventRecord",
    "HistoryTail",
    "HostLost",
    "IllegalTransition",
    "InvalidSessionId",
    "Message",
    "PersistenceError",
    "PersistenceRestarted",
    "PersistenceUnavailable",
    "Price",
    "Profile",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderKind",
    "ProviderRequest",
    "ProviderResponse",
    "RecoveryReport",
    "RecoveryWarning",
    "Reply",
    "Runtime",
    "RuntimeClosed",
    "ScriptedCall",
    "ScriptedProvider",
    "ScriptedTurn",
    "SearchHit",
    "Session",
    "SessionClosed",
    "SessionContext",
    "SessionError",
    "SessionLocation",
    "SessionLocked",
    "SessionMetadata",
    "SessionNotFound",
    "SessionOpening",
    "SessionSetup",
    "SessionSort",
    "SessionState",
    "SessionStatus",
    "SessionSummary",
    "SessionUsage",
    "StoreWarning",
    "SubscriberTooSlow",
    "Subscription",
    "TextSink",
    "Tokens",
    "ToolCall",
    "ToolPolicy",
    "ToolResultMessage",
    "ToolSpec",
    "TranscriptRecord",
    "Turn",
    "TurnCancelled",
    "TurnFailed",
    "TurnHandler",
    "TurnUsage",
    "UnknownAgent",
    "UnknownProfile",
    "Usage",
    "UsageError",
    "UsageReport",
    "UserMessage",
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
