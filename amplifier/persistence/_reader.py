"""Reading stored sessions: metadata, transcripts, events, listings, id lookup.

Readers never write session files. A torn last line (a crash mid-append, or
a live writer caught mid-line) is left where it is and not returned; only
the session's owner sets it aside (``_files.set_aside_torn_tail``). All
functions block.

Sessions the Amplifier CLI wrote are read too (``_records``, Rule 2): their
metadata is mapped to ours (``_cli_sessions``), their unstamped lines keep
their place in the file, and their sub-sessions are found through
``parent_id``, since their parents do not list them.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from ._cli_sessions import cli_backup, from_cli, json_object, note_cli_turns
from ._exceptions import (
    AmbiguousSessionId,
    CorruptSession,
    InvalidSessionId,
    PersistenceError,
    RecoveryWarning,
    SessionNotFound,
)
from ._files import first_line, iter_jsonl, lines_backwards, read_file
from ._index import SessionSort, built_in_memory
from ._index import children_of as index_children
from ._index import is_damage as is_index_damage
from ._index import open_built as open_built_index
from ._index import page as index_page
from ._index import query as index_query
from ._index import refresh as refresh_index
from ._index import with_name as index_name
from ._index import with_prefix as index_prefix
from ._ownership import holder
from ._paths import (
    SessionLocation,
    id_spans,
    is_safe_slug,
    project_slugs,
    projects_root,
    refuse_links_out,
    sessions_root,
    validate_session_id,
)
from ._records import (
    EventRecord,
    SessionMetadata,
    TranscriptRecord,
    is_cli_document,
    lineage_parent,
)
from ._search import SearchHit, parse_query, rebuild_search, search_built
from ._search import search as search_index

_R = TypeVar("_R", EventRecord, TranscriptRecord)


def read_metadata(location: SessionLocation) -> SessionMetadata:
    """The session's ``metadata.json``; ``SessionNotFound`` or ``CorruptSession`` otherwise.

    A document the Amplifier CLI wrote is mapped to ours (``SessionMetadata.from_cli``);
    if it is missing or damaged, its ``metadata.json.backup`` stands in, as
    it does for that tool.
    """
    refuse_links_out(location)
    try:
        data = read_file(location.metadata)
    except FileNotFoundError:
        if not location.directory.is_dir():
            raise SessionNotFound(location.session_id) from None
        backup = cli_backup(location)
        if backup is not None:
            return backup
        raise CorruptSession(location.session_id, "metadata.json is missing") from None
    document = json_object(data)
    if document is not None and is_cli_document(document):
        return from_cli(location, document, location.metadata)
    try:
        metadata = SessionMetadata.model_validate_json(data)
    except ValidationError as exc:
        backup = cli_backup(location)
        if backup is not None:
            return backup
        reason = exc.errors()[0]["msg"] if exc.errors() else "unreadable"
        raise CorruptSession(location.session_id, f"metadata.json is invalid ({reason})") from None
    if document is not None:
        note_cli_turns(location, document, metadata)
    return metadata


def load_transcript(location: SessionLocation) -> list[TranscriptRecord]:
    """Every complete, valid message of the session, in order."""
    refuse_links_out(location)
    return list(_records(location.transcript, TranscriptRecord))


@dataclass(frozen=True, slots=True)
class TranscriptTail:
    """The end of a transcript, and its first message if that is not part of the end."""

    first: TranscriptRecord | None
    records: list[TranscriptRecord]
    """The last messages, oldest first."""
    complete: bool
    """``records`` is the whole transcript (``first`` is then None)."""


def load_transcript_tail(location: SessionLocation, *, max_bytes: int) -> TranscriptTail:
    """The first message and the last ``max_bytes`` or so of the transcript.

    Reads from the end, only as far as needed: resuming a session with a
    huge history costs what its context window needs, not the whole file.
    """
    refuse_links_out(location)
    path = location.transcript
    try:
        size = path.lstat().st_size
    except FileNotFoundError:
        return TranscriptTail(None, [], True)
    if size <= max_bytes:
        return TranscriptTail(None, load_transcript(location), True)
    lines, start = _last_lines(path, size, max_bytes)
    records = [r for r in (_parse_line(line) for line in lines) if r is not None]
    # By position, not seq: lines another tool wrote have none.
    first = _parse_line(first_line(path)) if start > 0 else None
    return TranscriptTail(first, records, False)


@dataclass(frozen=True, slots=True)
class MessageTail:
    """The end of a transcript as plain messages (the store's stamp left out)."""

    first: dict[str, Any] | None
    """The first message, when ``messages`` does not reach back to it."""
    messages: list[dict[str, Any]]
    sizes: list[int]
    """The bytes each message takes in the file (its line and newline)."""
    complete: bool


def load_message_tail(location: SessionLocation, *, max_bytes: int) -> MessageTail:
    """``load_transcript_tail`` as plain messages, for the turn that reads them.

    The same lines, read the same way (from the end, as far as needed),
    parsed with ``orjson`` alone: a long history is read on every resume,
    and building a model per line would cost more than reading it.
    """
    refuse_links_out(location)
    path = location.transcript
    try:
        size = path.lstat().st_size
    except FileNotFoundError:
        return MessageTail(None, [], [], True)
    messages: list[dict[str, Any]] = []
    sizes: list[int] = []
    if size <= max_bytes:
        data = read_file(path)
        damaged = []
        for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
            record = _loads(line)
            if not isinstance(record, dict):
                if line.strip():
                    damaged.append(number)
                continue
            message = _message(record)
            if message is not None:
                messages.append(message)
                sizes.append(len(line) + 1)
        if damaged:
            shown = ", ".join(map(str, damaged[:10]))
            warnings.warn(
                f"{path}: skipped {len(damaged)} damaged line(s) ({shown})",
                RecoveryWarning,
                stacklevel=2,
            )
        return MessageTail(None, messages, sizes, True)
    lines, start = _last_lines(path, size, max_bytes)
    for line in lines:
        message = _message(_loads(line))
        if message is not None:
            messages.append(message)
            sizes.append(len(line) + 1)
    # By position, not seq: lines another tool wrote have none.
    first = _message(_loads(first_line(path))) if start > 0 else None
    return MessageTail(first, messages, sizes, False)


_STAMP = ("version", "seq", "ts")


def _last_lines(path: Path, size: int, max_bytes: int) -> tuple[list[bytes], int]:
    """The last lines of ``path`` (``size`` bytes) that reach ``max_bytes``, in file order,
    and the offset of the first of them."""
    lines: list[bytes] = []
    taken = 0
    start = size
    for offset, line in lines_backwards(path):
        lines.append(line)
        start = offset
        taken += len(line) + 1
        if taken >= max_bytes:
            break
    lines.reverse()
    return lines, start


def _loads(line: bytes | None) -> Any:
    if not line:
        return None
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _message(record: Any) -> dict[str, Any] | None:
    """A record's message, or None if it is none (what ``TranscriptRecord`` checks)."""
    if not isinstance(record, dict) or not isinstance(record.get("role"), str):
        return None
    seq = record.get("seq")
    if seq is not None and (type(seq) is not int):
        return None
    for key in _STAMP:
        record.pop(key, None)
    return record


def _parse_line(line: bytes | None) -> TranscriptRecord | None:
    if not line:
        return None
    try:
        return TranscriptRecord.model_validate_json(line)
    except ValidationError:
        return None


def iter_events(location: SessionLocation) -> Iterator[EventRecord]:
    """The session's events in ``seq`` order (the order they were written)."""
    refuse_links_out(location)
    return _records(location.events, EventRecord)


def merge_events(locations: Iterable[SessionLocation]) -> Iterator[EventRecord]:
    """The events of several sessions (a parent and its children) in one ``seq`` order.

    A line without ``seq`` (the Amplifier CLI's) stays after the line it follows.
    """
    keyed = (_after_previous_seq(iter_events(loc)) for loc in locations)
    return (event for _, event in heapq.merge(*keyed, key=lambda pair: pair[0]))


def _after_previous_seq(events: Iterable[EventRecord]) -> Iterator[tuple[int, EventRecord]]:
    seq = 0
    for event in events:
        seq = event.seq if event.seq is not None else seq
        yield seq, event


def _records(path: Path, model: type[_R]) -> Iterator[_R]:
    """The valid records of ``path``, read as they are taken (``iter_jsonl``)."""
    skipped = 0
    for record in iter_jsonl(path):
        try:
            yield model.model_validate(record)
        except ValidationError:
            skipped += 1
    if skipped:
        warnings.warn(
            f"{path}: skipped {skipped} record(s) that do not have the expected fields",
            RecoveryWarning,
            stacklevel=2,
        )


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
    try:
        return SessionSummary(location, read_metadata(location))
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
        rows = [r for r in rows if r.metadata is None or r.metadata.parent_id is None]
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


def find_session(
    home: Path, id_or_prefix: str, *, project: str | None, cwd: str | None = None
) -> SessionLocation:
    """The one session whose id is ``id_or_prefix``, whose name it is, or whose id starts with it.

    An exact id wins, then an exact name (``session rename``), then id
    prefixes; a prefix matched by sessions of the current ``project`` means
    those: a session of another project is found when none here matches
    (its location says which). With ``cwd``, a session of this project's
    slug that recorded another working directory (``/a/b`` beside
    ``/a-b``) counts as another project's. Raises ``InvalidSessionId``
    (neither an id nor a name), ``SessionNotFound`` or
    ``AmbiguousSessionId`` (listing the matches).
    """
    try:
        validate_session_id(id_or_prefix)
    except InvalidSessionId:
        named = _named(home, id_or_prefix, project=project, scan=True)
        if named is None:
            raise
        return named
    if project is not None:
        here = SessionLocation(home, project, id_or_prefix)
        if here.directory.is_dir():
            return here
    named = _named(home, id_or_prefix, project=project)
    if named is not None:
        return named
    if home.is_dir():

        def indexed(db: sqlite3.Connection) -> list[SessionLocation]:
            refresh_index(db, home, all_projects(home))
            return index_prefix(db, home, id_or_prefix)

        found = [m for m in index_query(home, indexed) or () if m.directory.is_dir()]
        if found:
            return _one_match(id_or_prefix, found, project, cwd)
    # Not in the index (written by a runtime that crashed before indexing it):
    # look at the folders themselves.
    matches = [
        SessionLocation(home, slug, session_id)
        for slug in all_projects(home)
        for session_id in project_ids(home, slug)
        if session_id.startswith(id_or_prefix)
    ]
    if matches:
        return _one_match(id_or_prefix, matches, project, cwd)
    named = _named(home, id_or_prefix, project=project, scan=True)
    if named is not None:
        return named
    raise SessionNotFound(id_or_prefix, hint="see 'amplifier session list --all'")


def _one_match(
    id_or_prefix: str, matches: list[SessionLocation], project: str | None, cwd: str | None
) -> SessionLocation:
    """The exact id, else the one match of this project, else the one match anywhere."""
    exact = [m for m in matches if m.session_id == id_or_prefix]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    here = [m for m in matches if m.project == project and _recorded_in(m, cwd)]
    candidates = here or matches
    if len(candidates) == 1:
        return candidates[0]
    raise AmbiguousSessionId(id_or_prefix, sorted(m.session_id for m in candidates))


def _recorded_in(location: SessionLocation, cwd: str | None) -> bool:
    """Whether the session recorded ``cwd`` as its directory (True if either is unknown)."""
    if cwd is None:
        return True
    try:
        recorded = read_metadata(location).cwd
    except (CorruptSession, SessionNotFound):
        return True
    return recorded in ("", cwd)


def _named(
    home: Path, name: str, *, project: str | None, scan: bool = False
) -> SessionLocation | None:
    """The session named exactly ``name`` (this project's first), or None if there is none.

    Raises ``AmbiguousSessionId`` if several share the name. The index
    proposes; each session's own metadata confirms (the file is the truth).
    Without a usable index, only with ``scan`` are all metadata files read
    (the last resort of a lookup, not its first step).
    """
    if not name.strip() or not home.is_dir():
        return None
    candidates = index_query(home, lambda db: index_name(db, home, name))
    if candidates is None:
        if not scan:
            return None
        candidates = [
            SessionLocation(home, slug, session_id)
            for slug in all_projects(home)
            for session_id in project_ids(home, slug)
        ]
    matches = []
    for location in candidates:
        try:
            if read_metadata(location).name == name:
                matches.append(location)
        except (CorruptSession, SessionNotFound):
            continue
    here = [m for m in matches if m.project == project]
    if len(here) == 1 or (len(matches) == 1):
        return here[0] if here else matches[0]
    if matches:
        raise AmbiguousSessionId(name, sorted(m.session_id for m in (here or matches)))
    return None


def _is_session_name(name: str) -> bool:
    try:
        validate_session_id(name)
    except ValueError:
        return False
    return True


def session_tree(location: SessionLocation) -> list[SessionLocation]:
    """The session and all its descendants (children live beside it), parents first.

    A session's metadata lists its children; those whose own metadata names
    it as parent are children too (the Amplifier CLI's parents list none,
    and it may file them under its own name for the project folder,
    ``project_slugs``); and when its metadata is damaged, they are found by
    their ids (which start with its span), so none is left behind.
    """

    def walk(db: sqlite3.Connection | None) -> list[SessionLocation]:
        if db is not None:
            refresh_index(db, location.home, [location.project])
        found = [location]
        seen = {location.session_id}
        index = 0
        while index < len(found):
            current = found[index]
            index += 1
            folders = {current.project}
            try:
                meta = read_metadata(current)
                listed = existing_children(current, meta.children)[0]
                if meta.cwd:
                    folders.update(project_slugs(meta.cwd))
            except (CorruptSession, SessionNotFound):
                listed = _children_by_lineage(db, current)
            if db is not None and len(folders) > 1:
                refresh_index(db, location.home, sorted(folders - {current.project}))
            for child in [*listed, *_named_children(db, current, folders)]:
                if child.session_id not in seen:
                    seen.add(child.session_id)
                    found.append(child)
        return found

    # Without an index that can answer, the same walk reads the project's metadata files.
    tree = index_query(location.home, walk)
    return tree if tree is not None else walk(None)


def _named_children(
    db: sqlite3.Connection | None, parent: SessionLocation, folders: set[str]
) -> list[SessionLocation]:
    """The sessions of ``parent``'s project ``folders`` whose metadata names it as parent."""
    if db is not None:
        return [
            child
            for child in index_children(db, parent.home, parent.session_id)
            if child.project in folders and child.directory.is_dir()
        ]
    # No index: every metadata file of the project.
    named = []
    for slug, session_id in [(s, i) for s in sorted(folders) for i in project_ids(parent.home, s)]:
        child = SessionLocation(parent.home, slug, session_id)
        with contextlib.suppress(OSError):
            document = json_object(read_file(child.metadata))
            if document is None:
                continue
            if lineage_parent(document) == parent.session_id:
                named.append(child)
    return named


def _children_by_lineage(
    db: sqlite3.Connection | None, parent: SessionLocation
) -> list[SessionLocation]:
    """The children of ``parent`` by their ids and their own metadata, not by its list."""
    _, span = id_spans(parent.session_id)
    candidates = (
        {sid for sid in project_ids(parent.home, parent.project) if id_spans(sid)[0] == span}
        if span is not None
        else set()
    )
    if db is not None:
        candidates.update(
            child.session_id
            for child in index_children(db, parent.home, parent.session_id)
            if child.project == parent.project
        )
    children = []
    for session_id in sorted(candidates):
        child = SessionLocation(parent.home, parent.project, session_id)
        try:
            if read_metadata(child).parent_id != parent.session_id:
                continue  # another session's child after all
        except SessionNotFound:
            continue
        except CorruptSession:
            pass  # damaged too: its id says whose it is
        children.append(child)
    return children


def existing_children(
    parent: SessionLocation, children: list[str]
) -> tuple[list[SessionLocation], list[str]]:
    """The children listed by ``parent`` that exist, and the ids of those that do not.

    A parent lists a child before creating it: a crash in between, or a
    child deleted on its own, leaves an id with no folder behind it.
    """
    present, missing = [], []
    for child in children:
        try:
            location = SessionLocation(parent.home, parent.project, child)
        except ValueError:
            missing.append(child)
            continue
        if location.directory.is_dir():
            present.append(location)
        else:
            missing.append(child)
    return present, missing
