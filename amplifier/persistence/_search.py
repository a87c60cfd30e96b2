"""Full-text search over transcripts: prompts, answers and tool output.

Lives in the session index (``index.sqlite3``, beside the ``sessions``
table), on SQLite's FTS5:

    search_lines   one row per indexed transcript line: session, seq, role,
                   time, tool name; UNIQUE (session_id, seq)
    search_text    FTS5, rowid = search_lines.rowid: the line's text
    search_state   the generation of the last rebuild, and whether it finished

Rule 1: indexing a line twice is a no-op (the unique key), so the live path
        (the persistence actor, as it writes transcript lines), a retried
        write and a rebuild may overlap without duplicates.
Rule 2: rowids grow with time: live lines arrive in seq order, and a rebuild
        indexes sessions oldest first. Newest-first results are a
        descending rowid scan, which FTS5 walks without sorting, so a query
        stops after its page however many lines match.
Rule 3: it is a cache, like the rest of the index: a failure to index never
        fails a write, and ``rebuild`` recreates it from the transcripts
        (``amplifier session reindex``; the first search builds it too).
Rule 4: one matching rule for everything searched, messages and names and
        tags alike: whole words by their English stem, a ``word*`` prefix of
        at least three characters, a quoted phrase; never an arbitrary
        substring. (FTS5's trigram tokenizer matches substrings, but over
        100,000 messages it took twice the index, 2.4 times the indexing
        time and four times the slowest query; see the README.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from amplifier._errors import UsageError

from ._files import parse_jsonl, read_file
from ._paths import TRANSCRIPT, SessionLocation, holds_utf8

MAX_TEXT = 64 * 1024
"""Characters of one message that are indexed (tool output is clipped to this anyway)."""
_REBUILD_CHUNK = 20_000
"""Lines per transaction while rebuilding: other writers get their turn in between."""
_MARK = ("\ue000", "\ue001")
"""Around each matched term in a snippet (private-use characters, absent from real text)."""
SNIPPET_TOKENS = 24
MIN_PREFIX = 3
"""Shortest prefix (``abc*``); the index keeps 3-character prefixes for these."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS search_lines (
    rowid      INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    ts         TEXT NOT NULL,
    tool       TEXT,
    UNIQUE (session_id, seq)
);
CREATE VIRTUAL TABLE IF NOT EXISTS search_text USING fts5(
    text, scope, tokenize = {tokenizer}, prefix = '3'
);
CREATE TABLE IF NOT EXISTS search_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_TOKENIZER = "'porter unicode61 remove_diacritics 2'"
"""Words, without accents, by their English stem: ``inject`` finds "injection" (Rule 4)."""
_SCHEMA = _SCHEMA.format(tokenizer=_TOKENIZER)

Line = tuple[str, int, str, str, str | None, str, str]
"""One line to index: session id, seq, role, ts, tool name, text, project."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One place a search matched: a message of a session, or the session's name or tags."""

    location: SessionLocation
    root_id: str
    """The root of the session's tree (the session itself for a root)."""
    seq: int
    """The message's ``seq`` (0 for a match of the name or tags)."""
    ts: datetime | None
    role: str
    """``user``, ``assistant``, ``tool`` (a tool's output), or ``label`` (name or tags)."""
    tool: str | None
    """The tool whose output this is (role ``tool``)."""
    snippet: str
    """The matched text in its context, on one line."""
    marks: tuple[tuple[int, int], ...]
    """Start and end of each matched term in ``snippet``."""

    @property
    def session_id(self) -> str:
        return self.location.session_id


SEARCH_SCHEMA = 1
"""The shape of the search tables; tables of another shape are dropped (a cache)."""


def create_search_schema(db: sqlite3.Connection) -> None:
    """Create the search tables; replace those of another shape (they are rebuilt on use)."""
    _create(db)
    if _state(db, "schema") == SEARCH_SCHEMA:
        return
    with db:
        db.execute("BEGIN IMMEDIATE")
        if _state(db, "schema") != SEARCH_SCHEMA:  # not already replaced by another process
            db.execute("DROP TABLE IF EXISTS search_text")
            db.execute("DROP TABLE IF EXISTS search_lines")
            _create(db)
            _set_state(db, "schema", SEARCH_SCHEMA)
            _set_state(db, "built", 0)


