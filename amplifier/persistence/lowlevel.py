"""The store's machinery, for those who build on it (tests, tools, other runtimes).

Rarely needed: ``amplifier.persistence`` holds what the other layers use,
and ``amplifier`` what programs use. These names may change more freely.
"""

from amplifier._exports import name_as_public as _name_as_public

from ._actor import (
    CommitListener,
    CommittedEvents,
    OpenedSession,
    Stamp,
    receive_group,
    stamped_line,
)
from ._documents import format_ts
from ._exceptions import StoreClosed
from ._file_history import FILE_HISTORY, content_digest
from ._files import NotAFile, atomic_replace, open_to_read
from ._ownership import Owner, holder
from ._paths import MAX_ID_LENGTH, default_home, ensure_private_dir
from ._reader import TranscriptTail, load_transcript_tail
from ._records import SCHEMA_VERSION
from ._recovery import recover_dead_journals
from ._requests import (
    Acks,
    AppendEvent,
    AppendMessage,
    CloseSession,
    CreateSession,
    DeleteSessions,
    Flush,
    KeepFile,
    OpenSession,
    RecordRequest,
    Reindex,
    Request,
    WriteMetadata,
)
from ._store import Committer, EncodedData, encode_data

__all__ = [
    "FILE_HISTORY",
    "MAX_ID_LENGTH",
    "SCHEMA_VERSION",
    "Acks",
    "AppendEvent",
    "AppendMessage",
    "CloseSession",
    "CommitListener",
    "CommittedEvents",
    "Committer",
    "CreateSession",
    "DeleteSessions",
    "EncodedData",
    "Flush",
    "KeepFile",
    "NotAFile",
    "OpenSession",
    "OpenedSession",
    "Owner",
    "RecordRequest",
    "Reindex",
    "Request",
    "Stamp",
    "StoreClosed",
    "TranscriptTail",
    "WriteMetadata",
    "atomic_replace",
    "content_digest",
    "default_home",
    "encode_data",
    "ensure_private_dir",
    "format_ts",
    "holder",
    "load_transcript_tail",
    "open_to_read",
    "receive_group",
    "recover_dead_journals",
    "stamped_line",
]

_name_as_public(globals(), __all__, "amplifier.persistence.lowlevel")
