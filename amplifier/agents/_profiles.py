"""Profiles: named configurations a session runs under (``--profile``).

A profile picks the provider and model, the default agent, the tool policy,
the context window, the durability and the limits of the agent loop. Found,
in rising precedence: the built-ins (``base``, ``dev``),
``$AMPLIFIER_HOME/profiles/*.yaml`` and ``<project>/.amplifier/profiles/*.yaml``
(those a person trusted: ``_trust``). A profile may ``extends:`` another; its
fields are merged over the other's (nested sections field by field).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from amplifier.persistence import Durability

from ._config_text import read_config_text
from ._exceptions import ConfigError, UnknownProfile
from ._permissions import Permissions
from ._provider_config import ProviderConfig
from ._trust import ProjectTrust
from ._yaml import YamlProblem, load_yaml

DEFAULT_PROFILE = "base"


class ToolPolicy(BaseModel):
    """Which tools sessions may use, on top of what each agent spec lists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: tuple[str, ...] | None = None
    """Only these tools (None: whatever the agent spec lists)."""
    deny: tuple[str, ...] = ()
    """Never these tools."""
    python: tuple[str, ...] = ()
    """Tools written in Python, by import path (``mypkg.tools:search``), for every agent
    that names them."""

    def permits(self, tool: str) -> bool:
        return tool not in self.deny and (self.allow is None or tool in self.allow)


class Price(BaseModel):
    """What a model costs, in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, le=1_000_000, allow_inf_nan=False)
    output: float = Field(ge=0, le=1_000_000, allow_inf_nan=False)


class Profile(BaseModel):
    """A named configuration sessions run under: provider, default agent, tools, limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    provider: ProviderConfig = ProviderConfig()
    agent: str = "default"
    """The agent a new session runs when none is named."""
    tools: ToolPolicy = ToolPolicy()
    permissions: Permissions = Permissions()
    """Which tool calls run, ask first, or are refused (``allow``, ``ask``, ``deny`` rules)."""
    context_window: int = Field(default=128_000, ge=256)
    """Tokens the model accepts; history beyond it is compacted."""
    max_output_tokens: int = Field(default=4096, gt=0)
    durability: Durability = "fsync"
    max_rounds: int = Field(default=24, ge=1)
    """Model calls in one turn before the turn stops with what it has."""
    max_depth: int = Field(default=3, ge=0)
    """How deep delegation may nest."""
    max_children: int = Field(default=4, ge=1)
    """Sub-sessions one session runs at the same time."""
    tool_concurrency: int = Field(default=8, ge=1)
    """Tool calls of one response running at the same time."""
    child_timeout: float | None = Field(default=None, gt=0)
    """Seconds a sub-session may take before it is cancelled (None: no limit)."""
    redact: bool = True
    """Keep API keys and credential-like strings out of events, metadata and tool output."""
    redact_patterns: tuple[str, ...] = ()
    """More regular expressions to redact, beyond the common key formats."""
    mcp_servers: dict[str, dict[str, Any] | bool | None] = {}
    """MCP servers beside those of ``mcp.json``: an entry (as in ``mcp.json``) adds or
    replaces the server of its name, ``false`` switches one off, ``true`` back on."""
    prices: dict[str, Price] = {}
    """USD per million tokens, by model name: ``show`` and ``list --usage`` then give costs."""
    source: str = "built-in"

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return patterns


