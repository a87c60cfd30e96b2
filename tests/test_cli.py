"""The command line through typer's test runner: each command and flag, as the docs describe."""

from __future__ import annotations

import errno
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

import amplifier
import amplifier.persistence._journal as journal_module
from amplifier.cli import app

from .fake_llm_server import FakeLLMServer, Text
from .helpers import events, metadata, session_dirs, transcript
from .trusted import trusted

runner = CliRunner()


@pytest.fixture(autouse=True)
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every command runs from inside the project directory, like a user would."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("NO_COLOR", "1")
    return project


def cli(*args: str, input: str | None = None, code: int = 0) -> Any:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def cli_json(*args: str, code: int = 0) -> Any:
    result = cli(*args, "--json", code=code)
    return json.loads(result.stdout)


def new_session(prompt: str = "hello") -> str:
    document = cli_json("run", prompt)
    return str(document["session_id"])


# -- run -------------------------------------------------------------------------------


def test_run_prints_the_answer_and_the_session_id() -> None:
    """`amplifier run PROMPT` answers on stdout and names the session on stderr."""
    result = cli("run", "Explain this code")
    assert "You asked: Explain this code" in result.stdout
    assert "not a language model" in result.stdout
    assert result.stderr.startswith("Session: 20")


def test_run_reads_the_prompt_from_stdin() -> None:
    """`echo hi | amplifier run` uses the piped text as the prompt."""
    result = cli("run", input="piped question\n")
    assert "You asked: piped question" in result.stdout


def test_run_without_a_prompt_is_a_usage_error() -> None:
    """No argument and nothing on stdin: exit 2 with one line saying what is missing."""
    result = cli("run", input="", code=2)
    assert result.stderr.strip() == "Error: no prompt: give it as an argument or on stdin"


def test_run_json_is_one_document_with_the_answer(home: Path) -> None:
    """--json prints exactly one JSON document: id, status, response."""
    document = cli_json("run", "hi")
    assert document["status"] == "completed"
    assert "You asked: hi" in document["response"]
    assert document["session_id"] in session_dirs(home)


def test_output_format_json_equals_json_flag() -> None:
    """--output-format json is the long spelling of --json."""
    result = cli("run", "hi", "--output-format", "json")
    assert json.loads(result.stdout)["status"] == "completed"


def test_run_resume_continues_the_session(home: Path) -> None:
    """--resume ID (or a unique prefix) adds a turn to that session."""
    session_id = new_session("first")
    document = cli_json("run", "second", "--resume", session_id[:24])
    assert document["session_id"] == session_id
    assert document["turn"] == 2
    assert [m["content"] for m in transcript(home, session_id) if m["role"] == "user"] == [
        "first",
        "second",
    ]


def test_run_profile_and_agent_flags(home: Path) -> None:
    """--profile and --agent end up in the session's metadata."""
    document = cli_json("run", "hi", "--profile", "dev", "--agent", "explorer")
    stored = metadata(home, document["session_id"])
    assert (stored["profile"], stored["agent"]) == ("dev", "explorer")


def test_run_provider_and_model_flags_override_the_profile(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--provider/--model replace the profile's; a missing key or dead endpoint is one line."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    missing = cli("run", "hi", "--provider", "openai", code=2)
    assert "needs an API key: set OPENAI_API_KEY" in missing.stderr
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "local.yaml").write_text(
        "provider: {kind: openai, base_url: 'http://127.0.0.1:9/v1', max_retries: 0, timeout: 2}\n"
    )
    trusted(project)
    dead = cli("run", "hi", "--profile", "local", "--model", "m2", code=1)
    assert "cannot reach http://127.0.0.1:9" in dead.stderr.splitlines()[0]
    (session_id,) = session_dirs(home)
    assert metadata(home, session_id)["attributes"] == {"provider": "openai", "model": "m2"}
    scripted = cli("run", "hi", "--provider", "scripted", code=2)
    assert "the scripted provider needs 'script'" in scripted.stderr


def test_flags_before_run_apply_to_it(home: Path) -> None:
    """`amplifier --profile dev --agent explorer run x` runs under dev, as explorer."""
    document = cli_json("--profile", "dev", "--agent", "explorer", "run", "hi")
    stored = metadata(home, document["session_id"])
    assert (stored["profile"], stored["agent"]) == ("dev", "explorer")


def test_flags_before_run_yield_to_the_same_flag_after_it(home: Path) -> None:
    """A flag given both before and after the command: the later one (after) wins."""
    document = cli_json("--profile", "base", "run", "hi", "--profile", "dev")
    assert metadata(home, document["session_id"])["profile"] == "dev"


