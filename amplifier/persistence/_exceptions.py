"""Errors raised by the on-disk session store.

Each one pickles with its fields (``__reduce__``): the Ray backend's
persistence actor answers other processes with them.

AmplifierError
└── PersistenceError            the store could not do what was asked
    ├── SessionLocked           another process or runtime owns the session
    ├── SessionNotFound         no session with that id (or prefix)
    ├── AmbiguousSessionId      a prefix matches several sessions
    ├── CorruptSession          a session's files cannot be made sense of
    ├── WriteFailed             the disk refused a write; nothing was acknowledged
    └── StoreClosed             the persistence actor has stopped
UsageError
└── InvalidSessionId            a typed id is malformed or tries to leave the store
UserWarning
├── RecoveryWarning             damage was found and set aside; the rest was kept
└── StoreWarning                a write must wait (a full disk); nothing acknowledged is lost
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

from amplifier._errors import AmplifierError, UsageError


class PersistenceError(AmplifierError):
    """The session store could not carry out a request."""


class SessionLocked(PersistenceError):
    """The session is owned by another process (or another runtime in this one)."""

    def __init__(self, session_id: str, holder: str) -> None:
        self.session_id = session_id
        self.holder = holder
        super().__init__(f"session {session_id} is in use by {holder}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.session_id, self.holder)


class SessionNotFound(PersistenceError):
    """No stored session has this id, or starts with this prefix."""

    def __init__(self, session_id: str, *, hint: str | None = None) -> None:
        self.session_id = session_id
        self.hint = hint
        message = f"Session not found: {session_id}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (type(self), (self.session_id,), {"hint": self.hint})


class AmbiguousSessionId(PersistenceError):
    """A prefix matches more than one session; the matches are listed."""

    def __init__(self, prefix: str, matches: Sequence[str]) -> None:
        self.prefix = prefix
        self.matches = tuple(matches)
        shown = ", ".join(self.matches[:5])
        more = f" and {len(self.matches) - 5} more" if len(self.matches) > 5 else ""
        super().__init__(f"'{prefix}' matches {len(self.matches)} sessions: {shown}{more}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.prefix, self.matches)


class CorruptSession(PersistenceError):
    """A session's files are damaged beyond what recovery can repair."""

    def __init__(self, session_id: str, reason: str) -> None:
        self.session_id = session_id
        self.reason = reason
        super().__init__(f"session {session_id} is damaged: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.session_id, self.reason)


class WriteFailed(PersistenceError):
    """The operating system refused a write (disk full, I/O error).

    The records of the failed batch were not acknowledged and were rolled
    back from the files they were being appended to; what was stored
    before is intact.
    """


def write_failed(exc: OSError) -> WriteFailed:
    """The ``WriteFailed`` a user reads for an ``OSError`` of the disk (it names the file)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "the disk is full"
    where = f" ({exc.filename})" if exc.filename else ""
    return WriteFailed(f"could not write session files{where}: {reason}")


class StoreClosed(PersistenceError):
    """The persistence actor has stopped; nothing more can be written."""


class InvalidSessionId(UsageError):
    """A session id (or prefix) typed by a user is malformed or unsafe as a path."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        shown = value if len(value) <= 40 else value[:37] + "..."
        super().__init__(f"invalid session id {shown!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.value, self.reason)


class StoreWarning(UserWarning):
    """The store could not do something now; nothing acknowledged was lost.

    For example a full disk while session files are written behind the
    journal: the records are safe in the journal and reach the files once
    there is room again (at the latest, when the next Runtime starts).
    """


class RecoveryWarning(UserWarning):
    """Something damaged was found and set aside or skipped; the rest was kept.

    Emitted when a torn last line is moved aside, a corrupt line is skipped,
    or a dead process's journal is replayed. The message names the file.
    """


def _rebuilt(kind: type[Any], args: tuple[Any, ...], keywords: dict[str, Any]) -> Any:
    """Unpickling helper for errors with keyword-only fields."""
    return kind(*args, **keywords)
