"""Session features through the installed ``amplifier`` command: last use, search, names, tags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import orjson
import pytest

import amplifier

from .helpers import metadata, session_dirs, transcript
from .test_cli_process import amp
from .trusted import trusted


def _run(prompt: str, *, cwd: Path, home: Path, extra: tuple[str, ...] = ()) -> str:
    done = amp("run", prompt, "--json", *extra, cwd=cwd, home=home)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["session_id"])


def _ids(listing: str) -> list[str]:
    return [row["session_id"] for row in json.loads(listing)]


# -- last use ---------------------------------------------------------------------------


def test_continue_takes_the_session_used_last(home: Path, project: Path) -> None:
    """Run A, run B, resume A: `continue` goes on in A, the one used last, not B."""
    first = _run("first", cwd=project, home=home)
    _run("second", cwd=project, home=home)
    assert amp("session", "resume", first, "again", cwd=project, home=home).returncode == 0
    done = amp("continue", "and now?", "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session_id"] == first


def test_continue_says_the_newest_is_damaged_and_resumes_it(home: Path, project: Path) -> None:
    """The last used session's metadata is damaged: one line says so; no older one is taken."""
    _run("older", cwd=project, home=home)
    newest = _run("newest", cwd=project, home=home)
    (session_dirs(home)[newest] / "metadata.json").write_text("{ not json")
    done = amp("continue", "go on", "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session_id"] == newest
    notes = [line for line in done.stderr.splitlines() if newest in line]
    assert len(notes) == 1
    assert "damaged" in notes[0]
    assert "rebuilds" in notes[0]


def test_list_sorts_by_last_use_on_request(home: Path, project: Path) -> None:
    """`session list --sort used` puts the session used last first; the default stays created."""
    first = _run("first", cwd=project, home=home)
    second = _run("second", cwd=project, home=home)
    assert amp("session", "resume", first, "again", cwd=project, home=home).returncode == 0
    by_use = amp("session", "list", "--sort", "used", "--json", cwd=project, home=home)
    by_creation = amp("session", "list", "--json", cwd=project, home=home)
    assert _ids(by_use.stdout) == [first, second]
    assert _ids(by_creation.stdout) == [second, first]
    table = amp("session", "list", "--sort", "used", cwd=project, home=home).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "Created", "Used"]


# -- search -----------------------------------------------------------------------------


def test_search_finds_prompts_answers_and_tool_output(home: Path, project: Path) -> None:
    """`session search` finds a word in a prompt, in an answer and in a tool's output."""
    (project / "login.py").write_text('query = "SELECT * FROM users WHERE name=" + name\n')
    prompted = _run("is there sql injection in the login form?", cwd=project, home=home)
    read = _run('/tool read_file {"path": "login.py"}', cwd=project, home=home)
    done = amp("session", "search", "sql injection", "--json", cwd=project, home=home)
    hits = json.loads(done.stdout)
    assert {(hit["session_id"], hit["role"]) for hit in hits} == {
        (prompted, "user"),
        (prompted, "assistant"),
    }
    users = json.loads(amp("session", "search", "users", "--json", cwd=project, home=home).stdout)
    assert (read, "tool", "read_file") in {(h["session_id"], h["role"], h["tool"]) for h in users}


