"""One ``~/.amplifier`` shared with the Amplifier CLI: its sessions read, resumed, managed; ours
readable by it.

Their sessions are written by hand in their format (``amplifier_cli_sessions``);
their loader's requirement on each of our lines is checked the way their
orchestrator checks it, by building each message (``TheirMessage``).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field

import amplifier
from amplifier.agents import (
    AgentCatalog,
    AgentTurnHandler,
    AgentWarning,
    AssistantMessage,
    ScriptedProvider,
    ScriptedTurn,
    ToolResultMessage,
    UserMessage,
    load_profile,
    parse_history,
    to_record,
)
from amplifier.persistence import find_session, list_sessions, load_transcript, read_metadata

from . import amplifier_cli_sessions as cli
from .helpers import lines, session_dirs
from .test_cli_process import amp

# -- their loader, written by hand from what their code does ---------------------------------


class _TheirText(BaseModel):
    type: Literal["text"]
    text: str


class _TheirThinking(BaseModel):
    type: Literal["thinking"]
    thinking: str


class _TheirToolCallBlock(BaseModel):
    type: Literal["tool_call"]
    id: str
    name: str
    input: dict[str, Any]


class _TheirToolCall(BaseModel):
    """A tool call as their providers read it: ``tool`` and ``arguments``."""

    id: str
    tool: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class TheirMessage(BaseModel):
    """What their orchestrator builds from every message before each model call."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "function", "tool"]
    content: (
        str
        | list[
            Annotated[
                _TheirText | _TheirThinking | _TheirToolCallBlock, Field(discriminator="type")
            ]
        ]
    )
    name: str | None = None
    tool_call_id: str | None = None
    metadata: dict[str, Any] | None = None
    tool_calls: list[_TheirToolCall] | None = None


def _their_loader_reads(path: Path) -> list[TheirMessage]:
    """Every line as their store and orchestrator take it; fails on the first they refuse."""
    messages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        message = json.loads(line)
        assert isinstance(message, dict), line
        assert isinstance(message.get("role"), str), line
        messages.append(TheirMessage.model_validate(message))
    return messages


def _slug(project: Path) -> str:
    return str(project).replace("/", "-")


# -- reading theirs ------------------------------------------------------------------------