def _create(db: sqlite3.Connection) -> None:
    """The tables (statement by statement: ``executescript`` would end a transaction)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


# -- indexing ---------------------------------------------------------------------------


def transcript_rows(lines: Mapping[str, list[bytes]]) -> list[Line]:
    """The search rows of the transcript lines among ``lines`` (file -> complete lines);
    other files (events) are ignored. The persistence actor indexes them
    (``index_rows``) once they are in their session files."""
    rows: list[Line] = []
    for path, batch in lines.items():
        folder, name = os.path.split(path)
        if name != TRANSCRIPT:
            continue
        project = os.path.basename(os.path.dirname(os.path.dirname(folder)))
        rows.extend(_rows(os.path.basename(folder), project, batch))
    return rows


def index_rows(db: sqlite3.Connection, rows: list[Line]) -> None:
    """Index ``rows`` for search (those indexed already are skipped: Rule 1); raises
    ``sqlite3.Error`` (or ``OSError``) if SQLite refuses them."""
    _insert(db, rows)


def _rows(session_id: str, project: str, lines: Iterable[bytes]) -> Iterator[Line]:
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            row = _row(session_id, project, record)
            if row is not None:
                yield row


def _row(session_id: str, project: str, record: dict[str, Any]) -> Line | None:
    seq, role = record.get("seq"), record.get("role")
    if not isinstance(seq, int) or not isinstance(role, str):
        return None
    parts = [_text(record.get("content"))]
    for call in record.get("tool_calls") or ():
        if isinstance(call, dict):
            arguments = call.get("arguments")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments).decode() if arguments is not None else ""
            parts.append(f"{call.get('name', '')} {arguments}")
    text = "\n".join(part for part in parts if part)[:MAX_TEXT]
    if not text:
        return None
    tool = record.get("name") if role == "tool" else None
    return (
        session_id,
        seq,
        role,
        str(record.get("ts", "")),
        str(tool) if tool is not None else None,
        text,
        project,
    )


def _text(content: object) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part["text"]) for part in content if isinstance(part, dict) and "text" in part
        )
    return ""


def _insert(db: sqlite3.Connection, rows: list[Line]) -> int:
    """Index ``rows`` not indexed yet (Rule 1), in one transaction; how many were new."""
    with db:
        db.execute("BEGIN IMMEDIATE")  # the largest rowid stays ours until commit
        by_session: dict[str, list[int]] = {}
        for row in rows:
            by_session.setdefault(row[0], []).append(row[1])
        known: set[tuple[str, int]] = set()
        for session_id, seqs in by_session.items():
            known.update(
                (session_id, seq)
                for (seq,) in db.execute(
                    "SELECT seq FROM search_lines WHERE session_id = ? AND seq BETWEEN ? AND ?",
                    (session_id, min(seqs), max(seqs)),
                )
            )
        fresh = [row for row in rows if (row[0], row[1]) not in known]
        if not fresh:
            return 0
        (top,) = db.execute("SELECT coalesce(max(rowid), 0) FROM search_lines").fetchone()
        db.executemany(
            "INSERT OR IGNORE INTO search_lines VALUES (?, ?, ?, ?, ?, ?)",
            [(top + n, *row[:5]) for n, row in enumerate(fresh, start=1)],
        )
        db.executemany(
            "INSERT INTO search_text (rowid, text, scope) VALUES (?, ?, ?)",
            [(top + n, row[5], scope(row[6])) for n, row in enumerate(fresh, start=1)],
        )
    return len(fresh)


def scope(project: str) -> str:
    """A project as one token of the ``scope`` column.

    Searching one project is then an intersection of two posting lists
    inside FTS5, not a filter applied to every match of a common word.
    """
    return "p" + hashlib.blake2b(project.encode(), digest_size=10).hexdigest()


def forget_search(db: sqlite3.Connection, session_ids: Iterable[str]) -> None:
    """Drop the sessions' lines (inside the caller's transaction)."""
    for session_id in session_ids:
        db.execute(
            "DELETE FROM search_text WHERE rowid IN "
            "(SELECT rowid FROM search_lines WHERE session_id = ?)",
            (session_id,),
        )
        db.execute("DELETE FROM search_lines WHERE session_id = ?", (session_id,))


# -- rebuilding -------------------------------------------------------------------------


def rebuild_search(home: Path, db: sqlite3.Connection) -> int:
    """Index every session's transcript anew, oldest session first; how many lines.

    The ``sessions`` table must be built (it says which sessions exist, in
    which order). Runs in chunks, so live writers are not held up for long;
    the index counts as built only once the last chunk is in, and only if no
    other rebuild started meanwhile (it would have emptied the tables).
    """
    with db:
        db.execute("BEGIN IMMEDIATE")
        generation = _state(db, "generation") + 1
        db.execute("DROP TABLE IF EXISTS search_text")
        db.execute("DROP TABLE IF EXISTS search_lines")
        _create(db)
        _set_state(db, "generation", generation)
        _set_state(db, "built", 0)
    sessions = db.execute(
        "SELECT project, session_id FROM sessions ORDER BY created, session_id"
    ).fetchall()
    total = 0
    pending: list[Line] = []
    for project, session_id in sessions:
        try:
            location = SessionLocation(home, project, session_id)
        except ValueError:
            continue
        pending.extend(_transcript_rows(location))
        if len(pending) >= _REBUILD_CHUNK:
            total += _insert(db, pending)
            pending = []
    if pending:
        total += _insert(db, pending)
    with db:
        db.execute("BEGIN IMMEDIATE")
        if _state(db, "generation") == generation:
            _set_state(db, "built", generation)
    return total


def _transcript_rows(location: SessionLocation) -> list[Line]:
    """The complete, readable lines of a session's transcript (none if it is unreadable)."""
    try:
        data = read_file(location.transcript)
    except OSError:
        return []
    content = parse_jsonl(data, warn=False)
    return [
        row
        for record in content.records
        if (row := _row(location.session_id, location.project, record)) is not None
    ]