def test_search_shows_sub_session_hits_under_their_root(home: Path, project: Path) -> None:
    """A match in a sub-session is shown under its root, with the sub-session's id and agent."""
    root = _run("/delegate explorer: audit the password reset flow", cwd=project, home=home)
    done = amp("session", "search", "password reset", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(root)
    child = next(line for line in lines if "└─" in line)
    assert "_explorer [explorer]" in child
    below = lines[lines.index(child) + 1 :]
    pattern = re.compile(r"    #\d+ user: audit the \*\*password\*\* \*\*reset\*\* flow")
    assert any(pattern.fullmatch(line) for line in below), below


def test_search_keeps_to_this_project_unless_all(home: Path, project: Path, tmp_path: Path) -> None:
    """Without --all only this project's sessions match; with --all every project's do."""
    other = tmp_path / "other"
    other.mkdir()
    here = _run("a zebra here", cwd=project, home=home)
    there = _run("a zebra there", cwd=other, home=home)
    local = amp("session", "search", "zebra", "--json", cwd=project, home=home)
    everywhere = amp("session", "search", "zebra", "--all", "--json", cwd=project, home=home)
    assert {hit["session_id"] for hit in json.loads(local.stdout)} == {here}
    assert {hit["session_id"] for hit in json.loads(everywhere.stdout)} == {here, there}


def test_search_matches_names_by_the_rule_messages_follow(home: Path, project: Path) -> None:
    """A name matches by word or stem, as a message does: `fixing` finds "auth fix", `ix` not."""
    named = _run("find the injection", cwd=project, home=home, extra=("--name", "auth fix"))

    def found(query: str) -> set[tuple[str, str]]:
        done = amp("session", "search", query, "--json", cwd=project, home=home)
        assert done.returncode == 0, done.stderr
        return {(hit["session_id"], hit["role"]) for hit in json.loads(done.stdout)}

    assert found("fixing") == {(named, "label")}
    assert found("ix") == set()  # a part of a word is no word, in a name as in a message


def test_search_without_a_word_is_a_usage_error(home: Path, project: Path) -> None:
    """A query of punctuation only exits 2 with one line saying what is wrong."""
    done = amp("session", "search", '"" * -', cwd=project, home=home)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("Error: nothing to search for")
    assert len(done.stderr.strip().splitlines()) == 1


# -- names and tags ---------------------------------------------------------------------


def test_a_renamed_session_resumes_by_its_name(home: Path, project: Path) -> None:
    """`session rename ID "auth fix"`, then `session resume "auth fix" PROMPT` goes on in it."""
    session_id = _run("first look", cwd=project, home=home)
    renamed = amp("session", "rename", session_id[:20], "auth fix", cwd=project, home=home)
    assert renamed.returncode == 0, renamed.stderr
    done = amp("session", "resume", "auth fix", "go on", "--json", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session_id"] == session_id


def test_a_name_cannot_pass_for_an_id_or_hide_what_it_says(
    home: Path, project: Path, tmp_path: Path
) -> None:
    """Another project's session id as a name would take its place (``delete`` would delete
    the named one); bidirectional and zero-width marks would make a name read as another."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = _run("in another project", cwd=elsewhere, home=home)
    mine = _run("here", cwd=project, home=home)
    for name in (other, f"{mine.split('-')[1]}-0123456789abcdef_explorer", "fix\u202etxt.exe"):
        refused = amp("session", "rename", mine, name, cwd=project, home=home)
        assert refused.returncode == 2, name
        assert len(refused.stderr.strip().splitlines()) == 1
    deleted = amp("session", "delete", other, "--yes", cwd=project, home=home)
    assert deleted.returncode == 0, deleted.stderr
    assert (amp("session", "show", mine, cwd=project, home=home)).returncode == 0


def test_run_name_is_shown_in_list_and_show(home: Path, project: Path) -> None:
    """`run --name` names the new session; list has a Name column and show a Name line."""
    session_id = _run("hello", cwd=project, home=home, extra=("--name", "auth fix"))
    listing = amp("session", "list", cwd=project, home=home).stdout.splitlines()
    assert listing[0].split()[:2] == ["ID", "Name"]
    assert listing[1].startswith(f"{session_id}  auth fix  ")
    shown = amp("session", "show", session_id, cwd=project, home=home).stdout
    assert "Name:      auth fix" in shown


def test_a_name_shared_by_two_sessions_is_ambiguous(home: Path, project: Path) -> None:
    """Looking up a name that two sessions share exits 2 and lists both."""
    first = _run("one", cwd=project, home=home, extra=("--name", "twin"))
    second = _run("two", cwd=project, home=home, extra=("--name", "twin"))
    done = amp("session", "show", "twin", cwd=project, home=home)
    assert done.returncode == 2
    listed = ", ".join(sorted([first, second]))  # in the same second: by their random part
    assert done.stderr.strip() == f"Error: 'twin' matches 2 sessions: {listed}"


def test_tags_are_added_removed_and_filter_the_list(home: Path, project: Path) -> None:
    """`session tag ID +security -draft` changes the tags; `list --tag` keeps the tagged."""
    tagged = _run("one", cwd=project, home=home)
    _run("two", cwd=project, home=home)
    added = amp("session", "tag", tagged, "+security", "+draft", cwd=project, home=home)
    assert added.returncode == 0, added.stderr
    done = amp("session", "tag", tagged, "-draft", "+Review", cwd=project, home=home)
    assert done.stdout.strip() == f"{tagged}: #security #review"
    listing = amp("session", "list", "--tag", "security", "--json", cwd=project, home=home)
    assert _ids(listing.stdout) == [tagged]
    shown = amp("session", "show", tagged, cwd=project, home=home).stdout
    assert "Tags:      security, review" in shown


def test_search_matches_names_and_tags(home: Path, project: Path) -> None:
    """A session's name and tags are found by search, before its messages."""
    session_id = _run("nothing special", cwd=project, home=home, extra=("--name", "auth fix"))
    amp("session", "tag", session_id, "+security", cwd=project, home=home)
    hits = json.loads(
        amp("session", "search", "auth security", "--json", cwd=project, home=home).stdout
    )
    assert [(hit["session_id"], hit["role"], hit["snippet"]) for hit in hits] == [
        (session_id, "label", "auth fix #security")
    ]


def test_bad_tag_is_a_usage_error_and_changes_nothing(home: Path, project: Path) -> None:
    """A tag with a space exits 2 with one line; the session keeps its tags."""
    session_id = _run("one", cwd=project, home=home)
    done = amp("session", "tag", session_id, "+two words", "+ok", cwd=project, home=home)
    assert done.returncode == 2
    assert done.stderr.startswith("Error: invalid tag 'two words'")
    assert (
        json.loads(amp("session", "tag", session_id, "--json", cwd=project, home=home).stdout)[
            "tags"
        ]
        == []
    )


async def test_a_session_in_use_is_not_renamed_or_tagged(home: Path, project: Path) -> None:
    """While a session is open, rename and tag refuse with 'in use' and change nothing."""
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("busy")
            rename = await anyio.to_thread.run_sync(
                lambda: amp("session", "rename", session.id, "x", cwd=project, home=home)
            )
            tag = await anyio.to_thread.run_sync(
                lambda: amp("session", "tag", session.id, "+x", cwd=project, home=home)
            )
    for done in (rename, tag):
        assert done.returncode == 1
        assert f"session {session.id} is in use by" in done.stderr
    meta = json.loads((session_dirs(home)[session.id] / "metadata.json").read_text())
    assert (meta.get("name"), meta["tags"]) == (None, [])


async def test_a_session_open_in_this_runtime_is_renamed_and_tagged(
    home: Path, project: Path
) -> None:
    """The program that holds a session open renames and tags it; the files say so at once,
    and its last use stays."""
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("busy")
            used = session.metadata.updated
            await rt.rename(session.id, "auth fix")
            tagged = await rt.tag(session.id, add=["security"])
            await rt.flush()  # the files follow the journal
            stored = json.loads((session_dirs(home)[session.id] / "metadata.json").read_text())
            assert (stored["name"], stored["tags"]) == ("auth fix", ["security"])
            assert (tagged.name, session.metadata.name) == ("auth fix", "auth fix")
            assert session.metadata.updated == used
            await session.ask("still answers")


async def test_set_attributes_changes_the_model_of_the_next_turn(home: Path, project: Path) -> None:
    """A session's 'model' attribute, set between turns, is the model its next turn asks."""
    profiles = project / ".amplifier" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "s.yaml").write_text(
        f"provider: {{kind: scripted, model: first, script: {project / 'turns.yaml'}}}\n"
    )
    (project / "turns.yaml").write_text("- text: one\n- text: two\n")
    trusted(project, home)
    async with amplifier.open_runtime(cwd=project, profile="s") as rt:
        async with rt.open_session() as session:
            await session.ask("a")
            meta = await session.set_attributes({"model": "second"})
            assert meta.attributes["model"] == "second"
            await session.ask("b")
            models = [
                e.data["model"]
                async for e in rt.events(session.id)
                if e.event == "provider:request"
            ]
    assert models == ["first", "second"]


async def test_compacted_session_shows_the_model_the_summary_instead(
    home: Path, project: Path
) -> None:
    """After compact_session, the next turn's model sees the summary and what follows, not
    the turns before it; the transcript keeps them all."""
    from amplifier.agents import compact_session

    profiles = project / ".amplifier" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "s.yaml").write_text(
        f"provider: {{kind: scripted, script: {project / 'turns.yaml'}}}\n"
    )
    (project / "turns.yaml").write_text(
        "- text: one\n- text: two\n- text: the summary\n- text: ok\n"
    )
    trusted(project, home)
    async with amplifier.open_runtime(cwd=project, profile="s") as rt:
        async with rt.open_session() as session:
            await session.ask("first")
            await session.ask("second")
            summary = await compact_session(session, "keep the names")
            await session.ask("third")
            seen = [
                e.data["messages"]
                async for e in rt.events(session.id)
                if e.event == "provider:request"
            ]
            records = await rt.transcript(session.id)
    assert summary.text == "the summary"
    assert seen == [1, 3, 5, 3]  # the last: the request to compact, its summary, "third"
    assert len(records) == 8
    assert records[5].message().get("summary") is True