def test_provider_and_model_before_run_apply_to_it(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`amplifier --provider openai --model m2 run x` uses that provider and model."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    missing = cli("--provider", "openai", "run", "hi", code=2)
    assert "needs an API key: set OPENAI_API_KEY" in missing.stderr
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "local.yaml").write_text(
        "provider: {kind: openai, base_url: 'http://127.0.0.1:9/v1', max_retries: 0, timeout: 2}\n"
    )
    trusted(project)
    cli("--profile", "local", "--model", "m2", "run", "hi", code=1)
    (session_id,) = session_dirs(home)
    assert metadata(home, session_id)["attributes"] == {"provider": "openai", "model": "m2"}


def test_profile_before_continue_applies_to_it(home: Path) -> None:
    """`amplifier --profile dev continue x` resumes the latest session under dev."""
    session_id = new_session("first")
    document = cli_json("--profile", "dev", "continue", "more")
    assert document["session_id"] == session_id
    assert metadata(home, session_id)["profile"] == "dev"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--profile", "nope", "session", "list"), "--profile does not apply to 'session list'"),
        (("--model", "m", "session", "show", "x"), "--model does not apply to 'session show'"),
        (("--agent", "explorer", "continue", "x"), "--agent applies to a new session"),
        (("--agent", "explorer", "session", "resume", "x"), "--agent applies to a new session"),
    ],
)
def test_flags_before_a_command_that_takes_none_are_refused(
    args: tuple[str, ...], message: str
) -> None:
    """A flag before a command that cannot use it: exit 2 and one line, nothing run."""
    new_session("first")
    result = cli(*args, code=2)
    (line,) = result.stderr.strip().splitlines()
    assert message in line


def test_run_unknown_agent_or_profile_lists_the_choices() -> None:
    """A typo in --agent or --profile names what exists (exit 2)."""
    assert (
        "available: default, explorer, reviewer"
        in cli("run", "x", "--agent", "nope", code=2).stderr
    )
    assert "available: base, dev" in cli("run", "x", "--profile", "nope", code=2).stderr


def test_run_provider_failure_is_one_line_and_exit_1(home: Path) -> None:
    """A failing model call: one error line, exit 1, and the session is kept."""
    result = cli("run", "/fail upstream is down", code=1)
    assert result.stderr.splitlines()[0] == "Error: offline: upstream is down"
    (session_id,) = session_dirs(home)
    assert session_id in result.stderr


def test_run_whose_turn_failed_is_listed_and_shown_failed_with_the_error(home: Path) -> None:
    """A session whose one turn failed ends 'failed' with the error, as run --json said."""
    document = cli_json("run", "/fail upstream is down", code=1)
    assert document["status"] == "failed"
    session_id = document["session_id"]
    stored = metadata(home, session_id)
    assert (stored["status"], stored["error"]) == ("failed", "offline: upstream is down")
    assert cli("session", "list").stdout.splitlines()[1].split()[-1] == "failed"
    shown = cli("session", "show", session_id).stdout
    assert "Status:    failed" in shown
    assert "Error:     offline: upstream is down" in shown


def test_run_says_when_the_answer_stopped_at_the_output_limit(
    project: Path, server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer cut off by the output-token limit is printed with a notice (--json: cut_off)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "live.yaml").write_text(
        f"provider: {{kind: openai, base_url: '{server.openai_base_url}', max_retries: 0}}\n"
        "max_output_tokens: 64\n"
    )
    trusted(project)
    server.plan(Text(("Once upon",), limit=True), Text(("Once upon",), limit=True))
    result = cli("run", "--profile", "live", "a story")
    assert result.stdout == "Once upon\n"
    notice = "(the answer stopped at the output limit: the profile's max_output_tokens"
    assert notice in result.stderr
    document = cli_json("run", "--profile", "live", "a story")
    assert (document["response"], document["cut_off"]) == ("Once upon", "output_limit")


# -- continue --------------------------------------------------------------------------


def test_continue_with_a_prompt_resumes_the_latest_root_session(home: Path) -> None:
    """`amplifier continue PROMPT` goes on in the newest root session of this project."""
    new_session("older")
    newest = new_session("/delegate explorer: look")
    document = cli_json("continue", "and then?")
    assert document["session_id"] == newest
    assert document["turn"] == 2


def test_continue_reads_the_prompt_from_stdin() -> None:
    """`echo x | amplifier continue --json` answers the piped prompt in the latest session."""
    session_id = new_session("first")
    document = json.loads(cli("continue", "--json", input="piped follow-up\n").stdout)
    assert document["session_id"] == session_id
    assert "You asked: piped follow-up" in document["response"]


def test_continue_with_nothing_piped_is_a_usage_error() -> None:
    """Stdin piped but empty, and no prompt: exit 2, one line (no interactive session)."""
    new_session("first")
    result = cli("continue", input="", code=2)
    assert result.stderr.strip().startswith("Error: no prompt: give it as an argument or on stdin")


