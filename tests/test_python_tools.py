"""Tools and agents written in Python: ``@amplifier.tool``, ``open_runtime(tools, agents)``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import warnings
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import Field

import amplifier
from amplifier import AgentSpec, AgentWarning, ConfigError, Runtime, ToolContext, ToolFailed

from .helpers import events, first, transcript
from .trusted import trusted

AMPLIFIER = Path(sys.executable).parent / "amplifier"


@amplifier.tool
def lookup(
    ctx: ToolContext, number: Annotated[int, Field(description="The issue number.")]
) -> str:
    """Look up an issue of the tracker.

    It answers with the issue's title.
    """
    return f"issue {number} in {ctx.turn.session.id} ({ctx.root.name}, call {ctx.call_id})"


@amplifier.tool
async def close(number: int, comment: str = "") -> dict[str, object]:
    """Close an issue.

    Args:
        number: The issue to close.
        comment: Said when closing it.
    """
    return {"closed": number, "comment": comment}


@amplifier.tool
def numpy_style(path: str) -> str:
    """Count the lines of a file.

    Parameters
    ----------
    path
        The file, relative to the project.
    """
    return path


def opened(home: Path, project: Path, **options: object) -> AbstractAsyncContextManager[Runtime]:
    """A runtime on a project, durable enough for what these tests look at."""
    options.setdefault("durability", "flush")
    return amplifier.open_runtime(home=home, cwd=project, **options)  # type: ignore[arg-type]


def run_tool(name: str, **arguments: object) -> str:
    return f"/tool {name} {json.dumps(arguments)}"


def test_a_decorated_function_describes_itself_to_the_model() -> None:
    """Name, description and parameter descriptions come from the function; it stays callable."""
    schema = close.Arguments.model_json_schema()
    assert close.name == "close"
    assert close.description == "Close an issue."
    assert schema["properties"]["number"]["description"] == "The issue to close."
    assert schema["properties"]["comment"]["description"] == "Said when closing it."
    assert schema["required"] == ["number"]
    assert lookup.description == (
        "Look up an issue of the tracker.\n\nIt answers with the issue's title."
    )
    assert "ctx" not in lookup.Arguments.model_fields
    assert lookup.Arguments.model_json_schema()["properties"]["number"]["description"] == (
        "The issue number."
    )
    numpy = numpy_style.Arguments.model_json_schema()["properties"]["path"]
    assert numpy["description"] == "The file, relative to the project."
    assert numpy_style("x") == "x"


async def test_a_python_tool_runs_with_its_context_for_the_agents_that_name_it(
    home: Path, project: Path
) -> None:
    """An agent naming the tool calls it with validated arguments and the call's context."""
    agent = AgentSpec(name="triage", tools=("lookup",))
    async with opened(home, project, tools=[lookup], agents=[agent]) as rt:
        async with rt.open_session(agent="triage") as session:
            reply = await session.ask(run_tool("lookup", number="7"))
        async with rt.open_session(agent="explorer") as other:
            refused = await other.ask(run_tool("lookup", number=7))
    assert f"issue 7 in {session.id} ({project.name}, call call_" in reply.text
    assert "no tool 'lookup' for agent 'explorer'" in refused.text


async def test_a_python_tool_with_bad_arguments_is_an_error_the_model_reads(
    home: Path, project: Path
) -> None:
    """Arguments that do not validate never reach the function; the model is told why."""
    async with opened(home, project, tools=[close]) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(run_tool("close", number="seven", extra=1))
    assert "invalid arguments for close" in reply.text
    assert "number" in reply.text
    assert "extra" in reply.text


async def test_a_python_tools_failure_reaches_the_model_with_its_traceback_kept(
    home: Path, project: Path
) -> None:
    """ToolFailed gives the model its message; any other error fails the call, traceback kept."""

    @amplifier.tool
    def refuses(reason: str) -> str:
        """Always refuses."""
        raise ToolFailed(f"refused: {reason}")

    @amplifier.tool
    def breaks() -> str:
        """Always breaks."""
        return str(1 / 0)

    async with opened(home, project, tools=[refuses, breaks]) as rt:
        async with rt.open_session() as session:
            prompt = run_tool("refuses", reason="no") + "\n" + run_tool("breaks")
            reply = await session.ask(prompt)
    assert "refuses (failed): refused: no" in reply.text
    assert "breaks (failed): ZeroDivisionError: division by zero" in reply.text
    posts = [e["data"] for e in events(home, session.id) if e["event"] == "tool:post"]
    broke = next(p for p in posts if p["tool"] == "breaks")
    assert "ZeroDivisionError" in broke["traceback"]
    assert "return str(1 / 0)" in broke["traceback"]


class _Custom(BaseException):
    """An exception that is not an ``Exception``, as some libraries define."""


