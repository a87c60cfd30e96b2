"""Sessions as the Amplifier CLI (microsoft/amplifier-app-cli) leaves them on disk.

Written by hand from what that tool's code does, for tests of ours that read,
list, resume and delete its sessions:

- ids: a root is a UUID4; a sub-session is ``{parent-span}-{16 hex}_{agent}``,
  where a first-level child's parent span is sixteen zeros and the agent
  ``foundation:explorer`` becomes ``foundation-explorer``;
- ``transcript.jsonl``: one message a line, ``json.dumps`` with its default
  separators, no ``seq``/``version``/``ts`` but a ``timestamp``; content is a
  string or a list of blocks; a tool call is ``{id, tool, arguments}``; the
  whole file is rewritten on each save, the previous one kept as
  ``transcript.jsonl.backup``;
- ``metadata.json``: ``json.dumps(indent=2)``, no final newline, no
  ``version`` and no ``updated``; the previous one kept as a ``.backup``;
- ``events.jsonl``: appended by their logging hook, ``{ts, lvl, schema,
  event, session_id, ..., data}``.

``CliSession.rewrite`` does what their save does to a transcript of ours:
every line re-serialised from the parsed dicts (our keys kept), new lines
appended without ``seq``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ZERO_SPAN = "0" * 16
SCHEMA = {"name": "amplifier.log", "ver": "1.0.0"}


def cli_slug(directory: Path) -> str:
    """Their project folder name: the resolved path, separators to ``-``, ``:`` dropped."""
    slug = str(directory.resolve()).replace("/", "-").replace("\\", "-").replace(":", "")
    return slug if slug.startswith("-") else "-" + slug


def root_id() -> str:
    return str(uuid.uuid4())


def child_id(parent_id: str, agent: str) -> str:
    """A sub-session id as their spawner makes it."""
    match = re.match(r"^([0-9a-f]{16})-([0-9a-f]{16})_", parent_id)
    parent_span = match.group(2) if match else ZERO_SPAN
    name = re.sub(r"[^a-z0-9]+", "-", agent.lower()).strip("-") or "agent"
    return f"{parent_span}-{uuid.uuid4().hex[:16]}_{name}"


def iso(moment: datetime) -> str:
    """Their timestamps: UTC, ``+00:00``, milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _dumps_line(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    """A final answer as their orchestrator stores it: a list of content blocks."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def tool_call_turn(text: str, call_id: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An assistant message that calls a tool: blocks, plus ``tool_calls`` with ``tool``."""
    return {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Let me look.", "signature": "c2ln"},
            {"type": "text", "text": text},
            {"type": "tool_call", "id": call_id, "name": tool, "input": arguments},
        ],
        "tool_calls": [{"id": call_id, "tool": tool, "arguments": arguments}],
    }


def tool_result(call_id: str, content: Any) -> dict[str, Any]:
    """A tool's result: no ``name``; the content as the tool returned it."""
    return {"role": "tool", "tool_call_id": call_id, "content": content}


