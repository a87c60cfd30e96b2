"""The public face: where each name of ``amplifier`` lives, and how it names itself.

Rule (STYLE rule 17): every public class and function says the package a
program imports it from. A name the top-level package re-exports says
``amplifier`` (``amplifier.ProviderError`` in a traceback, not
``amplifier.agents._exceptions.ProviderError``); any other public name of a
layer says its layer (``amplifier.runtime.lowlevel.EventBus``). Each
package's ``__init__`` calls ``name_as_public`` when it is imported, so a
name is right however it was reached first.

This table is the top-level package's (``amplifier/__init__.py`` loads each
name from its layer on first use); it lives here so that the layers, which
must not import the top-level package, can read it.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from types import FunctionType

EXPORTS: dict[str, tuple[str, ...]] = {
    "amplifier._errors": ("AmplifierError", "UsageError"),
    "amplifier.agents": (
        "AgentSpec",
        "AgentWarning",
        "AssistantMessage",
        "DiffReport",
        "FileChange",
        "FileDiff",
        "FileRewind",
        "ConfigError",
        "Message",
        "Permissions",
        "Price",
        "Profile",
        "Provider",
        "ProviderConfig",
        "ProviderError",
        "ProviderKind",
        "ProviderRequest",
        "ProviderResponse",
        "FunctionTool",
        "RewindRefused",
        "RewindReport",
        "ScriptedCall",
        "ScriptedProvider",
        "ScriptedTurn",
        "SessionUsage",
        "TextSink",
        "Tokens",
        "Tool",
        "ToolCall",
        "ToolContext",
        "ToolFailed",
        "ToolPolicy",
        "ToolResultMessage",
        "ToolSpec",
        "TurnUsage",
        "UnknownAgent",
        "UnknownProfile",
        "Usage",
        "UsageReport",
        "UserMessage",
        "session_diff",
        "session_rewind",
        "session_usage",
        "tool",
    ),
    "amplifier.cluster": (
        "ClusterError",
        "ClusterUnavailable",
        "HostLost",
        "PersistenceRestarted",
        "PersistenceUnavailable",
        "open_runtime",
    ),
    "amplifier.persistence": (
        "AmbiguousSessionId",
        "Clock",
        "CorruptSession",
        "Durability",
        "EndStatus",
        "EventRecord",
        "InvalidSessionId",
        "PersistenceError",
        "RecoveryReport",
        "RecoveryWarning",
        "SearchHit",
        "SessionLocation",
        "SessionLocked",
        "SessionMetadata",
        "SessionNotFound",
        "SessionSort",
        "SessionStatus",
        "SessionSummary",
        "StoreWarning",
        "TranscriptRecord",
        "WriteFailed",
    ),
    "amplifier.runtime": (
        "ApprovalDecision",
        "ApprovalRequest",
        "Approver",
        "ChildSessionError",
        "Cleanup",
        "Delegation",
        "DelegationResult",
        "DelegationStatus",
        "EchoTurnHandler",
        "Event",
        "HeldSession",
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
    ),
}
HOME = {name: module for module, names in EXPORTS.items() for name in names}
"""The layer each top-level name is loaded from."""


def name_as_public(
    namespace: MutableMapping[str, object], names: Iterable[str], module: str
) -> None:
    """Make the classes and functions ``names`` of ``module`` say where they are public (Rule)."""
    for name in names:
        value = namespace[name]
        if not isinstance(value, type | FunctionType):
            continue  # constants and type aliases carry no module of their own
        if value.__module__.startswith("amplifier"):
            value.__module__ = "amplifier" if HOME.get(name) == module else module
