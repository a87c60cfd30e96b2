"""Low-level file work shared by the persistence actor, recovery and readers.

All functions here block; the actor calls them from its worker thread,
readers from wherever they run (the CLI, ``anyio.to_thread``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import stat
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._exceptions import RecoveryWarning

_TAIL_CHUNK = 64 * 1024


@dataclass(slots=True)
class JsonlContent:
    """What a JSONL file holds: its valid records, and what was wrong with the rest."""

    records: list[dict[str, Any]] = field(default_factory=list)
    torn_tail: bytes = b""
    """Bytes after the last newline: a record cut off by a crash mid-append."""
    corrupt_lines: list[int] = field(default_factory=list)
    """1-based numbers of complete lines that are not valid JSON objects."""


def parse_jsonl(data: bytes, *, name: str = "", warn: bool = True) -> JsonlContent:
    """Split ``data`` into records; a missing final newline marks a torn tail."""
    content = JsonlContent()
    end = data.rfind(b"\n") + 1
    content.torn_tail = data[end:]
    for number, line in enumerate(data[:end].splitlines(), start=1):
        record = _parse_line(line)
        if isinstance(record, dict):
            content.records.append(record)
        elif record is not _BLANK:
            content.corrupt_lines.append(number)
    if warn:
        _warn_damaged(name, content.corrupt_lines)
    return content


def iter_jsonl(path: Path, *, warn: bool = True) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file as it stood at the first read, a chunk at a time.

    Memory stays within a chunk and the longest line, however long the file
    is, and no descriptor is held between chunks (a tree's events are read
    from many files at once). What is appended after the first read is not
    read; a torn last line is skipped and damaged lines are warned about at
    the end, as ``parse_jsonl`` does. A missing file is an empty one.
    """
    try:
        end, identity = _size_and_identity(path)
    except FileNotFoundError:
        return
    except NotAFile as exc:
        _warn_not_a_file(exc)
        return
    offset = number = 0
    pending: list[bytes] = []  # the line begun and not ended yet, in pieces: never re-copied
    corrupt: list[int] = []
    while offset < end:
        chunk = _read_at(path, offset, min(STREAM_CHUNK, end - offset), identity)
        if not chunk:
            break  # cut short or replaced meanwhile: what was read is all there is
        offset += len(chunk)
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            pending.append(chunk)
            continue
        data = b"".join([*pending, chunk[:cut]])
        pending = [chunk[cut:]]
        for line in data.splitlines():
            number += 1
            record = _parse_line(line)
            if isinstance(record, dict):
                yield record
            elif record is not _BLANK:
                corrupt.append(number)
    if warn:
        _warn_damaged(str(path), corrupt)


STREAM_CHUNK = 64 * 1024
"""Bytes ``iter_jsonl`` reads at a time."""
_BLANK = object()


def _parse_line(line: bytes) -> object:
    """The line's JSON value; ``_BLANK`` for an empty line, None if it is not JSON."""
    if not line.strip():
        return _BLANK
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _warn_damaged(name: str, corrupt_lines: list[int]) -> None:
    if corrupt_lines:
        lines = ", ".join(map(str, corrupt_lines[:10]))
        warnings.warn(
            f"{name}: skipped {len(corrupt_lines)} damaged line(s) ({lines})",
            RecoveryWarning,
            stacklevel=3,
        )


class NotAFile(OSError):
    """A session file's path holds something else: a folder, a FIFO, a device."""


