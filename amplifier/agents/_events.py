"""The agent loop's typed events: permissions asked and decided, file changes, rewinds."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from amplifier.runtime import DecidedBy, Event


class FileChange(BaseModel):
    """One file a tool changed: where, and the content hashes before and after.

    ``before`` names the content kept in the session's ``file-history``
    (None: the file did not exist); ``after`` is the SHA-256 of what the
    tool wrote (None: the file was removed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    """Relative to the session's project directory."""
    before: str | None
    after: str | None


class ApprovalRequested(Event):
    """``approval:request``: a tool call asked whoever opened the session tree."""

    name: ClassVar[str] = "approval:request"

    call_id: str
    tool: str
    rule: str
    shown: str
    """The command, or the diff the edit would make, as whoever was asked saw it."""


class ApprovalDecided(Event):
    """``approval:decision``: whether a tool call may run, and who decided."""

    name: ClassVar[str] = "approval:decision"

    call_id: str
    tool: str
    decision: Literal["allow", "deny"]
    decided_by: DecidedBy
    rule: str
    reason: str | None = None
    granted: str | None = None
    """The rule granted to the session for good ("always for this session")."""


class SessionRewound(Event):
    """``session:rewind``: files the session tree changed were restored."""

    name: ClassVar[str] = "session:rewind"

    since_seq: int
    turn: int | None = None
    files: tuple[FileChange, ...]
    """Each file restored: ``before`` is what it held (kept, so the rewind can be
    rewound), ``after`` what it holds now."""
    forced: tuple[str, ...] = ()
    """Files restored although someone had changed them since (``--force``)."""
