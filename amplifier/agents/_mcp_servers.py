"""The MCP servers of a Runtime: one actor each, and their tools, ``mcp_<server>_<tool>``.

    McpServers(home, project)          an async context manager: a task group; no server runs yet
     └─ McpServer "time"   (actor)     started when a turn first needs its tools
     └─ McpServer "docs"   (actor)     ...shared by every session of the Runtime

Rule 1: a server starts on first use: the first turn of an agent whose tool
        patterns may name its tools (``*``, ``mcp_*``, ``mcp_time_*`` ...).
        Its calls run concurrently on its one connection, whatever session
        makes them.
Rule 2: a server that dies is started again at the next use, no sooner than
        its backoff allows (half a second, doubling to a minute; back to half
        a second once it has run for a minute). The calls in flight when it
        died fail as tool errors naming it. A turn never waits out a backoff:
        it is given the tools the server had; a call waits for the restart.
Rule 3: a server that cannot start is left out with one warning saying why
        (and where its log is); the turn goes on without its tools.
Rule 4: each call has a timeout (the server's ``timeout``, default 120 s);
        a call that runs out of it fails as a tool error, and the server goes on.
Rule 5: the servers stop with the Runtime (the actors are cancelled; the SDK
        closes each server's stdin, then signals its process group). Nothing
        is left behind even when this process is killed (``_mcp_client``).
Rule 6: MCP tools have side effects: a call asks first unless a permission
        rule allows it (``mcp_*``, ``mcp_time_*``).
Rule 7: two tools that would share a name: the one of the server first by
        name keeps it, the other is left out with a warning.
"""

from __future__ import annotations

import importlib
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, ConfigDict

from amplifier._log import log_failure
from amplifier.persistence import resolve_home_and_cwd
from amplifier.runtime import IllegalTransition

from ._exceptions import AgentWarning, ToolFailed
from ._mcp_config import McpConfig, McpServerConfig, load_mcp_config
from ._profiles import DEFAULT_PROFILE, Profile, ProfileCatalog
from ._tools import Tool, ToolContext
from ._trust import ProjectTrust, read_trust

if TYPE_CHECKING:
    from ._mcp_client import Connection

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 60.0
STEADY = 60.0
"""Seconds a server must run for its backoff to start again from ``FIRST_BACKOFF``."""
MAX_NAME = 64
"""Characters of a tool name that every provider accepts."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_CLIENT = "amplifier.agents._mcp_client"


def tool_name(server: str, tool: str) -> str:
    """The name a model calls an MCP tool by: ``mcp_<server>_<tool>``, in the characters
    (and the length) every provider accepts."""
    return _UNSAFE.sub("_", f"mcp_{server}_{tool}")[:MAX_NAME]


class McpArguments(BaseModel):
    """An MCP tool's arguments, passed on as they are: the server validates them."""

    model_config = ConfigDict(extra="allow", frozen=True)


class McpTool:
    """A tool of an MCP server, as the agent loop sees it."""

    Arguments: ClassVar[type[BaseModel]] = McpArguments
    side_effects: ClassVar[bool] = True
    subject: ClassVar[str | None] = None

    def __init__(
        self, server: McpServer, tool: str, description: str, input_schema: Mapping[str, Any]
    ) -> None:
        self.server = server
        self.tool = tool
        self.name = tool_name(server.name, tool)
        self.description = description
        self.input_schema = dict(input_schema)
        """The JSON schema of its arguments, as the server gave it (what the model sees)."""
        self.labels = {"mcp_server": server.name, "mcp_tool": tool}
        """What ``tool:pre`` and ``tool:post`` say of the call besides the tool's name."""

    def __repr__(self) -> str:
        return f"<MCP tool {self.tool} of {self.server.name}>"

    async def run(self, arguments: BaseModel, context: ToolContext) -> str:
        return await self.server.call(self.tool, arguments.model_dump())


class McpUnavailable(Exception):
    """A server could not be started; the message says why."""