async def test_a_python_tool_cannot_end_the_program(home: Path, project: Path) -> None:
    """A tool calling sys.exit (sync or async), raising KeyboardInterrupt in its thread, or
    an exception that is not an Exception: each call fails as an error would, the turn is
    answered, and the session ends completed; the program goes on."""

    @amplifier.tool
    def exits(code: int) -> str:
        """Exits as a CLI's main does."""
        sys.exit(code)

    @amplifier.tool
    async def exits_async(code: int) -> str:
        """Exits, from a coroutine."""
        sys.exit(code)

    @amplifier.tool
    def interrupts() -> str:
        """Raises KeyboardInterrupt in its worker thread."""
        raise KeyboardInterrupt

    @amplifier.tool
    def custom() -> str:
        """Raises an exception that is not an Exception."""
        raise _Custom("mine")

    names = ("exits", "exits_async", "interrupts", "custom")
    async with opened(home, project, tools=[exits, exits_async, interrupts, custom]) as rt:
        async with rt.open_session() as session:
            prompt = "\n".join(
                run_tool(name, **({"code": 2} if name.startswith("exits") else {}))
                for name in names
            )
            reply = await session.ask(prompt)
            again = await session.ask("still here")
    for name in names:
        assert f"{name} (failed): " in reply.text
    assert "the tool raised SystemExit(2); a tool cannot end the program" in reply.text
    assert "the tool raised _Custom(mine)" in reply.text
    assert "still here" in again.text
    end = events(home, session.id)[-1]
    assert (end["event"], end["data"]["status"]) == ("session:end", "completed")


async def test_a_python_tool_speaking_of_a_file_name_that_is_not_utf8_is_stored(
    home: Path, project: Path
) -> None:
    """A tool's answer or failure holding a name as ``os.listdir`` gives one that is not
    UTF-8 (a lone surrogate) reaches the model with the odd byte escaped, and the turn
    completes: it neither fails nor loses the call's record."""

    @amplifier.tool
    def names() -> str:
        """Lists a name."""
        return "caf\udce9.txt"

    @amplifier.tool
    def missing() -> str:
        """Fails on a name."""
        raise ToolFailed("no caf\udce9.txt here")

    async with opened(home, project, tools=[names, missing]) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(run_tool("names") + "\n" + run_tool("missing"))
    assert "names (ok): caf\\xe9.txt" in reply.text
    assert "missing (failed): no caf\\xe9.txt here" in reply.text
    posts = [e["data"] for e in events(home, session.id) if e["event"] == "tool:post"]
    assert sorted(p["tool"] for p in posts) == ["missing", "names"]


async def test_a_sync_tool_runs_off_the_event_loop(home: Path, project: Path) -> None:
    """A blocking function runs in a worker thread, not on the sessions' loop."""
    threads: list[threading.Thread] = []

    @amplifier.tool
    def blocking() -> str:
        """Blocks a moment."""
        threads.append(threading.current_thread())
        return "done"

    async with opened(home, project, tools=[blocking]) as rt:
        async with rt.open_session() as session:
            loop_thread = threading.current_thread()
            await session.ask(run_tool("blocking"))
    assert threads
    assert threads[0] is not loop_thread


async def test_an_answer_of_many_calls_holds_a_task_per_slot_not_per_call(
    home: Path, project: Path
) -> None:
    """40 calls with ``tool_concurrency: 3``: at most 3 run at once, their results come back
    in call order, and the turn holds no more tasks for them than for an answer of 3."""
    running = 0
    most_running = 0
    tasks: list[int] = []

    @amplifier.tool
    async def step(n: int) -> str:
        """Takes a few turns of the event loop."""
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        tasks.append(len(anyio.get_running_tasks()))
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        running -= 1
        return f"step {n} done"

    (home / "profiles").mkdir(parents=True, exist_ok=True)
    (home / "profiles" / "three.yaml").write_text("extends: base\ntool_concurrency: 3\n")
    most_tasks: dict[int, int] = {}
    async with opened(home, project, tools=[step], profile="three") as rt:
        for calls in (3, 40):
            tasks.clear()
            async with rt.open_session() as session:
                prompt = "\n".join(run_tool("step", n=n) for n in range(calls))
                reply = await session.ask(prompt)
            most_tasks[calls] = max(tasks)
            results = [m for m in transcript(home, session.id) if m["role"] == "tool"]
            assert [r["content"] for r in results] == [f"step {n} done" for n in range(calls)]
            assert f"step {calls - 1} done" in reply.text
    assert most_running == 3
    # The Runtime's own tasks (its write-behind's) come and go: a task or two either way.
    assert most_tasks[40] <= most_tasks[3] + 2, most_tasks