def test_continue_without_sessions_says_how_to_start() -> None:
    """With nothing to continue, exit 1 and point at `amplifier run`."""
    result = cli("continue", "x", code=1)
    assert "no session to continue in this project" in result.stderr


# -- session list ----------------------------------------------------------------------


def test_list_shows_columns_newest_first() -> None:
    """The table has the documented columns and the newest session on top."""
    first, second = new_session("Add error handling"), new_session("Explain the auth flow")
    lines = cli("session", "list").stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "Created",
        "Agent",
        "Profile",
        "Messages",
        "Last",
        "Prompt",
        "Status",
    ]
    assert lines[1].startswith(second)
    assert '"Explain the auth flow"' in lines[1]
    assert lines[2].startswith(first)
    assert lines[1].split()[3:6] == ["default", "base", "2"]


def test_list_limit_and_json() -> None:
    """--limit N keeps the newest N; --json gives them as a list."""
    ids = [new_session(f"s{n}") for n in range(3)]
    rows = cli_json("session", "list", "--limit", "2")
    assert [row["session_id"] for row in rows] == ids[::-1][:2]
    assert rows[0]["metadata"]["message_count"] == 2


def test_list_tree_shows_sub_sessions_under_their_parent() -> None:
    """--tree lists each sub-session indented under its parent; without it, roots only."""
    parent = new_session("/delegate explorer: read\n/delegate reviewer: review")
    plain = cli("session", "list").stdout
    tree = cli("session", "list", "--tree").stdout.splitlines()
    assert "_explorer" not in plain
    assert tree[1].startswith(parent)
    assert {line.strip().split()[1].rsplit("_", 1)[1] for line in tree[2:4]} == {
        "explorer",
        "reviewer",
    }
    assert all(line.startswith("  └─ ") for line in tree[2:4])


def test_list_all_adds_other_projects_and_a_project_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--all shows every project's sessions with a Project column."""
    here = new_session("here")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    there = new_session("there")
    assert here not in cli("session", "list").stdout
    everything = cli("session", "list", "--all").stdout
    assert "Project" in everything.splitlines()[0]
    assert here in everything
    assert there in everything
    assert str(other) in everything


def test_list_marks_damaged_metadata_and_shows_the_rest(home: Path) -> None:
    """A session with broken metadata is listed as damaged; the others are unaffected."""
    good, bad = new_session("good"), new_session("bad")
    (session_dirs(home)[bad] / "metadata.json").write_text("{not json")
    out = cli("session", "list").stdout
    assert good in out
    assert f"{bad}" in out
    assert "damaged" in out


@pytest.mark.filterwarnings("default::amplifier.RecoveryWarning")  # shown, as the CLI does
@pytest.mark.parametrize("obstacle", ["folder", "fifo"])
def test_a_session_whose_metadata_is_not_a_file_is_damaged_and_resumed(
    home: Path, obstacle: str
) -> None:
    """A folder or a FIFO where a session's metadata.json should be: the listing shows that
    session damaged and the rest as usual, without waiting on the FIFO; `continue`
    rebuilds it, setting what was in the way aside (kept, not deleted)."""
    good, bad = new_session("good"), new_session("bad")
    folder = session_dirs(home)[bad]
    (folder / "metadata.json").unlink()
    if obstacle == "folder":
        (folder / "metadata.json").mkdir()
        (folder / "metadata.json" / "kept.txt").write_text("mine")
    else:
        os.mkfifo(folder / "metadata.json")
    rows = {row["session_id"]: row for row in cli_json("session", "list")}
    assert rows[good]["status"] == "completed"
    assert rows[bad]["status"] == "damaged"
    assert "metadata.json cannot be read" in rows[bad]["problem"]
    cli("session", "resume", bad, "more")
    assert metadata(home, bad)["turns"] == 2
    set_aside = [p.name for p in folder.iterdir() if p.name.startswith("metadata.json.not-a-file")]
    assert len(set_aside) == (1 if obstacle == "folder" else 0)  # a FIFO is replaced as it is
    if obstacle == "folder":
        assert (folder / set_aside[0] / "kept.txt").read_text() == "mine"


def test_a_long_prompt_is_kept_whole_in_the_transcript_and_cut_in_the_metadata(
    home: Path,
) -> None:
    """A prompt of 300,000 characters: the transcript holds it whole; the metadata, which
    every turn rewrites, keeps its first 2,000 characters, marked as cut."""
    prompt = "word " * 60_000
    session = new_session(prompt)
    stored = metadata(home, session)["last_prompt"]
    assert stored == prompt[:1_999] + "…"
    assert transcript(home, session)[0]["content"] == prompt