def open_to_read(path: str | Path, *, follow_links: bool = False) -> tuple[int, os.stat_result]:
    """A descriptor of the file at ``path``, for reading, and what ``fstat`` says of it:
    never through a symbolic link (Rule 1 of ``_paths``; ``follow_links`` for files a
    person keeps, such as configuration), and never blocking on, or reading, what is
    not a regular file (``NotAFile``): a FIFO in a session's folder would hold its
    reader for ever, a link to ``/dev/zero`` fill its memory."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    return _open_regular(path, flags if follow_links else flags | os.O_NOFOLLOW)


def _open_regular(path: str | Path, flags: int) -> tuple[int, os.stat_result]:
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotAFile(f"{path}: not a file")
    return fd, info


def _warn_not_a_file(exc: NotAFile) -> None:
    warnings.warn(
        f"{exc}: read as empty (resuming the session sets it aside)", RecoveryWarning, stacklevel=3
    )


def _size_and_identity(path: Path) -> tuple[int, tuple[int, int]]:
    fd, info = open_to_read(path)
    os.close(fd)
    return info.st_size, (info.st_dev, info.st_ino)


def _read_at(path: Path, offset: int, size: int, identity: tuple[int, int]) -> bytes:
    """Up to ``size`` bytes at ``offset``; nothing if ``path`` is no longer the file it was."""
    try:
        fd, info = open_to_read(path)
    except FileNotFoundError:
        return b""
    try:
        if (info.st_dev, info.st_ino) != identity:
            return b""
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def read_file(path: Path) -> bytes:
    """The bytes of a session file, never through a symbolic link (Rule 1 of ``_paths``)."""
    fd, _ = open_to_read(path)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _complete_end(fd: int, size: int) -> int:
    """Offset just past the last newline of the file (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def set_aside_torn_tail(path: Path) -> Path | None:
    """If ``path`` ends without a newline, move the fragment to a side file and cut it off.

    Only the session's owner may call this (a live writer's half-written line
    would otherwise be taken for a torn one). Returns the side file, if any.
    """
    try:
        fd, info = _open_regular(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except (IsADirectoryError, NotAFile):  # a folder, a FIFO, a device
        set_aside(path)  # its records are written anew from the events' journal
        return None
    try:
        size = info.st_size
        keep = _complete_end(fd, size)
        if keep == size:
            return None
        fragment = os.pread(fd, size - keep, keep)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        side = path.with_name(f"{path.name}.torn-{stamp}-{secrets.token_hex(3)}")
        write_new_file(side, fragment, sync=True)
        fsync_dir(side.parent)  # the fragment is kept before the file loses it
        os.ftruncate(fd, keep)
        os.fsync(fd)
    finally:
        os.close(fd)
    warnings.warn(
        f"{path}: a record cut off by a crash ({len(fragment)} bytes) was moved to {side.name}",
        RecoveryWarning,
        stacklevel=2,
    )
    return side


def iter_lines_backwards(path: Path) -> Iterator[bytes]:
    """The complete lines of ``path``, last first, reading only as much as needed.

    Bytes after the last newline (a torn record) are not a line and are skipped.
    """
    for _, line in lines_backwards(path):
        yield line


def lines_backwards(path: Path) -> Iterator[tuple[int, bytes]]:
    """``iter_lines_backwards`` with each line's offset in the file."""
    try:
        fd, info = open_to_read(path)
    except FileNotFoundError:
        return
    except NotAFile as exc:
        _warn_not_a_file(exc)
        return
    try:
        position = _complete_end(fd, info.st_size)
        carry = b""  # the end of a line whose beginning lies further back
        while position > 0:
            start = max(0, position - _TAIL_CHUNK)
            pieces = (os.pread(fd, position - start, start) + carry).split(b"\n")
            position = start
            if position > 0:
                carry = pieces.pop(0)
            # pieces[i] starts after pieces[:i] and their newlines, from here
            offset = position + (len(carry) + 1 if position > 0 else 0)
            offsets = []
            for piece in pieces:
                offsets.append(offset)
                offset += len(piece) + 1
            for offset, line in zip(reversed(offsets), reversed(pieces), strict=True):
                if line.strip():
                    yield offset, line
    finally:
        os.close(fd)


def first_line(path: Path) -> bytes | None:
    """The first complete line of ``path`` (None if it has none)."""
    try:
        fd, _ = open_to_read(path)
    except FileNotFoundError:
        return None
    except NotAFile as exc:
        _warn_not_a_file(exc)
        return None
    with os.fdopen(fd, "rb") as stream:
        line = stream.readline()
    return line.rstrip(b"\n") if line.endswith(b"\n") else None


def last_seq(path: Path) -> int:
    """The ``seq`` of the last valid record of a JSONL file, 0 if it has none."""
    for line in iter_lines_backwards(path):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("seq"), int):
            return int(record["seq"])
    return 0


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def metadata_seq(path: Path) -> int | None:
    """The ``seq`` stamped into a ``metadata.json``; None if it is missing or unreadable."""
    try:
        document = orjson.loads(read_file(path))
    except (OSError, orjson.JSONDecodeError):
        return None
    seq = document.get("seq") if isinstance(document, dict) else None
    return seq if isinstance(seq, int) else None


def write_new_file(path: str | Path, data: bytes, *, sync: bool) -> None:
    """Create ``path`` owner-only with ``data`` (replacing nothing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


_OUR_TEMP = re.compile(r"\.[^/]+\.\d+\.[0-9a-f]{8}\.tmp")
"""``.<name>.<pid>.<random>.tmp``: how ``atomic_replace`` names its temporary files."""


def atomic_replace(path: str | Path, data: bytes, *, sync: bool) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new file, never half.

    Write a temporary file beside it, then rename over it. With ``sync`` the
    temporary file is fsynced before the rename and the folder after it, so
    the new version also survives a power loss.
    """
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write_new_file(temp, data, sync=sync)
        try:
            os.replace(temp, path)
        except IsADirectoryError:
            set_aside(path)
            os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if sync:
        fsync_dir(folder)


def set_aside(path: str | Path) -> str:
    """Move what stands where a session file belongs (a folder, say) out of its way, to a
    name beside it, saying so: it is kept, not deleted, and the file can be written."""
    aside = f"{path}.not-a-file-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    aside += f"-{secrets.token_hex(3)}"
    os.rename(path, aside)
    warnings.warn(
        f"{path} was not a file; it was moved to {os.path.basename(aside)}",
        RecoveryWarning,
        stacklevel=2,
    )
    return aside


def sweep_temp_files(folder: Path) -> int:
    """Remove what ``atomic_replace`` left in ``folder`` when its process died; how many.

    Only for a folder whose session the caller owns, and only files named
    the way ``atomic_replace`` names them: another tool's files are never
    touched.
    """
    removed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if _OUR_TEMP.fullmatch(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: str | Path) -> None:
    """fsync a file by name (its pages are shared by every descriptor)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNCFS_FROM = 8
"""From this many files on, one ``syncfs`` beats an ``fsync`` each (one journal commit, not N)."""


def _load_syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs`` (Linux), or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]  # type: ignore[attr-defined]
    call.restype = ctypes.c_int  # type: ignore[attr-defined]
    return call


_syncfs = _load_syncfs()

_HELD_FROM_FORKS: set[int] = set()
"""Descriptors a child forked without ``exec`` must not keep (``kept_from_forks``)."""
_NO_FORK = threading.Lock()
"""Held while such a descriptor is opened and noted (``no_fork_meanwhile``); a fork waits."""


@contextlib.contextmanager
def no_fork_meanwhile() -> Iterator[None]:
    """No other thread of this process forks while the block runs: a descriptor opened in
    it is handed to ``kept_from_forks`` before any child can copy it. Nothing in the block
    may fork without ``exec`` itself (``subprocess`` without ``preexec_fn`` does not)."""
    with _NO_FORK:
        yield


def kept_from_forks(fd: int) -> None:
    """Make ``fd`` refer to ``/dev/null`` in any child this process forks without ``exec``.

    A program that forks (``multiprocessing``'s default on Linux) hands each
    child a copy of every descriptor. A copy of the journal's keeps the
    Runtime's lock held while the child lives, after the Runtime's process
    has died (nobody replays its journal); a copy of a writer's pipe keeps
    that writer running. The child gets ``/dev/null`` in their place, so its
    own later closing (a finaliser) closes nothing else. Open ``fd`` and call
    this within ``no_fork_meanwhile``; call ``released_from_forks`` before
    closing ``fd``.
    """
    _HELD_FROM_FORKS.add(fd)


def released_from_forks(fd: int) -> None:
    _HELD_FROM_FORKS.discard(fd)


def close_kept(fd: int) -> None:
    """Close a descriptor ``kept_from_forks`` noted (released first: its number may be
    reused by anything this process opens next)."""
    released_from_forks(fd)
    os.close(fd)


def _blank_out_in_child() -> None:
    _NO_FORK.release()  # taken by the thread that forked, before it forked
    if not _HELD_FROM_FORKS:
        return
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in _HELD_FROM_FORKS:
            with contextlib.suppress(OSError):
                os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)
    _HELD_FROM_FORKS.clear()


os.register_at_fork(
    before=_NO_FORK.acquire,
    after_in_parent=_NO_FORK.release,
    after_in_child=_blank_out_in_child,
)


def sync_all(files: Collection[str], folders: Collection[str]) -> None:
    """Make ``files`` and the entries of ``folders`` durable, with as few syncs as it can.

    Many files at once are synced with one ``syncfs`` of their file system
    (the kernel commits its journal once, where an ``fsync`` each would
    commit it once per file); a few are fsynced one by one. Raises the
    ``OSError`` of a sync that fails.
    """
    if not files and not folders:
        return
    if _syncfs is not None and len(files) + len(folders) >= _SYNCFS_FROM:
        anchor = next(iter(folders)) if folders else os.path.dirname(next(iter(files)))
        with contextlib.suppress(FileNotFoundError):
            sync_file_system(anchor)
            return
    for path in files:
        fsync_path(path)
    for folder in folders:
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(folder)


def sync_file_system(folder: str | Path) -> None:
    """Make everything written on ``folder``'s file system durable (``syncfs``; where there is
    none, ``sync``: every file system). Raises the ``OSError`` of a sync that fails."""
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(folder))
    finally:
        os.close(fd)