async def test_a_tool_with_side_effects_asks_first(home: Path, project: Path) -> None:
    """side_effects=True makes calls ask, like write_file; no one to ask means denied."""

    @amplifier.tool(side_effects=True)
    def deploy() -> str:
        """Deploys."""
        raise AssertionError("must not run")

    async with opened(home, project, tools=[deploy]) as rt:
        async with rt.open_session() as session:
            reply = await session.ask(run_tool("deploy"))
    assert "needs approval" in reply.text
    assert first(events(home, session.id), "approval:decision")["data"]["decided_by"] == "no one"


@pytest.mark.parametrize("kind", ["varargs", "untyped", "unschemable", "context-late"])
async def test_a_signature_that_cannot_be_described_is_one_error_at_open_runtime(
    home: Path, project: Path, kind: str
) -> None:
    """The error comes when the runtime opens, naming the function, before any session."""

    def varargs(*names: str) -> str:
        return ""

    def untyped(name) -> str:  # type: ignore[no-untyped-def]
        return str(name)

    def unschemable(connection: socket.socket) -> str:
        return ""

    def context_late(name: str, ctx: ToolContext) -> str:
        return name

    function = {
        "varargs": varargs,
        "untyped": untyped,
        "unschemable": unschemable,
        "context-late": context_late,
    }[kind]
    broken = amplifier.tool(function)
    named = rf"tool {function.__name__} \(tests\.test_python_tools"
    with pytest.raises(ConfigError, match=named):
        async with opened(home, project, tools=[broken]):
            pass
    assert not (home / "projects").exists()


async def test_python_tools_and_agents_replace_those_of_the_same_name_with_a_warning(
    home: Path, project: Path
) -> None:
    """A program's read_file and explorer win over the built-ins, and it is said."""

    @amplifier.tool(name="read_file")
    def fake_read(path: str) -> str:
        """Reads from the program's own store."""
        return f"stored {path}"

    explorer = AgentSpec.from_markdown(
        "---\nname: explorer\ntools: [read_file]\n---\nYou explore the program's store.\n"
    )
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        async with opened(home, project, tools=[fake_read], agents=[explorer]) as rt:
            async with rt.open_session(agent="explorer") as session:
                reply = await session.ask(run_tool("read_file", path="x"))
    messages = sorted(str(w.message) for w in warned if issubclass(w.category, AgentWarning))
    assert "agent 'explorer' given to open_runtime replaces the one from built-in:" in messages[0]
    assert "tool 'read_file' given to open_runtime replaces the built-in one" in messages[1]
    assert "stored x" in reply.text


def test_an_agent_spec_from_markdown_that_is_broken_names_the_line() -> None:
    """AgentSpec.from_markdown reports a bad field with its line, as files do."""
    with pytest.raises(ConfigError, match=r"python:3: tools"):
        AgentSpec.from_markdown("---\nname: x\ntools: 3\n---\nbody\n")


