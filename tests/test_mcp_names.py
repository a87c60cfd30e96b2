"""MCP tool names: a server whose name begins with another's and '_' shares its pattern."""

from __future__ import annotations

from pathlib import Path

import pytest

import amplifier
from amplifier.agents import AgentWarning, check_mcp_servers

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
        async with (
            amplifier.open_runtime(
                home=home, cwd=project, durability="none", permissions=ALLOW_MCP
            ) as rt,
            rt.open_session() as session,
        ):
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


async def test_mcp_list_marks_the_tools_sessions_leave_out(home: Path, project: Path) -> None:
    """Two servers whose tools share a name: sessions give it to the first server's, and
    ``mcp list`` says the other's is left out, naming which has the name."""
    configure(home, {"a": stub("--prefix", "b_"), "a_b": stub()})
    report = await check_mcp_servers(home=home, cwd=project)
    listed = {
        (status.name, tool.tool): tool.taken_by
        for status in report.servers
        for tool in status.tools
    }
    assert listed[("a", "b_echo")] is None
    assert listed[("a_b", "echo")] == "a/b_echo"
    assert all(taken is not None for (server, _), taken in listed.items() if server == "a_b")
    assert all(taken is None for (server, _), taken in listed.items() if server == "a")


async def test_a_server_name_too_long_to_name_its_tools_is_a_problem_of_its_entry(
    home: Path, project: Path
) -> None:
    """Tools are mcp_<server>_<tool>, 64 characters at most: a server name over 48 would cut
    every tool to one name. Such an entry never starts and says why; 48 is fine."""
    configure(home, {"s" * 49: stub(), "t" * 48: stub()})
    report = await check_mcp_servers(home=home, cwd=project)
    by_name = {status.name: status for status in report.servers}
    assert "48 at most" in (by_name["s" * 49].error or "")
    assert by_name["t" * 48].error is None
    assert len({tool.name for tool in by_name["t" * 48].tools}) == len(by_name["t" * 48].tools)
