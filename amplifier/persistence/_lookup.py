"""Looking a session up: the one session an id, a unique prefix or a name means.

The index proposes (``_index``); each session's own metadata confirms. A
session the index does not know yet (a runtime crashed before indexing it)
is found in the folders. All functions block.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ._exceptions import (
    AmbiguousSessionId,
    CorruptSession,
    InvalidSessionId,
    SessionNotFound,
)
from ._index import query as index_query
from ._index import refresh as refresh_index
from ._index import with_name as index_name
from ._index import with_prefix as index_prefix
from ._listing import all_projects, project_ids
from ._ownership import await_handover
from ._paths import (
    SessionLocation,
    holds_utf8,
    validate_session_id,
)
from ._reader import read_metadata


def find_session(
    home: Path,
    id_or_prefix: str,
    *,
    project: str | None,
    cwd: str | None = None,
    handover: bool = True,
) -> SessionLocation:
    """The one session whose id is ``id_or_prefix``, whose name it is, or whose id starts with it.

    An exact id wins, then an exact name (``session rename``), then id
    prefixes; a prefix matched by sessions of the current ``project`` means
    those: a session of another project is found when none here matches
    (its location says which). With ``cwd``, a session of this project's
    slug that recorded another working directory (``/a/b`` beside
    ``/a-b``) counts as another project's. A session closed a moment ago
    whose runtime is still building its folder is waited for (``_ownership``
    Rule 4). Raises ``InvalidSessionId``
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
    if handover and await_handover(home, id_or_prefix):
        return find_session(home, id_or_prefix, project=project, cwd=cwd, handover=False)
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
    if not name.strip() or not home.is_dir() or not holds_utf8(name):
        return None  # no name holds what UTF-8 cannot (a lone surrogate)
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
