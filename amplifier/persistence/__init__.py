"""The durable session store: one persistence actor per Runtime, files per session.

Knows nothing of agents: it stores events, messages (dicts with a ``role``)
and metadata, in the layout of DESIGN.md.
"""

from amplifier._exports import name_as_public as _name_as_public

from ._actor import Clock
from ._exceptions import (
    AmbiguousSessionId,
    CorruptSession,
    InvalidSessionId,
    PersistenceError,
    RecoveryWarning,
    SessionLocked,
    SessionNotFound,
    StoreWarning,
    WriteFailed,
)
from ._file_history import read_kept
from ._index import SessionSort
from ._listing import (
    SessionSummary,
    all_projects,
    last_write,
    list_sessions,
    search_sessions,
    summarize,
)
from ._lookup import find_session
from ._paths import (
    SessionLocation,
    directory_names,
    holds_utf8,
    id_spans,
    project_slug,
    project_slugs,
    resolve_home_and_cwd,
    validate_session_id,
)
from ._reader import (
    MessageTail,
    iter_events,
    load_message_tail,
    load_transcript,
    merge_events,
    read_metadata,
)
from ._rebuild import count_from_files, read_or_rebuild_metadata
from ._records import (
    Durability,
    EndStatus,
    EventRecord,
    SessionMetadata,
    SessionStatus,
    TranscriptRecord,
    utc_now,
)
from ._recovery import RecoveryReport
from ._requests import Receipt
from ._search import SearchHit
from ._store import SessionWriter, Store, open_store
from ._tree import existing_children, session_tree

__all__ = [
    "AmbiguousSessionId",
    "Clock",
    "CorruptSession",
    "Durability",
    "EndStatus",
    "EventRecord",
    "InvalidSessionId",
    "MessageTail",
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
    "Store",
    "StoreWarning",
    "TranscriptRecord",
    "WriteFailed",
    "all_projects",
    "count_from_files",
    "directory_names",
    "existing_children",
    "find_session",
    "holds_utf8",
    "id_spans",
    "iter_events",
    "last_write",
    "list_sessions",
    "load_message_tail",
    "load_transcript",
    "merge_events",
    "open_store",
    "project_slug",
    "project_slugs",
    "read_kept",
    "read_metadata",
    "read_or_rebuild_metadata",
    "resolve_home_and_cwd",
    "search_sessions",
    "session_tree",
    "summarize",
    "utc_now",
    "validate_session_id",
]

_name_as_public(globals(), __all__, "amplifier.persistence")
