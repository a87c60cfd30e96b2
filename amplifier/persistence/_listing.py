"""Listing stored sessions: which there are, newest first, and where a text occurs.

A listing's page is picked and ordered by the session index (``_index``);
each row is then read from the session's own metadata file, which is the
truth. Without an index that can answer, the folders are read instead.
All functions block.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from anyio import from_thread

from ._exceptions import (
    CorruptSession,
    PersistenceError,
    SessionNotFound,
)
from ._index import SessionSort, built_in_memory
from ._index import is_damage as is_index_damage
from ._index import open_built as open_built_index
from ._index import page as index_page
from ._index import query as index_query
from ._index import refresh as refresh_index
from ._ownership import holder
from ._paths import (
    SessionLocation,
    is_safe_slug,
    projects_root,
    sessions_root,
    validate_session_id,
)
from ._reader import read_metadata
from ._rebuild import count_from_files
from ._records import SessionMetadata
from ._search import SearchHit, parse_query, rebuild_search, search_built
from ._search import search as search_index

_CANCEL_STEPS = 10_000
"""SQLite virtual-machine steps between two checks of a search's cancellation (about a
millisecond of work)."""


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One row of a listing: where the session is, what its metadata says, whether it is live."""

    location: SessionLocation
    metadata: SessionMetadata | None
    problem: str | None = None
    """Why ``metadata`` is None (damaged or missing metadata)."""

    @property
    def session_id(self) -> str:
        return self.location.session_id

    @property
    def live(self) -> bool:
        """A running Runtime (this process or another) holds the session right now."""
        return holder(self.location) is not None

    @property
    def status(self) -> str:
        """``active`` (live), ``interrupted`` (active, but its process is gone), or how it ended."""
        if self.metadata is None:
            return "damaged"
        if self.metadata.status == "active" and not self.live:
            return "interrupted"
        return self.metadata.status


def project_ids(home: Path, project: str) -> list[str]:
    """Every session id stored for a project (unsorted, unvalidated names skipped)."""
    try:
        names = os.listdir(sessions_root(home, project))
    except FileNotFoundError:
        return []
    return [name for name in names if _is_session_name(name)]


def all_projects(home: Path) -> list[str]:
    try:
        return sorted(name for name in os.listdir(projects_root(home)) if is_safe_slug(name))
    except FileNotFoundError:
        return []


def summarize(location: SessionLocation) -> SessionSummary:
    """The session's row; one cut off (active, its process gone) counts its files."""
    try:
        meta = read_metadata(location)
        if meta.status == "active" and holder(location) is None:
            count_from_files(meta, location)
        return SessionSummary(location, meta)
    except CorruptSession as exc:
        return SessionSummary(location, None, problem=exc.reason)
    except SessionNotFound:
        return SessionSummary(location, None, problem="its folder is gone")


def list_sessions(
    home: Path,
    project: str | Sequence[str] | None,
    *,
    cwd: str | Sequence[str] | None = None,
    limit: int | None = None,
    roots_only: bool = False,
    sort: SessionSort = "created",
    tag: str | None = None,
) -> list[SessionSummary]:
    """The sessions of ``project`` (every project if None), newest first.

    ``project`` may be several project folders (ours and the Amplifier
    CLI's, ``project_slugs``). With ``cwd`` (a directory, or the names it
    may be recorded under), only the sessions that recorded that working
    directory (or none that can be read): two directories may share a
    project slug (``/a-b`` and ``/a/b``), and each lists only its own sessions.
    ``sort`` says newest by what: ``created``, or ``used`` (the last time the
    session was written to, metadata ``updated``). ``tag`` keeps only the
    sessions with that tag.
    The session index picks and orders the page (one indexed query, however
    many sessions there are); each row shown is then read from its own
    metadata file, which is authoritative. A session whose metadata is
    damaged is listed too, marked, after the others of the page.
    """
    if not home.is_dir():
        return []
    projects = _projects(project) if project is not None else all_projects(home)

    def indexed(db: sqlite3.Connection) -> list[tuple[SessionLocation, bytes]]:
        refresh_index(db, home, projects)
        return index_page(
            db,
            home,
            project=project,
            cwd=cwd,
            limit=limit,
            roots_only=roots_only,
            sort=sort,
            tag=tag,
        )

    page = index_query(home, indexed)
    if page is None:  # the index cannot say (damaged, unwritable): the folders can
        return _scan(home, project, cwd=cwd, limit=limit, roots_only=roots_only, sort=sort, tag=tag)
    rows = [summarize(location) for location, _ in page if location.directory.is_dir()]
    if tag is not None:  # the index row may be older than the file
        rows = [r for r in rows if r.metadata is None or tag in r.metadata.tags]
    rows.sort(key=_newest_used_first if sort == "used" else _newest_first)
    return rows