def test_list_shows_their_sessions_with_name_counts_and_last_prompt(
    home: Path, project: Path
) -> None:
    """`session list` shows their root session like one of ours, not as damaged."""
    theirs = cli.conversation(home, project)
    done = amp("session", "list", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    (row,) = done.stdout.splitlines()[1:]
    assert row.startswith(theirs.root.session_id)
    assert '"Explore the tests."' in row
    assert " 6 " in row  # user and assistant messages
    assert "damaged" not in row


def test_list_tree_shows_their_sub_session_under_its_parent(home: Path, project: Path) -> None:
    """`session list --tree` finds their sub-session through its parent_id."""
    theirs = cli.conversation(home, project)
    done = amp("session", "list", "--tree", "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    rows = [(row["session_id"], row["depth"]) for row in json.loads(done.stdout)]
    assert rows == [(theirs.root.session_id, 0), (theirs.child.session_id, 1)]


def test_show_reads_their_blocks_tool_calls_and_output(home: Path, project: Path) -> None:
    """`show` prints their text blocks, tool names from `tool`, non-string output as JSON."""
    theirs = cli.conversation(home, project)
    done = amp("session", "show", theirs.root.session_id[:8], cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Transcript (8 messages)" in out
    assert "> What does main.py do?" in out
    assert "It prints hi." in out
    assert '-> read_file {"file_path":"main.py"}' in out
    assert '<- read_file (ok): {"file_path":"main.py","content":"print(\'hi\')"}' in out
    assert "Let me look." not in out  # thinking is not part of the conversation shown
    assert f"{theirs.child.session_id}  [foundation:explorer]" in out


def test_show_json_maps_their_metadata_to_ours(home: Path, project: Path) -> None:
    """working_dir is the project, turn_count the turns, agent_name the agent, name the name."""
    theirs = cli.conversation(home, project, name="auth fix")
    done = amp("session", "show", theirs.child.session_id, "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    child = document["metadata"]
    assert child["cwd"] == str(project.resolve())
    assert child["agent"] == "foundation:explorer"
    assert (child["parent_id"], child["root_id"], child["depth"]) == (
        theirs.root.session_id,
        theirs.root.session_id,
        1,
    )
    assert child["turns"] == 2
    root = read_metadata(find_session(home, theirs.root.session_id, project=None))
    assert (root.name, root.turns, root.agent, root.profile) == ("auth fix", 2, "default", None)
    assert root.attributes == {"bundle": "bundle:foundation", "model": "claude-sonnet-4-5"}


def test_show_events_names_theirs_beside_ours(home: Path, project: Path) -> None:
    """`show --events` lists their events, their names with ours beside them."""
    theirs = cli.conversation(home, project)
    text = amp("session", "show", theirs.root.session_id, "--events", cwd=project, home=home)
    assert text.returncode == 0, text.stderr
    assert "llm:request (provider:request)" in text.stdout
    assert "delegate:agent_spawned (delegate:start)" in text.stdout
    done = amp(
        "session", "show", theirs.root.session_id, "--events", "--json", cwd=project, home=home
    )
    events = json.loads(done.stdout)["events"]
    assert len(events) == 11
    assert {e["event"]: e.get("known_as") for e in events}["llm:response"] == "provider:response"
    assert all(e["seq"] is None for e in events)


def test_their_updated_is_the_metadata_file_time(home: Path, project: Path) -> None:
    """Their metadata has no `updated`: the file's modification time stands for it."""
    theirs = cli.conversation(home, project, days_ago=40)
    metadata = read_metadata(find_session(home, theirs.root.session_id, project=None))
    assert metadata.updated.timestamp() == pytest.approx(theirs.root.metadata_file.stat().st_mtime)


def test_their_fork_is_a_conversation_of_its_own(home: Path, project: Path) -> None:
    """A fork of theirs (parent_id with forked_from_turn) lists as a root, not a sub-session."""
    theirs = cli.conversation(home, project)
    fork = cli.root_session(home, project)
    fork.metadata.update({"parent_id": theirs.root.session_id, "forked_from_turn": 1})
    fork.add(cli.user("What does main.py do?"), cli.assistant("It prints hi."))
    fork.save()
    roots = list_sessions(home, _slug(project), roots_only=True)
    assert {row.session_id for row in roots} == {theirs.root.session_id, fork.session_id}


def test_their_damaged_metadata_falls_back_to_its_backup(home: Path, project: Path) -> None:
    """A cut-off metadata.json of theirs reads from metadata.json.backup, as their tool does."""
    theirs = cli.conversation(home, project)
    theirs.root.metadata_file.write_text('{"session_id": "cut off')
    metadata = read_metadata(find_session(home, theirs.root.session_id, project=None))
    assert metadata.turns == 1  # the backup is the save before the last


# -- managing theirs through the installed command --------------------------------------------


def test_list_and_show_leave_their_files_byte_identical(home: Path, project: Path) -> None:
    """Reading their sessions changes no byte of them and adds no file."""
    theirs = cli.conversation(home, project)
    before = theirs.snapshot()
    for args in (
        ("session", "list", "--tree"),
        ("session", "show", "--events", theirs.root.session_id),
    ):
        assert amp(*args, cwd=project, home=home).returncode == 0
    assert theirs.snapshot() == before
    assert all(not (folder / ".lock").exists() for folder in theirs.folders())


def test_delete_takes_their_sub_session_along(home: Path, project: Path) -> None:
    """`session delete` removes their root and the sub-session that names it as parent."""
    theirs = cli.conversation(home, project)
    done = amp("session", "delete", theirs.root.session_id, "--yes", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert not any(folder.exists() for folder in theirs.folders())


def test_cleanup_goes_by_their_file_times(home: Path, project: Path) -> None:
    """`cleanup --days 30` deletes their old session with its child, never a recent one."""
    old = cli.conversation(home, project, days_ago=40)
    recent = cli.conversation(home, project)
    done = amp("session", "cleanup", "--days", "30", "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["deleted"]) == {old.root.session_id, old.child.session_id}
    assert not any(folder.exists() for folder in old.folders())
    assert all(folder.exists() for folder in recent.folders())


def test_continue_resumes_their_newest_session(home: Path, project: Path) -> None:
    """`continue "..."` picks their session and answers with its history."""
    theirs = cli.conversation(home, project)
    done = amp("continue", "and now?", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert "has seen 3 prompt(s), 1 tool result(s) and 1 sub-session result(s)" in done.stdout
    assert done.stderr.strip().endswith(theirs.root.session_id)


def test_resume_appends_after_their_lines_byte_identical(home: Path, project: Path) -> None:
    """Resuming theirs appends stamped lines after theirs; their bytes stay as they were."""
    theirs = cli.conversation(home, project)
    before = theirs.snapshot()
    done = amp("session", "resume", theirs.child.session_id, "one more", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    after = theirs.snapshot()
    for path, data in before.items():
        if path.name in ("transcript.jsonl", "events.jsonl"):
            assert after[path].startswith(data), path
        elif path != theirs.child.metadata_file:
            assert after[path] == data, path
    added = lines(theirs.child.transcript)[len(before[theirs.child.transcript].splitlines()) :]
    assert [m["role"] for m in added] == ["user", "assistant"]
    assert all(isinstance(m["seq"], int) for m in added)
    assert len(_their_loader_reads(theirs.child.transcript)) == 6  # theirs and ours, all loadable


def test_failed_resume_leaves_their_folder_as_it_was(home: Path, project: Path) -> None:
    """A session of theirs that cannot be resumed is left exactly as found: no lock, no file."""
    theirs = cli.conversation(home, project)
    for name in ("metadata.json", "metadata.json.backup"):
        (theirs.child.directory / name).unlink()
    before = sorted(p.name for p in theirs.child.directory.iterdir())
    done = amp("session", "resume", theirs.child.session_id, "hello", cwd=project, home=home)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in theirs.child.directory.iterdir()) == before


# -- resuming in-process: what the model is given -------------------------------------------


async def test_resume_gives_the_model_their_whole_conversation(home: Path, project: Path) -> None:
    """Their text, tool calls (named by `tool`) and results reach the model on resume."""
    theirs = cli.conversation(home, project)
    provider = ScriptedProvider([ScriptedTurn(text="done")])
    async with amplifier.open_runtime(cwd=project, provider=provider) as rt:
        async with rt.resume(theirs.root.session_id) as session:
            await session.ask("and now?")
    sent = provider.requests[0].messages
    assert [type(m).__name__ for m in sent] == [
        "UserMessage",
        "AssistantMessage",
        "ToolResultMessage",
        "AssistantMessage",
        "UserMessage",
        "AssistantMessage",
        "ToolResultMessage",
        "AssistantMessage",
        "UserMessage",
    ]
    call = sent[1]
    assert isinstance(call, AssistantMessage)
    assert (call.content, call.tool_calls[0].name) == ("I will read it.", "read_file")
    result = sent[2]
    assert isinstance(result, ToolResultMessage)
    assert result.name == "read_file"
    assert orjson.loads(result.content) == {"file_path": "main.py", "content": "print('hi')"}


async def test_session_both_tools_wrote_resumes_with_every_message(
    home: Path, project: Path
) -> None:
    """Ours, then their rewrite and lines without seq: the model sees every message, in order."""
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("first of ours")
    ours = session_dirs(home)[session.id]
    shared = cli.CliSession(home, project, session.id, {})
    assert cli.cli_slug(project) == ours.parent.parent.name
    shared.rewrite(cli.user("second, theirs"), cli.assistant("their answer"))
    provider = ScriptedProvider([ScriptedTurn(text="done")])
    async with amplifier.open_runtime(cwd=project, provider=provider) as rt:
        async with rt.resume(session.id) as again:
            await again.ask("third, ours again")
    sent = [m.content for m in provider.requests[0].messages]
    assert sent[0] == "first of ours"
    assert sent[2:] == ["second, theirs", "their answer", "third, ours again"]
    stored = [m["content"] for m in lines(ours / "transcript.jsonl")]
    assert stored[2:4] == ["second, theirs", [{"type": "text", "text": "their answer"}]]


def test_lines_without_seq_after_ours_are_read_in_file_order(home: Path, project: Path) -> None:
    """Their lines appended to our transcript are messages, read where they stand."""
    theirs = cli.conversation(home, project)
    shared = theirs.root
    shared.transcript.write_text(
        '{"version":1,"seq":7,"ts":"2026-01-01T00:00:00.000000Z","role":"user","content":"ours"}\n'
        + shared.transcript.read_text()
    )
    records = load_transcript(find_session(home, shared.session_id, project=None))
    assert [r.seq for r in records[:3]] == [7, None, None]
    messages, skipped = parse_history(record.message() for record in records)
    assert (len(messages), skipped) == (9, 0)


# -- writing what they can read ---------------------------------------------------------------


async def test_our_lines_satisfy_their_loader(home: Path, project: Path) -> None:
    """Every line we write builds as their orchestrator's message: content, and `tool` per call."""
    (project / "notes.txt").write_text("hello\n")
    prompts = ['/tool read_file {"path": "notes.txt"}', "/delegate explorer: look around"]
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            for prompt in prompts:
                await session.ask(prompt)
    checked = 0
    for folder in session_dirs(home).values():
        messages = _their_loader_reads(folder / "transcript.jsonl")
        checked += len(messages)
        for message in messages:
            for call in message.tool_calls or []:
                assert call.tool in ("read_file", "delegate")
    assert checked >= 10


def test_to_record_always_carries_content_and_tool() -> None:
    """A tool-call-only answer still has content "" and each call its name under `tool`."""
    record = to_record(
        AssistantMessage(tool_calls=(amplifier.agents.ToolCall(id="c1", name="glob"),))
    )
    assert record["content"] == ""
    assert record["tool_calls"] == [{"id": "c1", "name": "glob", "tool": "glob", "arguments": {}}]


async def test_our_metadata_keeps_their_keys_current(home: Path, project: Path) -> None:
    """Every metadata write carries model, turn_count, working_dir; a child's agent_name too."""
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("/delegate explorer: look around")
            await session.ask("thanks")
    documents = {
        sid: orjson.loads((folder / "metadata.json").read_bytes())
        for sid, folder in session_dirs(home).items()
    }
    root = documents.pop(session.id)
    (child,) = documents.values()
    assert (root["model"], root["turn_count"], root["working_dir"]) == (
        "offline",
        2,
        str(project),
    )
    assert "agent_name" not in root
    assert (child["agent_name"], child["turn_count"]) == ("explorer", 1)


def test_their_rewrite_of_our_metadata_counts_their_turns(home: Path, project: Path) -> None:
    """When their CLI goes on with a session of ours, its turns and time are ours to show."""
    done = amp("run", "hello", cwd=project, home=home)
    (session_id,) = [
        line.removeprefix("Session: ")
        for line in done.stderr.splitlines()
        if line.startswith("Session: ")
    ]
    shared = cli.CliSession(home, project, session_id, {})
    shared.rewrite(cli.user("theirs"), cli.assistant("their answer"))
    metadata = read_metadata(find_session(home, session_id, project=None))
    assert (metadata.turns, metadata.message_count, metadata.last_prompt) == (2, 4, "theirs")


# -- their forks, their bundle, their project folders, their usage -----------------------------


def _their_lineage(home: Path, project: Path, session_id: str) -> list[str]:
    """The ancestors their `session list --tree` shows: parent_id followed up, as they do."""
    folder = home / "projects" / cli.cli_slug(project) / "sessions"
    ancestors = []
    current = json.loads((folder / session_id / "metadata.json").read_text()).get("parent_id")
    while current:
        ancestors.append(current)
        path = folder / current / "metadata.json"
        current = json.loads(path.read_text()).get("parent_id") if path.exists() else None
    return ancestors


def test_resuming_their_fork_keeps_its_lineage(home: Path, project: Path) -> None:
    """Their fork F of S, resumed by us: F still names S for them, and is a root for us."""
    theirs = cli.conversation(home, project)
    forked = cli.fork(theirs.root, at_turn=1)
    done = amp("session", "resume", forked.session_id, "hi", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    document = json.loads(forked.metadata_file.read_text())
    assert (document["parent_id"], document["forked_from_turn"]) == (theirs.root.session_id, 1)
    assert _their_lineage(home, project, forked.session_id) == [theirs.root.session_id]
    roots = list_sessions(home, _slug(project), roots_only=True)
    assert forked.session_id in {row.session_id for row in roots}


def test_their_fork_runs_in_the_project_of_the_session_it_forked(
    home: Path, project: Path, tmp_path: Path
) -> None:
    """A fork records no working_dir: resumed from elsewhere, its tools run in S's project."""
    (project / "main.py").write_text("print('hi')\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    forked = cli.fork(cli.conversation(home, project).root, at_turn=1)
    done = amp(
        "session", "resume", forked.session_id, "/tool list_dir {}", cwd=elsewhere, home=home
    )
    assert done.returncode == 0, done.stderr
    assert "main.py" in done.stdout
    assert "the session it was forked from" in done.stderr
    assert json.loads(forked.metadata_file.read_text())["working_dir"] == str(project.resolve())


async def test_a_session_of_ours_names_the_bundle_their_continue_loads(
    home: Path, project: Path
) -> None:
    """Our root's metadata.json says `bundle`, so their `continue` needs no default or -B."""
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            await session.ask("hello")
    document = orjson.loads((session_dirs(home)[session.id] / "metadata.json").read_bytes())
    assert document["bundle"] == "foundation"


def test_their_sessions_of_a_path_with_a_colon_are_listed(home: Path, tmp_path: Path) -> None:
    """In /…/p:q their folder is -…-pq and ours -…-p:q: `session list` there finds both."""
    colon = tmp_path / "p:q"
    colon.mkdir()
    theirs = cli.conversation(home, colon)
    assert theirs.root.directory.parent.parent.name == cli.cli_slug(colon) != _slug(colon)
    done = amp("session", "list", "--json", cwd=colon, home=home)
    assert done.returncode == 0, done.stderr
    assert [row["session_id"] for row in json.loads(done.stdout)] == [theirs.root.session_id]


def test_a_sub_session_they_made_under_ours_is_in_its_tree(home: Path, tmp_path: Path) -> None:
    """Their CLI delegated from a session of ours: `show` lists the child, in their folder too."""
    colon = tmp_path / "p:q"
    colon.mkdir()
    done = amp("run", "hello", "--json", cwd=colon, home=home)
    ours = json.loads(done.stdout)["session_id"]
    child = cli.sub_session(cli.CliSession(home, colon, ours, {}), "foundation:explorer")
    child.add(cli.user("Look"), cli.assistant("Done."))
    child.save()
    shown = amp("session", "show", ours, cwd=colon, home=home)
    assert shown.returncode == 0, shown.stderr
    assert f"└─ {child.session_id}  [foundation:explorer]" in shown.stdout


def test_show_gives_the_model_their_turns_recorded(home: Path, project: Path) -> None:
    """The Provider line of `show` names the model their calls recorded, not a stale one."""
    theirs = cli.conversation(home, project)
    theirs.root.log("llm:response", {"provider": "anthropic", "model": "claude-opus-9"})
    done = amp("session", "show", theirs.root.session_id, cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert "Provider:  bundle=bundle:foundation, model=claude-opus-9" in done.stdout


async def test_their_usage_logged_as_text_is_counted(home: Path, project: Path) -> None:
    """Usage their events logged as a string still counts: tokens in and out of each call."""
    theirs = cli.conversation(home, project)
    theirs.root.log(
        "llm:response", {"model": "m", "usage": "input_tokens=1200 output_tokens=34"}
    )
    async with amplifier.open_runtime(cwd=project, durability="none") as rt:
        report = await amplifier.session_usage(rt, theirs.root.session_id)
    assert (report.head.own.input, report.head.own.output) == (1210, 34)


# -- the agent a sub-session of theirs runs --------------------------------------------------


def _handler(home: Path, project: Path) -> AgentTurnHandler:
    return AgentTurnHandler(
        catalog=AgentCatalog.load(home=home, project=project),
        profile=load_profile(None, home=home, cwd=project),
        root=project,
    )


def test_their_agent_bundle_name_maps_to_ours(home: Path, project: Path) -> None:
    """`foundation:explorer` runs our `explorer`."""
    assert _handler(home, project).prepare_session("foundation:explorer").agent == "explorer"


def test_their_unknown_agent_goes_on_as_default_with_a_warning(home: Path, project: Path) -> None:
    """An agent of theirs we do not have runs `default`, and a warning says so."""
    with pytest.warns(AgentWarning, match="foundation:zen-architect"):
        setup = _handler(home, project).prepare_session("foundation:zen-architect")
    assert setup.agent == "default"


# -- sessions created by another program; a home whose parent is missing --------------------


async def test_session_another_program_created_is_listed_without_reindex(
    home: Path, project: Path
) -> None:
    """A session that never passed through our index is listed by the next `list`."""
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("ours")
        assert len(await rt.sessions()) == 1
        theirs = cli.conversation(home, project)
        listed = {row.session_id for row in await rt.sessions()}
    assert listed == {session.id, theirs.root.session_id, theirs.child.session_id}


def test_home_whose_parent_is_missing_is_created_owner_only(tmp_path: Path, project: Path) -> None:
    """`AMPLIFIER_HOME=/missing/parent/home` works: the folders are made, owner-only."""
    home = tmp_path / "missing" / "parent" / "home"
    done = amp("run", "hello", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    for folder in (home.parent.parent, home.parent, home):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
    assert amp("session", "list", cwd=project, home=home).returncode == 0


def test_parse_history_reads_their_shapes() -> None:
    """Blocks become text and calls, `tool` names a call, a result takes its call's name."""
    records = [
        cli.user("hi"),
        cli.tool_call_turn("Reading.", "c1", "grep", {"pattern": "x"}),
        cli.tool_result("c1", ["a", 1]),
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c2", "name": "glob", "input": {}}],
        },
        {"role": "tool", "tool_call_id": "c2", "content": "found"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "more"}, {"type": "image", "source": {}}],
        },
        {"role": "system", "content": "ignored"},
    ]
    messages, skipped = parse_history(records)
    assert skipped == 1
    assert messages[0] == UserMessage(content="hi")
    assert isinstance(messages[1], AssistantMessage)
    assert [(c.name, c.arguments) for c in messages[1].tool_calls] == [("grep", {"pattern": "x"})]
    assert messages[2] == ToolResultMessage(tool_call_id="c1", name="grep", content='["a",1]')
    assert isinstance(messages[3], AssistantMessage)
    assert messages[3].tool_calls[0].name == "glob"
    assert isinstance(messages[4], ToolResultMessage)
    assert messages[4].name == "glob"
    assert messages[5] == UserMessage(content="more")


def test_their_sub_session_needs_a_valid_id(home: Path, project: Path) -> None:
    """Their sub-session ids pass our id rules (`foundation:explorer` -> `foundation-explorer`)."""
    theirs = cli.conversation(home, project)
    prefix, rest = theirs.child.session_id.split("-", 1)
    assert prefix == cli.ZERO_SPAN
    assert rest.endswith("_foundation-explorer")
    assert find_session(home, theirs.child.session_id[:24], project=_slug(project)).session_id == (
        theirs.child.session_id
    )