class ProfileCatalog:
    """Every profile available to a project, by name (with ``extends`` resolved).

    A profile file that cannot be read or parsed (``broken``, by its stem)
    is left out: asking for it, or for a profile that extends it, raises
    the file's error; the others work (``problems`` lists them).
    """

    def __init__(
        self,
        raw: Mapping[str, tuple[dict[str, Any], str]],
        broken: Mapping[str, ConfigError] | None = None,
        untrusted: Mapping[str, Path] | None = None,
    ) -> None:
        self._raw = dict(raw)
        self._untrusted = dict(untrusted or {})
        """The project's profile files left out, not trusted, by name (for what is asked)."""
        self._broken = {name: e for name, e in (broken or {}).items() if name not in self._raw}

    @property
    def names(self) -> list[str]:
        return sorted(self._raw)

    @property
    def problems(self) -> list[ConfigError]:
        """Why each profile file left out is unusable (``path:line: what is wrong``)."""
        return [self._broken[name] for name in sorted(self._broken)]

    def defined_in(self, name: str, key: str) -> Path | None:
        """The file of the profile, ``name`` or one it extends, that sets ``key`` (None: none
        does, or a built-in one)."""
        seen: set[str] = set()
        while name in self._raw and name not in seen:
            seen.add(name)
            fields, source = self._raw[name]
            if key in fields:
                return _path(source)
            name = str(fields.get("extends"))
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def get(self, name: str) -> Profile:
        """The profile ``name``; ``UnknownProfile`` (listing the others) if there is none."""
        fields, source = self._resolve(name, ())
        try:
            return Profile.model_validate({**fields, "name": name, "source": source})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(map(str, error["loc"]))
            raise ConfigError(f"{where}: {error['msg']}", path=_path(source)) from None

    def _resolve(self, name: str, seen: tuple[str, ...]) -> tuple[dict[str, Any], str]:
        if name in self._broken:
            raise self._broken[name]
        if name not in self._raw:
            left_out = self._untrusted.get(name)
            raise UnknownProfile(name, self.names, untrusted=str(left_out) if left_out else None)
        fields, source = self._raw[name]
        extends = fields.get("extends")
        own = {k: v for k, v in fields.items() if k != "extends"}
        if extends is None:
            return own, source
        parent = str(extends)
        if parent == name or parent in seen:
            chain = " -> ".join((*seen, name, parent))
            raise ConfigError(
                f"profiles extend each other in a circle: {chain}", path=_path(source)
            )
        if parent in self._broken:
            raise self._broken[parent]
        if parent not in self._raw:
            raise ConfigError(
                f"extends: unknown profile {parent!r}; available: {', '.join(self.names)}",
                path=_path(source),
            )
        base, _ = self._resolve(parent, (*seen, name))
        return _merge(base, own), source

    @classmethod
    def load(
        cls, *, home: Path, project: Path, trust: ProjectTrust | None = None
    ) -> ProfileCatalog:
        """Built-ins, then the home's profiles, then the project's that ``trust`` admits
        (default: the home's record, ``_trust``)."""
        trust = trust or ProjectTrust.of(project, home=home)
        raw: dict[str, tuple[dict[str, Any], str]] = {}
        folder = resources.files("amplifier.agents") / "builtin" / "profiles"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".yaml"):
                name = entry.name.removesuffix(".yaml")
                raw[name] = (
                    _parse(entry.read_text(encoding="utf-8"), f"built-in:{entry.name}"),
                    "built-in",
                )
        broken: dict[str, ConfigError] = {}
        untrusted: dict[str, Path] = {}
        for directory in (home / "profiles", project / ".amplifier" / "profiles"):
            for path in _profile_files(directory):
                try:
                    try:
                        text = read_config_text(path)
                    except (OSError, UnicodeDecodeError) as exc:
                        raise ConfigError(f"cannot read profile: {exc}", path=path) from None
                    if not trust.admits(path, text):
                        untrusted[path.stem] = path  # said once by the Runtime
                        continue
                    raw[path.stem] = (_parse(text, str(path)), str(path))
                    broken.pop(path.stem, None)
                except ConfigError as exc:
                    raw.pop(path.stem, None)
                    broken[path.stem] = exc
        return cls(raw, broken, untrusted)


def _profile_files(directory: Path) -> Iterable[Path]:
    if not directory.is_dir():
        return []
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        fields = load_yaml(text) or {}
    except YamlProblem as exc:
        raise ConfigError(
            f"invalid profile: {exc.problem}", path=_path(source), line=exc.line
        ) from None
    if not isinstance(fields, dict):
        raise ConfigError("a profile must be a mapping of fields", path=_path(source), line=1)
    return fields


def _path(source: str) -> Path | None:
    return None if source.startswith("built-in") else Path(source)


def _merge(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
