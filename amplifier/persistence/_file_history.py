"""File history: the contents of files before a session's tools changed them.

Kept in the session's folder as ``file-history/<sha256>``: content-addressed,
so a content kept twice is stored once, and written once, never changed.

Rule 1: a content is kept before the change it makes undoable: the file is
        written (and, under ``fsync``, synced with its folder) before the
        keeping is acknowledged, so a tool changes a file only once its
        old content is durable.
Rule 2: a kept content is checked against its name when it is read; a file
        that does not match is damage, never silently restored.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ._exceptions import CorruptSession
from ._files import atomic_replace, fsync_dir, read_file
from ._paths import SessionLocation

FILE_HISTORY = "file-history"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def content_digest(data: bytes) -> str:
    """The name a content is kept under: its SHA-256, in hex."""
    return hashlib.sha256(data).hexdigest()


def keep_content(location: SessionLocation, data: bytes, *, sync: bool) -> str:
    """Blocking: keep ``data`` in the session's file history (once); its digest.

    The session's folder must exist. With ``sync`` the content and the
    folder entries it depends on are durable when this returns (Rule 1).
    """
    digest = content_digest(data)
    folder = history_folder(location)
    path = folder / digest
    if path.exists():
        return digest
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    else:
        if sync:
            fsync_dir(location.directory)
    atomic_replace(path, data, sync=sync)
    return digest


def history_folder(location: SessionLocation) -> Path:
    """The session's ``file-history`` folder; ``CorruptSession`` if it is a link."""
    folder = location.directory / FILE_HISTORY
    if folder.is_symlink():
        raise CorruptSession(
            location.session_id, f"{FILE_HISTORY} is a symbolic link; not followed"
        )
    return folder


def read_kept(location: SessionLocation, digest: str) -> bytes:
    """A content kept by ``keep_content``; ``CorruptSession`` if it is missing or damaged."""
    if not _DIGEST.fullmatch(digest):
        raise CorruptSession(location.session_id, f"file history names no content: {digest!r}")
    path = history_folder(location) / digest
    try:
        data = read_file(path)
    except FileNotFoundError:
        raise CorruptSession(
            location.session_id, f"the file history lacks a kept content ({digest[:12]})"
        ) from None
    except OSError as exc:  # a folder, a FIFO or a link where the content was kept
        raise CorruptSession(
            location.session_id,
            f"a kept content of the file history cannot be read ({digest[:12]}): "
            f"{exc.strerror or exc}",
        ) from None
    if content_digest(data) != digest:
        raise CorruptSession(
            location.session_id, f"a kept content of the file history is damaged ({digest[:12]})"
        )
    return data