def test_a_profile_names_python_tools_by_import_path(home: Path, project: Path) -> None:
    """tools.python loads a function by path for the command line; a bad path is one line."""
    (project / "mytools.py").write_text(
        "def shout(text: str) -> str:\n    '''Shout it.'''\n    return text.upper() + '!'\n"
    )
    profiles = project / ".amplifier" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "team.yaml").write_text("tools: {python: ['mytools:shout']}\n")
    (profiles / "broken.yaml").write_text("tools: {python: ['mytools:whisper']}\n")
    trusted(project, home)
    env = {"AMPLIFIER_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(project)}
    done = subprocess.run(
        [str(AMPLIFIER), "run", "--profile", "team", run_tool("shout", text="hi")],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "shout (ok): HI!" in done.stdout
    broken = subprocess.run(
        [str(AMPLIFIER), "run", "--profile", "broken", "hi"],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert broken.returncode == 2
    assert broken.stderr.strip() == (
        "Error: profile broken: tools.python: mytools:whisper: mytools has no whisper"
    )


def test_the_readme_example_runs(home: Path, tmp_path: Path) -> None:
    """The README's program with two agents, a Python tool, delegation and approve works."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("<!-- example: own-tools -->\n```python\n")[1].split("```")[0]
    (tmp_path / "example.py").write_text(code)
    env = {"AMPLIFIER_HOME": str(home), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "asked by lead > triager: close_issue {'number': '102', 'comment': 'fixed'}" in (
        done.stdout
    )
    assert "find_issue (ok): SQL injection in auth.py" in done.stdout


def _plain(x: int) -> str:
    """Not made a tool."""
    return "plain"


class _BadArguments:
    """A hand-made tool whose Arguments is no model of its arguments."""

    name = "bad_arguments"
    description = "Broken."
    Arguments = dict
    side_effects = False
    subject = None

    async def run(self, arguments: Any, context: ToolContext) -> str:
        return "never"


def test_a_tool_made_of_a_callable_without_a_name_asks_for_one() -> None:
    """@amplifier.tool on a functools.partial or a callable object: a ConfigError asking for
    a name; with one given, it is a tool like any other."""
    import functools

    with pytest.raises(ConfigError, match=r"has no name of its own"):
        amplifier.tool(functools.partial(_plain, x=1))
    named = amplifier.tool(name="plain_one")(functools.partial(_plain, x=1))
    assert named.name == "plain_one"


@pytest.mark.parametrize(
    ("tools", "agents", "refused"),
    [
        ([amplifier.tool(name="look up")(_plain)], [], "tool name 'look up'"),
        ([amplifier.tool(name="x" * 65)(_plain)], [], "1 to 64 letters"),
        (
            [amplifier.tool(name="dup")(_plain), amplifier.tool(name="dup")(_plain)],
            [],
            "two tools are named 'dup'",
        ),
        ([_plain], [], "is not a tool: make one with @amplifier.tool"),
        ([], [AgentSpec(name="ghosty", tools=("nope_tool",))], "unknown tool 'nope_tool'"),
        ([], [AgentSpec(name="ghosty", agents=("ghost",))], "unknown agent 'ghost'"),
        ([_BadArguments()], [], "tool bad_arguments: it cannot be described to a model"),
    ],
    ids=[
        "space",
        "long",
        "duplicate",
        "plain-function",
        "unknown-tool",
        "unknown-agent",
        "bad-arguments",
    ],
)
async def test_a_program_tool_or_agent_that_cannot_work_is_one_error_at_open_runtime(
    home: Path, project: Path, tools: list[Any], agents: list[AgentSpec], refused: str
) -> None:
    """A tool no model could call (a name the providers refuse, a name taken twice, a plain
    function) or an agent naming what does not exist: ConfigError at open_runtime, as an
    agent file's would be, before anything is stored."""
    with pytest.raises(ConfigError, match=refused):
        async with amplifier.open_runtime(cwd=project, tools=tools, agents=agents):
            pass
    assert not (home / "projects").exists()


async def test_a_session_asked_or_renamed_from_inside_its_own_turn_says_so_at_once(
    home: Path, project: Path
) -> None:
    """A tool that renames the session it runs in, or a streaming callback that asks it
    again, would wait for the very turn it is part of: a UsageError at once, no hang."""
    runtimes: list[Runtime] = []

    @amplifier.tool
    async def label(context: ToolContext, title: str) -> str:
        """Names the session this tool runs in."""
        await runtimes[0].rename(context.turn.session.id, title)
        return "renamed"

    async with opened(home, project, tools=[label]) as rt:
        runtimes.append(rt)
        async with rt.open_session() as session:
            with anyio.fail_after(10):
                reply = await session.ask(run_tool("label", title="x"))

                async def ask_again(piece: str) -> None:
                    await session.ask("again")

                with pytest.raises(amplifier.TurnFailed) as failed:
                    await session.ask("hi", on_text=ask_again)
            renamed = session.metadata.name
    assert "label (failed): UsageError: session" in reply.text
    assert "cannot be changed from inside its own turn" in reply.text
    assert renamed is None
    assert isinstance(failed.value.__cause__, amplifier.UsageError)
    assert "cannot be asked from inside its own turn" in str(failed.value.__cause__)


async def test_a_turn_cancelled_during_a_sync_tool_says_it_waits_for_the_function(
    home: Path, project: Path
) -> None:
    """Python cannot stop the thread: the cancelled turn ends once the function returns, and
    a warning says so at once, while it still runs."""
    started, release = threading.Event(), threading.Event()

    @amplifier.tool
    def slow() -> str:
        """Takes its time."""
        started.set()
        release.wait(30)
        return "done"

    turn = anyio.CancelScope()
    async with opened(home, project, tools=[slow]) as rt:
        async with rt.open_session() as session:

            async def ask() -> None:
                with turn:
                    await session.ask(run_tool("slow"))

            said = anyio.Event()
            caught: list[str] = []

            def show(message: Warning | str, category: type[Warning], *_: object) -> None:
                if issubclass(category, AgentWarning):
                    caught.append(str(message))
                    said.set()

            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = show
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask)
                    await anyio.to_thread.run_sync(started.wait)
                    turn.cancel()
                    with anyio.fail_after(10):
                        await said.wait()
                    assert not release.is_set()  # said while the function still ran
                    release.set()
            assert caught == [
                "tool slow is a Python function, which cannot be interrupted: the turn ends "
                "when it returns"
            ]
            assert turn.cancelled_caught
            reply = await session.ask("after")
    assert "after" in reply.text
