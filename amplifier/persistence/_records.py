"""The records stored on disk, and how they are read back.

One line of ``events.jsonl``::

    {"version":1,"seq":42,"ts":"2026-11-24T10:30:00.123456Z","session_id":"...",
     "parent_id":null,"event":"tool:pre","data":{...}}

One line of ``transcript.jsonl`` is one message: the same ``version``/``seq``/
``ts`` stamp followed by the message's own fields (``role`` and whatever else
the agent layer keeps: ``content``, tool calls, ...). The store does not
interpret messages beyond their ``role``.

Rule 1: readers accept every schema version up to ``SCHEMA_VERSION``; fields a
        newer writer added are kept (``extra="allow"``), never a reason to fail.
Rule 2: the Amplifier CLI shares ``~/.amplifier`` and writes the same three
        files without our stamp: its transcript and event lines have no
        ``seq`` (``seq`` is then None, and the line keeps its place in the
        file), and its ``metadata.json`` has no ``version`` (``from_cli``
        maps it). Every metadata document we write also carries the keys that
        tool reads (``SessionMetadata.cli_keys``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_serializer,
    model_validator,
)

from amplifier._exports import describe

from ._documents import cli_parent, when

SCHEMA_VERSION = 1

LAST_PROMPT_CHARS = 2_000
"""Characters of ``last_prompt`` a metadata document keeps (the transcript keeps it whole):
every version of the document, in the journal and on disk, carries it."""

Count = Annotated[int, Field(ge=0, lt=1 << 63)]
"""A count or a ``seq`` in a metadata document: what a 64-bit integer holds, as JSON
writers do. A document holding more is damaged, not a number to write back."""

Durability = Literal["fsync", "flush", "none"]
describe(
    Durability,
    """How far a record has got when ``append`` returns.

``fsync``: on stable storage (the journal is fsynced); survives power loss.
``flush``: handed to the operating system; survives a crash of the process.
``none``: accepted by the persistence actor; written out in large chunks,
so a crash of the process may lose the latest records. For tests and
benchmarks.
""",
)

SessionStatus = Literal["active", "completed", "cancelled", "failed"]
describe(
    SessionStatus,
    "A session's status in its metadata: ``active`` while it runs (or until a dead "
    "process's session is resumed), then how it ended.",
)
EndStatus = Literal["completed", "cancelled", "failed"]
describe(EndStatus, "How a session ended (``session:end``), and how a turn did.")


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventRecord(BaseModel):
    """One line of ``events.jsonl`` (no ``version`` nor ``seq`` on a line another tool wrote)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    version: int | None = None
    seq: int | None = None
    ts: datetime
    session_id: str
    parent_id: str | None = None
    event: str
    data: dict[str, JsonValue] = {}


class TranscriptRecord(BaseModel):
    """One line of ``transcript.jsonl``: a stamped message.

    A line another tool wrote (the Amplifier CLI) has no stamp: ``version``,
    ``seq`` and ``ts`` are then None, and its place in the file is its order.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    version: int | None = None
    seq: int | None = None
    ts: datetime | None = None
    role: str

    def message(self) -> dict[str, Any]:
        """The message as the agent layer wrote it, without the store's stamp."""
        return self.model_dump(mode="json", exclude={"version", "seq", "ts"})


