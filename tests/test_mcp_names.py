"""MCP tool names: a server whose name begins with another's and '_' shares its pattern."""

from __future__ import annotations

from pathlib import Path

import pytest

import amplifier
from amplifier.agents import AgentWarning

from .test_cli_act import tool
from .test_mcp import ALLOW_MCP, configure, stub

pytestmark = pytest.mark.anyio


async def test_servers_one_pattern_cannot_tell_apart_are_named_once(
    home: Path, project: Path
) -> None:
    """``mcp_git_*`` names every tool of ``git_evil`` too: said once, naming both; the
    tools still work."""
    configure(home, {"git": stub(), "git_evil": stub(), "time": stub()})

    async def both() -> list[str]:
        async with amplifier.open_runtime(
            home=home, cwd=project, durability="none", permissions=ALLOW_MCP
        ) as rt, rt.open_session() as session:
            return [
                (await session.ask(tool(f"mcp_{server}_echo", text=server))).text
                for server in ("git", "git_evil")
            ]

    with pytest.warns(AgentWarning) as said:
        replies = await both()
    assert "(ok): git" in replies[0]
    assert "(ok): git_evil" in replies[1]
    overlaps = [str(w.message) for w in said if "names the tools of both" in str(w.message)]
    assert overlaps == [
        "MCP servers 'git' and 'git_evil': a rule or a tool pattern mcp_git_* names the tools "
        "of both; rename 'git_evil' in mcp.json so that its name does not begin with another "
        "server's"
    ]
