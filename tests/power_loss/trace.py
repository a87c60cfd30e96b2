"""Record a process's file operations with ``strace`` and turn them into operations on a model.

Why ``strace`` rather than a seam in the persistence layer: it records what
the process really does, SQLite's own writes to ``index.sqlite3`` and its
write-ahead log included (which no seam of ours would see), and whatever
later code writes (a tool's file, file history) without that code having
to go through anything. It costs a Linux machine with ``strace``, which CI
is; where there is none the test says so and skips.

The trace covers the whole process; only operations on paths under the
recorded ``base`` folder become ``Op``s (their inodes numbered by us, from
the snapshot of ``base`` taken before the run). Writes to the ``acks`` file
are the workload's acknowledgements (``Ack``), placed between the
operations where they happened.

Every write is cut into pieces at 4 KiB page boundaries (a power cut can
persist some pages of a write and not others); a piece lies either wholly
within the file as it was (an overwrite) or wholly beyond its end (an
append), which the ext4 model treats differently. Consecutive pieces of
zeros (a journal growing by a zeroed chunk) stay one piece.

Order: operations are numbered in the order their system calls returned;
a sync covers what had returned before it was called (``Sync.covers``), so
a write that overlaps a sync in another thread is never taken as synced.
What a runtime's journal held is taken as of each of its syncs' calls too
(``Trace.journal_syncs``): a batch another thread wrote meanwhile is
durable only with its own sync.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .ops import Ack, Link, Node, Op, Rename, Sync, Trace, Truncate, Unlink, Write

PAGE = 4096

TRACED = (
    "openat,open,creat,write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,syncfs,sync,"
    "rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,rmdir,ftruncate,truncate,"
    "close,dup,dup2,dup3,fcntl,lseek,link,linkat,symlink,symlinkat,fallocate,execve"
)

O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o1, 0o2, 0o100, 0o200, 0o1000, 0o2000
AT_REMOVEDIR = 0x200
F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030


# -- recording ------------------------------------------------------------------------------


def strace_available() -> str | None:
    """Why ``strace`` cannot record here (None if it can)."""
    if shutil.which("strace") is None:
        return "strace is not installed"
    probe = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=none", sys.executable, "-c", "pass"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def record(command: list[str], *, base: Path, acks: Path, log: Path, env: dict[str, str]) -> Trace:
    """Run ``command`` under ``strace``; the trace of what it did under ``base``."""
    base = Path(os.path.realpath(base))
    initial, paths = snapshot(base)
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-X",
            "raw",
            "-y",
            "-xx",
            "-s",
            str(64 * 1024 * 1024),
            "-e",
            "signal=none",
            "-e",
            f"trace={TRACED}",
            "-o",
            str(log),
            *command,
        ],
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the traced workload failed ({done.returncode}):\n"
            + done.stderr.decode(errors="replace")[-4000:]
        )
    with log.open("rb") as lines:
        return parse(
            lines, base=base, acks=Path(os.path.realpath(acks)), initial=initial, paths=paths
        )


def snapshot(base: Path) -> tuple[dict[int, Node], dict[int, str]]:
    """Every file and folder under ``base`` as nodes (inode 0 is ``base``)."""
    nodes: dict[int, Node] = {}
    paths: dict[int, str] = {}

    def visit(path: Path) -> int:
        ino = len(nodes)
        paths[ino] = str(path)
        if path.is_dir() and not path.is_symlink():
            entries: dict[str, int] = {}
            nodes[ino] = Node(entries=entries)
            for child in sorted(path.iterdir()):
                entries[child.name] = visit(child)
        else:
            nodes[ino] = Node(data=path.read_bytes())
        return ino

    visit(base)
    return nodes, paths


# -- parsing -----------------------------------------------------------------------------------

_LINE = re.compile(rb"^(\d+) +(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$", re.DOTALL)
_RESULT = re.compile(rb"^(.*)\) += (-?\d+|\?)(?:<(?:[^>]*)>)?(?: .*)?$", re.DOTALL)


@dataclass
class _Fd:
    ino: int | None
    """None: a file outside ``base`` (or the acks file, see ``acks``)."""
    acks: bool = False
    append: bool = False
    position: int = 0


class _Volatile:
    """The file system as the process saw it (every operation applied), for resolving names."""

    def __init__(self, base: Path, initial: dict[int, Node], paths: dict[int, str]) -> None:
        self.base = str(base)
        self.files: dict[int, bytearray] = {}
        self.dirs: dict[int, dict[str, int]] = {}
        for ino, node in initial.items():
            if node.entries is not None:
                self.dirs[ino] = dict(node.entries)
            else:
                self.files[ino] = bytearray(node.data or b"")
        self.paths = dict(paths)
        self.next_ino = len(initial)

    def split(self, path: str) -> list[str] | None:
        """The components of ``path`` below ``base``; None if it is not under ``base``."""
        path = os.path.normpath(path)
        if path == self.base:
            return []
        if not path.startswith(self.base + "/"):
            return None
        return path[len(self.base) + 1 :].split("/")

    def lookup(self, path: str) -> int | None:
        parts = self.split(path)
        if parts is None:
            return None
        ino = 0
        for part in parts:
            entries = self.dirs.get(ino)
            if entries is None or part not in entries:
                return None
            ino = entries[part]
        return ino

    def parent(self, path: str) -> tuple[int, str] | None:
        """The folder holding ``path`` and the last component; None if outside or missing."""
        parts = self.split(path)
        if not parts:
            return None
        folder = self.lookup(os.path.join(self.base, *parts[:-1]))
        if folder is None or folder not in self.dirs:
            return None
        return folder, parts[-1]

    def new(self, *, is_dir: bool, path: str) -> int:
        ino = self.next_ino
        self.next_ino += 1
        if is_dir:
            self.dirs[ino] = {}
        else:
            self.files[ino] = bytearray()
        self.paths[ino] = path
        return ino


class _Parser:
    def __init__(self, base: Path, acks: Path, initial: dict[int, Node], paths: dict[int, str]):
        self.fs = _Volatile(base, initial, paths)
        self.acks_path = str(acks)
        self.tables: dict[bytes, dict[int, _Fd]] = {}
        """The descriptors of each process that started a program of its own (by thread id):
        the Runtime's writer has its own numbers. Every other thread is the workload's."""
        self.workload: dict[int, _Fd] = {}
        self.fds = self.workload
        self.tid = b""
        self.first_tid: bytes | None = None
        self.ops: list[Op] = []
        self.acks: list[Ack] = []
        self.pending: dict[bytes, tuple[bytes, bytes, int, bytes | None]] = {}
        """Calls started and not yet returned, by thread: name, arguments so far, the
        operations returned before, and what a journal held when its sync was called."""
        self.journal_syncs: dict[int, bytes] = {}
        self.called_with: bytes | None = None

    # -- lines ------------------------------------------------------------------------------

    def feed(self, line: bytes) -> None:
        match = _LINE.match(line.rstrip(b"\n"))
        if match is None:
            return
        tid, resumed, name, rest = match.groups()
        self.tid = tid
        if self.first_tid is None:
            self.first_tid = tid
        self.fds = self.tables.get(tid, self.workload)
        if resumed is not None:
            started = self.pending.pop(tid, None)
            if started is None:
                return
            name, head, covers, self.called_with = started
            rest = head + rest
        else:
            covers = len(self.ops)
            self.called_with = None
            if rest.endswith(b" <unfinished ...>"):
                head = rest[: -len(b" <unfinished ...>")]
                # A sync makes durable what was written before it was called, not after.
                content = self._journal_at(head) if name in (b"fsync", b"fdatasync") else None
                self.pending[tid] = (name, head, covers, content)
                return
        result = _RESULT.match(rest)
        if result is None:
            return
        args_text, value = result.groups()
        if value == b"?" or int(value) < 0:
            return  # failed, or the process died in it: no effect
        self.call(name.decode(), _split_args(args_text), int(value), covers)

    # -- one system call ---------------------------------------------------------------------

    def call(self, name: str, args: list[bytes], value: int, covers: int) -> None:
        handler = getattr(self, f"_{name}", None)
        if handler is not None:
            handler(args, value, covers)

    def _execve(self, args: list[bytes], value: int, covers: int) -> None:
        if self.tid != self.first_tid:  # a process of the workload's, starting its program
            self.tables[self.tid] = self.fds = {}

    def _open(self, args: list[bytes], value: int, covers: int) -> None:
        self._openat([b"-100<>", *args], value, covers)

    def _creat(self, args: list[bytes], value: int, covers: int) -> None:
        self._open([args[0], str(O_CREAT | O_WRONLY | O_TRUNC).encode()], value, covers)

    def _openat(self, args: list[bytes], value: int, covers: int) -> None:
        path = self._path(args[0], args[1])
        flags = int(args[2], 0)
        if path == self.acks_path:
            self.fds[value] = _Fd(None, acks=True)
            return
        ino = self.fs.lookup(path)
        if ino is None and flags & O_CREAT:
            where = self.fs.parent(path)
            if where is not None:
                ino = self.fs.new(is_dir=False, path=path)
                self.fs.dirs[where[0]][where[1]] = ino
                self.ops.append(Link(where[0], where[1], ino, is_dir=False))
        elif ino is not None and flags & O_TRUNC and self.fs.files.get(ino):
            self.fs.files[ino].clear()
            self.ops.append(Truncate(ino, 0))
        self.fds[value] = _Fd(ino, append=bool(flags & O_APPEND))

    def _close(self, args: list[bytes], value: int, covers: int) -> None:
        self.fds.pop(_fd(args[0]), None)

    def _dup(self, args: list[bytes], value: int, covers: int) -> None:
        old = self.fds.get(_fd(args[0]))
        if old is not None:
            self.fds[value] = _Fd(old.ino, old.acks, old.append, old.position)

    _dup2 = _dup3 = _dup

    def _fcntl(self, args: list[bytes], value: int, covers: int) -> None:
        if int(args[1], 0) in (F_DUPFD, F_DUPFD_CLOEXEC):
            self._dup(args, value, covers)

    def _lseek(self, args: list[bytes], value: int, covers: int) -> None:
        fd = self.fds.get(_fd(args[0]))
        if fd is not None:
            fd.position = value

    def _write(self, args: list[bytes], value: int, covers: int) -> None:
        fd = self.fds.get(_fd(args[0]))
        if fd is None:
            return
        data = _string(args[1])[:value]
        if fd.acks:
            self.acks.extend(
                Ack(len(self.ops), orjson.loads(line)) for line in data.splitlines() if line
            )
            return
        if fd.ino is None:
            return
        offset = len(self.fs.files[fd.ino]) if fd.append else fd.position
        self._apply_write(fd.ino, offset, data)
        fd.position = offset + len(data)

    def _pwrite64(self, args: list[bytes], value: int, covers: int) -> None:
        fd = self.fds.get(_fd(args[0]))
        if fd is not None and fd.ino is not None:
            self._apply_write(fd.ino, int(args[3], 0), _string(args[1])[:value])

    def _writev(self, args: list[bytes], value: int, covers: int) -> None:
        self._write([args[0], _iovec_string(args[1])], value, covers)

    def _pwritev(self, args: list[bytes], value: int, covers: int) -> None:
        self._pwrite64([args[0], _iovec_string(args[1]), args[2], args[3]], value, covers)

    _pwritev2 = _pwritev

    def _ftruncate(self, args: list[bytes], value: int, covers: int) -> None:
        fd = self.fds.get(_fd(args[0]))
        if fd is not None and fd.ino is not None:
            self._apply_truncate(fd.ino, int(args[1], 0))

    def _truncate(self, args: list[bytes], value: int, covers: int) -> None:
        ino = self.fs.lookup(self._path(None, args[0]))
        if ino is not None:
            self._apply_truncate(ino, int(args[1], 0))

    def _fallocate(self, args: list[bytes], value: int, covers: int) -> None:
        fd = self.fds.get(_fd(args[0]))
        if fd is None or fd.ino is None:
            return
        if int(args[1], 0) != 0:
            raise NotImplementedError(f"fallocate mode {args[1]!r} on {self.fs.paths[fd.ino]}")
        end = int(args[2], 0) + int(args[3], 0)
        if end > len(self.fs.files[fd.ino]):
            self._apply_truncate(fd.ino, end)

    def _fsync(self, args: list[bytes], value: int, covers: int, data_only: bool = False) -> None:
        fd = self.fds.get(_fd(args[0]))
        if fd is not None and fd.ino is not None:
            self.ops.append(Sync(fd.ino, data_only, covers))
            self._note_journal(fd.ino)

    def _fdatasync(self, args: list[bytes], value: int, covers: int) -> None:
        self._fsync(args, value, covers, data_only=True)

    def _syncfs(self, args: list[bytes], value: int, covers: int) -> None:
        self.ops.append(Sync(None, False, covers))

    def _sync(self, args: list[bytes], value: int, covers: int) -> None:
        self.ops.append(Sync(None, False, covers))

    def _mkdir(self, args: list[bytes], value: int, covers: int) -> None:
        self._make_dir(self._path(None, args[0]))

    def _mkdirat(self, args: list[bytes], value: int, covers: int) -> None:
        self._make_dir(self._path(args[0], args[1]))

    def _make_dir(self, path: str) -> None:
        where = self.fs.parent(path)
        if where is None:
            return
        ino = self.fs.new(is_dir=True, path=path)
        self.fs.dirs[where[0]][where[1]] = ino
        self.ops.append(Link(where[0], where[1], ino, is_dir=True))

    def _unlink(self, args: list[bytes], value: int, covers: int) -> None:
        self._remove(self._path(None, args[0]))

    _rmdir = _unlink

    def _unlinkat(self, args: list[bytes], value: int, covers: int) -> None:
        self._remove(self._path(args[0], args[1]))

    def _remove(self, path: str) -> None:
        where = self.fs.parent(path)
        if where is None:
            return
        folder, name = where
        ino = self.fs.dirs[folder].pop(name, None)
        if ino is not None:
            self.ops.append(Unlink(folder, name, ino))

    def _rename(self, args: list[bytes], value: int, covers: int) -> None:
        self._move(self._path(None, args[0]), self._path(None, args[1]))

    def _renameat(self, args: list[bytes], value: int, covers: int) -> None:
        self._move(self._path(args[0], args[1]), self._path(args[2], args[3]))

    _renameat2 = _renameat

    def _move(self, source: str, target: str) -> None:
        src, dst = self.fs.parent(source), self.fs.parent(target)
        if src is None and dst is None:
            return
        if src is None or dst is None:
            raise NotImplementedError(f"rename across the recorded folder: {source} -> {target}")
        ino = self.fs.dirs[src[0]].pop(src[1])
        self.fs.dirs[dst[0]][dst[1]] = ino
        self.fs.paths[ino] = target
        self.ops.append(Rename(src[0], src[1], dst[0], dst[1], ino, ino in self.fs.dirs))

    def _link(self, args: list[bytes], value: int, covers: int) -> None:
        raise NotImplementedError("hard links are not modelled")

    _linkat = _symlink = _symlinkat = _link

    # -- helpers ------------------------------------------------------------------------------

    def _path(self, dirfd: bytes | None, path: bytes) -> str:
        name = _string(path).decode("utf-8", "surrogateescape")
        if os.path.isabs(name) or dirfd is None:
            return os.path.normpath(name)
        return os.path.normpath(os.path.join(_annotation_path(dirfd), name))

    def _apply_write(self, ino: int, offset: int, data: bytes) -> None:
        content = self.fs.files.get(ino)
        if content is None:
            return  # a folder opened for writing: nothing to model
        size = len(content)
        for start, piece, append in _pieces(offset, data, size):
            self.ops.append(Write(ino, start, piece, append))
        if offset > size:
            content.extend(bytes(offset - size))
        content[offset : offset + len(data)] = data

    def _apply_truncate(self, ino: int, size: int) -> None:
        content = self.fs.files.get(ino)
        if content is None:
            return
        if size < len(content):
            del content[size:]
        else:
            content.extend(bytes(size - len(content)))
        self.ops.append(Truncate(ino, size))

    def _journal_at(self, head: bytes) -> bytes | None:
        """What the journal a sync's arguments name holds now (None: not a journal)."""
        fd = self.fds.get(_fd(_split_args(head)[0]))
        if fd is None or fd.ino is None or not self.fs.paths.get(fd.ino, "").endswith(".journal"):
            return None
        return bytes(self.fs.files.get(fd.ino, b""))

    def _note_journal(self, ino: int) -> None:
        path = self.fs.paths.get(ino, "")
        if path.endswith(".journal") and ino in self.fs.files:
            content = self.called_with if self.called_with is not None else self.fs.files[ino]
            self.journal_syncs[len(self.ops) - 1] = bytes(content)