def test_a_session_whose_parent_is_not_stored_is_listed_as_a_root(home: Path) -> None:
    """A sub-session whose parent's folder was removed by hand, and a session whose metadata
    names a parent that does not exist (even after it is resumed), are listed among the
    roots, with and without the index: no stored session is listed nowhere."""
    delegating = new_session("/delegate explorer: look")
    (child,) = metadata(home, delegating)["children"]
    shutil.rmtree(session_dirs(home)[delegating])
    named = new_session("named")
    path = session_dirs(home)[named] / "metadata.json"
    document = json.loads(path.read_text())
    document["parent_id"] = "20200101T000000Z-0123456789abcdef"
    path.write_text(json.dumps(document))
    cli("session", "resume", named, "again")
    listed = {row["session_id"] for row in cli_json("session", "list")}
    assert {child, named} <= listed
    (home / "index.sqlite3").unlink()
    (home / "index.sqlite3").mkdir()  # no index can be opened: the folders are read
    listed = {row["session_id"] for row in cli_json("session", "list")}
    assert {child, named} <= listed


def test_a_session_is_named_by_its_folder_whatever_its_metadata_says(home: Path) -> None:
    """A metadata.json naming another id (a hand edit, a folder copied under a new name):
    `show` and `list` give the folder's id, which every command takes, and a resume
    writes it into the metadata."""
    session = new_session("mine")
    path = session_dirs(home)[session] / "metadata.json"
    document = json.loads(path.read_text())
    document["session_id"] = "20200101T000000Z-0000000000000000"
    path.write_text(json.dumps(document))
    assert cli("session", "show", session).stdout.startswith(f"Session:   {session}\n")
    assert [row["session_id"] for row in cli_json("session", "list")] == [session]
    cli("session", "resume", session, "again")
    assert (metadata(home, session)["session_id"], metadata(home, session)["root_id"]) == (
        session,
        session,
    )


@pytest.mark.parametrize("field", ["turns", "seq", "message_count", "depth"])
def test_a_number_no_integer_of_64_bits_holds_makes_the_metadata_damaged(
    home: Path, field: str
) -> None:
    """A count beyond 64 bits in a metadata.json (no JSON writer makes one): that session
    is listed damaged, the others as usual (text and --json), and `continue` rebuilds it."""
    good, bad = new_session("good"), new_session("bad")
    path = session_dirs(home)[bad] / "metadata.json"
    document = json.loads(path.read_text())
    document[field] = 10**20
    path.write_text(json.dumps(document))
    rows = {row["session_id"]: row for row in cli_json("session", "list")}
    assert rows[good]["status"] == "completed"
    assert rows[bad]["status"] == "damaged"
    assert good in cli("session", "list").stdout
    cli("continue", "more")
    assert metadata(home, bad)["turns"] == 2
    assert metadata(home, bad)[field] < 1 << 63


@pytest.mark.filterwarnings("default::amplifier.RecoveryWarning")  # shown, as the CLI does
@pytest.mark.parametrize("name", ["events.jsonl", "transcript.jsonl"])
def test_a_session_file_that_is_a_folder_is_read_as_empty_and_set_aside_on_resume(
    home: Path, name: str
) -> None:
    """A folder in place of a session's log: listing, usage and show still answer (with a
    warning); resuming sets the folder aside and the log is written anew."""
    session = new_session("hello")
    folder = session_dirs(home)[session]
    (folder / name).unlink()
    (folder / name).mkdir()
    listed = cli("session", "list", "--usage")
    shown = cli("session", "show", session)
    assert session in listed.stdout
    assert "hello" in shown.stdout or name == "transcript.jsonl"
    assert f"{name}: not a file" in listed.stderr + shown.stderr
    cli("session", "resume", session, "again")
    assert (folder / name).is_file()
    assert [p.name.split("-")[0] for p in folder.iterdir() if "not-a-file" in p.name] == [
        f"{name}.not"
    ]


def test_damaged_session_status_says_why_once(home: Path) -> None:
    """A damaged session's status in list and show is 'damaged: <reason>', said once."""
    bad = new_session("bad")
    (session_dirs(home)[bad] / "metadata.json").write_text("{not json")
    (row,) = [line for line in cli("session", "list").stdout.splitlines() if bad in line]
    assert row.split("  ")[-1].strip().startswith("damaged: metadata.json is invalid")
    assert row.count(bad) == 1
    status = next(
        line for line in cli("session", "show", bad).stdout.splitlines() if "Status:" in line
    )
    assert status.startswith("Status:    damaged: metadata.json is invalid (Invalid JSON")
    assert bad not in status
    assert "is damaged" not in status


def test_list_empty_project_says_so() -> None:
    """No sessions here: a one-line note pointing at --all."""
    result = cli("session", "list")
    assert "No sessions in this project (--all shows every project's)." in result.stderr


# -- session show ----------------------------------------------------------------------


def test_show_prints_metadata_tree_and_transcript() -> None:
    """show has the metadata, the sub-session tree and the conversation."""
    session_id = new_session('/delegate explorer: /tool list_dir {"path": "."}')
    out = cli("session", "show", session_id).stdout
    assert f"Session:   {session_id}" in out
    assert "Sub-sessions:" in out
    assert "_explorer  [explorer] completed" in out
    assert '> /delegate explorer: /tool list_dir {"path": "."}' in out
    assert "-> delegate" in out


