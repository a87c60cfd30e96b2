"""Agents end to end through the Python API, driven by the offline and scripted providers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import amplifier
import amplifier.agents._file_tools as file_tools_module
from amplifier import ScriptedProvider, TurnFailed, UnknownAgent
from amplifier.agents import INTERRUPTED, ScriptedCall, ScriptedTurn

from .helpers import events, first, metadata, names, session_dirs, transcript
from .trusted import trusted


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project to look at."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# Demo\nA demo project.\n")
    (root / "src" / "app.py").write_text("def main():\n    return 42\n")
    return root


def _tool_results(home: Path, session_id: str) -> list[dict[str, Any]]:
    return [m for m in transcript(home, session_id) if m["role"] == "tool"]


async def test_offline_plain_answer_says_it_is_not_a_model(home: Path, project: Path) -> None:
    """Without any configuration a prompt gets an offline answer that restates it."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        reply = await session.ask("What does this project do?")
    assert "not a language model" in reply.text
    assert "What does this project do?" in reply.text
    stored = metadata(home, session.id)
    assert (stored["agent"], stored["profile"]) == ("default", "base")
    assert stored["attributes"] == {"provider": "offline", "model": "offline"}
    assert names(events(home, session.id))[:4] == [
        "session:start",
        "prompt:submit",
        "provider:request",
        "provider:response",
    ]


async def test_offline_tool_call_runs_the_tool_and_records_both_sides(
    home: Path, project: Path
) -> None:
    """/tool calls a real tool; its call, result and events are persisted in order."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        reply = await session.ask('/tool read_file {"path": "README.md"}')
    assert "read_file (ok)" in reply.text
    roles = [m["role"] for m in transcript(home, session.id)]
    assert roles == ["user", "assistant", "tool", "assistant"]
    (result,) = _tool_results(home, session.id)
    assert "A demo project." in result["content"]
    log = events(home, session.id)
    assert first(log, "tool:pre", tool="read_file")["seq"] < first(log, "tool:post")["seq"]
    assert first(log, "tool:post")["data"]["is_error"] is False


async def test_tool_bug_is_told_in_one_line_and_recorded_with_its_traceback(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool that raises: the model gets one line, tool:post and the log get the traceback."""

    async def broken(self: object, arguments: object, context: object) -> str:
        return str(arguments.no_such_field)  # type: ignore[attr-defined]

    monkeypatch.setattr(file_tools_module.ReadFile, "run", broken)
    with caplog.at_level(logging.ERROR, logger="amplifier"):
        async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
            await session.ask('/tool read_file {"path": "README.md"}')
    (result,) = _tool_results(home, session.id)
    assert result["content"].startswith("AttributeError:")
    assert "Traceback" not in result["content"]
    post = first(events(home, session.id), "tool:post")["data"]
    assert post["is_error"] is True
    assert "in broken" in post["traceback"]
    (record,) = [r for r in caplog.records if r.name == "amplifier"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], AttributeError)


async def test_two_concurrent_delegations_whose_children_use_tools(
    home: Path, project: Path
) -> None:
    """Two /delegate lines run two children at once; each calls a tool; both results return."""
    prompt = (
        '/delegate explorer: /tool list_dir {"path": "src"}\n'
        '/delegate reviewer: /tool read_file {"path": "src/app.py"}'
    )
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        reply = await session.ask(prompt)
    children = metadata(home, session.id)["children"]
    assert len(children) == 2
    results = [orjson.loads(m["content"]) for m in _tool_results(home, session.id)]
    assert [(r["agent"], r["status"]) for r in results] == [
        ("explorer", "completed"),
        ("reviewer", "completed"),
    ]
    assert "app.py" in results[0]["response"]
    assert "return 42" in results[1]["response"]
    for child in children:
        assert first(events(home, child), "tool:post")["data"]["is_error"] is False
    # Concurrent: both children started before either finished.
    log = sorted((e for child in children for e in events(home, child)), key=lambda e: e["seq"])
    starts = [e["seq"] for e in log if e["event"] == "session:start"]
    ends = [e["seq"] for e in log if e["event"] == "session:end"]
    assert max(starts) < min(ends)
    assert "2 sub-session result(s)" in reply.text


