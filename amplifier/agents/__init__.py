"""Agent specs, the agent loop, tools, providers and profiles.

The SDK-backed providers (``openai``, ``anthropic``) are chosen by name in a
profile or with ``open_runtime(provider=...)``; their modules are imported
only when used.
"""

from amplifier._exports import name_as_public as _name_as_public

from ._context import INTERRUPTED, Compaction, fit, normalize
from ._delegate_tool import DelegateTool
from ._exceptions import (
    AgentError,
    AgentWarning,
    ConfigError,
    ConfigWarning,
    ProviderError,
    ProviderMalformed,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    ToolFailed,
    UnknownAgent,
    UnknownProfile,
)
from ._file_tools import file_tools
from ._loop import AgentTurnHandler
from ._messages import (
    MESSAGE,
    AssistantMessage,
    CutOff,
    Message,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    parse_history,
    read_messages,
    to_record,
)
from ._offline import OfflineProvider
from ._options import check_options
from ._profiles import DEFAULT_PROFILE, Price, Profile, ProfileCatalog, ToolPolicy
from ._provider import Provider, ProviderRequest, ProviderResponse, TextSink, ToolSpec
from ._provider_config import ProviderConfig, ProviderKind
from ._providers import make_provider
from ._runtime import load_profile, open_runtime
from ._scripted import ScriptedCall, ScriptedProvider, ScriptedTurn
from ._specs import AgentCatalog, AgentSpec, parse_spec
from ._tools import Tool, ToolBox, ToolContext, confine
from ._usage import SessionUsage, Tokens, TurnUsage, UsageReport, session_usage, usage_of

__all__ = [
    "DEFAULT_PROFILE",
    "INTERRUPTED",
    "MESSAGE",
    "AgentCatalog",
    "AgentError",
    "AgentSpec",
    "AgentTurnHandler",
    "AgentWarning",
    "AssistantMessage",
    "Compaction",
    "ConfigError",
    "ConfigWarning",
    "CutOff",
    "DelegateTool",
    "Message",
    "OfflineProvider",
    "Price",
    "Profile",
    "ProfileCatalog",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderKind",
    "ProviderMalformed",
    "ProviderRejected",
    "ProviderRequest",
    "ProviderResponse",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ScriptedCall",
    "ScriptedProvider",
    "ScriptedTurn",
    "SessionUsage",
    "TextSink",
    "Tokens",
    "Tool",
    "ToolBox",
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
    "check_options",
    "confine",
    "file_tools",
    "fit",
    "load_profile",
    "make_provider",
    "normalize",
    "open_runtime",
    "parse_history",
    "parse_spec",
    "read_messages",
    "session_usage",
    "to_record",
    "usage_of",
]

_name_as_public(globals(), __all__, "amplifier.agents")