def test_show_events_and_json() -> None:
    """--events adds the event log; --json gives metadata, tree, transcript and events."""
    session_id = new_session("hi")
    assert "session:start" in cli("session", "show", session_id, "--events").stdout
    document = cli_json("session", "show", session_id, "--events")
    assert document["session_id"] == session_id
    assert [m["role"] for m in document["transcript"]] == ["user", "assistant"]
    assert document["events"][0]["event"] == "session:start"


def test_show_message_count_agrees_with_list_and_transcript() -> None:
    """show counts prompts and answers as list does, and says how many more tool results hold."""
    session_id = new_session('/tool list_dir {"path": "."}')
    row = cli("session", "list").stdout.splitlines()[1]
    out = cli("session", "show", session_id).stdout
    assert row.split()[5] == "3"
    assert "Messages:  3 (prompts and answers; 4 with tool results)" in out
    assert "Transcript (4 messages):" in out


def test_show_events_keeps_whole_session_ids(home: Path) -> None:
    """show --events prints the session id whole, a sub-session's long id too."""
    session_id = new_session("/delegate explorer: look")
    (child,) = metadata(home, session_id)["children"]
    for shown in (session_id, child):
        out = cli("session", "show", shown, "--events").stdout
        log = out.split("Events (")[1].splitlines()[1:]
        assert {line.split()[2] for line in log} == {shown}