async def test_set_attributes_after_close_is_refused(home: Path, project: Path) -> None:
    """A closed session's attributes cannot change: SessionClosed."""
    async with amplifier.open_runtime(cwd=project) as rt:
        session = await rt.open_session()
        await session.close()
        with pytest.raises(amplifier.SessionClosed):
            await session.set_attributes({"model": "x"})


# -- usage ------------------------------------------------------------------------------

PRICED = "extends: base\nprices:\n  offline: {input: 3.0, output: 15.0}\n"


def _priced_tree(home: Path, project: Path) -> tuple[str, list[dict[str, object]]]:
    """A two-turn session of the 'priced' profile that delegates; and every event of its tree."""
    profiles = project / ".amplifier" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "priced.yaml").write_text(PRICED)
    trusted(project, home)
    root = _run("/delegate explorer: look around", cwd=project, home=home, extra=("-p", "priced"))
    again = amp("session", "resume", root, "thanks", "--json", cwd=project, home=home)
    assert again.returncode == 0, again.stderr
    records = [
        json.loads(line)
        for folder in session_dirs(home).values()
        for line in (folder / "events.jsonl").read_text().splitlines()
    ]
    return root, sorted(records, key=lambda r: int(str(r["seq"])))


def _tokens(records: list[dict[str, object]], session_id: str | None = None) -> tuple[int, int]:
    used = [
        r["data"]["usage"]  # type: ignore[index]
        for r in records
        if r["event"] == "provider:response" and session_id in (None, r["session_id"])
    ]
    return sum(u["input_tokens"] for u in used), sum(u["output_tokens"] for u in used)


