"""The ``Tool`` protocol, the context a tool runs in, and project confinement.

A tool has a name, a description and a pydantic model of its arguments;
the model's JSON schema is what providers see, unless the tool has an
``input_schema`` of its own (an MCP server's tools do: their schema goes to
the model as the server gives it). ``run`` returns the text the model gets
back, or raises ``ToolFailed`` with a message the model gets as an error
result. File tools never leave the project directory.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from ._exceptions import ToolFailed
from ._provider import ToolSpec

if TYPE_CHECKING:
    from amplifier.runtime import Turn

    from ._events import FileChange
    from ._specs import AgentSpec

MAX_TOOL_OUTPUT = 64 * 1024
"""Characters of tool output kept in the transcript; longer output is cut with a note."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Where a tool call happens: the project, the turn, the calling agent."""

    root: Path
    """The project directory (resolved); file tools stay inside it."""
    turn: Turn
    agent: AgentSpec
    call_id: str
    environment: Mapping[str, str] | None = None
    """The environment for commands the tool starts (the providers' keys left out);
    None: this process's own."""
    changes: list[FileChange] = field(default_factory=list)
    """Files the call changed, in order: recorded in its ``tool:post``."""

    async def keep(self, content: bytes) -> str:
        """Keep a file's content before changing it; its digest, once durable (write-ahead)."""
        return await self.turn.session.keep_file(content)

    def changed(self, change: FileChange) -> None:
        """Say that the call changed a file (``session diff`` and ``rewind`` use it)."""
        self.changes.append(change)


class Tool(Protocol):
    """A tool; the attributes are usually plain class attributes (or a nested class).

    Two attributes are optional: ``input_schema``, a JSON schema the model
    sees instead of the one ``Arguments`` gives (the arguments are then
    passed on as they come, so ``Arguments`` should accept any); and
    ``labels``, a mapping that ``tool:pre`` and ``tool:post`` add to their
    data (an MCP tool's server and its own name).
    """

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def Arguments(self) -> type[BaseModel]: ...

    @property
    def side_effects(self) -> bool:
        """Whether the tool changes something (files, processes, the world outside):
        such a call asks first unless a rule allows it, and is written ahead."""
        ...

    @property
    def subject(self) -> str | None:
        """The argument that permission rules match (``bash(git *)`` globs ``command``)."""
        ...

    async def run(self, arguments: Any, context: ToolContext) -> str:
        """Do the work; return the result text, or raise ``ToolFailed``."""
        ...


@runtime_checkable
class Previewing(Protocol):
    """A tool that can say what a call would do before it runs (shown when it asks)."""

    async def preview(self, arguments: Any, context: ToolContext) -> str:
        """What the call would do: the command, or the diff an edit would make."""
        ...


def spec_of(tool: Tool) -> ToolSpec:
    """The tool as a model sees it (computed once per tool: a JSON schema is not cheap)."""
    schema = getattr(tool, "input_schema", None)
    if isinstance(schema, Mapping):
        return ToolSpec(name=tool.name, description=tool.description, parameters=dict(schema))
    return _spec(tool.name, tool.description, tool.Arguments)


def labels_of(tool: Tool | None) -> dict[str, Any]:
    """What ``tool:pre`` and ``tool:post`` say of a call besides the tool's name."""
    labels = getattr(tool, "labels", None)
    return dict(labels) if isinstance(labels, Mapping) else {}


@functools.cache
def _spec(name: str, description: str, arguments: type[BaseModel]) -> ToolSpec:
    schema = arguments.model_json_schema()
    schema.pop("title", None)
    return ToolSpec(name=name, description=description, parameters=schema)


def parse_arguments(tool: Tool, arguments: Mapping[str, Any]) -> BaseModel:
    """Validate a model's arguments; a mistake becomes a ``ToolFailed`` the model can read."""
    try:
        return tool.Arguments.model_validate(dict(arguments))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'arguments'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ToolFailed(f"invalid arguments for {tool.name}: {problems}") from None


_BYTE_ESCAPE = re.compile(r"\\x[0-9a-fA-F]{2}")


def _named_as_shown(root: Path, path: str) -> str:
    """``path`` as the file tools show a name that is not UTF-8 (``caf\\xe9.txt``, see
    ``storable``), turned back into that name, when no file is named the escape itself:
    a model can open what it was shown."""
    if not _BYTE_ESCAPE.search(path):
        return path
    candidate = Path(path) if os.path.isabs(path) else root / path
    if os.path.lexists(candidate):
        return path
    raw = _BYTE_ESCAPE.sub(lambda m: chr(0xDC00 + int(m.group()[2:], 16)), path)
    try:
        named = os.fsencode(raw).decode("utf-8", "surrogateescape")
    except UnicodeError:
        return path
    return named


def confine(root: Path, path: str) -> Path:
    """``path`` (relative to the project, or absolute) resolved inside ``root``.

    Symlinks are followed before the check, so a link pointing out of the
    project is refused like any other path outside it.
    """
    if "\x00" in path:
        raise ToolFailed("invalid path")
    path = _named_as_shown(root, path)
    candidate = Path(path) if os.path.isabs(path) else root / path
    resolved = Path(os.path.realpath(candidate))
    if resolved != root and root not in resolved.parents:
        raise ToolFailed(f"{path}: outside the project directory; refused")
    return resolved


def storable(text: str) -> str:
    """``text`` as a record can hold it: the bytes of a file name that are not UTF-8 (which
    ``os.listdir`` and ``os.fsdecode`` give as lone surrogates) written as escapes,
    ``caf\\xe9.txt``, as ``ls -b`` shows them; any other lone surrogate as its own escape."""
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            return text.encode(errors="surrogateescape").decode(errors="backslashreplace")
        except UnicodeEncodeError:
            return text.encode(errors="backslashreplace").decode()
    return text


def clip(text: str, limit: int = MAX_TOOL_OUTPUT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"


class ToolBox:
    """The tools an agent may use, by name. Immutable: its names and specs are kept."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._names: tuple[str, ...] | None = None
        self._specs: tuple[ToolSpec, ...] | None = None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        if self._names is None:
            self._names = tuple(sorted(self._tools))
        return list(self._names)

    def specs(self) -> tuple[ToolSpec, ...]:
        """Every tool as a model sees it, by name (made once: every model call sends them)."""
        if self._specs is None:
            self._specs = tuple(spec_of(self._tools[name]) for name in self.names)
        return self._specs

    def only(self, patterns: Iterable[str]) -> ToolBox:
        """The tools named by ``patterns`` (a name, or a glob such as ``mcp_git_*``)."""
        chosen: dict[str, Tool] = {}
        for pattern in patterns:
            if pattern in self._tools:
                chosen[pattern] = self._tools[pattern]
            elif any(c in pattern for c in "*?["):
                chosen.update(
                    (name, tool) for name, tool in self._tools.items() if fnmatchcase(name, pattern)
                )
        return ToolBox(chosen.values())

    def with_tools(self, tools: Iterable[Tool]) -> ToolBox:
        """These tools added, each replacing one of the same name."""
        return ToolBox([*self._tools.values(), *tools])