def test_show_escapes_terminal_control_sequences() -> None:
    """Escape sequences stored in a transcript are shown, not executed."""
    session_id = new_session("look \x1b[2J\x1b]0;pwned\x07 here")
    out = cli("session", "show", session_id).stdout
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\\x1b[2J" in out


def test_show_finds_a_session_of_another_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id from another project is found, and the output says which project."""
    session_id = new_session("elsewhere")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    result = cli("session", "show", session_id[:25])
    assert "session of another project" in result.stderr
    assert session_id in result.stdout


@pytest.mark.parametrize(
    ("given", "code", "message"),
    [
        ("../x", 2, "invalid session id '../x': '..' is not allowed"),
        ("a/b", 2, "path separators are not allowed"),
        ("", 2, "it is empty"),
        ("20991231T000000Z-0000000000000000", 1, "Session not found"),
    ],
)
def test_show_rejects_bad_and_unknown_ids_in_one_line(given: str, code: int, message: str) -> None:
    """Bad ids are usage errors (2); unknown ones are 'not found' (1) with a hint."""
    result = cli("session", "show", given, code=code)
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    if code == 1:
        assert "session list --all" in line


def test_ambiguous_prefix_lists_the_matches() -> None:
    """A prefix shared by two sessions names both (exit 2)."""
    first, second = new_session("a"), new_session("b")
    result = cli("session", "show", "2", code=2)
    assert first in result.stderr
    assert second in result.stderr


def test_id_prefix_prefers_this_projects_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefix that matches one session here and others elsewhere finds the one here."""
    here = new_session("here")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    there = new_session("there")
    assert cli_json("session", "show", "20")["session_id"] == there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("session", "show", "20", code=2)
    assert here in result.stderr
    assert there in result.stderr


@pytest.fixture
def colliding(tmp_path: Path) -> tuple[Path, Path]:
    """Two projects whose slugs collide: /.../a-b and /.../a/b are both '-...-a-b'."""
    dashed, nested = tmp_path / "a-b", tmp_path / "a" / "b"
    dashed.mkdir()
    nested.mkdir(parents=True)
    return dashed, nested


def test_projects_with_colliding_slugs_list_only_their_own(
    colliding: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions of /x/a-b and /x/a/b share a folder; each project lists only its own."""
    dashed, nested = colliding
    monkeypatch.chdir(dashed)
    mine = new_session("in a-b")
    monkeypatch.chdir(nested)
    theirs = new_session("in a/b")
    assert [row["session_id"] for row in cli_json("session", "list")] == [theirs]
    monkeypatch.chdir(dashed)
    assert [row["session_id"] for row in cli_json("session", "list")] == [mine]


def test_continue_with_colliding_slugs_stays_in_this_project(
    colliding: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """continue in /x/a-b resumes its own session, not a newer one of /x/a/b."""
    dashed, nested = colliding
    monkeypatch.chdir(dashed)
    mine = new_session("in a-b")
    monkeypatch.chdir(nested)
    new_session("in a/b")
    monkeypatch.chdir(dashed)
    assert cli_json("continue", "more")["session_id"] == mine


def test_id_prefix_with_colliding_slugs_prefers_this_project(
    colliding: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefix matching sessions of both colliding projects finds this project's."""
    dashed, nested = colliding
    monkeypatch.chdir(dashed)
    mine = new_session("in a-b")
    monkeypatch.chdir(nested)
    theirs = new_session("in a/b")
    assert cli_json("session", "show", "20")["session_id"] == theirs
    monkeypatch.chdir(dashed)
    assert cli_json("session", "show", "20")["session_id"] == mine


# -- session resume --------------------------------------------------------------------


def test_resume_with_prompt_works_for_sub_sessions_too(home: Path) -> None:
    """`session resume CHILD PROMPT` continues a sub-session directly."""
    parent = new_session("/delegate explorer: remember 7")
    (child,) = metadata(home, parent)["children"]
    document = cli_json("session", "resume", child, "what was it?")
    assert document["session_id"] == child
    assert "2 prompt(s)" in document["response"]


def test_resume_reads_the_prompt_from_stdin(home: Path) -> None:
    """`echo x | amplifier session resume ID` runs one turn with the piped prompt."""
    session_id = new_session("first")
    result = cli("session", "resume", session_id, input="piped again\n")
    assert "You asked: piped again" in result.stdout
    assert [m["content"] for m in transcript(home, session_id) if m["role"] == "user"] == [
        "first",
        "piped again",
    ]


_JOURNAL_APPEND = journal_module.Journal.append


def _refuse_journal_batches_with(monkeypatch: pytest.MonkeyPatch, marker: bytes) -> None:
    """The disk fills up for every journal batch that holds ``marker``."""

    def full(self: journal_module.Journal, batch: bytes, last_seq: int) -> None:
        if marker in batch:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _JOURNAL_APPEND(self, batch, last_seq)

    monkeypatch.setattr(journal_module.Journal, "append", full)


def test_resume_whose_turn_cannot_be_stored_keeps_the_sessions_status(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails the resumed turn in one line; the session stays `completed`, intact."""
    session_id = new_session("first")
    stored = transcript(home, session_id)
    _refuse_journal_batches_with(monkeypatch, b"prompt:submit")
    result = cli("session", "resume", session_id, "second", code=1)
    assert (
        "Error: the turn could not be stored: could not write session files: the disk is full"
        in result.stderr
    )
    monkeypatch.setattr(journal_module.Journal, "append", _JOURNAL_APPEND)  # room again
    assert metadata(home, session_id)["status"] == "completed"
    assert transcript(home, session_id) == stored
    listed = cli_json("session", "list")
    assert [row["status"] for row in listed] == ["completed"]


async def test_resume_that_cannot_be_stored_keeps_the_sessions_status(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rt.resume` on a full disk raises; the stored session keeps its status and error."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        with pytest.raises(amplifier.TurnFailed):
            await session.ask("/fail on purpose")
        await session.close(status="failed", error="on purpose")
    _refuse_journal_batches_with(monkeypatch, b"session:resume")
    async with amplifier.open_runtime(cwd=project) as rt:
        with pytest.raises(amplifier.WriteFailed, match="the disk is full"):
            async with rt.resume(session.id):
                pass
    stored = metadata(home, session.id)
    assert (stored["status"], stored["error"]) == ("failed", "on purpose")


def test_resume_from_another_directory_runs_tools_in_the_sessions_own(
    home: Path, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed from elsewhere, a session's tools still see its own project, and stderr
    says where they run."""
    (project / "only-in-the-project.txt").write_text("x")
    session_id = new_session("first")
    other = tmp_path / "other"
    other.mkdir()
    (other / "only-in-the-other.txt").write_text("x")
    monkeypatch.chdir(other)
    result = cli("session", "resume", session_id, '/tool list_dir {"path": "."}')
    tool = next(m for m in transcript(home, session_id) if m["role"] == "tool")
    assert "only-in-the-project.txt" in tool["content"]
    assert "only-in-the-other.txt" not in tool["content"]
    (note,) = [line for line in result.stderr.splitlines() if str(project) in line]
    assert "tools run there" in note


# -- session delete --------------------------------------------------------------------


def test_delete_with_yes_removes_the_session_and_its_children(home: Path) -> None:
    """delete --yes removes the session and every sub-session, and says so."""
    parent = new_session("/delegate explorer: x\n/delegate reviewer: y")
    children = metadata(home, parent)["children"]
    document = cli_json("session", "delete", parent, "--yes")
    assert set(document["deleted"]) == {parent, *children}
    assert session_dirs(home) == {}


def _damage(home: Path, *session_ids: str) -> None:
    for session_id in session_ids:
        (session_dirs(home)[session_id] / "metadata.json").write_text("{not json")


def test_delete_of_a_damaged_root_takes_its_children_along(home: Path) -> None:
    """A root whose metadata is damaged still goes with its sub-sessions, found by their ids."""
    parent = new_session("/delegate explorer: x\n/delegate reviewer: y")
    children = metadata(home, parent)["children"]
    _damage(home, parent)
    document = cli_json("session", "delete", parent, "--yes")
    assert set(document["deleted"]) == {parent, *children}
    assert session_dirs(home) == {}


def test_delete_reaches_grandchildren_under_damaged_sessions(home: Path) -> None:
    """Damaged metadata at two levels: every descendant is still found and deleted."""
    parent = new_session("/delegate default: /delegate explorer: deep")
    (child,) = metadata(home, parent)["children"]
    (grandchild,) = metadata(home, child)["children"]
    _damage(home, parent, child)
    document = cli_json("session", "delete", parent, "--yes")
    assert set(document["deleted"]) == {parent, child, grandchild}
    assert session_dirs(home) == {}


def test_list_tree_shows_the_children_of_a_damaged_root(home: Path) -> None:
    """list --tree shows a damaged root's sub-sessions under it."""
    parent = new_session("/delegate explorer: x")
    (child,) = metadata(home, parent)["children"]
    _damage(home, parent)
    rows = cli_json("session", "list", "--tree")
    assert [(row["session_id"], row["depth"]) for row in rows] == [(parent, 0), (child, 1)]


def test_delete_without_confirmation_deletes_nothing(home: Path) -> None:
    """Off a terminal, delete needs --yes; nothing is removed without it."""
    session_id = new_session()
    result = cli("session", "delete", session_id, code=2)
    assert "pass --yes" in result.stderr
    assert session_id in session_dirs(home)


# -- session cleanup -------------------------------------------------------------------


def _aged_session(days: float, prompt: str) -> str:
    """A session created (and last updated) ``days`` ago, with a sub-session."""
    moment = datetime.now(UTC) - timedelta(days=days)

    async def make() -> str:
        async with amplifier.open_runtime(clock=lambda: moment) as rt, rt.open_session() as s:
            await s.ask(f"/delegate explorer: {prompt}")
            return s.id

    return anyio.run(make)


def test_cleanup_removes_old_sessions_with_their_children(home: Path) -> None:
    """Sessions older than --days go, each with its sub-sessions; recent ones stay."""
    old = _aged_session(40, "old")
    middle = _aged_session(10, "middle")
    recent = new_session("recent")
    old_child = metadata(home, old)["children"][0]
    document = cli_json("session", "cleanup")
    assert set(document["deleted"]) == {old, old_child}
    assert set(session_dirs(home)) >= {middle, recent}
    assert old not in session_dirs(home)
    document = cli_json("session", "cleanup", "--days", "7")
    assert middle in document["deleted"]
    assert recent in session_dirs(home)


def test_cleanup_dry_run_deletes_nothing(home: Path) -> None:
    """--dry-run lists what would go and leaves every file in place."""
    old = _aged_session(90, "old")
    before = set(session_dirs(home))
    result = cli("session", "cleanup", "--dry-run")
    assert f"Would delete {old}" in result.stdout
    assert set(session_dirs(home)) == before


def test_cleanup_is_per_project_unless_all(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cleanup touches this project's sessions; --all every project's."""
    here = _aged_session(40, "here")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert cli_json("session", "cleanup")["deleted"] == []
    assert here in cli_json("session", "cleanup", "--all")["deleted"]


# -- conventions -----------------------------------------------------------------------


def test_every_command_accepts_json() -> None:
    """--json is accepted by each command and its output parses."""
    session_id = new_session()
    for args in (
        ["session", "list"],
        ["session", "show", session_id],
        ["session", "resume", session_id, "again"],
        ["session", "cleanup", "--dry-run"],
        ["continue", "more"],
        ["session", "delete", session_id, "--yes"],
    ):
        cli_json(*args)


def test_json_error_is_a_document_too() -> None:
    """With --json an error is still one JSON document on stdout (and one line on stderr)."""
    result = cli("session", "show", "../x", "--json", code=2)
    assert json.loads(result.stdout)["exit_code"] == 2
    assert result.stderr.startswith("Error: invalid session id")


def test_plain_output_has_no_escape_codes() -> None:
    """With NO_COLOR (or off a terminal) tables and text carry no ANSI codes."""
    new_session()
    assert "\x1b" not in cli("session", "list").stdout


def test_version_prints_the_installed_version() -> None:
    """`amplifier --version` prints the program's name and installed version, exit 0."""
    from importlib.metadata import version

    assert cli("--version").stdout == f"amplifier {version('amplifier')}\n"


def test_help_offers_shell_completion() -> None:
    """typer's standard --install-completion option is there."""
    assert "--install-completion" in cli("--help").stdout


def test_events_of_a_cli_run_record_provider_and_usage(home: Path) -> None:
    """A CLI run leaves the same event log as the API: provider calls with usage."""
    session_id = new_session()
    response = next(e for e in events(home, session_id) if e["event"] == "provider:response")
    assert response["data"]["provider"] == "offline"
    assert response["data"]["usage"]["output_tokens"] > 0


# -- one command built, not every one ---------------------------------------------------


def _command_paths() -> list[list[str]]:
    """Every command and subcommand, as a user types its name."""
    import typer.main

    whole = typer.main.get_command(app)
    paths: list[list[str]] = []
    for name, command in whole.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        paths.extend([name, sub] for sub in getattr(command, "commands", {}))
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_a_command_built_alone_helps_and_refuses_as_in_the_whole_app(path: list[str]) -> None:
    """A command line that names its command builds only that one (start-up time), and says
    exactly what the whole app says: its help, and its error for a flag it does not have."""
    from amplifier.cli._app import app_for

    alone = app_for([*path, "--help"])
    assert alone is not app
    for args in ([*path, "--help"], [*path, "--no-such-flag"], ["--debug", *path, "--help"]):
        whole, lean = runner.invoke(app, args), runner.invoke(alone, args)
        assert (lean.exit_code, lean.stdout, lean.stderr) == (
            whole.exit_code,
            whole.stdout,
            whole.stderr,
        ), args


def test_only_the_named_command_is_built_and_anything_else_gets_the_whole_app() -> None:
    import typer.main

    from amplifier.cli._app import app_for

    assert set(typer.main.get_command(app_for(["run", "hi"])).commands) == {"run"}  # type: ignore[attr-defined]
    session = typer.main.get_command(app_for(["session", "list"])).commands["session"]  # type: ignore[attr-defined]
    assert set(session.commands) == {"list"}
    for args in ([], ["--profile", "work", "run", "hi"], ["sesion"], ["--help"]):
        assert app_for(args) is app, args
    result = runner.invoke(app_for(["session", "lst"]), ["session", "lst"])
    assert result.exit_code == 2
    assert "Did you mean 'list'?" in result.stderr


@pytest.mark.parametrize("days", ["1000000", "1e10", "inf"])
def test_cleanup_further_back_than_any_date_deletes_nothing(home: Path, days: str) -> None:
    """`cleanup --days` past the earliest date a clock can tell: nothing is that old."""
    kept = new_session("hello")
    said = cli("session", "cleanup", "--days", days).stderr
    assert "No session of this project is older than" in said
    assert kept in session_dirs(home)


def test_search_takes_a_limit_larger_than_the_index_can_count(home: Path) -> None:
    """`search --limit` beyond a 64-bit integer is no limit at all, not an internal error."""
    found = new_session("walrus")
    out = cli("session", "search", "walrus", "--limit", str(1 << 64)).stdout
    assert found in out


@pytest.mark.filterwarnings("default::amplifier.AgentWarning")  # shown, as the CLI shows it
def test_a_run_that_stores_nothing_offers_no_session_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A home that cannot be written (a file stands there): `run` fails in one error line and
    names no session, since none was stored to resume."""
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("AMPLIFIER_HOME", str(not_a_folder))
    result = cli("run", "hi", code=1)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert errors[0].startswith("Error: the turn could not be stored")
    assert "Resume with" not in result.stderr + result.stdout
    assert "Session:" not in result.stderr + result.stdout


NOT_UTF8 = "caf\udce9"
"""An argument holding the byte 0xE9 of a Latin-1 terminal, as Python decodes it."""


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("session", "show", NOT_UTF8), "invalid session id"),
        (("run", "--resume", NOT_UTF8, "hi"), "invalid session id"),
        (("run", "--name", NOT_UTF8, "hi"), "a session name holds text that UTF-8 cannot hold"),
        (("session", "search", NOT_UTF8), "holds text that UTF-8 cannot hold"),
    ],
)
def test_arguments_that_are_not_utf8_are_usage_errors(
    home: Path, args: tuple[str, ...], said: str
) -> None:
    """Bytes a UTF-8 store cannot hold, given as an id, a name or a query: one line, exit 2."""
    kept = new_session("hello")
    result = cli(*args, code=2)
    assert said in result.stderr
    assert list(session_dirs(home)) == [kept]


def test_a_project_directory_that_is_not_utf8_is_a_usage_error(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`amplifier run` from a folder whose name is Latin-1: one line naming it, exit 2,
    nothing stored."""
    latin = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(latin)
    monkeypatch.chdir(latin)
    result = cli("run", "hi", code=2)
    assert "is not a UTF-8 path" in result.stderr
    assert "caf\\xe9" in result.stderr
    assert not session_dirs(home)


def test_a_name_with_a_joined_emoji_finds_its_session(home: Path) -> None:
    """A name holding a character that is text but not "printable" to Python (the joiner
    of an emoji sequence) still finds its session."""
    session = new_session("hello")
    name = "\U0001f469\u200d\U0001f4bb fix"
    cli("session", "rename", session, name)
    assert session in cli("session", "show", name).stdout
