"""The package's shape: layers point one way, and each public face says what it exports."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import amplifier

PACKAGE = Path(amplifier.__file__).parent
# Each may import only those before it.
LAYERS = ["persistence", "runtime", "agents", "cluster", "cli"]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str | None:
    relative = path.relative_to(PACKAGE).parts
    return relative[0] if relative[0] in LAYERS else None


def _imported_layers(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "amplifier" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
            elif parts[0] == "amplifier" and len(parts) == 1:
                found.add("amplifier")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    """cli -> agents -> runtime -> persistence: no module imports a layer above its own."""
    layer = _layer(path)
    if layer is None:
        return
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    imported = _imported_layers(path)
    if layer != "cli":
        # The top-level package re-exports every layer; only the CLI may use it.
        assert "amplifier" not in imported, f"{path.name} imports the top-level package"
    assert imported - {"amplifier"} <= allowed, f"{path.name} imports {imported - allowed}"


@pytest.mark.parametrize(
    "name",
    [
        "amplifier",
        *(f"amplifier.{layer}" for layer in LAYERS),
        "amplifier.persistence.lowlevel",
        "amplifier.runtime.lowlevel",
    ],
)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    """Each package's __all__ names every public name it exports, and only those."""
    module = importlib.import_module(name)
    # dir(), not vars(): the top-level package loads its names on first use.
    public = {
        attribute
        for attribute in dir(module)
        if not attribute.startswith("_") and not _is_submodule(module, getattr(module, attribute))
    }
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))


def _is_submodule(package: object, value: object) -> bool:
    return type(value).__name__ == "module"


def test_every_module_imports() -> None:
    """No module is broken (an import error would hide behind lazy imports)."""
    has_ray = importlib.util.find_spec("ray") is not None
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="amplifier."):
        if info.name.startswith("amplifier.cluster._") and not has_ray:
            continue  # the Ray backend's modules need the ``ray`` extra
        importlib.import_module(info.name)


