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

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from importlib import import_module
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
        "ConfigWarning",
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
    ),
    "amplifier._open": ("open_runtime",),
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
    """Make the classes and functions ``names`` of ``module`` say where they are public (Rule).

    The source stays findable: a function's is found through its code
    object, which keeps the file it was defined in; a class's through
    ``__wrapped__`` (``_SourceOf``), which ``inspect.getsource`` follows.
    """
    for name in names:
        value = namespace[name]
        if not isinstance(value, type | FunctionType):
            continue  # constants and type aliases carry no module of their own
        defined_in = value.__module__
        if not defined_in.startswith("amplifier"):
            continue
        public = "amplifier" if HOME.get(name) == module else module
        if public == defined_in:
            continue
        value.__module__ = public
        if isinstance(value, type) and "__wrapped__" not in vars(value):
            # A class's source is looked up in the file of the module its
            # ``__module__`` names, which is now the public package's.
            value.__wrapped__ = _SourceOf(value, defined_in)  # type: ignore[attr-defined]


def imported_on_first_use(
    namespace: MutableMapping[str, object], modules: Mapping[str, tuple[str, ...]], package: str
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose ``modules`` load on first use (PEP 562).

    ``modules`` maps a module of ``package`` (``"._usage"``) to the public
    names it defines. The first of its names asked for imports it and puts
    all of them in the package, named as public (Rule), as an eager import
    would have: what a command never uses costs it no start-up time.
    """
    home = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> object:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = import_module(module, package)
        for each in modules[module]:
            namespace[each] = getattr(loaded, each)
        name_as_public(namespace, modules[module], package)
        return namespace[name]

    def __dir__() -> list[str]:
        return sorted({*namespace, *home})

    return __getattr__, __dir__


def describe(alias: object, doc: str) -> None:
    """Give a type alias (``Literal[...]``) a docstring that ``help()`` and ``__doc__`` show.

    Typing caches aliases, so an equal ``Literal`` written elsewhere shares it.
    """
    object.__setattr__(alias, "__doc__", doc)


class _SourceOf:
    """``__wrapped__`` of a class renamed for display: a stand-in that says where it is defined.

    ``inspect.getsource`` (and ``getsourcelines``) unwrap first, so they
    read the stand-in, which names the defining module and carries the
    class's own name, docstring and signature (``inspect.signature``
    unwraps too, and stops at a ``__signature__``). It answers only for
    the class itself: its instances and subclasses have no ``__wrapped__``.
    """

    __slots__ = ("_module", "_owner", "_stand_in")

    def __init__(self, owner: type, module: str) -> None:
        self._owner = owner
        self._module = module
        self._stand_in: type | None = None

    def __get__(self, instance: object, owner: type | None = None) -> type:
        if instance is not None or owner is not self._owner:
            raise AttributeError("__wrapped__")
        if self._stand_in is None:
            self._stand_in = _stand_in(self._owner, self._module)
        return self._stand_in


def _stand_in(owner: type, module: str) -> type:
    import inspect  # only here: most programs never ask for a source

    try:
        signature: object = inspect.signature(owner, follow_wrapped=False)
    except (TypeError, ValueError):
        signature = None
    return type(
        owner.__name__,
        (),
        {
            "__module__": module,
            "__qualname__": owner.__qualname__,
            "__doc__": owner.__doc__,
            "__signature__": signature,
        },
    )