def unbuild_search(db: sqlite3.Connection) -> None:
    """Mark the search part unbuilt (it missed lines): the next search rebuilds it, and a
    rebuild running meanwhile does not count as complete (its generation is passed)."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        _set_state(db, "generation", _state(db, "generation") + 1)
        _set_state(db, "built", 0)


def search_built(db: sqlite3.Connection) -> bool:
    """True once a rebuild has indexed every transcript (live lines keep it complete)."""
    return _state(db, "built") > 0


def _state(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM search_state WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _set_state(db: sqlite3.Connection, key: str, value: int) -> None:
    db.execute(
        "INSERT INTO search_state VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
        (key, value, value),
    )


# -- querying ---------------------------------------------------------------------------

_TERM = re.compile(r'"([^"]*)"?|(\S+)')
_MOST_ROWS = 1 << 62
"""A limit SQLite can take (its integers are 64-bit): any larger one is no limit at all."""
MAX_TERMS = 32
"""Words and phrases a search takes at most: each is a condition every match is checked
against, and a query that repeats one a thousand times would scan the index as often."""


def parse_query(text: str) -> list[tuple[str, bool]]:
    """The terms of a typed query: ``(words, prefix)`` each; quoted text is one phrase.

    Every term must match (in any order); a word ending in ``*`` matches as
    a prefix (of at least ``MIN_PREFIX`` characters: shorter ones would
    match most of the index). FTS5's own operators are not exposed: what a
    user types is always taken as text, never as syntax. Raises
    ``UsageError`` if nothing is left to search for.
    """
    if not holds_utf8(text):
        raise UsageError(f"{text!r} holds text that UTF-8 cannot hold: nothing stored has it")
    terms: list[tuple[str, bool]] = []
    # A NUL cannot be in an FTS5 string (it would end it): it separates words, as a space.
    for phrase, word in _TERM.findall(text.replace("\x00", " ")):
        value = phrase if phrase else word
        prefix = not phrase and value.endswith("*")
        value = value.rstrip("*") if prefix else value
        if not any(ch.isalnum() for ch in value):
            continue
        if prefix and len(value) < MIN_PREFIX:
            raise UsageError(f"{word!r}: a prefix needs at least {MIN_PREFIX} characters")
        terms.append((value, prefix))
    if not terms:
        raise UsageError(f"nothing to search for in {text!r}: give at least one word")
    terms = list(dict.fromkeys(terms))  # a word given twice is one condition, not two scans
    if len(terms) > MAX_TERMS:
        raise UsageError(f"a search takes at most {MAX_TERMS} words or phrases, not {len(terms)}")
    return terms


def _fts_words(terms: list[tuple[str, bool]]) -> str:
    return " ".join(
        '"' + value.replace('"', '""') + '"' + ("*" if prefix else "") for value, prefix in terms
    )


def _fts_query(terms: list[tuple[str, bool]], project: str | None) -> str:
    query = f"{{text}} : ({_fts_words(terms)})"
    return query if project is None else f'{{scope}} : "{scope(project)}" AND {query}'


def search(
    db: sqlite3.Connection,
    home: Path,
    text: str,
    *,
    project: str | None,
    limit: int,
) -> list[SearchHit]:
    """The newest ``limit`` matches of ``text``: sessions by name or tag, then messages.

    ``project`` None searches every project. Raises ``UsageError`` for a
    query with no word in it.
    """
    terms = parse_query(text)
    limit = min(limit, _MOST_ROWS)
    hits = _label_hits(db, home, terms, project=project)[:limit]
    where = "search_text MATCH ?"
    args: list[object] = [_fts_query(terms, project)]
    if project is not None:
        where += " AND s.project = ?"  # the scope token stands for it; this makes sure
        args.append(project)
    args.append(limit - len(hits))
    rows = db.execute(
        "SELECT s.project, l.session_id, s.root_id, l.seq, l.ts, l.role, l.tool, "
        f"snippet(search_text, 0, '{_MARK[0]}', '{_MARK[1]}', '…', {SNIPPET_TOKENS}) "
        "FROM search_text "
        "JOIN search_lines AS l ON l.rowid = search_text.rowid "
        "JOIN sessions AS s ON s.session_id = l.session_id "
        f"WHERE {where} ORDER BY search_text.rowid DESC LIMIT ?",
        args,
    )
    for slug, session_id, root_id, seq, ts, role, tool, snippet in rows:
        try:
            location = SessionLocation(home, slug, session_id)
        except ValueError:
            continue
        if not location.directory.is_dir():
            continue  # deleted, and a crash kept the index from forgetting it
        flat, marks = _marked(snippet)
        hits.append(
            SearchHit(location, root_id or session_id, seq, _when(ts), role, tool, flat, marks)
        )
    return hits


def _label_hits(
    db: sqlite3.Connection, home: Path, terms: list[tuple[str, bool]], *, project: str | None
) -> list[SearchHit]:
    """Sessions whose name and tags together match every term, most recently used first.

    Matched by the rule messages are (Rule 4): the labels go through the
    same full-text engine, with the same tokenizer, in a table of their own
    in memory.
    """
    # The partial index ``labelled`` holds only sessions with a name or tags;
    # an ORDER BY here would walk every session instead. Few are labelled:
    # they are sorted here.
    rows = sorted(
        (
            row
            for row in db.execute(
                "SELECT project, session_id, root_id, updated, name, tags FROM sessions "
                "WHERE (name IS NOT NULL OR tags IS NOT NULL)"
            )
            if project is None or row[0] == project
        ),
        key=lambda row: str(row[3]),
        reverse=True,
    )
    if not rows:
        return []
    labels = [
        " ".join([*([name] if name else []), *(f"#{t}" for t in (tags or "").split())])
        for _, _, _, _, name, tags in rows
    ]
    with contextlib.closing(sqlite3.connect(":memory:")) as memory:
        memory.execute(f"CREATE VIRTUAL TABLE labels USING fts5(text, tokenize = {_TOKENIZER})")
        memory.executemany(
            "INSERT INTO labels (rowid, text) VALUES (?, ?)",
            [(number, label) for number, label in enumerate(labels)],
        )
        matched = memory.execute(
            f"SELECT rowid, highlight(labels, 0, '{_MARK[0]}', '{_MARK[1]}') FROM labels "
            "WHERE labels MATCH ? ORDER BY rowid",
            ["{text} : (" + _fts_words(terms) + ")"],
        ).fetchall()
    hits = []
    for number, highlighted in matched:
        slug, session_id, root_id, updated, _, _ = rows[number]
        flat, marks = _marked(highlighted)
        with contextlib.suppress(ValueError):
            if not SessionLocation(home, slug, session_id).directory.is_dir():
                continue  # deleted, and a crash kept the index from forgetting it
            hits.append(
                SearchHit(
                    SessionLocation(home, slug, session_id),
                    root_id or session_id,
                    0,
                    _when(updated),
                    "label",
                    None,
                    flat,
                    marks,
                )
            )
    return hits


def _marked(snippet: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The snippet on one line without its markers, and where the markers were."""
    flat = " ".join(snippet.split())
    out: list[str] = []
    marks: list[tuple[int, int]] = []
    start = -1
    length = 0
    for piece in re.split(f"([{_MARK[0]}{_MARK[1]}])", flat):
        if piece == _MARK[0]:
            start = length
        elif piece == _MARK[1]:
            if start >= 0:
                marks.append((start, length))
            start = -1
        else:
            out.append(piece)
            length += len(piece)
    return "".join(out), tuple(marks)


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
