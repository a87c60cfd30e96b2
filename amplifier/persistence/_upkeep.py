"""Keeping the session index in step with the metadata files a Runtime writes.

The index (``_index``) is a cache of the ``metadata.json`` files: whatever
SQLite refuses here (a full disk, a damaged file, a read-only home) must
never fail a write. Listings then scan the folders, and ``session
reindex`` rebuilds the index. All methods block (the persistence actor's
worker thread).

Rule 1 of ``_index`` (a cache never lies) asks two things of the writer:
``unsynced`` names the index's files for the sync that makes the session
files durable, so the index is never older than the files the journal's
checkpoint has passed; and a file replaced under it (a reader found it
damaged and rebuilt it) is noticed before the next write, which would
otherwise go to the old, unlinked file and be lost.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ._index import (
    connect,
    index_path,
    is_damage,
    mark_behind,
    open_built,
    rebuild,
    recreate,
    remove,
    upsert,
)
from ._paths import SessionLocation
from ._search import index_rows, transcript_rows

REST = 30.0
"""Seconds the index is left alone after another process's lock held a write up."""


class IndexUpkeep:
    """One connection to the index, opened on first use, mended when damaged."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._db: sqlite3.Connection | None = None
        self._tried = False
        self._file: tuple[int, int] | None = None
        """The device and inode of the file ``_db`` has open."""
        self._written = False
        """Written to since the last ``unsynced``."""
        self._resting_until = 0.0

    def open(self) -> None:
        """Open the index, building it first if it never was (a cache: failures are ignored)."""
        self._tried = True
        with contextlib.suppress(sqlite3.Error):
            self._db = open_built(self.home)
            self._file = _identity(index_path(self.home))

    def note(self, documents: Iterable[tuple[SessionLocation, bytes]]) -> None:
        """Record these sessions' metadata documents (one transaction)."""
        items = list(documents)
        if items:
            self._write(lambda db: upsert(db, items))

    def note_paths(self, documents: dict[str, bytes]) -> None:
        """Like ``note``, for documents named by their ``metadata.json`` paths."""
        items = []
        for path, data in documents.items():
            parts = path.rsplit("/", 4)  # .../<project>/sessions/<id>/metadata.json
            with contextlib.suppress(ValueError, IndexError):
                items.append((SessionLocation(self.home, parts[-4], parts[-2]), data))
        self.note(items)

    def note_lines(self, lines: Mapping[str, list[bytes]]) -> None:
        """Index for search the transcript lines among ``lines`` (``_search``); never raises."""
        rows = transcript_rows(lines)
        if rows:
            self._write(lambda db: index_rows(db, rows))

    def forget(self, session_ids: Iterable[str]) -> None:
        """Drop sessions that are gone (or never came) from the index."""
        ids = list(session_ids)
        if ids:
            self._write(lambda db: remove(db, ids))

    def rebuild(self) -> int:
        """Rebuild the index from the folders; a damaged index file is replaced first.

        Raises ``sqlite3.Error`` if SQLite cannot do it (the caller reports it).
        """
        self._written = True
        try:
            return rebuild(self.home, self._connection())
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
        self.close()
        self._db = recreate(self.home)
        self._file = _identity(index_path(self.home))
        return rebuild(self.home, self._db)

    def unsynced(self) -> set[str]:
        """The index's files, if written since the last ``synced``: sync them with the
        session files.

        Its write-ahead log holds what was written since SQLite last
        checkpointed it; the database holds the rest (synced by SQLite
        itself before the log is reused).
        """
        if not self._written:
            return set()
        path = str(index_path(self.home))
        return {path, f"{path}-wal"}

    def synced(self) -> None:
        """The files ``unsynced`` named are durable."""
        self._written = False

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._file = None

    def _write(self, work: Callable[[sqlite3.Connection], None]) -> None:
        """Do ``work``; what SQLite refuses leaves the index behind (``_index`` Rule 1). After
        a wait for another process's lock that timed out, writes are not tried for
        ``REST`` seconds (each would wait as long), only marked as missed."""
        if time.monotonic() < self._resting_until:
            mark_behind(self.home)
            return
        self._written = True
        try:
            work(self._connection())
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                # Start afresh: readers rebuild an index that was never built (Rule 1).
                self.close()
                with contextlib.suppress(sqlite3.Error):
                    recreate(self.home).close()
            else:
                self._missed(exc)
        except (sqlite3.Error, OSError) as exc:
            self._missed(exc)

    def _missed(self, exc: BaseException) -> None:
        mark_behind(self.home)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            self._resting_until = time.monotonic() + REST

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None and _identity(index_path(self.home)) != self._file:
            self.close()  # replaced under us: what we wrote now would be lost
        if self._db is None:
            self._db = open_built(self.home) if not self._tried else connect(self.home)
            self._tried = True
            self._file = _identity(index_path(self.home))
        return self._db


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino
