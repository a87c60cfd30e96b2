"""Security: nothing is read or written through links out of the store; files stay private."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import orjson
import pytest
from typer.testing import CliRunner

import amplifier
from amplifier import ConfigError, CorruptSession
from amplifier.agents import load_profile
from amplifier.agents._redact import _COMMON, Redactor
from amplifier.cli import app
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import session_dirs
from .trusted import trusted

SECRET = b"root:x:0:0:secret outside the store\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A private file outside $AMPLIFIER_HOME that a planted link points at."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


async def _session(project: Path) -> str:
    async with open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("hello")
    return session.id


@pytest.mark.parametrize("name", ["transcript.jsonl", "events.jsonl", "metadata.json"])
async def test_linked_session_file_is_refused_and_its_target_untouched(
    home: Path, project: Path, outside: Path, name: str
) -> None:
    """A session file linked out of the store: resume refuses, nothing is written through it."""
    session_id = await _session(project)
    planted = session_dirs(home)[session_id] / name
    planted.unlink()
    planted.symlink_to(outside)
    async with open_runtime(cwd=project) as rt:
        with pytest.raises(CorruptSession, match=f"{name} is a symbolic link; not followed"):
            await rt.resume(session_id)
        rows = {row.session_id: row.status for row in await rt.sessions()}
    assert rows[session_id] == "damaged"
    assert outside.read_bytes() == SECRET


@pytest.mark.parametrize("durability", ["fsync", "flush", "none"])
async def test_a_session_file_hard_linked_to_anothers_is_never_written_through(
    home: Path, project: Path, durability: amplifier.Durability
) -> None:
    """B's logs hard-linked to A's (a copy of a home made with links): resumed, B gets
    files of its own before it appends, so A's files keep only A's records."""
    async with open_runtime(cwd=project, durability=durability) as rt:
        async with rt.open_session() as first:
            await first.ask("session A")
        async with rt.open_session() as second:
            await second.ask("session B")
    folders = session_dirs(home)
    names = ("events.jsonl", "transcript.jsonl")
    for name in names:
        (folders[second.id] / name).unlink()
        os.link(folders[first.id] / name, folders[second.id] / name)
    before = {name: (folders[first.id] / name).read_bytes() for name in names}
    async with open_runtime(cwd=project, durability=durability) as rt:
        async with await rt.resume(second.id) as resumed:
            await resumed.ask("into B")
    for name in names:
        assert (folders[first.id] / name).read_bytes() == before[name]
        assert (folders[first.id] / name).stat().st_nlink == 1
    async with open_runtime(cwd=project, durability=durability) as rt:
        prompts = [m.content for m in await rt.transcript(second.id) if m.role == "user"]
    assert prompts == ["session A", "into B"]


def test_linked_session_folder_is_not_read_shown_or_deleted(
    home: Path, project: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session folder that is a link elsewhere is neither shown, resumed nor deleted through."""
    session_id = anyio.run(_session, project)
    real = session_dirs(home)[session_id]
    elsewhere = outside.parent / "session"
    real.rename(elsewhere)
    real.symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.chdir(project)
    runner = CliRunner()
    shown = runner.invoke(app, ["session", "show", session_id])
    assert shown.exit_code != 0
    assert "link out of the session store" in shown.stderr
    assert "hello" not in shown.stdout
    deleted = runner.invoke(app, ["session", "delete", session_id, "--yes"])
    assert deleted.exit_code != 0
    assert sorted(p.name for p in elsewhere.iterdir()) == [
        ".lock",
        "events.jsonl",
        "metadata.json",
        "transcript.jsonl",
    ]
    resumed = runner.invoke(app, ["session", "resume", session_id, "again"])
    assert resumed.exit_code != 0
    assert os.path.getsize(elsewhere / "transcript.jsonl") > 0
    assert "again" not in (elsewhere / "transcript.jsonl").read_text()


