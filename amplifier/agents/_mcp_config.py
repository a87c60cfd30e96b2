"""MCP servers as configured: ``mcp.json`` files and a profile's ``mcp_servers``.

    {"mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"]},
        "docs": {"url": "https://example.com/mcp",
                 "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}}}}

The format is the one Claude Code, Cursor and the Amplifier CLI's tool-mcp
read; keys they add that Amplifier has no use for are ignored.

Rule 1: servers are found, in rising precedence, in ``$AMPLIFIER_HOME/mcp.json``,
        ``<project>/.amplifier/mcp.json`` and the profile's ``mcp_servers``; a
        server of the same name higher up replaces the one below whole. A
        profile may also switch a server off (``false``) or back on (``true``).
        The project's file counts only if trusted (``_trust``).
Rule 2: a file that cannot be read or is not such a document is one problem
        naming the file; it adds no server, and the other files' servers stay.
        A server entry that is wrong (neither ``command`` nor ``url``, a
        variable that is not set) stays listed with its problem, and never
        starts: ``amplifier mcp list`` shows why.
Rule 3: ``${VAR}`` and ``${VAR:-default}`` are replaced from the environment in
        ``command``, ``args``, ``env``, ``cwd``, ``url`` and ``headers``.
Rule 4: nothing here imports the ``mcp`` SDK: reading the configuration costs
        two small files, whether or not a server is ever started.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._config_text import read_config_text
from ._exceptions import ConfigError
from ._trust import ProjectTrust

MCP_FILE = "mcp.json"
DEFAULT_CALL_TIMEOUT = 120.0
"""Seconds a tool call may take before it fails (``timeout`` in a server's entry)."""
DEFAULT_STARTUP_TIMEOUT = 30.0
"""Seconds a server has to start and list its tools (``startup_timeout``)."""

MAX_SERVER_NAME = 48
"""Characters of a server's name: its tools are ``mcp_<server>_<tool>``, 64 at most, so a
longer name would leave its tools too little to tell them apart."""
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_SERVER_NAME - 1}}}$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Transport = Literal["stdio", "http"]


class McpServerConfig(BaseModel):
    """One MCP server: how to start it (stdio) or reach it (Streamable HTTP)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    transport: Transport
    command: str | None = None
    """The program to run (stdio), found on ``PATH`` unless it names a path."""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = {}
    """Added to the few variables every server gets (``PATH``, ``HOME``, ``USER`` ...)."""
    cwd: str | None = None
    """Where the server runs (default: the project directory)."""
    url: str | None = None
    headers: Mapping[str, str] = {}
    timeout: float = DEFAULT_CALL_TIMEOUT
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    enabled: bool = True
    source: str
    """Where it was configured: a file, or ``profile NAME``."""
    problem: str | None = None
    """Why it cannot start, when its entry is wrong (Rule 2)."""
    target: str = ""
    """What it runs or where it is, as written: variables are not replaced, so that a
    secret passed in one is never shown."""

    def key(self) -> str:
        """The same text for the same server (servers are shared by this key)."""
        return self.model_dump_json(exclude={"source"})


class _Entry(BaseModel):
    """A server's entry as written; other tools' keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    type: str | None = None
    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    timeout: float = Field(default=DEFAULT_CALL_TIMEOUT, gt=0)
    startup_timeout: float = Field(default=DEFAULT_STARTUP_TIMEOUT, gt=0)
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class McpConfig:
    """The servers of ``mcp.json`` files (Rule 1), and the files that could not be used."""

    servers: Mapping[str, McpServerConfig] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.servers

    def under(self, profile: str, overrides: Mapping[str, Any]) -> dict[str, McpServerConfig]:
        """The servers as a profile's ``mcp_servers`` leaves them (Rule 1)."""
        servers = dict(self.servers)
        source = f"profile {profile}"
        for name, value in overrides.items():
            if value is None or value is False:
                if name in servers:
                    off = f"{servers[name].source}, off in {source}"
                    servers[name] = servers[name].model_copy(
                        update={"enabled": False, "source": off}
                    )
            elif value is True:
                if name in servers:
                    servers[name] = servers[name].model_copy(update={"enabled": True})
            else:
                servers[name] = server_config(name, value, source=source)
        return servers