class SessionMetadata(BaseModel):
    """``metadata.json``: the session's summary, replaced atomically.

    Sent before anything else of the session (identity first), so a session
    stored at all is listed and resumable.
    """

    model_config = ConfigDict(extra="allow")

    version: Count = SCHEMA_VERSION
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
    depth: Count = 0
    children: list[str] = []
    turns: Count = 0
    """Prompts answered or attempted, across resumes."""
    message_count: Count = 0
    """User and assistant messages in the transcript (tool results are not counted)."""
    last_prompt: str | None = None
    attributes: dict[str, str] = {}
    """Descriptive labels set by the layer above (provider, model, ...)."""
    seq: Count = 0
    """The ``seq`` under which this version was written; newer versions have larger ones."""
    error: str | None = None
    name: str | None = None
    """A name the user gave the session (``session rename``, ``run --name``, the Amplifier
    CLI's naming hook); not unique."""
    tags: list[str] = []
    """Labels the user gave the session (``session tag``), lower-case, without spaces."""
    granted: list[str] = []
    """Permission rules granted to this session when asked ("always for this session");
    kept when it resumes."""
    files_changed: Count = 0
    """File changes its tools recorded (``file-history``): ``session diff`` and ``rewind``
    read the event logs of the sessions that have some."""
    cwd_source: str | None = Field(default=None, exclude=True)
    """Where ``cwd`` was taken from when the session did not record it (a fork of the
    Amplifier CLI's has no ``working_dir``), in words; None when it recorded its own.
    Never stored: once written, ``cwd`` is the session's own."""

    @model_validator(mode="before")
    @classmethod
    def _drop_cli_keys(cls, data: Any) -> Any:
        """The CLI's keys are derived from ours on every write; reading them back adds nothing.

        A fork of that tool's names in ``parent_id`` the session it was copied
        from; for us it is a root (``forked_from`` says from what).
        """
        if isinstance(data, dict) and "forked_from_turn" in data and "version" in data:
            data = {**data, "parent_id": None}
        if isinstance(data, dict) and not _CLI_KEYS.isdisjoint(data):
            return {key: value for key, value in data.items() if key not in _CLI_KEYS}
        return data

    @field_serializer("last_prompt")
    def _last_prompt_kept(self, text: str | None) -> str | None:
        if text is None or len(text) <= LAST_PROMPT_CHARS:
            return text
        return text[: LAST_PROMPT_CHARS - 1] + "…"

    def document(self, *, with_seq: bool = False) -> dict[str, Any]:
        """The session's ``metadata.json`` as JSON values, without ``seq`` unless asked (the
        store adds the one it is written under): fields left at their empty default are left
        out, and the Amplifier CLI's keys are added (``cli_keys``). A wrapping serializer
        would cost every dump of the model twice what the dump costs (seven a task with a
        sub-agent)."""
        document: dict[str, Any] = self.model_dump(mode="json")
        if not with_seq:
            del document["seq"]
        if document.get("name", "") is None:
            del document["name"]
        if document.get("granted") == []:
            del document["granted"]
        if document.get("files_changed") == 0:
            del document["files_changed"]
        document.update(self.cli_keys())
        return document

    def cli_keys(self) -> dict[str, Any]:
        """The keys the Amplifier CLI reads, kept current on every write (Rule 2).

        Its own keys are kept with the values it gave them: the ``parent_id``
        of its fork (the session it forked, which its lineage follows), and
        the ``bundle`` it ran; a root session of ours names ``CLI_BUNDLE``,
        the bundle its ``continue`` then loads.
        """
        keys: dict[str, Any] = {"turn_count": self.turns, "working_dir": self.cwd}
        model = self.attributes.get("model")
        if model:
            keys["model"] = model
        if self.parent_id is not None:
            keys["agent_name"] = self.agent
        extra = self.model_extra or {}
        forked_from = extra.get("forked_from")
        if self.parent_id is None and "forked_from_turn" in extra and isinstance(forked_from, str):
            keys["parent_id"] = forked_from
        if "bundle" not in extra and self.parent_id is None:
            keys["bundle"] = CLI_BUNDLE
        return keys

    @classmethod
    def from_cli(
        cls,
        document: dict[str, Any],
        *,
        session_id: str,
        project: str,
        modified: datetime,
        root_id: str,
        depth: int,
        message_count: int,
        last_prompt: str | None,
        cwd: tuple[str, str | None] | None = None,
    ) -> SessionMetadata:
        """Our reading of a ``metadata.json`` the Amplifier CLI wrote (no ``version``).

        Its keys are kept beside ours (so a write of ours leaves them for that
        tool). ``working_dir`` is the project, ``turn_count`` the turns,
        ``agent_name`` the agent (roots run ``default``), ``name`` the name;
        there is no ``updated``: the newest of ``created``, ``last_updated``
        and the file's modification time stands for it. The lineage and the
        transcript's counts come from the caller, which reads the files, and
        so does the project of a session that records no ``working_dir``
        (``cwd``: the directory, and where it was taken from).
        """
        created = when(document.get("created")) or modified
        updated = max(created, when(document.get("last_updated")) or created, modified)
        parent = cli_parent(document)
        agent = document.get("agent_name") if parent else None
        extra: dict[str, Any] = {}
        if parent is None and isinstance(document.get("parent_id"), str):
            extra["forked_from"] = document["parent_id"]
        attributes = {
            key: value
            for key in ("bundle", "model")
            if isinstance(value := document.get(key), str) and value
        }
        turns = document.get("turn_count")
        name = document.get("name")
        directory, source = cwd if cwd is not None else (_text(document.get("working_dir")), None)
        return cls.model_validate(
            {
                **document,
                "version": SCHEMA_VERSION,
                "session_id": session_id,
                "created": created,
                "updated": updated,
                "cwd": directory,
                "project": project,
                "agent": agent if isinstance(agent, str) and agent else "default",
                "profile": None,
                "status": "cancelled" if document.get("status") == "interrupted" else "completed",
                **extra,
                "parent_id": parent,
                "root_id": root_id,
                "depth": depth,
                "children": [],
                "turns": turns if isinstance(turns, int) and 0 <= turns < 1 << 63 else 0,
                "message_count": message_count,
                "last_prompt": last_prompt,
                "attributes": attributes,
                "seq": 0,
                "error": None,
                "name": name if isinstance(name, str) and name else None,
                "cwd_source": source,
            }
        )


_CLI_KEYS = frozenset({"turn_count", "working_dir", "model", "agent_name"})

CLI_BUNDLE = "foundation"
"""The bundle the Amplifier CLI loads to go on with a session of ours (``continue``):
its foundation bundle, which every installation has. Without a ``bundle`` key it
would fall back to its configured default; ``-B NAME`` there picks another."""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
