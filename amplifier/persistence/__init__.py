"""The durable session store: one persistence actor per Runtime, files per session.

Knows nothing of agents: it stores events, messages (dicts with a ``role``)
and metadata, in the layout of DESIGN.md.
"""

from ._actor import Clock, CommitListener, OpenedSession, Stamp
from ._exceptions import (
    AmbiguousSessionId,
    CorruptSession,
    InvalidSessionId,
    PersistenceError,
    RecoveryWarning,
    SessionLocked,
    SessionNotFound,
    StoreClosed,
    StoreWarning,
    WriteFailed,
)
from ._ownership import Owner, holder
from ._paths import (
    MAX_ID_LENGTH,
    SessionLocation,
    default_home,
    project_slug,
    resolve_home_and_cwd,
    validate_session_id,
)
from ._reader import (
    MessageTail,
    SessionSummary,
    TranscriptTail,
    all_projects,
    existing_children,
    find_session,
    iter_events,
    list_sessions,
    load_message_tail,
    load_transcript,
    load_transcript_tail,
    merge_events,
    read_metadata,
    session_tree,
    summarize,
)
from ._records import (
    SCHEMA_VERSION,
    Durability,
    EndStatus,
    EventRecord,
    SessionMetadata,
    SessionStatus,
    TranscriptRecord,
    format_ts,
    utc_now,
)
from ._recovery import RecoveryReport, recover_dead_journals
from ._requests import Receipt
from ._store import SessionWriter, Store, open_store

__all__ = [
    "MAX_ID_LENGTH",
    "SCHEMA_VERSION",
    "AmbiguousSessionId",
    "Clock",
    "CommitListener",
    "CorruptSession",
    "Durability",
    "EndStatus",
    "EventRecord",
    "InvalidSessionId",
    "MessageTail",
    "OpenedSession",
    "Owner",
    "PersistenceError",
    "Receipt",
    "RecoveryReport",
    "RecoveryWarning",
    "SessionLocation",
    "SessionLocked",
    "SessionMetadata",
    "SessionNotFound",
    "SessionStatus",
    "SessionSummary",
    "SessionWriter",
    "Stamp",
    "Store",
    "StoreClosed",
    "StoreWarning",
    "TranscriptRecord",
    "TranscriptTail",
    "WriteFailed",
    "all_projects",
    "default_home",
    "existing_children",
    "find_session",
    "format_ts",
    "holder",
    "iter_events",
    "list_sessions",
    "load_message_tail",
    "load_transcript",
    "load_transcript_tail",
    "merge_events",
    "open_store",
    "project_slug",
    "read_metadata",
    "recover_dead_journals",
    "resolve_home_and_cwd",
    "session_tree",
    "summarize",
    "utc_now",
    "validate_session_id",
]
