"""``amplifier mcp list``: the MCP servers sessions would have, and whether they start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import typer

from ._app import FormatOption, JsonFlag, OutputFormat, _json_mode, app
from ._render import one_line, safe, write_json
from ._running import execute, say

if TYPE_CHECKING:
    from amplifier.agents import McpServerStatus

mcp_app = typer.Typer(
    help="The MCP servers sessions use (mcp.json and profiles).", no_args_is_help=True
)
app.add_typer(mcp_app, name="mcp")

_DESCRIPTION_WIDTH = 72


@mcp_app.command("list")
def list_(
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", help="As sessions of this profile have them."),
    ] = None,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Each configured server: where it is configured, whether it starts, and its tools.

    Every server is started (all at once) to list its tools, then stopped.
    Exit 1 when a server does not start or an mcp.json cannot be used.
    """
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> int:
        from amplifier.agents import check_mcp_servers

        from ._trust import settle_trust

        await settle_trust(interrupts, as_json=as_json)
        report = await check_mcp_servers(profile=profile)
        failed = bool(report.problems) or any(s.error is not None for s in report.servers)
        if as_json:
            write_json(
                {
                    "servers": [status.model_dump(mode="json") for status in report.servers],
                    "problems": list(report.problems),
                    "untrusted": report.untrusted,
                }
            )
            return 1 if failed else 0
        for problem in report.problems:
            say(f"Warning: {problem}")
        if report.untrusted is not None:
            say(f"Warning: {report.untrusted}")
        if not report.servers and report.untrusted is None:
            say(
                "No MCP server is configured: add one to ~/.amplifier/mcp.json or to "
                ".amplifier/mcp.json of the project (mcpServers), or to a profile's mcp_servers."
            )
        for status in report.servers:
            print("\n".join(_lines(status)))
        return 1 if failed else 0

    execute(main, as_json=as_json)


def _lines(status: McpServerStatus) -> list[str]:
    if not status.enabled:
        state = "switched off"
    elif status.error is not None:
        state = f"does not start: {status.error}"
    else:
        count = len(status.tools)
        state = f"starts, {count} tool{'s' if count != 1 else ''}"
    lines = [f"{status.name}: {state}"]
    if status.target:
        lines.append(f"  {status.transport}: {status.target}")
    lines.append(f"  configured in {status.source}")
    if status.error is not None and status.log is not None:
        lines.append(f"  log: {status.log}")
    width = max((len(tool.name) for tool in status.tools), default=0)
    for tool in status.tools:
        description = one_line(tool.description, _DESCRIPTION_WIDTH)
        if tool.taken_by is not None:
            description = f"(left out: {tool.taken_by} has this name) {description}"
        lines.append(f"  {tool.name.ljust(width)}  {description}".rstrip())
    return [safe(line) for line in lines]
