"""Agent specs, the agent loop, tools, providers and profiles.

The SDK-backed providers (``openai``, ``anthropic``) are chosen by name in a
profile or with ``open_runtime(provider=...)``; their modules are imported
only when used. So are those of ``_LATER``, which a turn does not need (usage
reports, file history, the scripted provider, tools from Python functions).
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from amplifier._exports import imported_on_first_use as _imported_on_first_use
from amplifier._exports import name_as_public as _name_as_public

from ._bash import Bash
from ._context import INTERRUPTED, Compaction, fit, normalize
from ._delegate_tool import DelegateTool
from ._events import (
    EVENTS,
    AnyEvent,
    ApprovalDecided,
    ApprovalRequested,
    ContextCompacted,
    FileChange,
    ForeignEvent,
    ProviderFailed,
    ProviderLimited,
    ProviderRequested,
    ProviderResponded,
    SessionRepaired,
    SessionRewound,
    ToolFinished,
    ToolStarted,
    TurnLimited,
    read_event,
)
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
from ._loop import COMPACT_REQUEST, AgentTurnHandler, compact_session
from ._mcp_config import McpServerConfig
from ._mcp_servers import (
    McpReport,
    McpServers,
    McpServerStatus,
    McpToolInfo,
    check_mcp_servers,
)
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
from ._permissions import Permissions
from ._profiles import DEFAULT_PROFILE, Price, Profile, ProfileCatalog, ToolPolicy
from ._provider import Provider, ProviderRequest, ProviderResponse, TextSink, ToolSpec
from ._provider_config import ProviderConfig, ProviderKind
from ._providers import make_provider
from ._runtime import load_profile
from ._specs import AgentCatalog, AgentSpec, parse_spec
from ._tools import Tool, ToolBox, ToolContext, confine
from ._write_tools import MAX_FILE_BYTES, EditFile, WriteFile, write_tools

if _TYPE_CHECKING:
    from ._file_history import (
        DiffReport,
        FileDiff,
        FileRewind,
        RewindRefused,
        RewindReport,
        session_diff,
        session_rewind,
    )
    from ._function_tools import FunctionTool, import_tool, tool
    from ._scripted import ScriptedCall, ScriptedProvider, ScriptedTurn
    from ._usage import SessionUsage, Tokens, TurnUsage, UsageReport, session_usage, usage_of

_LATER = {
    "._file_history": (
        "DiffReport",
        "FileDiff",
        "FileRewind",
        "RewindRefused",
        "RewindReport",
        "session_diff",
        "session_rewind",
    ),
    "._function_tools": ("FunctionTool", "import_tool", "tool"),
    "._scripted": ("ScriptedCall", "ScriptedProvider", "ScriptedTurn"),
    "._usage": ("SessionUsage", "Tokens", "TurnUsage", "UsageReport", "session_usage", "usage_of"),
}
"""Modules imported on first use of one of their names."""

__all__ = [
    "COMPACT_REQUEST",
    "DEFAULT_PROFILE",
    "EVENTS",
    "INTERRUPTED",
    "MAX_FILE_BYTES",
    "MESSAGE",
    "AgentCatalog",
    "AgentError",
    "AgentSpec",
    "AgentTurnHandler",
    "AgentWarning",
    "AnyEvent",
    "ApprovalDecided",
    "ApprovalRequested",
    "AssistantMessage",
    "Bash",
    "Compaction",
    "ConfigError",
    "ConfigWarning",
    "ContextCompacted",
    "CutOff",
    "DelegateTool",
    "DiffReport",
    "EditFile",
    "FileChange",
    "FileDiff",
    "FileRewind",
    "ForeignEvent",
    "FunctionTool",
    "McpReport",
    "McpServerConfig",
    "McpServerStatus",
    "McpServers",
    "McpToolInfo",
    "Message",
    "OfflineProvider",
    "Permissions",
    "Price",
    "Profile",
    "ProfileCatalog",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderFailed",
    "ProviderKind",
    "ProviderLimited",
    "ProviderMalformed",
    "ProviderRejected",
    "ProviderRequest",
    "ProviderRequested",
    "ProviderResponded",
    "ProviderResponse",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RewindRefused",
    "RewindReport",
    "ScriptedCall",
    "ScriptedProvider",
    "ScriptedTurn",
    "SessionRepaired",
    "SessionRewound",
    "SessionUsage",
    "TextSink",
    "Tokens",
    "Tool",
    "ToolBox",
    "ToolCall",
    "ToolContext",
    "ToolFailed",
    "ToolFinished",
    "ToolPolicy",
    "ToolResultMessage",
    "ToolSpec",
    "ToolStarted",
    "TurnLimited",
    "TurnUsage",
    "UnknownAgent",
    "UnknownProfile",
    "Usage",
    "UsageReport",
    "UserMessage",
    "WriteFile",
    "check_mcp_servers",
    "check_options",
    "compact_session",
    "confine",
    "file_tools",
    "fit",
    "import_tool",
    "load_profile",
    "make_provider",
    "normalize",
    "parse_history",
    "parse_spec",
    "read_event",
    "read_messages",
    "session_diff",
    "session_rewind",
    "session_usage",
    "to_record",
    "tool",
    "usage_of",
    "write_tools",
]

_later = {name for names in _LATER.values() for name in names}
_name_as_public(globals(), [n for n in __all__ if n not in _later], "amplifier.agents")
__getattr__, __dir__ = _imported_on_first_use(globals(), _LATER, "amplifier.agents")
