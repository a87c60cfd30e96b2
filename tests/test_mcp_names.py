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
    async with amplifier.open_runtime(
        home=home, cwd=project, durability="none", permissions=ALLOW_MCP
    ) as rt:
        with pytest.warns(AgentWarning) as said:
            async with rt.open_session() as session:
                reply = await session.ask(tool("mcp_git_echo", text="hi"))
                await session.ask(tool("mcp_git_evil_echo", text="hi"))
    assert "hi" in reply.text
    overlaps = [str(w.message) for w in said if "names the tools of both" in str(w.message)]
    assert overlaps == [
        "MCP servers 'git' and 'git_evil': a rule or a tool pattern mcp_git_* names the tools "
        "of both; rename 'git_evil' in mcp.json so that its name does not begin with another "
        "server's"
    ]