EXPORTED = {
    "amplifier": [
        "AgentSpec",
        "AgentWarning",
        "AmbiguousSessionId",
        "AmplifierError",
        "ApprovalDecision",
        "ApprovalRequest",
        "Approver",
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
        "DiffReport",
        "Durability",
        "EchoTurnHandler",
        "EndStatus",
        "Event",
        "EventRecord",
        "FileChange",
        "FileDiff",
        "FileRewind",
        "FunctionTool",
        "HeldSession",
        "HistoryTail",
        "HostLost",
        "IllegalTransition",
        "InvalidSessionId",
        "Message",
        "Permissions",
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
        "RewindRefused",
        "RewindReport",
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
        "Tool",
        "ToolCall",
        "ToolContext",
        "ToolFailed",
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
        "session_diff",
        "session_rewind",
        "session_usage",
        "tool",
    ],
    "amplifier.persistence.lowlevel": [
        "FILE_HISTORY",
        "MAX_ID_LENGTH",
        "SCHEMA_VERSION",
        "Acks",
        "AppendEvent",
        "AppendMessage",
        "CloseSession",
        "CommitListener",
        "CommittedEvents",
        "Committer",
        "CreateSession",
        "DeleteSessions",
        "EncodedData",
        "Flush",
        "KeepFile",
        "NotAFile",
        "OpenSession",
        "OpenedSession",
        "Owner",
        "RecordRequest",
        "Reindex",
        "Request",
        "Stamp",
        "StoreClosed",
        "TranscriptTail",
        "WriteMetadata",
        "atomic_replace",
        "content_digest",
        "default_home",
        "encode_data",
        "ensure_private_dir",
        "format_ts",
        "holder",
        "load_transcript_tail",
        "open_to_read",
        "receive_group",
        "recover_dead_journals",
        "stamped_line",
    ],
    "amplifier.runtime.lowlevel": [
        "ALLOWED",
        "ChildLauncher",
        "ChildOutcome",
        "ChildRun",
        "EventBus",
        "Launch",
        "Lifecycle",
        "LocalRuntime",
        "LocalSession",
        "agent_slug",
        "check_end",
        "check_prompt",
        "is_child_id",
        "is_root_id",
        "new_child_id",
        "new_root_id",
        "open_local_runtime",
        "plan_cleanup",
        "run_child",
        "span_of",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_public_names_are_pinned(name: str) -> None:
    """The names a program may import are exactly these: a change to them is deliberate."""
    assert sorted(importlib.import_module(name).__all__) == sorted(EXPORTED[name])


@pytest.mark.parametrize("name", EXPORTED["amplifier"])
def test_public_names_say_they_are_amplifiers(name: str) -> None:
    """A public class or function names itself amplifier.X (tracebacks, docs, repr)."""
    value = getattr(amplifier, name)
    if isinstance(value, type) or inspect.isfunction(value):
        assert value.__module__ == "amplifier"


@pytest.mark.parametrize("name", EXPORTED["amplifier"])
def test_public_names_show_their_source(name: str) -> None:
    """`inspect.getsource(amplifier.X)` shows X's definition, though X names itself amplifier.X."""
    value = getattr(amplifier, name)
    if not (isinstance(value, type) or inspect.isfunction(value)):
        return  # a type alias (Literal[...]) has no source of its own
    source = inspect.getsource(value)
    assert re.search(rf"^(async )?(class|def) {name}\b", source, re.MULTILINE), source[:200]
    assert value.__module__ == "amplifier"


def test_source_lookup_leaves_signatures_and_subclasses_alone() -> None:
    """A renamed class keeps its signature, and a program's subclass shows its own source."""

    class Mine(amplifier.TurnFailed):
        """A program's own error."""

    assert list(inspect.signature(amplifier.TurnFailed).parameters) == ["session_id", "reason"]
    assert inspect.getsource(Mine).lstrip().startswith("class Mine(amplifier.TurnFailed):")


@pytest.mark.parametrize("name", EXPORTED["amplifier"])
def test_public_names_have_docstrings(name: str) -> None:
    """`help(amplifier.X)` says what X is: every public name carries a docstring of its own."""
    value = getattr(amplifier, name)
    own = vars(value).get("__doc__") if isinstance(value, type) else value.__doc__
    if not isinstance(value, type) and not inspect.isfunction(value):
        assert own != type(value).__doc__, f"{name} shows its typing class's docstring"
    assert (own or "").strip(), f"{name} has no docstring"


def test_a_public_name_is_amplifiers_before_the_top_level_is_asked() -> None:
    """Imported from its layer first, a public class already names itself amplifier.X."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from amplifier.agents import ProviderError; print(ProviderError.__module__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "amplifier"


_CONSTRUCTED_INSIDE = {
    "Runtime",
    "Session",
    "SessionContext",
    "Turn",
    "Subscription",
    "HeldSession",
}
"""Made by the runtime, never by a program: their constructors are not public."""


def _amplifier_classes(annotation: object, found: set[type]) -> None:
    origin = typing.get_origin(annotation)
    if origin is not None:
        for argument in typing.get_args(annotation):
            _amplifier_classes(argument, found)
        return
    if isinstance(annotation, type) and annotation.__module__.startswith("amplifier"):
        found.add(annotation)


def _signature_classes(value: object) -> set[type]:
    """The classes of Amplifier that the public methods, fields and parameters of ``value`` use."""
    callables: list[object] = []
    if isinstance(value, type):
        for klass in value.__mro__:
            if not klass.__module__.startswith("amplifier"):
                continue
            for attribute, member in vars(klass).items():
                if attribute.startswith("_") and attribute != "__init__":
                    continue
                if attribute == "__init__" and value.__name__ in _CONSTRUCTED_INSIDE:
                    continue
                if isinstance(member, property):
                    member = member.fget
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                # Ours only: pydantic adds methods of its own (``model_post_init``).
                if callable(member) and getattr(member, "__module__", "").startswith("amplifier"):
                    callables.append(member)
            if "model_fields" in vars(klass):
                callables.append(klass)
    elif inspect.isfunction(value):
        callables.append(getattr(value, "__wrapped__", value))
    found: set[type] = set()
    for item in callables:
        namespace = {**vars(amplifier), **{n: getattr(amplifier, n) for n in amplifier.__all__}}
        for annotation in typing.get_type_hints(item, localns=namespace).values():
            _amplifier_classes(annotation, found)
    return found


def test_every_type_in_a_public_signature_is_exported() -> None:
    """A program can name every type the public API takes or returns, from `amplifier`."""
    public = {getattr(amplifier, name) for name in amplifier.__all__}
    todo = [value for value in public if isinstance(value, type) or inspect.isfunction(value)]
    seen: set[object] = set()
    missing = set()
    while todo:
        value = todo.pop()
        if value in seen:
            continue
        seen.add(value)
        for klass in _signature_classes(value):
            if klass not in public:
                missing.add(f"{klass.__module__}.{klass.__qualname__}")
            todo.append(klass)
    assert not missing