def parse(
    lines: Iterator[bytes] | Any,
    *,
    base: Path,
    acks: Path,
    initial: dict[int, Node],
    paths: dict[int, str],
) -> Trace:
    parser = _Parser(base, acks, initial, paths)
    for line in lines:
        parser.feed(line)
    return Trace(
        base=base,
        initial=initial,
        ops=parser.ops,
        acks=parser.acks,
        paths=parser.fs.paths,
        journal_syncs=parser.journal_syncs,
    )


def _pieces(offset: int, data: bytes, size: int) -> Iterator[tuple[int, bytes, bool]]:
    """``data`` written at ``offset`` cut at page boundaries and at the file's end ``size``."""
    cuts = {offset, offset + len(data)}
    if offset < size < offset + len(data):
        cuts.add(size)
    first_page = (offset // PAGE + 1) * PAGE
    cuts.update(range(first_page, offset + len(data), PAGE))
    bounds = sorted(cuts)
    merged: list[list[int]] = []  # [start, end, all zeros]
    for start, end in itertools.pairwise(bounds):
        zeros = not data[start - offset : end - offset].strip(b"\0")
        last = merged[-1] if merged else None
        if last is not None and zeros and last[2] and (last[0] >= size) == (start >= size):
            last[1] = end
        else:
            merged.append([start, end, zeros])
    for start, end, _ in merged:
        yield start, data[start - offset : end - offset], start >= size


# -- strace's argument syntax (with -xx, -y, -X raw) ---------------------------------------------


def _split_args(text: bytes) -> list[bytes]:
    """Top-level comma-separated arguments; strings, brackets and ``<...>`` kept whole."""
    args: list[bytes] = []
    depth = 0
    start = 0
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == 0x22:  # '"': with -xx a string holds only \xHH escapes
            index = text.index(b'"', index + 1)
        elif char == 0x3C:  # '<': a -y annotation, hex escaped too
            index = text.index(b">", index + 1)
        elif char in b"[{(":
            depth += 1
        elif char in b"]})":
            depth -= 1
        elif char == 0x2C and depth == 0:
            args.append(text[start:index].strip())
            start = index + 1
        index += 1
    tail = text[start:].strip()
    if tail:
        args.append(tail)
    return args


def _string(token: bytes) -> bytes:
    """The bytes of a ``"\\x61\\x62"`` argument."""
    token = token.strip()
    if token.endswith(b"..."):
        raise ValueError("strace cut a string short: raise -s")
    if not (token.startswith(b'"') and token.endswith(b'"')):
        raise ValueError(f"not a string: {token[:80]!r}")
    return bytes.fromhex(token[1:-1].replace(b"\\x", b"").decode())


def _fd(token: bytes) -> int:
    return int(token.split(b"<", 1)[0])


def _annotation_path(token: bytes) -> str:
    """The path in an fd's ``<...>`` annotation (``-y``)."""
    inner = token[token.index(b"<") + 1 : token.index(b">")]
    return bytes.fromhex(inner.replace(b"\\x", b"").decode()).decode("utf-8", "surrogateescape")


def _iovec_string(token: bytes) -> bytes:
    parts = re.findall(rb'iov_base="([^"]*)"', token)
    return b'"' + b"".join(parts) + b'"'