@dataclass
class CliSession:
    """One session folder in their layout; ``save`` writes it as their store does."""

    home: Path
    cwd: Path
    session_id: str
    metadata: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    clock: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(hours=1))

    @property
    def directory(self) -> Path:
        return self.home / "projects" / cli_slug(self.cwd) / "sessions" / self.session_id

    @property
    def transcript(self) -> Path:
        return self.directory / "transcript.jsonl"

    @property
    def metadata_file(self) -> Path:
        return self.directory / "metadata.json"

    @property
    def events_file(self) -> Path:
        return self.directory / "events.jsonl"

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return iso(self.clock)

    def add(self, *messages: dict[str, Any]) -> None:
        for message in messages:
            self.messages.append({**message, "timestamp": self.tick()})

    def save(self) -> None:
        """Rewrite transcript and metadata whole, the previous versions kept as ``.backup``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            _dumps_line(m) for m in self.messages if m.get("role") not in ("system", "developer")
        ]
        _write_with_backup(self.transcript, "\n".join(lines) + "\n" if lines else "")
        self.metadata["turn_count"] = sum(m.get("role") == "user" for m in self.messages)
        metadata = json.dumps(self.metadata, indent=2, ensure_ascii=False)
        _write_with_backup(self.metadata_file, metadata)
        self._written()

    def _written(self) -> None:
        """Files and folder timed as if written at the session's clock (it may lie in the past)."""
        moment = self.clock.timestamp()
        for path in [*self.directory.iterdir(), self.directory]:
            os.utime(path, (moment, moment))

    def log(self, event: str, data: dict[str, Any] | None = None, **top: Any) -> None:
        """One line of their logging hook (``parent_id`` rides in ``data``)."""
        record: dict[str, Any] = {
            "ts": self.tick(),
            "lvl": "ERROR" if "error" in event or top.get("error") else "INFO",
            "schema": SCHEMA,
            "event": event,
            "session_id": self.session_id,
            **top,
        }
        payload = {"parent_id": self.metadata.get("parent_id"), **(data or {})}
        record["data"] = payload
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.events_file.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._written()

    def rewrite(self, *appended: dict[str, Any]) -> None:
        """Their save over an existing transcript: load every line, add, write all back.

        Lines are kept as parsed dicts (so our ``seq``/``version``/``ts`` stay),
        a ``timestamp`` is added where missing, and the appended messages come
        last without any ``seq``.
        """
        loaded = [json.loads(line) for line in self.transcript.read_text().splitlines() if line]
        for message in loaded:
            message.setdefault("timestamp", self.tick())
        self.messages = loaded
        self.add(*appended)
        lines = [_dumps_line(m) for m in self.messages]
        _write_with_backup(self.transcript, "\n".join(lines) + "\n")
        if self.metadata_file.exists():
            existing = json.loads(self.metadata_file.read_text())
            existing["turn_count"] = sum(m.get("role") == "user" for m in self.messages)
            existing.setdefault("bundle", "bundle:foundation")
            _write_with_backup(self.metadata_file, json.dumps(existing, indent=2))


def _write_with_backup(path: Path, content: str) -> None:
    """The previous file kept as ``<name>.backup``, the new one renamed into place."""
    if path.exists():
        path.with_name(path.name + ".backup").write_bytes(path.read_bytes())
    temp = path.with_name(f"{path.stem}_{uuid.uuid4().hex[:8]}.tmp")
    temp.write_text(content, encoding="utf-8")
    temp.replace(path)


def root_session(
    home: Path, cwd: Path, *, name: str | None = None, days_ago: float = 0
) -> CliSession:
    session_id = root_id()
    clock = datetime.now(UTC) - timedelta(days=days_ago, hours=1)
    metadata: dict[str, Any] = {
        "session_id": session_id,
        "created": clock.isoformat(),
        "bundle": "bundle:foundation",
        "model": "claude-sonnet-4-5",
        "turn_count": 0,
        "incremental": True,
        "working_dir": str(cwd.resolve()),
    }
    if name is not None:
        metadata["name"] = name
        metadata["description"] = f"{name}, as the naming hook put it"
    return CliSession(home, cwd, session_id, metadata, clock=clock)


def sub_session(parent: CliSession, agent: str) -> CliSession:
    session_id = child_id(parent.session_id, agent)
    clock = parent.clock + timedelta(seconds=1)
    metadata: dict[str, Any] = {
        "session_id": session_id,
        "parent_id": parent.session_id,
        "trace_id": parent.session_id,
        "agent_name": agent,
        "child_span": session_id.rsplit("_", 1)[0].rsplit("-", 1)[-1],
        "created": clock.isoformat(),
        "config": {
            "session": {"orchestrator": "loop-basic", "context": "context-simple"},
            "providers": [{"module": "provider-anthropic", "config": {"api_key": "[REDACTED]"}}],
        },
        "agent_overlay": {"description": "Explores code", "instruction": "You explore."},
        "turn_count": 1,
        "bundle_context": None,
        "self_delegation_depth": 0,
        "working_dir": str(parent.cwd.resolve()),
    }
    return CliSession(parent.home, parent.cwd, session_id, metadata, clock=clock)


@dataclass
class Conversation:
    """A root of theirs with one tool call and one delegation, and its sub-session."""

    root: CliSession
    child: CliSession

    def folders(self) -> list[Path]:
        return [self.root.directory, self.child.directory]

    def snapshot(self) -> dict[Path, bytes]:
        """Every file of both folders, by path: to check nothing of theirs changed."""
        return {
            path: path.read_bytes()
            for folder in self.folders()
            for path in sorted(folder.iterdir())
            if path.is_file() and path.name != ".lock"
        }