def load_mcp_config(
    *, home: Path, project: Path, trust: ProjectTrust | None = None
) -> McpConfig:
    """The servers of ``$AMPLIFIER_HOME/mcp.json`` and ``<project>/.amplifier/mcp.json``, the
    project's only if ``trust`` admits it (default: the home's record, ``_trust``)."""
    trust = trust or ProjectTrust.of(project, home=home)
    servers: dict[str, McpServerConfig] = {}
    problems: list[str] = []
    for path in (home / MCP_FILE, project / ".amplifier" / MCP_FILE):
        try:
            found = _read(path, trust)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        servers.update(found)
    return McpConfig(servers=servers, problems=tuple(problems))


def _read(path: Path, trust: ProjectTrust) -> dict[str, McpServerConfig]:
    """The servers one file configures (none if it does not exist, or is the project's and
    not trusted); ``ConfigError`` naming it."""
    try:
        text = read_config_text(path)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it: {exc}", path=path) from None
    if not trust.admits(path, text):
        return {}  # said once by the Runtime
    if not text.strip():
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg} (column {exc.colno})", path=path,
                          line=exc.lineno) from None
    if not isinstance(document, dict):
        raise ConfigError('expected an object with "mcpServers"', path=path)
    entries = document.get("mcpServers", {})
    if not isinstance(entries, dict):
        raise ConfigError('"mcpServers" must be an object of servers by name', path=path)
    return {name: server_config(name, entry, source=str(path)) for name, entry in entries.items()}


def server_config(name: str, entry: object, *, source: str) -> McpServerConfig:
    """A server's entry read (Rules 2 and 3): a wrong one keeps its problem."""
    target = ""

    def wrong(problem: str) -> McpServerConfig:
        transport: Transport = "http" if isinstance(entry, dict) and "url" in entry else "stdio"
        return McpServerConfig(
            name=name, transport=transport, source=source, problem=problem, target=target
        )

    if not _NAME.match(name):
        return wrong(
            f"a server name is letters, digits, '_', '.' and '-' ({MAX_SERVER_NAME} at most: "
            "its tools are named mcp_<server>_<tool>, 64 at most), starting with a letter or "
            "digit"
        )
    if not isinstance(entry, dict):
        return wrong("its entry must be an object (command, args, env, cwd; or url, headers)")
    try:
        parsed = _Entry.model_validate(entry)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"])) or "entry"
        return wrong(f"{where}: {error['msg']}")
    target = parsed.url or " ".join([parsed.command or "", *parsed.args]).strip()
    kind = (parsed.type or "").lower().replace("_", "-")
    if kind == "sse":
        return wrong("the SSE transport is not supported; use the server's Streamable HTTP url")
    if kind not in ("", "stdio", "http", "streamable-http"):
        return wrong(f"unknown type {parsed.type!r}: use stdio or http")
    if parsed.command and parsed.url:
        return wrong("give either command (stdio) or url (Streamable HTTP), not both")
    transport: Transport = "http" if parsed.url or kind in ("http", "streamable-http") else "stdio"
    if transport == "stdio" and not parsed.command:
        return wrong("no command to run (or url to reach)")
    if transport == "http" and not parsed.url:
        return wrong("no url to reach")
    try:
        config = McpServerConfig(
            name=name,
            transport=transport,
            command=_maybe(parsed.command),
            args=tuple(_expand(arg) for arg in parsed.args),
            env={key: _expand(value) for key, value in parsed.env.items()},
            cwd=_maybe(parsed.cwd),
            url=_maybe(parsed.url),
            headers={key: _expand(value) for key, value in parsed.headers.items()},
            timeout=parsed.timeout,
            startup_timeout=parsed.startup_timeout,
            enabled=not parsed.disabled,
            source=source,
            target=target,
        )
    except _Unset as exc:
        return wrong(f"${{{exc.name}}} is not set (write ${{{exc.name}:-default}} for a default)")
    if config.url is not None and not config.url.startswith(("http://", "https://")):
        return wrong(f"url {config.url!r} is not an http:// or https:// address")
    return config


class _Unset(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _maybe(text: str | None) -> str | None:
    return None if text is None else _expand(text)


def _expand(text: str) -> str:
    """``text`` with ``${VAR}`` and ``${VAR:-default}`` replaced (Rule 3)."""

    def value(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        found = os.environ.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                raise _Unset(name)
            return default
        return found

    return _VARIABLE.sub(value, text)