class ServerState(Enum):
    """Where one server's actor is (STYLE rule 6).

    DOWN ──> STARTING ──> UP ──> STOPPING ──> DOWN ...
                 └───────────────────^
    """

    DOWN = "down"
    """Not running: never started, or stopped (started again at the next use, once its
    backoff has passed)."""
    STARTING = "starting"
    """Being started, initialised and asked for its tools."""
    UP = "up"
    """Answering calls."""
    STOPPING = "stopping"
    """Its start failed or its connection ended; being stopped."""


ALLOWED: dict[ServerState, frozenset[ServerState]] = {
    ServerState.DOWN: frozenset({ServerState.STARTING}),
    ServerState.STARTING: frozenset({ServerState.UP, ServerState.STOPPING}),
    ServerState.UP: frozenset({ServerState.STOPPING}),
    ServerState.STOPPING: frozenset({ServerState.DOWN}),
}


class McpServer:
    """The actor of one configured server: owns its connection; see the module's rules."""

    def __init__(self, config: McpServerConfig, *, project: Path, logs: Path, owner: McpServers):
        self.config = config
        self.name = config.name
        self.log = logs / f"{config.name}.log"
        self._project = project
        self._owner = owner
        self._running = False
        self._wanted = anyio.Event()
        self._changed = anyio.Event()
        self.state = ServerState.DOWN
        self._connection: Connection | None = None
        self._tools: tuple[McpTool, ...] = ()
        self._attempt = 0
        """The number of the latest start (begun)."""
        self._failed = 0
        """The number of the latest start that failed, or whose connection has ended."""
        self._failure = ""
        self._backoff = FIRST_BACKOFF
        self._retry_at = -math.inf
        self._warned = False

    @property
    def up(self) -> bool:
        return self._connection is not None and not self._connection.ended.is_set()

    def _move(self, to: ServerState) -> None:
        if to not in ALLOWED[self.state]:
            raise IllegalTransition(f"MCP server {self.name!r}", self.state.value, to.value)
        self.state = to

    async def connection(self) -> Connection:
        """The server connected: started, or started again once its backoff has passed.

        A caller that comes while the server starts takes the outcome of that
        start; one that comes after it failed or ended waits for the next.
        ``McpUnavailable`` says why that start failed.
        """
        if self.config.problem is not None:
            raise McpUnavailable(self.config.problem)
        target = self._attempt if self.state is ServerState.STARTING else self._attempt + 1
        while True:
            connection = self._connection
            if connection is not None and not connection.ended.is_set():
                return connection
            if self._failed >= target:
                raise McpUnavailable(self._failure)
            if not self._running:
                self._running = True
                self._owner.group.start_soon(self._run, name=f"mcp server {self.name}")
            self._wanted.set()
            await self._changed.wait()

    async def tools(self) -> tuple[McpTool, ...]:
        """Its tools for a turn (Rules 1 to 3): it is started if need be, unless it is
        waiting out a backoff; a server that cannot start gives none, and warns once."""
        if self.up:
            return self._tools
        if self.config.problem is None and anyio.current_time() < self._retry_at:
            return self._tools
        try:
            await self.connection()
        except McpUnavailable as exc:
            if not self._warned:
                self._warned = True
                where = f" (its log: {self.log})" if self.config.problem is None else ""
                warnings.warn(
                    f"MCP server {self.name!r} did not start: {exc}{where}; "
                    + ("its tools fail until it does" if self._tools else "its tools are left out"),
                    AgentWarning,
                    stacklevel=2,
                )
        return self._tools

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """Call one of its tools (Rules 2 and 4); ``ToolFailed`` naming the server otherwise."""
        from ._mcp_client import ConnectionLost

        try:
            connection = await self.connection()
        except McpUnavailable as exc:
            raise ToolFailed(f"MCP server {self.name!r} is not running: {exc}") from None
        with anyio.move_on_after(self.config.timeout):
            try:
                return await connection.call(tool, arguments)
            except ConnectionLost as exc:
                raise ToolFailed(
                    f"MCP server {self.name!r} stopped during this call ({exc}); it is started "
                    f"again at the next call (its log: {self.log})"
                ) from None
            except ToolFailed as exc:
                raise ToolFailed(f"MCP server {self.name!r}: {exc}") from None
        raise ToolFailed(
            f"MCP server {self.name!r} did not answer {tool} within {self.config.timeout:g} s; "
            "the call was given up (the server's timeout in mcp.json)"
        )

    async def _run(self) -> None:
        """The actor: a connection whenever one is wanted, one at a time (Rule 2)."""
        while True:
            await self._wanted.wait()
            await anyio.sleep(max(0.0, self._retry_at - anyio.current_time()))
            self._attempt += 1
            self._move(ServerState.STARTING)
            started = anyio.current_time()
            failure = await self._serve()
            self._connection = None
            self._move(ServerState.DOWN)
            self._failed = self._attempt
            self._failure = failure
            if anyio.current_time() - started >= STEADY:
                self._backoff = FIRST_BACKOFF
            self._retry_at = anyio.current_time() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            self._wanted = anyio.Event()
            self._changed_now()

    async def _serve(self) -> str:
        """One connection, from its start to its end; why it could not start, or ended."""
        try:
            # In a worker thread: the SDK takes most of a second to import, which
            # would stall every session of the Runtime.
            await anyio.to_thread.run_sync(importlib.import_module, _CLIENT)
        except ImportError as exc:
            self._move(ServerState.STOPPING)
            return f"the mcp package cannot be imported: {exc}"
        from . import _mcp_client as client

        try:
            async with client.connect(
                self.config, project=self._project, log=self.log
            ) as connection:
                self._connection = connection
                self._move(ServerState.UP)
                self._warned = False
                self._tools = tuple(
                    McpTool(self, tool.name, tool.description or "", tool.input_schema)
                    for tool in connection.tools
                )
                self._changed_now()
                await connection.ended.wait()
                self._move(ServerState.STOPPING)
                return await connection.reason()
        except client.StartFailed as exc:
            self._stopping()
            return str(exc)
        except Exception as exc:
            self._stopping()
            # Raised inside the SDK's task group, it comes wrapped: the same words, then.
            failed = exc.split(client.StartFailed)[0] if isinstance(exc, ExceptionGroup) else None
            if failed is not None:
                first: BaseException = failed
                while isinstance(first, BaseExceptionGroup):
                    first = first.exceptions[0]
                return str(first)
            log_failure(f"MCP server {self.name!r} failed", exc)
            said = client.described(exc)
            if self.config.transport == "http":
                # As written: a secret passed in a variable ($TOKEN in the url) is not shown.
                if self.config.url:
                    said = said.replace(self.config.url, self.config.target)
                return f"cannot reach {self.config.target}: {said}"
            return said

    def _stopping(self) -> None:
        if self.state is not ServerState.STOPPING:
            self._move(ServerState.STOPPING)

    def _changed_now(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


class McpServers:
    """The MCP servers of one Runtime, by profile; their actors run while it is entered."""

    def __init__(self, *, home: Path, project: Path, trust: ProjectTrust | None = None) -> None:
        self._group: TaskGroup | None = None
        self._home = home
        self._project = project
        self._trust = trust
        self._config: McpConfig | None = None
        self._servers: dict[str, McpServer] = {}
        self._by_profile: dict[str, dict[str, McpServerConfig]] = {}
        self._collisions: set[tuple[str, str]] = set()
        self._said: set[str] = set()

    async def __aenter__(self) -> McpServers:
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop every server (Rule 5); what the body raised goes on as it was, ungrouped."""
        group, self._group = self._group, None
        assert group is not None
        group.cancel_scope.cancel()
        await group.__aexit__(None, None, None)

    @property
    def group(self) -> TaskGroup:
        """Where the servers' actors run; ``RuntimeError`` once the servers are stopped."""
        if self._group is None:
            raise RuntimeError("the MCP servers are stopped (their Runtime is closed)")
        return self._group

    async def config(self, *, warn: bool = True) -> McpConfig:
        """The ``mcp.json`` files, read once; a file that cannot be used warns once."""
        if self._config is None:
            config = await anyio.to_thread.run_sync(
                lambda: load_mcp_config(home=self._home, project=self._project, trust=self._trust)
            )
            if self._config is None:
                self._config = config
                for problem in config.problems if warn else ():
                    warnings.warn(problem, AgentWarning, stacklevel=2)
        return self._config

    async def configured(self, profile: Profile, *, warn: bool = True) -> list[McpServerConfig]:
        """Every server sessions under ``profile`` have, switched off or not, by name."""
        servers = self._by_profile.get(profile.name)
        if servers is None:
            config = await self.config(warn=warn)
            servers = self._by_profile[profile.name] = config.under(
                profile.name, profile.mcp_servers
            )
            for said in _overlaps(servers.values()) if warn else ():
                if said not in self._said:
                    self._said.add(said)
                    warnings.warn(said, AgentWarning, stacklevel=2)
        return [servers[name] for name in sorted(servers)]

    def server(self, config: McpServerConfig) -> McpServer:
        """The actor of ``config`` (one per server as configured, whichever profile says it)."""
        key = config.key()
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = McpServer(
                config, project=self._project, logs=self._home / "logs" / "mcp", owner=self
            )
        return server

    async def tools_for(
        self, profile: Profile, patterns: Sequence[str]
    ) -> list[Tool]:
        """The MCP tools an agent with these tool patterns may be given (Rules 1, 3 and 7)."""
        if not profile.mcp_servers and self._config is not None and self._config.empty:
            return []
        wanted = [
            self.server(config)
            for config in await self.configured(profile)
            if config.enabled and _may_name(patterns, profile, config.name)
        ]
        if not wanted:
            return []
        found: dict[str, tuple[McpTool, ...]] = {}

        async def list_tools(server: McpServer) -> None:
            found[server.name] = await server.tools()

        async with anyio.create_task_group() as tg:
            for server in wanted:
                tg.start_soon(list_tools, server)
        tools: dict[str, McpTool] = {}
        for server in wanted:
            for tool in found[server.name]:
                kept = tools.get(tool.name)
                if kept is None:
                    tools[tool.name] = tool
                    continue
                self._collision(kept, tool)
        return list(tools.values())

    def _collision(self, kept: McpTool, left_out: McpTool) -> None:
        key = (f"{kept.server.name}/{kept.tool}", f"{left_out.server.name}/{left_out.tool}")
        if key in self._collisions:
            return
        self._collisions.add(key)
        if kept.server is left_out.server:
            said = (
                f"MCP server {kept.server.name!r} has two tools named {kept.name}: "
                f"{kept.tool!r} keeps it, {left_out.tool!r} is left out"
            )
        else:
            said = (
                f"MCP servers {kept.server.name!r} and {left_out.server.name!r} both have a tool "
                f"named {kept.name}: {kept.server.name!r}'s keeps it, {left_out.server.name!r}'s "
                f"{left_out.tool!r} is left out (rename one of the servers in mcp.json)"
            )
        warnings.warn(said, AgentWarning, stacklevel=3)


def _taken(statuses: Iterable[McpServerStatus]) -> tuple[McpServerStatus, ...]:
    """The statuses, each tool whose name sessions give another marked with that one (the
    order of ``tools_for``: servers by name, each server's tools in its order)."""
    holders: dict[str, str] = {}
    marked = []
    for status in statuses:
        tools = []
        for tool in status.tools:
            holder = holders.setdefault(tool.name, f"{status.name}/{tool.tool}")
            mine = holder == f"{status.name}/{tool.tool}"
            tools.append(tool if mine else tool.model_copy(update={"taken_by": holder}))
        marked.append(status.model_copy(update={"tools": tuple(tools)}))
    return tuple(marked)


def _overlaps(servers: Iterable[McpServerConfig]) -> list[str]:
    """A warning for each two servers whose tools one pattern cannot tell apart: every tool
    of ``git_evil`` (``mcp_git_evil_*``) is also ``mcp_git_*``, so a rule or an agent's
    pattern meant for ``git`` covers it too."""
    enabled = sorted(config.name for config in servers if config.enabled)
    said = []
    for short in enabled:
        prefix = tool_name(short, "")
        for other in enabled:
            if other != short and tool_name(other, "").startswith(prefix):
                said.append(
                    f"MCP servers {short!r} and {other!r}: a rule or a tool pattern "
                    f"{prefix}* names the tools of both; rename {other!r} in mcp.json so "
                    "that its name does not begin with another server's"
                )
    return said


def _may_name(patterns: Iterable[str], profile: Profile, server: str) -> bool:
    """Whether some tool of ``server`` could be named by the patterns and allowed by the
    profile's tool policy (Rule 1): its tools all begin ``mcp_<server>_``."""
    prefix = tool_name(server, "")
    allowed = profile.tools.allow
    if allowed is not None and not any(name.startswith(prefix) for name in allowed):
        return False
    for pattern in patterns:
        literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        if literal == pattern:
            if pattern.startswith(prefix):
                return True
        elif literal.startswith(prefix) or prefix.startswith(literal):
            return True
    return False


# -- amplifier mcp list -------------------------------------------------------------------


class McpToolInfo(BaseModel):
    """One tool of a server: the name a model calls it by, and its description."""

    model_config = ConfigDict(frozen=True)

    name: str
    tool: str
    """Its own name on the server."""
    description: str
    taken_by: str | None = None
    """The tool (``server/tool``) that sessions give this name to instead, if another has it:
    the first server by name, then the server's first tool, keeps a name (Rule 3)."""


class McpServerStatus(BaseModel):
    """One configured server, and whether it starts (``amplifier mcp list``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    """Where it was configured: a file, or a profile."""
    transport: Literal["stdio", "http"]
    target: str
    """The command it runs, or the URL it is reached at."""
    enabled: bool
    started: bool
    error: str | None = None
    """Why it did not start (None when it started, or is switched off)."""
    log: str | None = None
    tools: tuple[McpToolInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class McpReport:
    """Every MCP server sessions would have, and the files that could not be used."""

    servers: tuple[McpServerStatus, ...]
    problems: tuple[str, ...]
    untrusted: str | None = None
    """What of the project's own configuration is left out, not trusted (``_trust``)."""


async def check_mcp_servers(
    *,
    profile: str | None = None,
    home: str | Path | None = None,
    cwd: str | Path | None = None,
    trust_project: bool | None = None,
) -> McpReport:
    """Start every MCP server configured for ``profile`` (at once), list its tools, stop it.

    Raises ``UnknownProfile`` or ``ConfigError`` for the profile; a file or a
    server that is wrong is reported, not raised. The project's own files
    count as ``open_runtime``'s ``trust_project`` says; what they leave out
    is reported too.
    """
    root, directory = resolve_home_and_cwd(home, cwd)
    trust, untrusted = await read_trust(directory, home=root, trust=trust_project)
    catalog = await anyio.to_thread.run_sync(
        lambda: ProfileCatalog.load(home=root, project=directory, trust=trust)
    )
    settings = catalog.get(profile or DEFAULT_PROFILE)
    statuses: dict[str, McpServerStatus] = {}
    async with McpServers(home=root, project=directory, trust=trust) as servers:
        configs = await servers.configured(settings, warn=False)

        async def check(config: McpServerConfig) -> None:
            server = servers.server(config)
            error: str | None = None
            if config.enabled:
                try:
                    await server.connection()
                except McpUnavailable as exc:
                    error = str(exc)
            statuses[config.name] = McpServerStatus(
                name=config.name,
                source=config.source,
                transport=config.transport,
                target=config.target,
                enabled=config.enabled,
                started=server.up,
                error=error,
                log=str(server.log) if config.enabled and config.problem is None else None,
                tools=tuple(
                    McpToolInfo(name=tool.name, tool=tool.tool, description=tool.description)
                    for tool in await server.tools()
                )
                if server.up
                else (),
            )

        async with anyio.create_task_group() as tg:
            for config in configs:
                tg.start_soon(check, config)
        problems = (await servers.config(warn=False)).problems
    return McpReport(
        servers=_taken(statuses[config.name] for config in configs),
        problems=problems,
        untrusted=untrusted,
    )
