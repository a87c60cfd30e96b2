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
from ._index import SessionSort
from ._ownership import Owner, holder
from ._paths import (
    MAX_ID_LENGTH,
    SessionLocation,
    default_home,
    id_spans,
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
    last_write,
    list_sessions,
    load_message_tail,
    load_transcript,
    load_transcript_tail,
    merge_events,
    read_metadata,
    search_sessions,
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
from ._search import SearchHit
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
    "SearchHit",
    "SessionLocation",
    "SessionLocked",
    "SessionMetadata",
    "SessionNotFound",
    "SessionSort",
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
    "id_spans",
    "iter_events",
    "last_write",
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
    "search_sessions",
    "session_tree",
    "summarize",
    "utc_now",
    "validate_session_id",
]