def conversation(
    home: Path, cwd: Path, *, name: str = "auth fix", days_ago: float = 0
) -> Conversation:
    """Two turns of theirs: one reads a file, one hands work to ``foundation:explorer``.

    It happened an hour ago (``days_ago`` more), by its metadata and its files' times.
    """
    root = root_session(home, cwd, name=name, days_ago=days_ago)
    root.log("session:start", {"bundle": "foundation"})
    root.add(user("What does main.py do?"))
    root.log("prompt:submit", {"prompt": "What does main.py do?"})
    root.log("llm:request", {"provider": "anthropic", "iteration": 0})
    root.add(tool_call_turn("I will read it.", "toolu_01", "read_file", {"file_path": "main.py"}))
    root.log("tool:pre", {"tool_name": "read_file", "tool_input": {"file_path": "main.py"}})
    root.add(tool_result("toolu_01", {"file_path": "main.py", "content": "print('hi')"}))
    root.log("tool:post", {"tool_name": "read_file", "result": {"success": True}})
    root.add(assistant("It prints hi."))
    root.log("llm:response", {"provider": "anthropic", "usage": {"input_tokens": 10}})
    root.log("prompt:complete", {"response_preview": "It prints hi.", "length": 13})
    root.save()  # the first save: the next one leaves this one as the .backup

    child = sub_session(root, "foundation:explorer")
    root.add(user("Explore the tests."))
    root.log("prompt:submit", {"prompt": "Explore the tests."})
    root.add(
        tool_call_turn(
            "Delegating.",
            "toolu_02",
            "delegate",
            {"agent": "foundation:explorer", "instruction": "Look at tests/"},
        )
    )
    root.log(
        "delegate:agent_spawned",
        {
            "agent": "foundation:explorer",
            "sub_session_id": child.session_id,
            "parent_session_id": root.session_id,
            "context_depth": "none",
        },
    )
    child.log("session:fork", {"parent": root.session_id})
    child.add(user("Look at tests/"), assistant("There are two test files."))
    child.log("prompt:complete", {"response_preview": "There are two test files.", "length": 25})
    child.save()
    child.add(user("And their size?"), assistant("Small."))
    child.save()
    root.log(
        "delegate:agent_completed",
        {
            "agent": "foundation:explorer",
            "sub_session_id": child.session_id,
            "parent_session_id": root.session_id,
            "success": True,
        },
    )
    root.add(
        tool_result(
            "toolu_02",
            json.dumps({"response": "There are two test files.", "session_id": child.session_id}),
        ),
        assistant("The explorer found two test files."),
    )
    root.log(
        "orchestrator:complete",
        {"orchestrator": "loop-basic", "turn_count": 2, "status": "success"},
    )
    root.save()
    return Conversation(root, child)


def fork(parent: CliSession, at_turn: int) -> CliSession:
    """Their `session fork PARENT --at-turn N`: the first N turns in a new root beside it.

    As their fork writes it: the metadata names the parent in ``parent_id``
    with ``forked_from_turn``, and records no ``working_dir``.
    """
    session_id = root_id()
    clock = parent.clock + timedelta(minutes=5)
    cut = [i for i, m in enumerate(parent.messages) if m.get("role") == "user"]
    messages = parent.messages[: cut[at_turn] if at_turn < len(cut) else len(parent.messages)]
    moment = iso(clock)
    metadata: dict[str, Any] = {
        "session_id": session_id,
        "parent_id": parent.session_id,
        "forked_from_turn": at_turn,
        "forked_at": moment,
        "created": moment,
        "turn_count": at_turn,
        "bundle": parent.metadata.get("bundle"),
        "model": parent.metadata.get("model"),
    }
    forked = CliSession(parent.home, parent.cwd, session_id, metadata, clock=clock)
    forked.messages = [dict(m) for m in messages]
    forked.directory.mkdir(parents=True, exist_ok=True)
    lines = [_dumps_line(m) for m in forked.messages]
    forked.transcript.write_text("\n".join(lines) + "\n", encoding="utf-8")
    forked.metadata_file.write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    forked._written()
    return forked