def test_show_gives_tokens_per_turn_session_and_tree_with_cost(home: Path, project: Path) -> None:
    """`session show` adds up the model calls' tokens by turn, session and tree, and prices them."""
    root, records = _priced_tree(home, project)
    usage = json.loads(amp("session", "show", root, "--json", cwd=project, home=home).stdout)[
        "usage"
    ]
    own_in, own_out = _tokens(records, root)
    all_in, all_out = _tokens(records)
    session = usage["session"]
    assert (session["input_tokens"], session["output_tokens"]) == (own_in, own_out)
    assert (usage["tree"]["input_tokens"], usage["tree"]["output_tokens"]) == (all_in, all_out)
    assert usage["tree"]["cost_usd"] == round((all_in * 3.0 + all_out * 15.0) / 1e6, 6)
    assert [turn["turn"] for turn in usage["turns"]] == [1, 2]
    first, second = usage["turns"]
    assert first["tree"]["calls"] > first["session"]["calls"]  # the sub-session ran in turn 1
    assert second["tree"] == second["session"]
    text = amp("session", "show", root, cwd=project, home=home).stdout
    assert f"  with sub-sessions: {all_in:,} in / {all_out:,} out, " in text


def test_list_usage_adds_tokens_and_cost(home: Path, project: Path) -> None:
    """`session list --usage` shows each session tree's tokens and cost; without prices, '-'."""
    root, records = _priced_tree(home, project)
    unpriced = _run("no prices here", cwd=project, home=home)
    lines = amp("session", "list", "--usage", cwd=project, home=home).stdout.splitlines()
    assert "Tokens" in lines[0].split()
    assert "Cost" in lines[0].split()
    all_in, all_out = _tokens(records)
    row = next(line for line in lines if line.startswith(root))
    assert f"{all_in:,} in / {all_out:,} out  ${(all_in * 3.0 + all_out * 15.0) / 1e6:.4f}" in row
    other = next(line for line in lines if line.startswith(unpriced))
    assert re.search(r" out +- +", other), other


