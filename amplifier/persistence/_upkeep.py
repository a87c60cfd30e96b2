"""Keeping the session index in step with the metadata files a Runtime writes.

The index (``_index``) is a cache of the ``metadata.json`` files: whatever
SQLite refuses here (a full disk, a damaged file, a read-only home) must
never fail a write. Listings then scan the folders, and ``session
reindex`` rebuilds the index. All methods block (the persistence actor's
worker thread).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from ._index import connect, is_damage, open_built, rebuild, recreate, remove, upsert
from ._paths import SessionLocation
from ._search import index_transcript_lines


class IndexUpkeep:
    """One connection to the index, opened on first use, mended when damaged."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._db: sqlite3.Connection | None = None
        self._tried = False

    def open(self) -> None:
        """Open the index, building it first if it never was (a cache: failures are ignored)."""
        self._tried = True
        with contextlib.suppress(sqlite3.Error):
            self._db = open_built(self.home)

    def note(self, documents: Iterable[tuple[SessionLocation, bytes]]) -> None:
        """Record these sessions' metadata documents (one transaction)."""
        items = list(documents)
        if not items:
            return
        with contextlib.suppress(sqlite3.Error):
            upsert(self._connection(), items)

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
        if lines:
            index_transcript_lines(self._connection, lines)

    def forget(self, session_ids: Iterable[str]) -> None:
        """Drop sessions that are gone (or never came) from the index."""
        ids = list(session_ids)
        if ids:
            with contextlib.suppress(sqlite3.Error):
                remove(self._connection(), ids)

    def rebuild(self) -> int:
        """Rebuild the index from the folders; a damaged index file is replaced first.

        Raises ``sqlite3.Error`` if SQLite cannot do it (the caller reports it).
        """
        try:
            return rebuild(self.home, self._connection())
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
        self.close()
        self._db = recreate(self.home)
        return rebuild(self.home, self._db)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = open_built(self.home) if not self._tried else connect(self.home)
            self._tried = True
        return self._db