def test_show_never_prints_a_linked_transcript(
    home: Path, project: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`session show` of a transcript linked to a private file does not print that file."""
    session_id = anyio.run(_session, project)
    planted = session_dirs(home)[session_id] / "transcript.jsonl"
    planted.unlink()
    planted.symlink_to(outside)
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["session", "show", session_id])
    assert b"secret outside the store" not in result.stdout.encode()
    assert result.exit_code == 1


KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


def _all_bytes(home: Path) -> bytes:
    return b"".join(
        p.read_bytes() for folder in session_dirs(home).values() for p in folder.iterdir()
    )


async def test_keys_in_tool_output_never_reach_the_store(home: Path, project: Path) -> None:
    """Reading a .env keeps the key out of the transcript and events; the model sees it redacted."""
    (project / ".env").write_text(f"OPENAI_API_KEY={KEY}\nDEBUG=1\n")
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        reply = await session.ask('/tool read_file {"path": ".env"}')
    assert KEY not in reply.text
    stored = _all_bytes(home)
    assert KEY.encode() not in stored
    assert b"[REDACTED]" in stored
    assert b"DEBUG=1" in stored


async def test_a_key_typed_in_a_prompt_stays_out_of_events_and_metadata(
    home: Path, project: Path
) -> None:
    """A pasted key stays in the conversation itself, not in the event log or metadata."""
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask(f"why does {KEY} fail?")
    folder = session_dirs(home)[session.id]
    assert KEY.encode() not in (folder / "events.jsonl").read_bytes()
    assert KEY.encode() not in (folder / "metadata.json").read_bytes()
    assert KEY.encode() in (folder / "transcript.jsonl").read_bytes()


async def test_a_key_in_a_close_error_or_an_argument_name_stays_out_of_events_and_metadata(
    home: Path, project: Path
) -> None:
    """A key in the error a program closes its session with, or used as the name of a tool
    argument, is redacted in the metadata and the events like any other."""
    async with amplifier.open_runtime(cwd=project) as rt:
        session = await rt.open_session()
        await session.ask(f'/tool echo {{"{KEY}": "v"}}')
        await session.close(status="failed", error=f"auth failed for {KEY}")
    folder = session_dirs(home)[session.id]
    meta = json.loads((folder / "metadata.json").read_bytes())
    assert meta["status"] == "failed"
    assert meta["error"] == "auth failed for [REDACTED]"
    events = (folder / "events.jsonl").read_bytes()
    assert KEY.encode() not in events
    assert b'"[REDACTED]":"v"' in events


# One of each format redaction knows, each beside what makes it look harder (a
# neighbour beyond ASCII, a character JSON escapes) or alone.
KEYS = (
    "sk-ant-AbCdEfGhIjKlMnOpQrStUv",
    "AKIAABCDEFGHIJKLMNOP",
    "ghp_" + "a1B2" * 9,
    "github_pat_" + "x9_Y" * 10,
    "xoxb-1234567890-abc",
    "AIza" + "Q" * 35,
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
)
NEIGHBOURS = ("", "caf\u00e9 ", "tab\t")


async def test_keys_of_every_format_stay_out_of_event_data(home: Path, project: Path) -> None:
    """A key of any known format, anywhere in a tool call's arguments, is redacted in events."""
    values = [f"{near}{key}" for key in KEYS for near in NEIGHBOURS]
    values += ["Bearer abcdefghijklmnopqrstuvwxyz", "API-Key: hunter2hunter2"]
    values += ["password=s3cr3tpass"]
    calls = [
        f"/tool no_such_tool {json.dumps({'nested': {'list': ['plain', value]}})}"
        for value in values
    ]
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("\n".join(calls))
    events = (session_dirs(home)[session.id] / "events.jsonl").read_bytes()
    assert events.count(b'"event":"tool:pre"') == len(values)
    for secret in [*KEYS, "abcdefghijklmnopqrstuvwxyz", "hunter2hunter2", "s3cr3tpass"]:
        assert json.dumps(secret)[1:-1].encode() not in events


def test_a_configured_key_that_json_escapes_stays_out_of_event_data() -> None:
    """A provider key holding a quote or a backslash is still found in events and text."""
    key = 'k3y"with\\odd-chars'
    redactor = Redactor(secrets=[key])
    data = {"result": f"line one\nthe key is {key}", "tool": "read_file"}
    assert redactor.screen(orjson.dumps(data))
    assert key not in redactor(data["result"])
    assert not redactor.screen(orjson.dumps({"result": "line one\nnothing to hide"}))
    mixed = Redactor(secrets=["MiXeD-Case-KEY-0042"])
    assert mixed.screen(orjson.dumps({"result": "the key MiXeD-Case-KEY-0042 here"}))
    assert mixed("the key MiXeD-Case-KEY-0042 here") == "the key [REDACTED] here"
    assert mixed("the key mixed-case-key-0042 here") == "the key mixed-case-key-0042 here"


def test_every_key_format_is_screened_in_its_json_form() -> None:
    """The fixed text each key format holds reads the same inside JSON, so no key slips by."""
    for _, needles in _COMMON:
        for needle in needles:
            assert json.dumps(needle)[1:-1] == needle, needle


async def test_redaction_can_be_turned_off_or_extended(home: Path, project: Path) -> None:
    """A profile may switch redaction off, or add its own patterns."""
    (project / ".amplifier" / "profiles").mkdir(parents=True)
    (project / ".amplifier" / "profiles" / "raw.yaml").write_text("redact: false\n")
    (project / ".amplifier" / "profiles" / "strict.yaml").write_text(
        "redact_patterns: ['INTERNAL-[0-9]{6}']\n"
    )
    trusted(project)
    (project / "notes.txt").write_text(f"ticket INTERNAL-123456 and {KEY}\n")
    prompt = '/tool read_file {"path": "notes.txt"}'
    async with amplifier.open_runtime(cwd=project, profile="raw") as rt, rt.open_session() as raw:
        await raw.ask(prompt)
    async with amplifier.open_runtime(cwd=project, profile="strict") as rt:
        async with rt.open_session() as strict:
            await strict.ask(prompt)
    raw_files = session_dirs(home)[raw.id] / "transcript.jsonl"
    strict_files = session_dirs(home)[strict.id] / "transcript.jsonl"
    assert KEY.encode() in raw_files.read_bytes()
    assert b"INTERNAL-123456" not in strict_files.read_bytes()
    assert KEY.encode() not in strict_files.read_bytes()


def test_invalid_redaction_pattern_is_a_profile_error(tmp_path: Path) -> None:
    """A redaction pattern that is not a regex is reported with its profile file."""
    (tmp_path / ".amplifier" / "profiles").mkdir(parents=True)
    (tmp_path / ".amplifier" / "profiles" / "bad.yaml").write_text("redact_patterns: ['([']\n")
    trusted(tmp_path, tmp_path / "home")
    with pytest.raises(ConfigError, match=r"bad\.yaml: redact_patterns.*not a regular expression"):
        load_profile("bad", home=tmp_path / "home", cwd=tmp_path)
