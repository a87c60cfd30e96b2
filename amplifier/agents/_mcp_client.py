"""One connection to one MCP server, through the ``mcp`` SDK: started, listed, called, closed.

Imported only when a server starts: the SDK takes most of a second to import,
and a program with no server configured never pays it.

Rule 1: a stdio server's process never outlives this one. On Linux it runs
        under a small ``/bin/bash`` wrapper that holds the leash of ``_bash``
        (a pipe whose only writer is this process): the wrapper opens the
        pipe's read end through ``/proc/<pid>/fd/<fd>`` (the SDK's
        ``stdio_client`` passes no file descriptors on), and a watcher in the
        server's process group kills the group when the pipe ends, which the
        kernel does when this process dies, however it dies (SIGKILL too).
        The parent-death signal would follow the thread that started the
        server, and trio starts processes from worker threads that come and
        go. A second watcher, as ``bash``'s, kills the other groups of the
        server's session (a job it put in a group of its own). When the server
        exits, the wrapper kills what it left in its session, the watchers
        too. A server that leaves its session on purpose (``setsid``) leaves
        the leash.
Rule 2: the server's stderr, and the log messages it sends, go to its log
        (``logs/mcp/<server>.log``, owner-only), never to the terminal; a
        server that fails to start is described by the last line it logged.
        The SDK's own complaints (a line on a server's stdout that is not
        JSON) reach the terminal only through the program's logging, if it
        set up any: Python's last-resort printing is not for them.
Rule 3: a connection ends when the server's side goes away (its output ends,
        or its HTTP endpoint fails); ``Connection.ended`` says so and why, and
        the calls in flight then fail with ``ConnectionLost``.
Rule 4: a result becomes text: text content as it is, structured content as
        JSON when there is no text, anything else (images, audio, binary
        resources) as a short note saying what was left out.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
import mcp_types as types
import orjson
from anyio.abc import ObjectSendStream
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from amplifier.persistence.lowlevel import ensure_private_dir

from ._bash import _leash_fd, second_watcher, sweep
from ._exceptions import ToolFailed
from ._mcp_config import McpServerConfig

MAX_PAGES = 100
"""Pages of ``tools/list`` read at most (a server that pages forever cannot hang a start)."""
LOG_ROTATE_BYTES = 1024 * 1024
"""A log longer than this when its server starts is kept as ``<server>.log.1``, and a new one
begun."""
_TAIL = 4096

logging.getLogger("mcp").addHandler(logging.NullHandler())  # Rule 2

# $1 the pid of this process and $2 the leash's read end in it; then the server's command.
# Two watchers wait for the leash to end (this process died), as ``bash``'s do: the first
# kills the wrapper's group, the second (a group of its own) every other group of the
# session, a job the server put in a group of its own (``set -m``). The server runs in the
# background with the wrapper's stdin; when it exits, every other group of the session goes,
# the second watcher last, then the wrapper's group (Rule 1). A SIGTERM to the group (how the
# SDK stops a server) ends the server, not the wrapper: its trap only makes ``wait`` return,
# and the second ``wait`` is for the server's end. Nothing after it is the server's to log:
# the last line of the log says why a server failed.
_LEASH = f"""\
exec 3</proc/$1/fd/$2 || exit 125
shift 2
{{ read -r _ <&3; kill -KILL 0; }} </dev/null >/dev/null 2>&1 &
{second_watcher(3)}watcher=$!
exec 4<&0
"$@" <&4 4<&- 3<&- &
server=$!
exec 4<&- 3<&-
trap : TERM
wait "$server"; wait "$server"
exec 2>/dev/null
{sweep('"$$"', '"$$"', '"$watcher"')}kill -KILL "$watcher"
kill -KILL 0
"""


class StartFailed(Exception):
    """The server could not be started or reached; the message says why."""


class ConnectionLost(Exception):
    """The server went away while a call was in flight; the message says how."""


class Connection:
    """A started server: its session, its tools, and whether its side has gone (Rule 3)."""

    def __init__(self, session: ClientSession, *, log: Path, log_offset: int) -> None:
        self.session = session
        self.tools: list[types.Tool] = []
        self.ended = anyio.Event()
        self.why: str = "the connection ended"
        self._log = log
        self._log_offset = log_offset

    def end(self, why: str) -> None:
        """Say that the server's side has gone (idempotent: the first reason stays)."""
        if not self.ended.is_set():
            self.why = why
            self.ended.set()

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """Call ``tool``; its result as text (Rule 4).

        ``ToolFailed`` when the tool or the server refuses the call,
        ``ConnectionLost`` when the server goes away meanwhile.
        """
        try:
            result = await self.session.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED or self.ended.is_set():
                raise ConnectionLost(await self.reason()) from None
            raise ToolFailed(exc.message) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, httpx2.HTTPError) as exc:
            self.end(_described(exc))
            raise ConnectionLost(self.why) from None
        except RuntimeError as exc:  # a result the SDK refuses (e.g. it asks for input)
            raise ToolFailed(str(exc)) from None
        text = render(result)
        if result.is_error:
            raise ToolFailed(text)
        return text

    async def reason(self) -> str:
        """Why the connection ended, with the last line the server logged."""
        with anyio.move_on_after(1):
            await self.ended.wait()  # the pump's reason, if it is on its way
        last = await anyio.to_thread.run_sync(_last_line, self._log, self._log_offset)
        return f"{self.why}: {last}" if last else self.why


