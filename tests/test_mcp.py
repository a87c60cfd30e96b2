"""MCP servers through the Python API: mcp.json, tools named mcp_<server>_<tool>, one
actor per server, and the faults (a server that crashes, hangs, floods, or is not there)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

import amplifier
from amplifier import AgentWarning, Permissions, Runtime
from amplifier.agents import McpServers, Profile, check_mcp_servers
from amplifier.agents._mcp_config import load_mcp_config
from amplifier.agents._tools import MAX_TOOL_OUTPUT, spec_of

from .helpers import events, first, transcript
from .trusted import trusted

STUB = Path(__file__).with_name("mcp_stub_server.py")
ALLOW_MCP = Permissions(allow=("mcp_*",))


def stub(*args: str, **fields: Any) -> dict[str, Any]:
    """The mcp.json entry of the test server (tests/mcp_stub_server.py)."""
    return {"command": sys.executable, "args": ["-I", str(STUB), *args], **fields}


def configure(folder: Path, servers: dict[str, Any]) -> Path:
    """Write ``servers`` as the mcp.json of a project (or, given the home, of the user); the
    user trusts the project's file as written (in the test's ``$AMPLIFIER_HOME``)."""
    project = folder.name == "project"
    path = folder / ".amplifier" / "mcp.json" if project else folder / "mcp.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mcpServers": servers}))
    if project:
        trusted(folder)
    return path


def opened(home: Path, project: Path, **options: Any) -> AbstractAsyncContextManager[Runtime]:
    options.setdefault("durability", "flush")
    options.setdefault("permissions", ALLOW_MCP)
    return amplifier.open_runtime(home=home, cwd=project, **options)


async def asked(home: Path, project: Path, *prompts: str, **options: Any) -> str:
    """Ask the prompts, one turn each, in a new session of a new runtime; the session's id."""
    async with opened(home, project, **options) as rt, rt.open_session() as session:
        for prompt in prompts:
            await session.ask(prompt)
    return session.id


def call(name: str, **arguments: object) -> str:
    return f"/tool {name} {json.dumps(arguments)}"


def results(home: Path, session_id: str) -> list[dict[str, Any]]:
    return [m for m in transcript(home, session_id) if m.get("role") == "tool"]


async def test_mcp_tool_runs_under_its_mcp_name_and_events_name_server_and_tool(
    home: Path, project: Path
) -> None:
    """A server's tool is called as mcp_<server>_<tool>; tool:pre and tool:post say which."""
    configure(project, {"stub": stub()})
    session_id = await asked(home, project, call("mcp_stub_echo", text="hello"))
    (result,) = results(home, session_id)
    assert result["content"] == "hello"
    assert not result.get("is_error")
    log = events(home, session_id)
    for name in ("tool:pre", "tool:post"):
        data = first(log, name)["data"]
        assert (data["tool"], data["mcp_server"], data["mcp_tool"]) == (
            "mcp_stub_echo", "stub", "echo"
        )


async def test_mcp_tool_schema_reaches_the_model_as_the_server_gives_it(
    home: Path, project: Path
) -> None:
    """The JSON schema of an MCP tool's arguments is the server's own, untouched."""
    configure(project, {"stub": stub()})
    async with McpServers(home=home, project=project) as servers:
        tools = await servers.tools_for(Profile(name="t"), ["mcp_stub_add"])
    spec = spec_of(next(tool for tool in tools if tool.name == "mcp_stub_add"))
    assert spec.name == "mcp_stub_add"
    assert spec.description == "Add two numbers; the sum as structured content."
    assert spec.parameters == {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    }


async def test_mcp_results_become_text_structured_content_json_and_notes(
    home: Path, project: Path
) -> None:
    """Text as it is, structured content as JSON, a picture as a note; an error result fails."""
    configure(project, {"stub": stub()})
    prompt = "\n".join(
        [call("mcp_stub_add", a=1, b=2), call("mcp_stub_image"), call("mcp_stub_fail")]
    )
    added, image, failed = results(home, await asked(home, project, prompt))
    assert added["content"] == '{"sum":3}'
    assert image["content"] == "[image, image/png, 3 bytes: not shown]"
    assert failed["content"] == "MCP server 'stub': it did not work"
    assert failed["is_error"]


async def test_mcp_tools_ask_first_by_default(home: Path, project: Path) -> None:
    """With no rule about them, MCP tools ask; with no one to ask, the call is refused."""
    configure(project, {"stub": stub()})
    async with opened(home, project, permissions=None) as rt, rt.open_session() as session:
        reply = await session.ask(call("mcp_stub_pid"))
    assert "needs approval" in reply.text
    log = events(home, session.id)
    assert first(log, "approval:request")["data"]["tool"] == "mcp_stub_pid"
    assert first(log, "approval:decision")["data"]["decided_by"] == "no one"


