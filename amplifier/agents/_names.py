"""The names agent specs and profiles use, checked against what exists when they load.

A spec's ``tools`` and ``agents``, and a profile's ``tools`` rules
(``allow``, ``deny``) and ``agent``, name things. A misspelt name would
otherwise load without a word and fail only when called (a spec's tool),
or never at all (``deny: [grpe]`` leaves ``grep`` allowed). Each is
reported as ``path:line: what is wrong``, naming what exists.

Tools are checked against the tools the agent loop runs (its tool box), so
a tool added to it is known here at once. A spec with an unknown name is
left out like a broken file (``AgentCatalog.set_aside``); a profile with
one raises ``ConfigError`` when it is loaded.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path

from ._exceptions import ConfigError, ConfigWarning
from ._permissions import Permissions, Rule
from ._profiles import Profile, ProfileCatalog
from ._specs import AgentCatalog, AgentSpec
from ._yaml import line_of


def check_specs(catalog: AgentCatalog, tools: Collection[str]) -> None:
    """Set aside every spec read from a file that names a tool or an agent that does not exist."""
    for spec in catalog.specs:
        if spec.source.startswith("built-in"):
            continue  # shipped with the tools they name
        problem = _spec_problem(spec, catalog, tools)
        if problem is not None:
            catalog.set_aside(spec.name, problem)


def _spec_problem(
    spec: AgentSpec, catalog: AgentCatalog, tools: Collection[str]
) -> ConfigError | None:
    path = Path(spec.source)
    for key, message in _unknown_in_spec(spec, catalog, tools):
        return ConfigError(message, path=path, line=_spec_line(path, key))
    return None


def _unknown_in_spec(
    spec: AgentSpec, catalog: AgentCatalog, tools: Collection[str]
) -> Iterator[tuple[tuple[str, int], str]]:
    """Each tool or agent ``spec`` names that does not exist: where in the spec, and what."""
    for index, tool in enumerate(spec.tools):
        if not _known_tool(tool, tools):
            yield ("tools", index), f"tools: unknown tool {tool!r}; available: {_listed(tools)}"
    for index, agent in enumerate(spec.agents):
        if not catalog.known(agent):
            yield (
                ("agents", index),
                f"agents: unknown agent {agent!r}; available: {_listed(catalog.names)}",
            )


def _rules_naming_no_tool(
    permissions: Permissions, tools: Collection[str]
) -> Iterator[tuple[str, int, str]]:
    """Each rule of ``permissions`` that names no tool: its kind, its index, its text."""
    for kind in ("allow", "ask", "deny"):
        for index, text in enumerate(getattr(permissions, kind)):
            if not _known_tool(Rule.parse(text).name, tools):
                yield kind, index, text


TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a tool may be called: the providers' function names (OpenAI's and Anthropic's)."""


def check_given_tools(tools: Iterable[object]) -> None:
    """Raise ``ConfigError`` for a tool given to ``open_runtime`` that no model could call:
    not a tool at all, a name the providers refuse, or a name another tool has."""
    seen: set[str] = set()
    for given in tools:
        name = getattr(given, "name", None)
        if not isinstance(name, str) or not callable(getattr(given, "run", None)):
            raise ConfigError(
                f"{given!r} is not a tool: make one with @amplifier.tool (or give a Tool)"
            )
        if not TOOL_NAME.fullmatch(name):
            raise ConfigError(
                f"tool name {name!r}: 1 to 64 letters, digits, '_' or '-' (what a model may call)"
            )
        if name in seen:
            raise ConfigError(f"two tools are named {name!r}: give each its own name")
        seen.add(name)


def check_given_rules(permissions: Permissions, tools: Collection[str]) -> None:
    """Raise ``ConfigError`` for a rule given to ``open_runtime`` (``--allow``, ``--deny``) that
    names no tool, as the same rule in a profile does: it would match nothing, and a
    misspelt deny would protect nothing without a word."""
    for kind, _, text in _rules_naming_no_tool(permissions, tools):
        raise ConfigError(f"{kind} {text!r} names no tool; available: {_listed(tools)}")


