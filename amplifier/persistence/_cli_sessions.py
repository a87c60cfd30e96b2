"""The Amplifier CLI's sessions, read as ours (``_records``, Rule 2).

That tool shares the home and writes the same three files its own way:
``metadata.json`` without ``version`` (mapped by ``SessionMetadata.from_cli``,
with the lineage and counts it lacks taken from the files here), a
``.backup`` beside each file, parents that do not list their children. When
it goes on with a session of ours it keeps our metadata keys, stale, and
writes its own ``turn_count``.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from ._documents import cli_parent, is_cli_document
from ._exceptions import CorruptSession
from ._files import read_file
from ._paths import SessionLocation, project_slugs
from ._records import SessionMetadata


def json_object(data: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def cli_backup(location: SessionLocation) -> SessionMetadata | None:
    """The Amplifier CLI's previous ``metadata.json``, when it left one that reads."""
    path = location.directory / f"{location.metadata.name}.backup"
    try:
        document = json_object(read_file(path))
    except OSError:
        return None
    if document is None or not is_cli_document(document):
        return None
    return from_cli(location, document, path)


_MAX_LINEAGE = 64


def from_cli(location: SessionLocation, document: dict[str, Any], path: Path) -> SessionMetadata:
    """The Amplifier CLI's metadata mapped: lineage from the parents, counts from the transcript."""
    try:
        modified = datetime.fromtimestamp(path.lstat().st_mtime, UTC)
    except OSError:
        modified = datetime.now(UTC)
    root_id, depth = _cli_lineage(location, document)
    message_count, last_prompt = _transcript_summary(location.transcript)
    cwd = None if _text(document.get("working_dir")) else _project_of(location, document)
    try:
        return SessionMetadata.from_cli(
            document,
            session_id=location.session_id,
            project=location.project,
            modified=modified,
            root_id=root_id,
            depth=depth,
            message_count=message_count,
            last_prompt=last_prompt,
            cwd=cwd,
        )
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"] if exc.errors() else "unreadable"
        raise CorruptSession(location.session_id, f"{path.name} is invalid ({reason})") from None


def _cli_lineage(location: SessionLocation, document: dict[str, Any]) -> tuple[str, int]:
    """The root and depth of a session the CLI wrote: its parents' files, followed up.

    A parent of ours says its own root and depth; a missing or unreadable
    parent is taken for the root.
    """
    root, depth = location.session_id, 0
    seen = {location.session_id}
    parent = cli_parent(document)
    while isinstance(parent, str) and parent and parent not in seen and depth < _MAX_LINEAGE:
        seen.add(parent)
        root, depth = parent, depth + 1
        try:
            above = json_object(
                read_file(SessionLocation(location.home, location.project, parent).metadata)
            )
        except (OSError, ValueError):
            break
        if above is None:
            break
        if not is_cli_document(above):
            ours_root, ours_depth = above.get("root_id"), above.get("depth")
            if isinstance(ours_root, str) and isinstance(ours_depth, int):
                root, depth = ours_root, depth + ours_depth
            break
        parent = cli_parent(above)
    return root, depth


_SIBLINGS = 32
"""Sessions of its folder read, at most, for the project of a session that names none."""


def _project_of(location: SessionLocation, document: dict[str, Any]) -> tuple[str, str | None]:
    """The directory of a session the Amplifier CLI wrote without ``working_dir`` (its fork).

    The session it names as parent (what it was forked from) recorded it;
    else the other sessions of its project folder agree on one. The second
    item says where it came from, for the person to be told.
    """
    parent = document.get("parent_id")
    if isinstance(parent, str) and parent and parent != location.session_id:
        with contextlib.suppress(OSError, ValueError):
            above = json_object(
                read_file(SessionLocation(location.home, location.project, parent).metadata)
            )
            directory = _recorded_directory(above)
            if directory:
                return directory, f"taken from {parent}, the session it was forked from"
    found: set[str] = set()
    with contextlib.suppress(OSError):
        names = sorted(os.listdir(location.directory.parent))[:_SIBLINGS]
        for name in names:
            if name == location.session_id:
                continue
            with contextlib.suppress(OSError, ValueError):
                sibling = SessionLocation(location.home, location.project, name)
                directory = _recorded_directory(json_object(read_file(sibling.metadata)))
                if directory and location.project in project_slugs(directory):
                    found.add(directory)
    if len(found) == 1:
        (directory,) = found
        return directory, "taken from the other sessions of its project folder"
    return "", None


def _recorded_directory(document: dict[str, Any] | None) -> str:
    """The directory a metadata document recorded: ours (``cwd``) or the CLI's."""
    if document is None:
        return ""
    return _text(document.get("cwd")) or _text(document.get("working_dir"))


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


_SPOKEN = re.compile(rb'"role": ?"(?:user|assistant)"')


def _transcript_summary(path: Path) -> tuple[int, str | None]:
    """User and assistant messages in a transcript, and the last prompt's text."""
    try:
        data = read_file(path)
    except OSError:
        return 0, None
    count = len(_SPOKEN.findall(data))
    for line in reversed(data.splitlines()):
        if b'"user"' not in line:
            continue
        message = json_object(line)
        if message is not None and message.get("role") == "user":
            text = _content_text(message.get("content"))
            if text:
                return count, text
    return count, None


def _content_text(content: object) -> str:
    """The text of a message's content: a string, or the ``text`` of its blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ]
        return "\n\n".join(parts)
    return ""


def note_cli_turns(
    location: SessionLocation, document: dict[str, Any], metadata: SessionMetadata
) -> None:
    """A session of ours the Amplifier CLI went on with: its turns, counts and time.

    That tool keeps our keys when it rewrites our metadata, so ours are stale;
    its ``turn_count`` outgrowing our ``turns`` says it added turns.
    """
    turns = document.get("turn_count")
    if not isinstance(turns, int) or turns <= metadata.turns:
        return
    metadata.turns = turns
    metadata.message_count, last_prompt = _transcript_summary(location.transcript)
    metadata.last_prompt = last_prompt or metadata.last_prompt
    with contextlib.suppress(OSError):
        modified = datetime.fromtimestamp(location.metadata.lstat().st_mtime, UTC)
        metadata.updated = max(metadata.updated, modified)