async def test_mcp_server_is_shared_by_sessions_and_answers_calls_concurrently(
    home: Path, project: Path
) -> None:
    """Two sessions' calls reach the same server process while both run."""
    configure(project, {"stub": stub()})
    replies: list[str] = []

    async def meet(rt: Runtime) -> None:
        async with rt.open_session() as session:
            replies.append((await session.ask(call("mcp_stub_meet"))).text)

    async with opened(home, project) as rt:
        async with anyio.create_task_group() as tg:
            tg.start_soon(meet, rt)
            tg.start_soon(meet, rt)
    assert len(replies) == 2
    assert all("mcp_stub_meet (ok): met" in reply for reply in replies)


async def test_mcp_server_that_crashes_mid_call_fails_the_call_and_starts_again(
    home: Path, project: Path
) -> None:
    """The call in flight fails naming the server and what it logged; the next call restarts it."""
    configure(project, {"stub": stub()})
    prompts = [call("mcp_stub_pid"), call("mcp_stub_crash"), call("mcp_stub_pid")]
    before, crashed, after = results(home, await asked(home, project, *prompts))
    assert crashed["is_error"]
    assert crashed["content"].startswith(
        "MCP server 'stub' stopped during this call (it exited: stub crashing on purpose)"
    )
    assert not after.get("is_error")
    assert after["content"] != before["content"]  # another process


async def test_mcp_call_that_hangs_fails_at_its_timeout_and_the_server_goes_on(
    home: Path, project: Path
) -> None:
    """A call past the server's timeout is a tool error; the server still answers the next."""
    configure(project, {"stub": stub(timeout=0.5)})
    prompts = [call("mcp_stub_hang"), call("mcp_stub_echo", text="still here")]
    hung, echoed = results(home, await asked(home, project, *prompts))
    assert hung["is_error"]
    assert hung["content"].startswith("MCP server 'stub' did not answer hang within 0.5 s")
    assert echoed["content"] == "still here"