def check_given_agents(
    agents: Iterable[AgentSpec], catalog: AgentCatalog, tools: Collection[str]
) -> None:
    """Raise ``ConfigError`` for an agent given to ``open_runtime`` that names a tool or an
    agent that does not exist: the program's to fix, not a file to set aside."""
    for spec in agents:
        for _, message in _unknown_in_spec(spec, catalog, tools):
            raise ConfigError(f"agent {spec.name!r}: {message}")


def check_profile(
    profile: Profile, catalog: ProfileCatalog, *, tools: Collection[str], agents: AgentCatalog
) -> None:
    """Raise ``ConfigError`` if ``profile`` names a tool or an agent that does not exist."""
    for rule in ("allow", "deny"):
        for index, tool in enumerate(getattr(profile.tools, rule) or ()):
            if not _known_tool(tool, tools):
                raise _profile_error(
                    catalog,
                    profile,
                    ("tools", rule, index),
                    f"tools.{rule}: unknown tool {tool!r}; available: {_listed(tools)}",
                )
    for kind, index, text in _rules_naming_no_tool(profile.permissions, tools):
        raise _profile_error(
            catalog,
            profile,
            ("permissions", kind, index),
            f"permissions.{kind}: {text!r} names no tool; available: {_listed(tools)}",
        )
    if not agents.known(profile.agent):
        raise _profile_error(
            catalog,
            profile,
            ("agent",),
            f"agent: unknown agent {profile.agent!r}; available: {_listed(agents.names)}",
        )


def _known_tool(name: str, tools: Collection[str]) -> bool:
    """A tool that exists, a glob (a family, such as ``mcp_git_*``), or an MCP server's tool
    (known only once its server starts)."""
    return name in tools or any(c in name for c in "*?[") or name.startswith("mcp_")


def _profile_error(
    catalog: ProfileCatalog, profile: Profile, key: tuple[str | int, ...], message: str
) -> ConfigError:
    """The error at the line of ``key`` in the file (of the profile or one it extends) that
    sets it."""
    path = catalog.defined_in(profile.name, str(key[0]))
    if path is None:
        where = "" if profile.source == "built-in" else f" (profile {profile.name!r})"
        return ConfigError(message + where, path=_path(profile.source))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ConfigError(message, path=path)
    return ConfigError(message, path=path, line=line_of(text, key))


def _spec_line(path: Path, key: tuple[str | int, ...]) -> int | None:
    """The line of ``key`` in a spec file's front matter (below its opening ``---``)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), len(lines))
    line = line_of("\n".join(lines[1:end]), key)
    return line + 1 if line is not None else None


def _path(source: str) -> Path | None:
    return None if source.startswith("built-in") else Path(source)


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def warn_unusable(
    profiles: ProfileCatalog,
    agents: AgentCatalog | None,
    load: Callable[[str], Profile],
    *,
    in_use: str,
) -> None:
    """One ``ConfigWarning`` for each profile and agent spec that is left out, naming its file.

    Every profile but ``in_use`` (whose error, if any, was raised) is loaded
    through ``load``, so a profile with a bad value or an unknown name is
    reported now, not when a session first asks for it.
    """
    shown = {str(problem) for problem in profiles.problems}
    for problem in profiles.problems:
        _warn(f"{problem} (the profile is left out)")
    for name in profiles.names:
        if name == in_use:
            continue
        try:
            load(name)
        except ConfigError as exc:
            if str(exc) not in shown:  # extends one already reported
                shown.add(str(exc))
                _warn(f"{exc} (the profile {name!r} is left out)")
    for problem in agents.problems if agents is not None else ():
        _warn(f"{problem} (the agent is left out)")


def _warn(message: str) -> None:
    warnings.warn(message, ConfigWarning, stacklevel=3)