async def test_failing_child_returns_an_error_and_the_parent_answers(
    home: Path, project: Path
) -> None:
    """A child whose model call fails gives the parent an error result; the parent still answers."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        reply = await session.ask("/delegate explorer: /fail the disk is on fire")
    (result,) = _tool_results(home, session.id)
    assert result["is_error"] is True
    payload = orjson.loads(result["content"])
    assert payload["status"] == "failed"
    assert "the disk is on fire" in payload["error"]
    assert metadata(home, payload["session_id"])["status"] == "failed"
    assert "not a language model" in reply.text


async def test_nested_delegation_to_depth_two(home: Path, project: Path) -> None:
    """A child can delegate again; the grandchild's tool result travels back up."""
    prompt = '/delegate default: /delegate explorer: /tool glob {"pattern": "**/*.py"}'
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask(prompt)
    (child,) = metadata(home, session.id)["children"]
    (grandchild,) = metadata(home, child)["children"]
    assert metadata(home, grandchild)["depth"] == 2
    assert metadata(home, grandchild)["root_id"] == session.id
    assert "src/app.py" in _tool_results(home, grandchild)[0]["content"]
    assert "src/app.py" in orjson.loads(_tool_results(home, session.id)[0]["content"])["response"]


async def test_delegation_to_an_agent_not_allowed_is_refused(home: Path, project: Path) -> None:
    """An agent delegates only to the agents its spec names; others are refused with a reason."""
    (project / ".amplifier" / "agents").mkdir(parents=True)
    (project / ".amplifier" / "agents" / "writer.md").write_text(
        "---\nname: writer\ndescription: Writes docs.\ntools: [read_file]\n---\nWrite docs.\n"
    )
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as default:
            await default.ask("/delegate writer: document app.py\n/delegate nobody: anything")
        async with rt.open_session(agent="explorer") as explorer:
            await explorer.ask("/delegate reviewer: look at app.py")
    not_allowed, unknown = _tool_results(home, default.id)
    assert not_allowed["is_error"] is True
    assert "'default' may not delegate to 'writer'" in not_allowed["content"]
    assert "explorer, reviewer, default" in not_allowed["content"]
    assert (
        "unknown agent 'nobody'; available: default, explorer, reviewer, writer"
        in (unknown["content"])
    )
    assert metadata(home, default.id)["children"] == []
    (no_tool,) = _tool_results(home, explorer.id)
    assert "no tool 'delegate' for agent 'explorer'" in no_tool["content"]


NESTED = "/delegate default: /delegate explorer: hello"
"""A delegation whose child delegates again: two levels deep."""


def _shallow_profile(project: Path) -> None:
    """Profile ``shallow``: base, with delegation one level deep at most."""
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "shallow.yaml").write_text(
        "extends: base\nmax_depth: 1\n"
    )
    trusted(project)


def _second_level_result(home: Path, session_id: str) -> dict[str, Any]:
    """What the child of ``session_id`` was told when it delegated in turn."""
    (child,) = metadata(home, session_id)["children"]
    result: dict[str, Any] = orjson.loads(_tool_results(home, child)[0]["content"])
    return result


async def test_delegation_depth_limit_comes_from_the_profile(home: Path, project: Path) -> None:
    """Beyond the profile's max_depth a delegation fails with the limit named."""
    _shallow_profile(project)
    async with amplifier.open_runtime(cwd=project, profile="shallow") as rt:
        async with rt.open_session() as session:
            await session.ask(NESTED)
    refused = _second_level_result(home, session.id)
    assert refused["status"] == "failed"
    assert "depth limit (1)" in refused["error"]


