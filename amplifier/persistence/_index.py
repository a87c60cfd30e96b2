"""The session index: one row per session, so listing and finding ids stay fast.

``$AMPLIFIER_HOME/index.sqlite3`` holds each session's project, times
(created, last used), lineage, name, tags and metadata document, and the
full-text index of the transcripts (``_search``). It is a cache of the
``metadata.json`` files: the persistence actor writes a row whenever it
writes a metadata file (and a journal replay does too); ``rebuild``
recreates it from the files (``amplifier session reindex``), and a missing
index is rebuilt on first use. Reading a page of a listing is one indexed
query, however many sessions the home holds.

SQLite (standard library) does the work a hand-made index file would do
badly: concurrent readers and writers across processes (WAL), atomic
transactions, ordered range scans.

Rule 1: a cache that lies is worse than none. So, after a crash or a power
        cut at any instant:
        - the file is never damaged: SQLite runs with ``synchronous=NORMAL``
          (its write-ahead log is synced before the database is written, the
          database before the log is reused), so a power cut can take its
          last transactions, never leave it half written;
        - it is never older than what it describes: the persistence actor
          syncs it with the session files, before the journal's checkpoint
          passes them (``IndexUpkeep.unsynced``), and a journal replay
          writes every session it touches into it again;
        - a damage it has anyway (a disk's fault, a file copied half-way) is
          caught at every use, not only when the file is opened: the reader
          then answers from the folders, and the file is rebuilt
          (``query``);
        - a write SQLite refuses (another process holds the lock past
          ``BUSY_TIMEOUT``, a read-only or full index) leaves a mark beside
          it (``mark_behind``): the next process that opens the index
          rebuilds its rows, and its search part at the next search.

Sessions another program creates (the Amplifier CLI shares the home) never
pass through the actor: ``refresh`` finds them. The index remembers each
project's ``sessions/`` folder modification time; a folder that changed
since is listed again and the sessions missing from the index are added.
A stat per project is all a listing pays when nothing changed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import orjson

from amplifier._exports import describe

from ._documents import cli_created, cli_parent, format_ts, is_cli_document, lineage_parent
from ._files import read_file
from ._paths import SessionLocation, sessions_root, validate_session_id
from ._search import create_search_schema, forget_search, rebuild_search, unbuild_search

INDEX = "index.sqlite3"
BEHIND = "index.sqlite3.behind"
"""Beside the index: it missed a write (Rule 1)."""
BUSY_TIMEOUT = 10.0
"""Seconds a use of the index waits for another process's write to end."""
QUERY_BUSY_TIMEOUT = 1.0
"""As long, for a listing or a lookup: the folders can answer instead (``query``), so a
process that holds the index's lock (a stopped ``reindex``) costs a listing a second."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    created    TEXT NOT NULL,
    updated    TEXT NOT NULL,
    parent_id  TEXT,
    root_id    TEXT,
    name       TEXT,
    tags       TEXT,
    document   BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS by_project_created ON sessions (project, created DESC);
CREATE INDEX IF NOT EXISTS by_created ON sessions (created DESC);
CREATE INDEX IF NOT EXISTS by_project_updated ON sessions (project, updated DESC);
CREATE INDEX IF NOT EXISTS by_updated ON sessions (updated DESC);
CREATE INDEX IF NOT EXISTS by_root ON sessions (root_id);
CREATE INDEX IF NOT EXISTS by_parent ON sessions (parent_id);
CREATE INDEX IF NOT EXISTS by_project_id ON sessions (project, session_id);
CREATE INDEX IF NOT EXISTS by_name ON sessions (name) WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS labelled ON sessions (session_id)
    WHERE name IS NOT NULL OR tags IS NOT NULL;
CREATE TABLE IF NOT EXISTS folders (
    project    TEXT PRIMARY KEY,
    mtime_ns   INTEGER NOT NULL
);
"""
_COLUMNS = frozenset(
    {"session_id", "project", "created", "updated", "parent_id", "root_id", "name", "tags"}
)
"""An index file written with fewer columns is dropped and rebuilt (it is only a cache)."""