def _projects(project: str | Sequence[str]) -> list[str]:
    return [project] if isinstance(project, str) else list(project)


def _scan(
    home: Path,
    project: str | Sequence[str] | None,
    *,
    cwd: str | Sequence[str] | None,
    limit: int | None,
    roots_only: bool,
    sort: SessionSort = "created",
    tag: str | None = None,
) -> list[SessionSummary]:
    """The listing without the index: every folder, every metadata file."""
    projects = _projects(project) if project is not None else all_projects(home)
    rows = [
        summarize(SessionLocation(home, slug, session_id))
        for slug in projects
        for session_id in project_ids(home, slug)
    ]
    if cwd is not None:
        names = {"", *([cwd] if isinstance(cwd, str) else cwd)}
        rows = [r for r in rows if r.metadata is None or r.metadata.cwd in names]
    if roots_only:
        stored = {r.session_id for r in rows}
        rows = [
            r
            for r in rows
            if r.metadata is None or r.metadata.parent_id not in stored  # None is not stored
        ]
    if tag is not None:
        rows = [r for r in rows if r.metadata is not None and tag in r.metadata.tags]
    rows.sort(key=_newest_used_first if sort == "used" else _newest_first)
    return rows[:limit] if limit is not None else rows


def _newest_first(row: SessionSummary) -> tuple[int, float, str]:
    if row.metadata is None:
        return (1, 0.0, row.session_id)
    return (0, -row.metadata.created.timestamp(), row.session_id)


def _newest_used_first(row: SessionSummary) -> tuple[int, float, str]:
    if row.metadata is None:
        return (1, 0.0, row.session_id)
    return (0, -row.metadata.updated.timestamp(), row.session_id)


def last_write(location: SessionLocation) -> datetime | None:
    """When the session's event log was last written: its last use, when metadata cannot say."""
    try:
        return datetime.fromtimestamp(location.events.lstat().st_mtime, UTC)
    except OSError:
        return None


def search_sessions(
    home: Path, text: str, *, project: str | None, limit: int = 20
) -> list[SearchHit]:
    """The newest ``limit`` places where ``text`` occurs (see ``_search.search``).

    Builds the search part of the index first if it never was (reads
    every transcript once); where the index file cannot be opened for
    writing (a read-only home), searches a copy built in memory instead.
    Raises ``PersistenceError`` if SQLite fails, ``UsageError`` if there
    is no word to search for.
    """
    parse_query(text)  # a malformed query is refused even where nothing is stored
    if not home.is_dir():
        return []

    def searched(db: sqlite3.Connection) -> list[SearchHit]:
        _stop_when_cancelled(db)
        if not search_built(db):
            rebuild_search(home, db)
        return search_index(db, home, text, project=project, limit=limit)

    try:
        try:
            db = open_built_index(home)
        except sqlite3.Error:  # a home this process cannot write: an index of its own
            with contextlib.closing(built_in_memory(home)) as own:
                return searched(own)
        try:
            return searched(db)
        except sqlite3.DatabaseError as exc:
            if not is_index_damage(exc):
                raise
        finally:
            db.close()
        # Damaged after all (``_index`` Rule 1): replaced, rebuilt, searched again.
        with contextlib.closing(open_built_index(home, damaged=True)) as rebuilt:
            return searched(rebuilt)
    except sqlite3.Error as exc:
        raise PersistenceError(f"the session index cannot be searched: {exc}") from exc


def _stop_when_cancelled(db: sqlite3.Connection) -> None:
    """In a worker thread of anyio, let the cancellation of the task waiting for it (Ctrl-C,
    a deadline, a closing Runtime) interrupt ``db``'s statements: the first search of a
    large store indexes every transcript, which a thread would otherwise run to its end.
    SQLite asks every ``_CANCEL_STEPS`` steps; interrupted, a statement raises
    ``sqlite3.OperationalError`` (what it did is rolled back, and an index rebuild left
    unfinished is done again by the next search)."""
    try:
        from_thread.check_cancelled()
    except RuntimeError:  # called outside a worker thread: nothing can cancel it
        return
    except BaseException:  # cancelled already: the first statement stops
        pass

    def cancelled() -> bool:
        try:
            from_thread.check_cancelled()
        except BaseException:
            return True
        return False

    db.set_progress_handler(cancelled, _CANCEL_STEPS)


def _is_session_name(name: str) -> bool:
    try:
        validate_session_id(name)
    except ValueError:
        return False
    return True
