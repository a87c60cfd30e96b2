"""Agent sessions on the real providers, against a local server speaking their wire formats.

No test reaches the internet: every provider is pointed at ``FakeLLMServer``
on 127.0.0.1 through a project profile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import amplifier
from amplifier import TurnFailed

from .fake_llm_server import (
    ANTHROPIC_PATH,
    OPENAI_PATH,
    FakeLLMServer,
    Garbage,
    Kind,
    Stall,
    Status,
    Text,
    ToolUse,
)
from .helpers import events, first, metadata, session_dirs, transcript
from .trusted import trusted

SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"


@pytest.fixture
def project(
    tmp_path: Path, server: FakeLLMServer, kind: Kind, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A project whose 'live' profile points the provider at the local server, key from the env."""
    root = tmp_path / "project"
    (root / ".amplifier" / "profiles").mkdir(parents=True)
    (root / "notes.txt").write_text("the answer is 42\n")
    url = server.openai_base_url if kind == "openai" else server.anthropic_base_url
    (root / ".amplifier" / "profiles" / "live.yaml").write_text(
        f"provider: {{kind: {kind}, model: test-model, base_url: '{url}', "
        f"timeout: 1.0, max_retries: 1}}\n"
    )
    monkeypatch.setenv("OPENAI_API_KEY" if kind == "openai" else "ANTHROPIC_API_KEY", SECRET)
    return trusted(root)


def _path(kind: Kind) -> str:
    return OPENAI_PATH if kind == "openai" else ANTHROPIC_PATH


async def test_real_provider_drives_a_tool_call_and_answers(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """The model asks for read_file, gets the file, answers; all of it is stored and evented."""
    server.plan(
        ToolUse(name="read_file", arguments={"path": "notes.txt"}),
        Text(pieces=("It says ", "42.")),
    )
    async with amplifier.open_runtime(cwd=project, profile="live") as rt:
        async with rt.open_session() as session:
            reply = await session.ask("What do the notes say?")
    assert reply.text == "It says 42."
    roles = [m["role"] for m in transcript(home, session.id)]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert "the answer is 42" in transcript(home, session.id)[2]["content"]
    second = server.requests[1].body
    assert "the answer is 42" in str(second)  # the tool result went back to the model
    response = first(events(home, session.id), "provider:response")["data"]
    assert (response["provider"], response["model"]) == (kind, "test-model")
    assert response["usage"]["input_tokens"] > 0
    assert metadata(home, session.id)["attributes"] == {"provider": kind, "model": "test-model"}
    assert all(request.path == _path(kind) for request in server.requests)


async def test_server_error_then_success_is_retried_within_the_turn(
    home: Path, project: Path, server: FakeLLMServer
) -> None:
    """A 500 followed by a good answer costs one retry, not the turn."""
    server.plan(Status(500, "overloaded"), Text(pieces=("fine",)))
    async with amplifier.open_runtime(cwd=project, profile="live") as rt, rt.open_session() as s:
        assert (await s.ask("hello")).text == "fine"
    assert len(server.requests) == 2


async def test_timeout_fails_the_turn_clearly_and_the_session_resumes(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """A provider that never answers fails the turn with 'no answer within'; resuming works."""
    server.plan(Stall(5.0), Stall(5.0), Text(pieces=("back",)))
    async with amplifier.open_runtime(cwd=project, profile="live") as rt, rt.open_session() as s:
        with pytest.raises(TurnFailed, match=f"{kind}: no answer within 1s"):
            await s.ask("hello?")
    async with amplifier.open_runtime(cwd=project, profile="live") as rt, rt.resume(s.id) as again:
        assert (await again.ask("try again")).text == "back"
    assert first(events(home, s.id), "provider:error")["data"]["error"].startswith(
        f"{kind}: no answer"
    )


async def test_malformed_body_fails_the_turn_clearly_and_the_session_resumes(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """A body that is not the wire format is named as such; the session stays usable."""
    server.plan(Garbage(b"<html>gateway error</html>"), Text(pieces=("ok now",)))
    async with amplifier.open_runtime(cwd=project, profile="live") as rt, rt.open_session() as s:
        with pytest.raises(TurnFailed, match="not an event stream"):
            await s.ask("hello")
    async with amplifier.open_runtime(cwd=project, profile="live") as rt, rt.resume(s.id) as again:
        assert (await again.ask("again")).text == "ok now"
    statuses = [e["data"]["status"] for e in events(home, s.id) if e["event"] == "prompt:complete"]
    assert statuses == ["failed", "completed"]


async def test_api_key_never_reaches_any_session_file(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """After runs with a key (from the env, and from a profile), no session file contains it."""
    profile_secret = SECRET.replace("0123", "9876")
    url = server.openai_base_url if kind == "openai" else server.anthropic_base_url
    (project / ".amplifier" / "profiles" / "keyed.yaml").write_text(
        f"provider: {{kind: {kind}, base_url: '{url}', api_key: '{profile_secret}', timeout: 1.0, "
        "max_retries: 0}\n"
    )
    trusted(project)
    server.plan(
        ToolUse(name="delegate", arguments={"agent": "explorer", "instruction": "read notes.txt"}),
        ToolUse(name="read_file", arguments={"path": "notes.txt"}),
        Text(pieces=("child done",)),
        Text(pieces=("parent done",)),
        Status(401, f"Incorrect API key provided: {profile_secret}"),
    )
    async with amplifier.open_runtime(cwd=project, profile="live") as rt, rt.open_session() as s:
        assert (await s.ask("go")).text == "parent done"
    async with amplifier.open_runtime(cwd=project, profile="keyed") as rt, rt.open_session() as k:
        with pytest.raises(TurnFailed, match="HTTP 401") as caught:
            await k.ask("go")
    assert profile_secret not in str(caught.value)
    headers = [dict(request.headers) for request in server.requests]
    assert any(SECRET in str(h) for h in headers)  # the key was really sent
    files = [p for folder in session_dirs(home).values() for p in folder.iterdir()]
    assert len(session_dirs(home)) == 3  # parent, child, and the keyed session
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, path
        assert profile_secret.encode() not in data, path


async def test_key_of_a_resumed_sessions_own_profile_never_reaches_its_files(
    home: Path, project: Path, server: FakeLLMServer, kind: Kind
) -> None:
    """A session resumed under its own profile, in a runtime of another: that profile's key,
    even one no common key format matches, is scrubbed from the tool output it stores."""
    own_key = "Zq7-plain-words-no-known-format-5150"
    url = server.openai_base_url if kind == "openai" else server.anthropic_base_url
    (project / ".amplifier" / "profiles" / "own.yaml").write_text(
        f"provider: {{kind: {kind}, base_url: '{url}', api_key: '{own_key}', timeout: 1.0, "
        "max_retries: 0}\n"
    )
    trusted(project)
    (project / "deploy.txt").write_text(f"the deploy token is {own_key}\n")
    server.plan(
        Text(pieces=("hello",)),
        ToolUse(name="read_file", arguments={"path": "deploy.txt"}),
        Text(pieces=("read it",)),
    )
    async with amplifier.open_runtime(cwd=project, profile="own") as rt, rt.open_session() as s:
        assert (await s.ask("hi")).text == "hello"
    async with amplifier.open_runtime(cwd=project, profile="live") as rt, rt.resume(s.id) as again:
        assert (await again.ask("read deploy.txt")).text == "read it"
    stored = b"".join(path.read_bytes() for path in session_dirs(home)[s.id].iterdir())
    assert b"the deploy token is" in stored  # the tool's output is on record ...
    assert own_key.encode() not in stored  # ... without the key
