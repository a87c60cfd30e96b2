"""The records stored on disk, and how they are read back.

One line of ``events.jsonl``::

    {"version":1,"seq":42,"ts":"2026-11-24T10:30:00.123456Z","session_id":"...",
     "parent_id":null,"event":"tool:pre","data":{...}}

One line of ``transcript.jsonl`` is one message: the same ``version``/``seq``/
``ts`` stamp followed by the message's own fields (``role`` and whatever else
the agent layer keeps: ``content``, tool calls, ...). The store does not
interpret messages beyond their ``role``.

Rule: readers accept every schema version up to ``SCHEMA_VERSION``; fields a
newer writer added are kept (``extra="allow"``), never a reason to fail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

SCHEMA_VERSION = 1

Durability = Literal["fsync", "flush", "none"]
"""How far a record has got when ``append`` returns.

``fsync``: on stable storage (the journal is fsynced); survives power loss.
``flush``: handed to the operating system; survives a crash of the process.
``none``: accepted by the persistence actor; written out in large chunks,
so a crash of the process may lose the latest records. For tests and
benchmarks.
"""

SessionStatus = Literal["active", "completed", "cancelled", "failed"]
EndStatus = Literal["completed", "cancelled", "failed"]


def format_ts(moment: datetime) -> str:
    """``2026-11-24T10:30:00.123456Z``: UTC, microseconds, a ``Z`` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventRecord(BaseModel):
    """One line of ``events.jsonl``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    version: int = SCHEMA_VERSION
    seq: int
    ts: datetime
    session_id: str
    parent_id: str | None = None
    event: str
    data: dict[str, JsonValue] = Field(default_factory=dict)


class TranscriptRecord(BaseModel):
    """One line of ``transcript.jsonl``: a stamped message."""

    model_config = ConfigDict(frozen=True, extra="allow")

    version: int = SCHEMA_VERSION
    seq: int
    ts: datetime
    role: str

    def message(self) -> dict[str, Any]:
        """The message as the agent layer wrote it, without the store's stamp."""
        return self.model_dump(mode="json", exclude={"version", "seq", "ts"})


class SessionMetadata(BaseModel):
    """``metadata.json``: the session's summary, replaced atomically.

    Written before the session's first model call (identity first), so a
    session killed at any moment is still listed and resumable.
    """

    model_config = ConfigDict(extra="allow")

    version: int = SCHEMA_VERSION
    session_id: str
    created: datetime
    updated: datetime
    cwd: str
    project: str
    agent: str
    profile: str | None = None
    status: SessionStatus = "active"
    parent_id: str | None = None
    root_id: str
    depth: int = 0
    children: list[str] = Field(default_factory=list)
    turns: int = 0
    """Prompts answered or attempted, across resumes."""
    message_count: int = 0
    """User and assistant messages in the transcript (tool results are not counted)."""
    last_prompt: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    """Descriptive labels set by the layer above (provider, model, ...)."""
    seq: int = 0
    """The ``seq`` under which this version was written; newer versions have larger ones."""
    error: str | None = None
    name: str | None = None
    """A name the user gave the session (``session rename``, ``run --name``); not unique."""
    tags: list[str] = Field(default_factory=list)
    """Labels the user gave the session (``session tag``), lower-case, without spaces."""