async def test_a_session_cut_off_before_its_metadata_counts_its_files_when_resumed(
    home: Path, project: Path
) -> None:
    """A session killed before its metadata was written (a sub-session writes its own at
    its close): resumed, it counts its messages and turns from its transcript and log, so
    the listing and `show` agree."""
    async with amplifier.open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("first")
    stale = metadata(home, session.id)
    stale.update(status="active", message_count=0, turns=0, turn_count=0, last_prompt=None)
    (session_dirs(home)[session.id] / "metadata.json").write_bytes(orjson.dumps(stale))
    async with amplifier.open_runtime(cwd=project) as rt:
        async with await rt.resume(session.id) as resumed:
            await resumed.ask("second")
    counted = metadata(home, session.id)
    assert (counted["message_count"], counted["turns"], counted["last_prompt"]) == (4, 2, "second")
    assert counted["message_count"] == len(transcript(home, session.id))


def test_a_session_cut_off_before_its_metadata_is_listed_and_shown_by_its_files(
    home: Path, project: Path
) -> None:
    """A session killed before its metadata was written, and not resumed since: `list` and
    `show` count its messages, turns and last prompt from its transcript and log, as a
    resume would, so the two agree with each other and with the files."""
    first = amp("run", "first", cwd=project, home=home)
    assert first.returncode == 0, first.stderr
    second = amp("continue", "second", cwd=project, home=home)
    assert second.returncode == 0, second.stderr
    (session_id,) = session_dirs(home)
    stale = metadata(home, session_id)
    stale.update(status="active", message_count=2, turns=1, turn_count=1, last_prompt="first")
    (session_dirs(home)[session_id] / "metadata.json").write_bytes(orjson.dumps(stale))
    listed = amp("session", "list", "--json", cwd=project, home=home)
    (row,) = orjson.loads(listed.stdout)
    assert row["status"] == "interrupted"
    counted = row["metadata"]
    assert (counted["message_count"], counted["turns"], counted["last_prompt"]) == (4, 2, "second")
    assert counted["message_count"] == len(transcript(home, session_id))
    shown = amp("session", "show", session_id, cwd=project, home=home).stdout
    assert "Messages:  4 (prompts and answers)    Turns: 2" in shown
    table = amp("session", "list", cwd=project, home=home).stdout
    assert "second" in table