async def test_mcp_server_writing_bytes_that_are_not_utf8_or_json_goes_on(
    home: Path, project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A server answering with a Latin-1 byte, or printing a line that is not JSON: the
    byte becomes U+FFFD, the line is left out (never shown on the terminal), and the
    server answers the calls after it."""
    configure(project, {"stub": stub(timeout=5)})
    prompts = [
        call("mcp_stub_latin1"),
        call("mcp_stub_noise"),
        call("mcp_stub_echo", text="still here"),
    ]
    latin1, noise, echoed = results(home, await asked(home, project, *prompts))
    assert latin1["content"] == "caf\ufffd"
    assert noise["content"] == "after the noise"
    assert echoed["content"] == "still here"
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.filterwarnings("default::amplifier.AgentWarning")
async def test_a_programs_tool_keeps_its_name_over_a_servers_tool(
    home: Path, project: Path
) -> None:
    """A program gives a tool named as a server's tool would be: the program's runs, and one
    warning says the server's is left out; the server's other tools are there."""

    @amplifier.tool(name="mcp_stub_echo")
    def mine(text: str) -> str:
        """The program's own echo."""
        return f"mine: {text}"

    configure(project, {"stub": stub()})
    with pytest.warns(AgentWarning, match="the MCP tool mcp_stub_echo is left out") as said:
        session_id = await asked(
            home,
            project,
            call("mcp_stub_echo", text="a"),
            call("mcp_stub_echo", text="b"),
            call("mcp_stub_add", a=1, b=2),
            tools=[mine],
        )
    first_result, second, added = results(home, session_id)
    assert (first_result["content"], second["content"]) == ("mine: a", "mine: b")
    assert not added.get("is_error")
    assert sum("mcp_stub_echo" in str(w.message) for w in said) == 1


@pytest.mark.parametrize("paging", ["same", "counting"])
async def test_a_server_whose_tool_list_never_ends_gives_each_tool_once(
    home: Path, project: Path, paging: str
) -> None:
    """A server whose every page of tools says there is another (the same cursor again, or
    a new one each time): its tools are listed once each, with no warning of two tools
    sharing a name, and they are called as usual."""
    configure(project, {"stub": stub("--paging", paging)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        session_id = await asked(home, project, call("mcp_stub_echo", text="once"))
    (result,) = results(home, session_id)
    assert result["content"] == "once"
    report = await check_mcp_servers(home=home, cwd=project)
    (server,) = report.servers
    names = [tool.name for tool in server.tools]
    assert "mcp_stub_echo" in names
    assert len(names) == len(set(names))


async def test_mcp_huge_result_is_cut_like_other_tool_output(home: Path, project: Path) -> None:
    """A result of a million characters is kept to the tool-output cap, saying so."""
    configure(project, {"stub": stub()})
    (result,) = results(home, await asked(home, project, call("mcp_stub_huge", chars=1_000_000)))
    assert len(result["content"]) < MAX_TOOL_OUTPUT + 100
    assert result["content"].endswith(
        f"[... {1_000_000 - MAX_TOOL_OUTPUT} more characters not shown]"
    )


async def test_mcp_server_whose_command_does_not_exist_is_left_out_with_one_warning(
    home: Path, project: Path
) -> None:
    """Its tools are absent, one warning says why, and the turns go on with the others."""
    configure(project, {"gone": {"command": "no-such-mcp-server"}, "stub": stub()})
    prompts = [call("mcp_stub_echo", text="one"), call("mcp_stub_echo", text="two")]
    with pytest.warns(AgentWarning) as warned:
        session_id = await asked(home, project, *prompts)
    assert [str(w.message) for w in warned] == [
        "MCP server 'gone' did not start: command not found: no-such-mcp-server "
        f"(its log: {home}/logs/mcp/gone.log); its tools are left out"
    ]
    assert [r["content"] for r in results(home, session_id)] == ["one", "two"]
    offered = first(events(home, session_id), "provider:request")["data"]["tools"]
    assert "mcp_stub_echo" in offered
    assert not [name for name in offered if name.startswith("mcp_gone_")]


async def test_invalid_mcp_json_is_one_line_naming_the_file_and_other_servers_work(
    home: Path, project: Path
) -> None:
    """The user's mcp.json is not JSON: one warning names it and why; the project's servers run."""
    home.mkdir()
    (home / "mcp.json").write_text('{"mcpServers": {"x": }}')
    configure(project, {"stub": stub()})
    with pytest.warns(AgentWarning) as warned:
        session_id = await asked(home, project, call("mcp_stub_echo", text="fine"))
    assert [str(w.message) for w in warned] == [
        f"{home}/mcp.json:1: not valid JSON: Expecting value (column 22)"
    ]
    assert [r["content"] for r in results(home, session_id)] == ["fine"]


async def test_tools_of_two_servers_that_would_share_a_name_keep_the_first_servers(
    home: Path, project: Path
) -> None:
    """mcp_a_b_echo of servers 'a' and 'a_b': 'a' keeps the name, a warning says so."""
    configure(project, {"a": stub("--prefix", "b_"), "a_b": stub()})
    with (
        pytest.warns(AgentWarning, match="MCP servers 'a' and 'a_b': a rule or a tool pattern"),
        pytest.warns(AgentWarning, match="MCP servers 'a' and 'a_b' both have a tool named"),
    ):
        session_id = await asked(home, project, call("mcp_a_b_echo", text="who"))
    assert first(events(home, session_id), "tool:post")["data"]["mcp_server"] == "a"


async def test_a_profile_that_switches_a_server_off_never_starts_it(
    home: Path, project: Path
) -> None:
    """Sessions of a profile with `mcp_servers: {stub: false}` have none of its tools."""
    configure(project, {"stub": stub()})
    profiles = project / ".amplifier" / "profiles"
    profiles.mkdir()
    (profiles / "quiet.yaml").write_text("extends: base\nmcp_servers: {stub: false}\n")
    trusted(project)
    session_id = await asked(home, project, call("mcp_stub_pid"), profile="quiet")
    (result,) = results(home, session_id)
    assert result["content"].startswith("no tool 'mcp_stub_pid' for agent 'default'")
    assert not (home / "logs" / "mcp" / "stub.log").exists()  # never started


# -- Streamable HTTP -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[str, list[dict[bytes, bytes]]]]:
    """An MCP server of the SDK (MCPServer) over Streamable HTTP on loopback, in a thread;
    its URL, and the headers of every request it got."""
    import uvicorn
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("calculator")

    @server.tool()
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    app = server.streamable_http_app()
    seen: list[dict[bytes, bytes]] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]))
        await app(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(recording, log_level="error", lifespan="on"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not web.started:
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{port}/mcp", seen
    finally:
        web.should_exit = True
        thread.join(10)
        sock.close()


# On trio, the SDK's HTTP client leaves its server-sent-event streams for the garbage
# collector to finalise when a connection closes, and trio warns of each (a
# ResourceWarning, which Python hides unless asked for).
@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")
async def test_mcp_server_over_streamable_http_is_called_with_its_headers(
    home: Path,
    project: Path,
    http_server: tuple[str, list[dict[bytes, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A url entry reaches the server over HTTP, sending its headers (variables expanded)."""
    url, seen = http_server
    monkeypatch.setenv("CALC_TOKEN", "s3cret")
    entry = {"url": url, "headers": {"Authorization": "Bearer ${CALC_TOKEN}"}}
    configure(project, {"calc": entry})
    (result,) = results(home, await asked(home, project, call("mcp_calc_multiply", a=6, b=7)))
    assert result["content"] == "42"
    assert seen[-1][b"authorization"] == b"Bearer s3cret"


# -- configuration ---------------------------------------------------------------------------


def test_mcp_json_of_the_project_wins_server_by_server(home: Path, project: Path) -> None:
    """A server named in both files is the project's; the others of both are kept."""
    configure(home, {"time": {"command": "user-time"}, "git": {"command": "user-git"}})
    configure(project, {"time": {"command": "project-time"}, "docs": {"url": "https://d/mcp"}})
    servers = load_mcp_config(home=home, project=project).servers
    assert {name: s.target for name, s in servers.items()} == {
        "time": "project-time", "git": "user-git", "docs": "https://d/mcp"
    }
    assert servers["git"].source == str(home / "mcp.json")


def test_profile_mcp_servers_add_replace_and_switch_off_servers(
    home: Path, project: Path
) -> None:
    """A profile's mcp_servers adds a server, replaces one whole, and switches one off."""
    configure(home, {"time": {"command": "t", "args": ["-v"]}, "git": {"command": "g"}})
    config = load_mcp_config(home=home, project=project)
    servers = config.under(
        "dev", {"docs": {"url": "https://d/mcp"}, "time": {"command": "t2"}, "git": False}
    )
    assert servers["docs"].source == "profile dev"
    assert (servers["time"].target, servers["time"].source) == ("t2", "profile dev")
    assert not servers["git"].enabled
    assert servers["git"].source.endswith("mcp.json, off in profile dev")


def test_mcp_json_expands_variables_and_an_unset_one_is_the_servers_problem(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """${VAR} and ${VAR:-default} are replaced; a server naming an unset variable says so."""
    monkeypatch.setenv("GIT_REPO", "/src/app")
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    configure(project, {
        "git": {"command": "g", "args": ["--repo", "${GIT_REPO}"],
                "env": {"LEVEL": "${LOG_LEVEL:-info}"}},
        "docs": {"url": "https://d/mcp", "headers": {"Authorization": "Bearer ${NO_SUCH_TOKEN}"}},
    })
    servers = load_mcp_config(home=home, project=project).servers
    assert servers["git"].args == ("--repo", "/src/app")
    assert servers["git"].env == {"LEVEL": "info"}
    assert servers["git"].problem is None
    assert servers["docs"].problem == (
        "${NO_SUCH_TOKEN} is not set (write ${NO_SUCH_TOKEN:-default} for a default)"
    )


def test_a_server_is_shown_as_written_so_a_secret_in_a_variable_stays_hidden(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What mcp list and the log show of a server is its entry, variables not replaced."""
    monkeypatch.setenv("API_KEY", "s3cret")
    configure(project, {
        "tool": {"command": "t", "args": ["--key", "${API_KEY}"]},
        "web": {"url": "https://w/mcp?key=${API_KEY}"},
    })
    servers = load_mcp_config(home=home, project=project).servers
    assert servers["tool"].args == ("--key", "s3cret")
    assert servers["tool"].target == "t --key ${API_KEY}"
    assert servers["web"].target == "https://w/mcp?key=${API_KEY}"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"args": ["x"]}, "no command to run (or url to reach)"),
        ({"command": "x", "url": "https://d"}, "give either command (stdio) or url"),
        ({"type": "sse", "url": "https://d/sse"}, "the SSE transport is not supported"),
        ({"url": "ftp://d"}, "url 'ftp://d' is not an http:// or https:// address"),
        ({"command": "x", "timeout": 0}, "timeout: Input should be greater than 0"),
        ("x", "its entry must be an object"),
    ],
)
def test_a_wrong_server_entry_keeps_its_problem_and_the_file_its_other_servers(
    home: Path, project: Path, entry: object, problem: str
) -> None:
    """One wrong entry is that server's problem (shown by mcp list); its neighbours are fine."""
    configure(project, {"wrong": entry, "fine": {"command": "f"}})
    servers = load_mcp_config(home=home, project=project).servers
    assert (servers["wrong"].problem or "").startswith(problem)
    assert servers["fine"].problem is None

