"""Walking a session tree: a session and all its descendants, parents first.

Children live beside their parent. Those the Amplifier CLI wrote are found
through their own ``parent_id``, since their parents do not list them, and
may be filed under that tool's name for the project folder. All functions
block.
"""

from __future__ import annotations

import contextlib
import sqlite3

from ._cli_sessions import json_object
from ._documents import lineage_parent
from ._exceptions import (
    CorruptSession,
    SessionNotFound,
)
from ._files import read_file
from ._index import children_of as index_children
from ._index import query as index_query
from ._index import refresh as refresh_index
from ._listing import project_ids
from ._paths import (
    SessionLocation,
    id_spans,
    project_slugs,
)
from ._reader import read_metadata


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