@asynccontextmanager
async def connect(
    config: McpServerConfig, *, project: Path, log: Path
) -> AsyncIterator[Connection]:
    """The server started (stdio) or reached (HTTP), initialised and its tools listed.

    ``StartFailed`` says why not. Leaving stops the server (the SDK closes
    its stdin, then signals its group) or ends the HTTP session.
    """
    offset, errlog = await anyio.to_thread.run_sync(_open_log, log, config)
    async with AsyncExitStack() as stack:
        stack.callback(errlog.close)
        if config.transport == "stdio":
            parameters = await anyio.to_thread.run_sync(_stdio_parameters, config, project)
            transport = stdio_client(parameters, errlog=errlog)
        else:
            client = httpx2.AsyncClient(
                headers=dict(config.headers),
                timeout=httpx2.Timeout(30, read=max(300.0, config.timeout)),
            )
            await stack.enter_async_context(client)
            transport = streamable_http_client(config.url or "", http_client=client)
        try:
            read, write = await stack.enter_async_context(transport)
        except OSError as exc:
            raise StartFailed(f"cannot run {config.target}: {exc.strerror or exc}") from None
        # The session reads through a pump that notices when the server's output ends.
        pumped_send, pumped = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        stack.callback(pumped.close)
        stack.callback(pumped_send.close)
        group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)
        session = await stack.enter_async_context(
            ClientSession(pumped, write, logging_callback=_Logger(errlog))
        )
        connection = Connection(session, log=log, log_offset=offset)
        ending = "it exited" if config.transport == "stdio" else "the connection ended"
        group.start_soon(_pump, read, pumped_send, connection, ending)
        try:
            with anyio.fail_after(config.startup_timeout):
                await session.initialize()
                connection.tools = await _list_tools(session)
        except TimeoutError:
            raise StartFailed(
                f"it did not answer within {config.startup_timeout:g} s (startup_timeout)"
            ) from None
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED or connection.ended.is_set():
                raise StartFailed(await connection.reason()) from None
            raise StartFailed(f"it refused to start: {exc.message}") from None
        except (RuntimeError, httpx2.HTTPError, anyio.BrokenResourceError) as exc:
            raise StartFailed(_described(exc)) from None
        yield connection


async def _pump(
    source: AsyncIterable[SessionMessage | Exception],
    sink: ObjectSendStream[SessionMessage | Exception],
    connection: Connection,
    why: str,
) -> None:
    """Pass the server's messages on; say when they end (Rule 3)."""
    try:
        async with sink:
            async for item in source:
                await sink.send(item)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        why = "the connection ended"
    finally:
        connection.end(why)


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    """The server's tools, page after page: at most ``MAX_PAGES``, and not past a cursor
    given before (a server that pages for ever); a tool listed again counts once."""
    tools: dict[str, types.Tool] = {}
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        for tool in page.tools:
            tools.setdefault(tool.name, tool)
        cursor = page.next_cursor
        if not cursor or cursor in seen:
            break
        seen.add(cursor)
    return list(tools.values())