_T = TypeVar("_T")

SessionSort = Literal["created", "used"]
describe(
    SessionSort,
    "Listing order: newest created first, or most recently used (``updated``) first.",
)


def index_path(home: Path) -> Path:
    return home / INDEX


def connect(home: Path, *, busy: float | None = None) -> sqlite3.Connection:
    """A connection to the index (created owner-only if missing).

    Raises ``sqlite3.Error`` for every failure, also the operating system's
    (a read-only home): callers treat the index as the cache it is.
    """
    path = index_path(home)
    if not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise sqlite3.OperationalError(f"cannot create {path}: {exc.strerror}") from exc
    db = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT if busy is None else busy,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # Rule 1: never damaged by a power cut
        _create_schema(db)
    except BaseException:
        db.close()
        raise
    return db


def _create_schema(db: sqlite3.Connection) -> None:
    """Create the tables; replace those an older version wrote with fewer columns."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    if columns and not columns >= _COLUMNS:
        with db:
            db.execute("BEGIN IMMEDIATE")
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            if not columns >= _COLUMNS:  # not already replaced by another process
                db.execute("DROP TABLE sessions")
                db.execute("PRAGMA user_version = 0")
    db.executescript(_SCHEMA)
    create_search_schema(db)


_BUILT = 1
"""``PRAGMA user_version`` once a rebuild has committed: an index file that
exists is not yet a complete one (its builder may have died half-way)."""
_DAMAGED = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})


def query(home: Path, work: Callable[[sqlite3.Connection], _T]) -> _T | None:
    """``work`` done on the index (built first if it never was); None if the index cannot
    (within ``QUERY_BUSY_TIMEOUT`` of another process's lock, say).

    The caller then reads the folders instead. Any SQLite failure, during
    the opening or the work itself, means None: a query that failed
    half-way proves nothing about what is on disk (Rule 1). A damaged file
    is replaced and rebuilt at once, so the next use finds a sound index.
    """
    try:
        db = open_built(home, busy=QUERY_BUSY_TIMEOUT)
    except sqlite3.Error:
        return None
    try:
        return work(db)
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            db.close()
            with contextlib.suppress(sqlite3.Error):
                open_built(home, damaged=True).close()
        return None
    finally:
        db.close()


def open_built(
    home: Path, *, damaged: bool = False, busy: float | None = None
) -> sqlite3.Connection:
    """A connection to an index that holds every session of ``home``.

    Built from the folders if it never was (first use, a removed index, a
    builder killed half-way); recreated first if the file is damaged (or,
    with ``damaged``, known to be). Raises ``sqlite3.Error`` if SQLite
    cannot do either (a full disk, say).
    """
    if damaged:
        db = recreate(home)
    else:
        try:
            db = connect(home, busy=busy)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            db = recreate(home)
    behind = _take_behind(home)
    try:
        if behind is not None:
            rebuild(home, db, search=False)
            unbuild_search(db)  # the next search indexes every transcript again
        elif db.execute("PRAGMA user_version").fetchone()[0] < _BUILT:
            rebuild(home, db, search=False)  # search builds its part on first use
    except BaseException:
        db.close()
        if behind is not None:
            with contextlib.suppress(OSError):
                os.rename(behind, home / BEHIND)  # still behind: for the next opener
        raise
    if behind is not None:
        with contextlib.suppress(OSError):
            os.unlink(behind)
    return db


def mark_behind(home: Path) -> None:
    """Note that the index missed a write (Rule 1); nothing if even that cannot be done (a
    read-only home, where nothing is written anyway)."""
    with contextlib.suppress(OSError):
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        os.close(os.open(home / BEHIND, flags, 0o600))


def _take_behind(home: Path) -> Path | None:
    """The mark of a missed write, taken by this opener (renamed to a name of its own, so a
    write missed while it rebuilds leaves a new mark); None if there is none."""
    taken = home / f"{BEHIND}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.rename(home / BEHIND, taken)
    except OSError:
        return None
    return taken


def built_in_memory(home: Path) -> sqlite3.Connection:
    """An index of ``home`` built in memory, for a home this process cannot write.

    It is only a cache: where its file cannot be made or brought up to date
    (a read-only home), readers build their own copy and drop it after use.
    Reads every metadata file and every transcript.
    """
    db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    try:
        _create_schema(db)
        rebuild(home, db)
    except BaseException:
        db.close()
        raise
    return db


def is_damage(exc: sqlite3.Error) -> bool:
    """True if SQLite says the index file is not a database, or a corrupt one (a table of
    it, the full-text index's too: ``SQLITE_CORRUPT_VTAB``, ``SQLITE_CORRUPT_INDEX``...)."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    return name in _DAMAGED or name.startswith("SQLITE_CORRUPT_")


def recreate(home: Path) -> sqlite3.Connection:
    """An empty index in place of a damaged one (a cache: nothing is lost)."""
    path = index_path(home)
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
        with contextlib.suppress(FileNotFoundError):
            (path.parent / name).unlink()
    return connect(home)


Row = tuple[str, str, str, str, str | None, str | None, str | None, str | None, bytes]


def _row(location: SessionLocation, document: bytes) -> Row:
    fields = orjson.loads(document)
    if is_cli_document(fields):  # the Amplifier CLI's: no root_id, its own time format
        created = cli_created(fields)
        used = fields.get("last_updated")
        return (
            location.session_id,
            location.project,
            created,
            str(used) if isinstance(used, str) and used else created,
            cli_parent(fields),
            None,
            _name(fields.get("name")),
            None,
            document,
        )
    tags = fields.get("tags") or []
    created = str(fields.get("created", ""))
    return (
        location.session_id,
        location.project,
        created,
        str(fields.get("updated") or created),
        lineage_parent(fields),
        fields.get("root_id"),
        _name(fields.get("name")),
        tags_column(tags) if isinstance(tags, list) and tags else None,
        document,
    )


def _name(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def tags_column(tags: Iterable[object]) -> str:
    """Tags as the index holds them: `` a b `` (one space around each), matched with instr."""
    return " " + " ".join(str(tag) for tag in tags) + " "


def _damaged_row(location: SessionLocation) -> Row:
    """A session whose metadata cannot be read: listed by id, project and last write."""
    try:
        used = format_ts(datetime.fromtimestamp(location.events.stat().st_mtime, UTC))
    except OSError:
        used = ""
    return (location.session_id, location.project, "", used, None, None, None, None, b"{}")


_INSERT = "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def upsert(db: sqlite3.Connection, items: Iterable[tuple[SessionLocation, bytes]]) -> None:
    """Record these sessions' metadata documents (one transaction)."""
    rows = []
    for location, document in items:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            rows.append(_row(location, document))
    if not rows:
        return
    with db:
        db.execute("BEGIN")
        db.executemany(
            f"{_INSERT} ON CONFLICT(session_id) DO UPDATE SET "
            "project=excluded.project, created=excluded.created, updated=excluded.updated, "
            "parent_id=excluded.parent_id, root_id=excluded.root_id, name=excluded.name, "
            "tags=excluded.tags, document=excluded.document",
            rows,
        )


def remove(db: sqlite3.Connection, session_ids: Iterable[str]) -> None:
    """Forget these sessions: their rows and their transcripts' search entries."""
    ids = list(session_ids)
    with db:
        db.execute("BEGIN")
        db.executemany("DELETE FROM sessions WHERE session_id = ?", [(s,) for s in ids])
        forget_search(db, ids)


def rebuild(home: Path, db: sqlite3.Connection, *, search: bool = True) -> int:
    """Recreate the index from the files of every project; how many sessions.

    The listing part (one row per metadata file) is replaced in one
    transaction. With ``search``, the transcripts are then indexed for
    search too (``_search.rebuild``), which reads every transcript.
    """
    with db:
        # The files are read under the write lock: a metadata file written meanwhile
        # has its row written after this transaction, never overwritten by an older one.
        db.execute("BEGIN IMMEDIATE")
        rows = []
        seen: list[tuple[str, int]] = []
        for slug in _project_slugs(home):
            stamp = _folder_stamp(home, slug)
            for location in _project_locations(home, slug):
                rows.append(_row_or_damaged(location))
            if stamp is not None:
                seen.append((slug, stamp))
        db.execute("DELETE FROM sessions")
        db.executemany(_INSERT.replace("INSERT", "INSERT OR REPLACE", 1), rows)
        db.execute("DELETE FROM folders")
        db.executemany("INSERT INTO folders VALUES (?, ?)", seen)
        db.execute(f"PRAGMA user_version = {_BUILT}")  # in the same transaction
    if search:
        rebuild_search(home, db)
    return len(rows)


def _row_or_damaged(location: SessionLocation) -> Row:
    try:
        return _row(location, read_file(location.metadata))
    except (OSError, orjson.JSONDecodeError, AttributeError):
        # Damaged metadata: still listed (the listing marks it) by id and project.
        return _damaged_row(location)


_SETTLED_NS = 2_000_000_000
"""A folder changed this recently may change again within the same tick of
its clock: its time is not remembered, so the next reader looks again."""


def _folder_stamp(home: Path, project: str) -> int | None:
    """The ``sessions/`` folder's modification time, if it is old enough to trust."""
    try:
        mtime = os.stat(sessions_root(home, project)).st_mtime_ns
    except OSError:
        return None
    return mtime if time.time_ns() - mtime > _SETTLED_NS else None


def refresh(db: sqlite3.Connection, home: Path, projects: Iterable[str]) -> int:
    """Add the sessions of ``projects`` that reached the disk without the index, and drop
    those whose folders left it (removed by hand); how many were added.

    A project whose ``sessions/`` folder has not changed since it was last
    looked at costs one stat. Rows are only added (never replaced): a
    session's own writer keeps its row current.
    """
    added = 0
    for project in projects:
        try:
            mtime = os.stat(sessions_root(home, project)).st_mtime_ns
        except OSError:
            continue
        known = db.execute("SELECT mtime_ns FROM folders WHERE project = ?", (project,)).fetchone()
        if known is not None and known[0] == mtime:
            continue
        indexed = {
            row[0]
            for row in db.execute("SELECT session_id FROM sessions WHERE project = ?", (project,))
        }
        present = {location.session_id for location in _project_locations(home, project)}
        rows = [
            _row_or_damaged(SessionLocation(home, project, session_id))
            for session_id in present - indexed
        ]
        # Gone, unless it came back since it was listed (a session being deleted is moved
        # out; one being created is renamed in whole: either way the folder decides).
        gone = [
            session_id
            for session_id in indexed - present
            if not SessionLocation(home, project, session_id).directory.is_dir()
        ]
        with db:
            db.execute("BEGIN")
            if gone:
                db.executemany("DELETE FROM sessions WHERE session_id = ?", [(s,) for s in gone])
                forget_search(db, gone)
            if rows:
                cursor = db.executemany(_INSERT.replace("INSERT", "INSERT OR IGNORE", 1), rows)
                added += max(cursor.rowcount, 0)
            if time.time_ns() - mtime > _SETTLED_NS:
                db.execute(
                    "INSERT INTO folders VALUES (?, ?) ON CONFLICT(project) "
                    "DO UPDATE SET mtime_ns = excluded.mtime_ns",
                    (project, mtime),
                )
    return added


def _project_slugs(home: Path) -> list[str]:
    try:
        return sorted(os.listdir(home / "projects"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _project_locations(home: Path, slug: str) -> Iterator[SessionLocation]:
    try:
        names = os.listdir(sessions_root(home, slug))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return
    for name in names:
        try:
            validate_session_id(name)
            yield SessionLocation(home, slug, name)
        except ValueError:
            continue


def children_of(db: sqlite3.Connection, home: Path, parent_id: str) -> list[SessionLocation]:
    """Sessions whose metadata names ``parent_id`` as their parent."""
    rows = db.execute(
        "SELECT project, session_id, document FROM sessions WHERE parent_id = ? ORDER BY created",
        (parent_id,),
    )
    return [location for location, _ in _locations(home, rows)]


def page(
    db: sqlite3.Connection,
    home: Path,
    *,
    project: str | Sequence[str] | None,
    cwd: str | Sequence[str] | None = None,
    limit: int | None,
    roots_only: bool,
    sort: SessionSort = "created",
    tag: str | None = None,
) -> list[tuple[SessionLocation, bytes]]:
    """Newest first (created, or last used): sessions of ``project`` (None: every project).

    ``project`` may be several project folders; with ``cwd`` (one directory,
    or the names it may be recorded under), only the sessions that recorded
    it as their directory, or none.
    """
    where, args = [], []
    if project is not None:
        projects = [project] if isinstance(project, str) else list(project)
        where.append(f"project IN ({', '.join('?' * len(projects))})")
        args.extend(projects)
    if cwd is not None:
        names = [cwd] if isinstance(cwd, str) else list(cwd)
        where.append(f"coalesce({_CWD}, '') IN ('', {', '.join('?' * len(names))})")
        args.extend(names)
    if roots_only:
        # A session whose parent is not stored (its folder removed by hand, or a parent id
        # that names nothing) is a root here: hidden under nothing, it would be listed
        # nowhere, and only `cleanup` would find it.
        where.append("(parent_id IS NULL OR parent_id NOT IN (SELECT session_id FROM sessions))")
    if tag is not None:
        where.append("instr(tags, ?) > 0")
        args.append(f" {tag} ")
    query = "SELECT project, session_id, document FROM sessions"
    if where:
        query += " WHERE " + " AND ".join(where)
    column = "updated" if sort == "used" else "created"
    query += f" ORDER BY {column} DESC, session_id"
    if limit is not None:
        query += " LIMIT ?"
        args.append(str(limit))
    return _locations(home, db.execute(query, args))


_CWD = (
    "CASE WHEN json_valid(CAST(document AS TEXT)) "
    "THEN coalesce(json_extract(CAST(document AS TEXT), '$.cwd'), "
    "json_extract(CAST(document AS TEXT), '$.working_dir')) END"
)
"""The directory a row's metadata document recorded: our ``cwd``, or the Amplifier CLI's
``working_dir`` (NULL if it has neither or is damaged)."""


def with_prefix(
    db: sqlite3.Connection, home: Path, prefix: str, *, limit: int = 50
) -> list[SessionLocation]:
    """Sessions whose id starts with ``prefix`` (an index range scan, not a LIKE)."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    rows = db.execute(
        "SELECT project, session_id, document FROM sessions "
        "WHERE session_id >= ? AND session_id < ? ORDER BY session_id LIMIT ?",
        (prefix, upper, limit),
    )
    return [location for location, _ in _locations(home, rows)]


def with_name(db: sqlite3.Connection, home: Path, name: str) -> list[SessionLocation]:
    """Sessions named exactly ``name``."""
    rows = db.execute(
        "SELECT project, session_id, document FROM sessions WHERE name = ? ORDER BY session_id",
        (name,),
    )
    return [location for location, _ in _locations(home, rows)]


def labelled(
    db: sqlite3.Connection, home: Path, *, project: str | None
) -> list[tuple[SessionLocation, str | None, str | None]]:
    """Every session that has a name or tags: where it is, its name, its tags column."""
    rows = db.execute(
        "SELECT project, session_id, name, tags FROM sessions "
        "WHERE (name IS NOT NULL OR tags IS NOT NULL)"
    )
    found = []
    for slug, session_id, name, tags in rows:
        if project is not None and slug != project:
            continue
        with contextlib.suppress(ValueError):
            found.append((SessionLocation(home, slug, session_id), name, tags))
    return found


def _locations(
    home: Path, rows: Iterable[tuple[str, str, bytes]]
) -> list[tuple[SessionLocation, bytes]]:
    found = []
    for project, session_id, document in rows:
        try:
            found.append((SessionLocation(home, project, session_id), bytes(document)))
        except ValueError:
            continue
    return found


def count(db: sqlite3.Connection) -> int:
    value = db.execute("SELECT COUNT(*) FROM sessions").fetchone()
    return int(value[0]) if value else 0