async def test_a_session_keeps_its_own_profiles_delegation_limits_in_any_runtime(
    home: Path, project: Path
) -> None:
    """Depth limits follow the session's profile, not the Runtime's: resumed under
    a deeper profile, a shallow session still refuses; a deep session opened in a
    shallow Runtime still delegates."""
    _shallow_profile(project)
    async with amplifier.open_runtime(cwd=project, profile="shallow") as rt:
        async with rt.open_session() as shallow:
            await shallow.ask("hello")
        async with rt.open_session(profile="base") as deep:
            await deep.ask(NESTED)
    async with amplifier.open_runtime(cwd=project) as rt, rt.resume(shallow.id) as again:
        await again.ask(NESTED)

    refused = _second_level_result(home, shallow.id)
    assert refused["status"] == "failed"
    assert "depth limit (1)" in refused["error"]
    assert _second_level_result(home, deep.id)["status"] == "completed"
    (child,) = metadata(home, deep.id)["children"]
    (grandchild,) = metadata(home, child)["children"]
    assert metadata(home, grandchild)["depth"] == 2


async def test_redaction_follows_the_sessions_profile_not_the_runtimes(
    home: Path, project: Path
) -> None:
    """In a Runtime whose profile turns redaction off, a session under a redacting
    profile is scrubbed (events, metadata, tool output), and the other way round."""
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "plain.yaml").write_text(
        "extends: base\nredact: false\n"
    )
    (project / ".amplifier" / "profiles" / "guarded.yaml").write_text(
        "extends: base\nredact_patterns: ['hunter2-[0-9]+']\n"
    )
    trusted(project)
    (project / "notes.txt").write_text("the door code is hunter2-9999\n")
    prompts = ('/tool read_file {"path": "notes.txt"}', "remember hunter2-1234")
    async with amplifier.open_runtime(cwd=project, profile="plain") as rt:
        async with rt.open_session(profile="guarded") as guarded:
            for prompt in prompts:
                await guarded.ask(prompt)
        async with rt.open_session() as plain:
            for prompt in prompts:
                await plain.ask(prompt)

    def stored(session_id: str) -> str:
        folder = session_dirs(home)[session_id]
        return (folder / "events.jsonl").read_text() + (folder / "metadata.json").read_text()

    (guarded_result,) = _tool_results(home, guarded.id)
    assert "the door code is [REDACTED]" in guarded_result["content"]
    assert "hunter2" not in stored(guarded.id)
    assert "[REDACTED]" in metadata(home, guarded.id)["last_prompt"]
    (plain_result,) = _tool_results(home, plain.id)
    assert "hunter2-9999" in plain_result["content"]
    assert "hunter2-1234" in metadata(home, plain.id)["last_prompt"]


async def test_unknown_agent_lists_the_available_ones(project: Path) -> None:
    """Opening a session of an agent that does not exist names the ones that do."""
    async with amplifier.open_runtime(cwd=project) as rt:
        with pytest.raises(UnknownAgent, match="available: default, explorer, reviewer"):
            await rt.open_session(agent="wizard")