def _stdio_parameters(config: McpServerConfig, project: Path) -> StdioServerParameters:
    """How to start the server: its command found, its directory checked, on its leash."""
    environment = {**get_default_environment(), **config.env}
    cwd = project / config.cwd if config.cwd else project
    if not cwd.is_dir():
        raise StartFailed(f"its directory {cwd} does not exist")
    command = config.command or ""
    if "/" in command:
        path = Path(command) if os.path.isabs(command) else cwd / command
        found = str(path) if path.is_file() and os.access(path, os.X_OK) else None
    else:
        found = shutil.which(command, path=environment.get("PATH", os.defpath))
    if found is None:
        raise StartFailed(f"command not found: {command}")
    # A byte that is not UTF-8 (a Latin-1 file name in an answer) becomes U+FFFD: decoded
    # strictly, it ends the SDK's reader and every later call waits out its timeout.
    if not sys.platform.startswith("linux"):
        return StdioServerParameters(
            command=found,
            args=list(config.args),
            env=environment,
            cwd=cwd,
            encoding_error_handler="replace",
        )
    return StdioServerParameters(
        command="/bin/bash",
        args=["-c", _LEASH, "amplifier-mcp", str(os.getpid()), str(_leash_fd()), found,
              *config.args],
        env=environment,
        cwd=cwd,
        encoding_error_handler="replace",
    )


def _open_log(log: Path, config: McpServerConfig) -> tuple[int, TextIO]:
    """The server's log, opened to append (Rule 2); where this start's lines begin."""
    ensure_private_dir(log.parent, below=log.parents[2])  # $AMPLIFIER_HOME/logs/mcp
    try:
        if log.stat().st_size > LOG_ROTATE_BYTES:
            log.replace(log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    errlog: TextIO = os.fdopen(fd, "a", encoding="utf-8", errors="replace", buffering=1)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    errlog.write(f"[amplifier {now}] starting {config.name}: {config.target}\n")
    errlog.flush()
    return os.fstat(fd).st_size, errlog


def _last_line(log: Path, offset: int) -> str:
    """The last line the server logged since ``offset`` (Rule 2), shortened."""
    try:
        with log.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(offset, size - _TAIL))
            tail = file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("[amplifier ")]
    return lines[-1][:300] if lines else ""


class _Logger:
    """Writes the log messages a server sends into its log (Rule 2)."""

    def __init__(self, log: TextIO) -> None:
        self._log = log

    async def __call__(self, params: types.LoggingMessageNotificationParams) -> None:
        data = params.data if isinstance(params.data, str) else orjson.dumps(params.data).decode()
        where = f" {params.logger}" if params.logger else ""
        if not self._log.closed:
            self._log.write(f"[{params.level}{where}] {data}\n")


def render(result: types.CallToolResult) -> str:
    """A tool's result as the model reads it (Rule 4)."""
    parts: list[str] = []
    texts = 0
    for block in result.content:
        match block:
            case types.TextContent():
                parts.append(block.text)
                texts += 1
            case types.ImageContent() | types.AudioContent():
                size = len(block.data) * 3 // 4
                parts.append(f"[{block.type}, {block.mime_type}, {size} bytes: not shown]")
            case types.ResourceLink():
                named = f" ({block.name})" if block.name else ""
                parts.append(f"[resource {block.uri}{named}]")
            case types.EmbeddedResource():
                resource = block.resource
                if isinstance(resource, types.TextResourceContents):
                    parts.append(resource.text)
                    texts += 1
                else:
                    kind = resource.mime_type or "binary"
                    parts.append(f"[resource {resource.uri}, {kind}: not shown]")
            case _:
                parts.append(f"[{getattr(block, 'type', 'unknown')} content: not shown]")
    if not texts and result.structured_content is not None:
        parts.insert(0, orjson.dumps(result.structured_content, default=str).decode())
    return "\n".join(parts) if parts else "[no content]"


def _described(exc: BaseException) -> str:
    """One line for an exception, the first of a group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def described(exc: BaseException) -> str:
    """One line for a failure to start that is no ``StartFailed``."""
    return _described(exc)