async def test_provider_failure_fails_the_turn_and_the_session_goes_on(
    home: Path, project: Path
) -> None:
    """/fail makes the model call fail: the caller gets a clear error, the next prompt works."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        with pytest.raises(TurnFailed, match="offline: quota exhausted"):
            await session.ask("/fail quota exhausted")
        assert "not a language model" in (await session.ask("still there?")).text
    assert first(events(home, session.id), "provider:error")["data"]["error"] == (
        "offline: quota exhausted"
    )


async def test_tool_calls_of_one_response_run_concurrently_and_record_in_call_order(
    home: Path, project: Path
) -> None:
    """Three calls in one response overlap in time; their results are stored in call order."""
    for n in range(3):
        (project / f"f{n}.txt").write_text(f"file {n}\n")
    prompt = "\n".join(f'/tool read_file {{"path": "f{n}.txt"}}' for n in (2, 0, 1))
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask(prompt)
    results = _tool_results(home, session.id)
    assert [r["tool_call_id"].rsplit("_", 1)[1] for r in results] == ["1", "2", "3"]
    assert ["file 2" in results[0]["content"], "file 0" in results[1]["content"]] == [True, True]
    log = events(home, session.id)
    pres = [e["seq"] for e in log if e["event"] == "tool:pre"]
    posts = [e["seq"] for e in log if e["event"] == "tool:post"]
    assert len(pres) == 3
    assert max(pres) < max(posts)


async def test_messages_reach_the_transcript_as_they_happen(home: Path, project: Path) -> None:
    """While a child still works, the parent's tool-call message reaches the disk: records
    are written as they come, not when the turn ends."""
    seen: list[list[str]] = []

    def roles() -> list[str]:
        # The root's folder: a child's id ends with ``_<agent>``.
        parent = next((p for name, p in session_dirs(home).items() if "_" not in name), None)
        if parent is None or not (parent / "transcript.jsonl").exists():
            return []
        lines = (parent / "transcript.jsonl").read_bytes().splitlines()
        return [orjson.loads(line)["role"] for line in lines]

    class Watching(ScriptedProvider):
        async def complete(self, request: Any, *, on_text: Any = None) -> Any:
            if len(self.requests) == 1:  # the child's call: wait for the parent's records
                with anyio.fail_after(5):
                    while roles() != ["user", "assistant"]:  # noqa: ASYNC110 - a file, no event
                        await anyio.sleep(0.005)
            seen.append(roles())
            return await super().complete(request, on_text=on_text)

    script = [
        ScriptedTurn(
            tool_calls=(
                ScriptedCall(name="delegate", arguments={"agent": "explorer", "instruction": "x"}),
            )
        ),
        ScriptedTurn(text="child done"),
        ScriptedTurn(text="parent done"),
    ]
    async with amplifier.open_runtime(
        cwd=project, durability="flush", provider=Watching(script)
    ) as rt:
        async with rt.open_session() as session:
            assert (await session.ask("go")).text == "parent done"
    assert seen[1] == ["user", "assistant"]  # the child's call: the parent's request is stored


async def test_interrupted_turn_is_repaired_on_resume(home: Path, project: Path) -> None:
    """A tool call a crash left without a result gets an explicit "interrupted" result on resume."""
    hold = anyio.Event()

    class Stuck(ScriptedProvider):
        async def complete(self, request: Any, *, on_text: Any = None) -> Any:
            response = await super().complete(request, on_text=on_text)
            if len(self.requests) == 2:
                hold.set()
                await anyio.sleep_forever()
            return response

    script = [
        ScriptedTurn(
            tool_calls=(
                ScriptedCall(name="delegate", arguments={"agent": "explorer", "instruction": "x"}),
            )
        ),
        ScriptedTurn(text="never"),
    ]
    with anyio.CancelScope() as scope:
        async with amplifier.open_runtime(cwd=project, provider=Stuck(script)) as rt:
            session = await rt.open_session()
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.ask, "go")
                await hold.wait()
                scope.cancel()
    # Cancellation already answered the call; simulate a crash by removing that answer.
    path = session_dirs(home)[session.id] / "transcript.jsonl"
    kept = [line for line in path.read_bytes().splitlines() if b'"role":"tool"' not in line]
    path.write_bytes(b"\n".join(kept) + b"\n")
    async with amplifier.open_runtime(cwd=project) as rt, rt.resume(session.id) as again:
        reply = await again.ask("what happened?")
    (repaired,) = _tool_results(home, session.id)
    assert (repaired["content"], repaired["is_error"]) == (INTERRUPTED, True)
    assert first(events(home, session.id), "session:repair")["data"]["tool_results_added"] == 1
    assert "1 sub-session result(s)" in reply.text


async def test_turn_stops_at_the_profiles_round_limit(home: Path, project: Path) -> None:
    """A model that keeps calling tools is stopped after max_rounds with a note."""
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "short.yaml").write_text("max_rounds: 2\n")
    trusted(project)
    loop = [ScriptedTurn(tool_calls=(ScriptedCall(name="list_dir"),))] * 3
    async with (
        amplifier.open_runtime(cwd=project, profile="short", provider=ScriptedProvider(loop)) as rt,
        rt.open_session() as session,
    ):
        reply = await session.ask("loop forever")
    assert "Stopped after 2 model calls" in reply.text
    assert first(events(home, session.id), "turn:limit")["data"] == {"rounds": 2}


async def test_answer_streams_to_the_caller_as_it_arrives(project: Path) -> None:
    """ask(on_text=...) receives the answer in pieces that add up to the reply."""
    pieces: list[str] = []

    async def collect(text: str) -> None:
        pieces.append(text)

    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        reply = await session.ask("stream please", on_text=collect)
    assert len(pieces) > 3
    assert "".join(pieces) == reply.text


async def test_profile_tool_policy_removes_tools(home: Path, project: Path) -> None:
    """A tool the profile denies is not offered and a call to it is refused."""
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "nogrep.yaml").write_text("tools: {deny: [grep]}\n")
    trusted(project)
    async with amplifier.open_runtime(cwd=project, profile="nogrep") as rt, rt.open_session() as s:
        await s.ask('/tool grep {"pattern": "main"}')
    (result,) = _tool_results(home, s.id)
    assert result["is_error"] is True
    assert "no tool 'grep'" in result["content"]
    request = first(events(home, s.id), "provider:request")
    assert "grep" not in request["data"]["tools"]


async def test_resume_runs_the_session_under_its_own_profile(home: Path, project: Path) -> None:
    """rt.resume(id) keeps the session's profile (nogrep), not the Runtime's (base)."""
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "nogrep.yaml").write_text("tools: {deny: [grep]}\n")
    trusted(project)
    async with amplifier.open_runtime(cwd=project, profile="nogrep") as rt, rt.open_session() as s:
        pass
    async with amplifier.open_runtime(cwd=project) as rt, rt.resume(s.id) as again:
        assert again.metadata.profile == "nogrep"
        await again.ask('/tool grep {"pattern": "main"}')
    (result,) = _tool_results(home, s.id)
    assert "no tool 'grep'" in result["content"]
    assert metadata(home, s.id)["profile"] == "nogrep"


async def test_resume_with_a_profile_runs_the_session_under_that_one(
    home: Path, project: Path
) -> None:
    """rt.resume(id, profile=...) runs the session under the profile asked for."""
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "nogrep.yaml").write_text("tools: {deny: [grep]}\n")
    trusted(project)
    async with amplifier.open_runtime(cwd=project, profile="nogrep") as rt, rt.open_session() as s:
        pass
    async with (
        amplifier.open_runtime(cwd=project, profile="nogrep") as rt,
        rt.resume(s.id, profile="base") as again,
    ):
        await again.ask('/tool grep {"pattern": "main"}')
    (result,) = _tool_results(home, s.id)
    assert "app.py" in result["content"]
    assert metadata(home, s.id)["profile"] == "base"


async def test_a_child_is_continued_through_the_delegate_tool(home: Path, project: Path) -> None:
    """Later, delegate with session_id continues the same sub-session, which remembers."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("/delegate explorer: remember the number 7")
    (first_result,) = _tool_results(home, session.id)
    child = orjson.loads(first_result["content"])["session_id"]
    arguments = {"agent": "explorer", "instruction": "what was it?", "session_id": child}
    async with amplifier.open_runtime(cwd=project) as rt, rt.resume(session.id) as again:
        await again.ask(f"/tool delegate {orjson.dumps(arguments).decode()}")
    second = orjson.loads(_tool_results(home, session.id)[1]["content"])
    assert second["session_id"] == child
    assert second["status"] == "completed"
    assert "2 prompt(s)" in second["response"]  # the child saw both instructions
    assert metadata(home, session.id)["children"] == [child]
    assert [e["event"] for e in events(home, child)].count("session:resume") == 1


async def test_each_turn_sees_its_own_tool_results(home: Path, project: Path) -> None:
    """A second turn's tool calls are answered by their own results, not the first turn's."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask('/tool read_file {"path": "README.md"}')
        reply = await session.ask('/tool read_file {"path": "src/app.py"}')
    assert "Results of this turn:\n- read_file (ok):" in reply.text
    assert "return 42" in reply.text.split("Results of this turn:")[1]
