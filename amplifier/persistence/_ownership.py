"""Who owns a session: one OS lock per Runtime, and a claim in each session naming it.

Rule 1: a Runtime holds exactly one OS lock for its whole life: ``flock``
        on its journal file (``journal/<runtime>.journal``). The kernel
        drops it when the process dies, so "the runtime is live" is "its
        journal is locked", and a dead owner never blocks anyone.
Rule 2: a session folder's ``.lock`` file holds a claim: the runtime's
        name, pid, host and start time, or nothing. A session is in use
        while its claim names a live runtime; the file itself is never
        kept open, so sessions cost no file descriptor (O(1) per Runtime).
Rule 3: a claim changes only under a short ``flock`` on ``.lock`` (claim,
        release, delete). Two processes claiming one session serialise
        there: the second finds the first's live runtime and is refused,
        so exactly one wins.
Rule 4: a closed session is handed over: once its close is committed (its
        records durable), its runtime lists it in ``journal/<runtime>.handover``
        until its files are written and synced and its claim cleared, which
        the write-behind's next round does (within ``WRITE_BEHIND_DELAY``).
        Whoever looks for such a session, or claims it, waits for its runtime
        to finish (``HANDOVER_WAIT`` at most) rather than being told it is not
        there or in use: the holder is done with it.

The standard library's ``fcntl.flock`` is the OS primitive itself; the
lock packages of the ecosystem wrap the same call without a way to say who
holds a lock, which is what a refused user needs to read.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from ._exceptions import InvalidSessionId, SessionLocked
from ._paths import LOCK, SessionLocation, journal_root

JOURNAL_SUFFIX = ".journal"
CLAIM_SIZE = 256
"""A claim is written padded to this size and cleared by overwriting it with blanks: the
file is never truncated (on ext4, cutting a file to zero costs a journal commit)."""

_CLAIM_READ = 4096
"""Bytes of ``.lock`` read for its claim (written padded to ``CLAIM_SIZE``)."""
# A claim or a liveness probe holds a lock for microseconds; whoever meets
# one tries again for a little while before deciding anything.
_ATTEMPTS = 50
_PAUSE = 0.002
FORKED_COPY_WAIT = 1.0
"""Seconds a journal locked while the process its name gives is gone is tried again: a
process forked an instant before that one died holds a copy of the lock until it starts its
program, which on a loaded machine takes far longer than the microseconds it usually does."""
HANDOVER_WAIT = 5.0
"""Seconds a look-up or a claim waits for a live runtime handing a session over (Rule 4)."""
HANDOVER_SUFFIX = ".handover"


@dataclass(frozen=True, slots=True)
class Owner:
    """A Runtime as its claims name it."""

    runtime: str
    """The name of its journal file (without the suffix): unique, never reused."""
    pid: int
    host: str
    since: float
    """When the runtime started (seconds since the epoch)."""

    @classmethod
    def current(cls, runtime: str) -> Owner:
        return cls(runtime, os.getpid(), socket.gethostname(), time.time())

    def document(self) -> bytes:
        """The claim as written into ``.lock`` (padded with blanks, see ``CLAIM_SIZE``)."""
        fields = {"runtime": self.runtime, "pid": self.pid, "host": self.host, "since": self.since}
        return orjson.dumps(fields).ljust(CLAIM_SIZE)

    def describe(self) -> str:
        """``process 1234 on host (since 10:30:00)``, or the same process's other runtime."""
        if self.pid == os.getpid() and self.host == socket.gethostname():
            return f"another runtime in this process ({self.pid})"
        since = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"process {self.pid} on {self.host} (since {since})"


def parse_claim(data: bytes) -> Owner | None:
    """The owner a claim names; None for an empty or unreadable claim (nobody)."""
    if not data.strip():
        return None
    try:
        info = orjson.loads(data)
        return Owner(
            str(info["runtime"]),
            int(info["pid"]),
            str(info["host"]),
            float(info["since"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def runtime_alive(home: Path, runtime: str) -> bool:
    """True if the runtime named ``runtime`` is running now (its journal is locked).

    A lock is a runtime's only while its process lives: a process forked an
    instant before (a command starting, in that runtime or in a program
    probing it) holds a copy of every lock until it starts its program. So a
    journal locked while the process its name gives is gone is tried again
    for a little while before it counts as alive (see ``held_by_runtime``).
    """
    path = _runtime_file(home, runtime, JOURNAL_SUFFIX)
    if path is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # removed: it shut down, or its journal was replayed
    try:
        return held_by_runtime(fd, runtime, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _runtime_file(home: Path, runtime: str, suffix: str) -> Path | None:
    """``journal/<runtime><suffix>``; None if ``runtime`` cannot be a runtime's name."""
    if not runtime or "/" in runtime or runtime.startswith("."):
        return None
    return journal_root(home) / f"{runtime}{suffix}"


def held_by_runtime(fd: int, name: str, mode: int, *, patient: bool = False) -> bool:
    """Try to lock the journal open at ``fd`` (``mode``); True if its runtime holds it.

    Taken, the lock stays with ``fd``. Refused, it is tried again for up to
    ``FORKED_COPY_WAIT`` when the process that ``name``
    (``<time>-<pid>-<random>``) gives is gone (a copy of a lock held by a
    process forked an instant before its owner's death lasts only until
    that process starts its program), and for a moment if ``patient``.
    Still refused then, it counts as held.
    """
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            gone = not process_alive(journal_pid(name))
            wait = FORKED_COPY_WAIT if gone else (_ATTEMPTS * _PAUSE if patient else 0.0)
            if time.monotonic() - started >= wait:
                return True
            time.sleep(_PAUSE)


def journal_pid(name: str) -> int | None:
    """The process id in a journal's name (``<time>-<pid>-<random>``), if it has one."""
    try:
        return int(name.split("-")[1])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int | None) -> bool:
    """True if process ``pid`` runs on this machine (None: unknown, counted as alive)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def read_claim(location: SessionLocation) -> Owner | None:
    """Who the session's claim names (live or not); None if nobody."""
    try:
        fd = os.open(location.lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        return parse_claim(os.pread(fd, _CLAIM_READ, 0))
    finally:
        os.close(fd)


def holder(location: SessionLocation) -> Owner | None:
    """The live runtime that owns the session right now, if any."""
    owner = read_claim(location)
    if owner is not None and runtime_alive(location.home, owner.runtime):
        return owner
    return None


@contextlib.contextmanager
def _flocked(path: str | Path, *, create: bool) -> Iterator[int]:
    """``path`` open and flock'ed for a claim's read-modify-write (Rule 3).

    Raises ``FileNotFoundError`` if the file is not there. Blocking; worker thread.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        for attempt in range(_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(_PAUSE)
        yield fd
    finally:
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def _guarded(path: str | Path, *, create: bool) -> Iterator[tuple[int, int]]:
    """``path`` flock'ed (``_flocked``) and still the file at its path: its descriptor and
    its size (which only a holder of the flock changes).

    Raises ``FileNotFoundError`` if the file is not there, or was removed
    (its session deleted) while we waited for it. Blocking; worker thread.
    """
    with _flocked(path, create=create) as fd:
        held = os.fstat(fd)
        if os.stat(path, follow_symlinks=False).st_ino != held.st_ino:
            raise FileNotFoundError(errno.ENOENT, "removed while being claimed", str(path))
        yield fd, held.st_size


def claim(location: SessionLocation, owner: Owner, *, create: bool = True) -> None:
    """Make ``owner`` the session's owner, or raise ``SessionLocked`` naming the live holder.

    A claim by ``owner``'s own runtime is taken over (the runtime re-opens
    what it had); one that a live holder is handing over is waited for
    (Rule 4). ``FileNotFoundError`` if the folder (or, without ``create``, its
    ``.lock``) is gone. Blocking; worker thread.
    """
    deadline = time.monotonic() + HANDOVER_WAIT
    while True:
        try:
            with _guarded(location.lock, create=create) as (fd, size):
                current = parse_claim(os.pread(fd, _CLAIM_READ, 0))
                if (
                    current is None
                    or current.runtime == owner.runtime
                    or not runtime_alive(location.home, current.runtime)
                ):
                    _overwrite(fd, size, owner.document())
                    return
                if time.monotonic() > deadline or not handing_over(
                    location.home, current.runtime, location.session_id
                ):
                    raise SessionLocked(location.session_id, current.describe())
        except BlockingIOError:
            raise SessionLocked(
                location.session_id, "another process (busy claiming it)"
            ) from None
        except NotADirectoryError:
            raise FileNotFoundError(
                errno.ENOENT, "no session folder", str(location.lock)
            ) from None
        time.sleep(_PAUSE * 5)  # the holder is done with it: its release comes soon


def release(location: SessionLocation, owner: Owner) -> None:
    """Clear the session's claim if it still names ``owner`` (gone folders are fine).

    Unlike a claim, a release need not know that the file it locked is still the one at
    its path: if the session was deleted meanwhile, the blanks go to the removed file.
    The claim read is the whole file (``CLAIM_SIZE`` bytes), so its length is the file's.
    """
    lock = f"{location.home}/{location.relative}/{LOCK}"
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, BlockingIOError):
        with _flocked(lock, create=False) as fd:
            held = os.pread(fd, _CLAIM_READ, 0)
            current = parse_claim(held)
            if current is not None and current.runtime == owner.runtime:
                _overwrite(fd, len(held), b"")


def _overwrite(fd: int, size: int, claim: bytes) -> None:
    """Replace the claim in ``fd`` (``size`` bytes) with ``claim``, blanking what was longer."""
    os.pwrite(fd, claim.ljust(size), 0)


class Handovers:
    """The sessions a runtime has closed and not yet released, and its ``.handover`` listing them.

    The file has one line per session handed over: its folder relative to
    the home (Rule 4). It is a courtesy to other processes, not a record: a
    runtime that dies takes its meaning with it (its journal is replayed,
    its claims are free), and a line that could not be written costs
    another process a refusal, never a session. Thread-safe: the actor
    notes closes on the event loop, lists them there or from the worker
    thread that syncs the journal, and settles them from the write-behind's.
    """

    def __init__(self, home: Path, runtime: str) -> None:
        self.path = journal_root(home) / f"{runtime}{HANDOVER_SUFFIX}"
        self._closed: dict[str, str] = {}
        """Session id -> folder, of every session closed and not yet released."""
        self._listed: set[str] = set()
        """The ids of those the file lists."""
        self._unlisted: dict[str, str] = {}
        """Session id -> folder, of those closed and not yet in the file."""
        self._size = 0
        self._fd: int | None = None
        self._lock = threading.Lock()

    def closed(self, location: SessionLocation) -> None:
        """Note that ``location``'s close is committed; no I/O."""
        with self._lock:
            self._closed[location.session_id] = location.relative
            if location.session_id not in self._listed:
                self._unlisted[location.session_id] = location.relative

    def __contains__(self, session_id: object) -> bool:
        """Whether the session is closed and not yet released (its folder may still be coming)."""
        return session_id in self._closed

    def list_closed(self) -> None:
        """List every closed session not yet released (before a root's close is answered).

        One short write into a file held open, never synced: cheap enough for the event loop.
        """
        with self._lock:
            new, self._unlisted = self._unlisted, {}
            if not new:
                return
            self._listed.update(new)
            lines = "".join(f"{folder}\n" for folder in new.values()).encode()
            with contextlib.suppress(OSError):
                if self._fd is None:
                    self._fd = os.open(
                        self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
                    )
                os.pwrite(self._fd, lines, self._size)
                self._size += len(lines)

    def settle(self, locations: Iterable[SessionLocation]) -> None:
        """Forget ``locations``: released, or opened again by this runtime. Blocking."""
        with self._lock:
            struck = False
            for location in locations:
                self._closed.pop(location.session_id, None)
                self._unlisted.pop(location.session_id, None)
                if location.session_id in self._listed:
                    self._listed.discard(location.session_id)
                    struck = True
            if not struck or self._fd is None:
                return
            rest = "".join(f"{self._closed[sid]}\n" for sid in self._listed).encode()
            with contextlib.suppress(OSError):
                # What is left first, then the end cut: a reader meanwhile sees every
                # session still handed over (and some already done, which costs nothing).
                os.pwrite(self._fd, rest, 0)
                os.ftruncate(self._fd, len(rest))
                self._size = len(rest)

    def remove(self) -> None:
        """The runtime is shutting down: everything is released. Blocking."""
        with self._lock:
            self._closed.clear()
            self._listed.clear()
            self._unlisted.clear()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            with contextlib.suppress(OSError):
                self.path.unlink()


def _handed_over_folders(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode(errors="replace").splitlines()
    except OSError:
        return []


def handing_over(home: Path, runtime: str, session_id: str) -> bool:
    """True if ``runtime`` lists the session as closed and not yet released (Rule 4)."""
    path = _runtime_file(home, runtime, HANDOVER_SUFFIX)
    if path is None:
        return False
    listed = _handed_over_folders(path)
    return any(folder.rpartition("/")[2] == session_id for folder in listed)


def handed_over(home: Path, id_or_prefix: str) -> list[SessionLocation]:
    """Sessions whose id starts with ``id_or_prefix`` that a live runtime is handing over."""
    found: list[SessionLocation] = []
    try:
        paths = [p for p in journal_root(home).iterdir() if p.suffix == HANDOVER_SUFFIX]
    except OSError:
        return found
    for path in paths:
        matching: list[SessionLocation] = []
        for folder in _handed_over_folders(path):
            parts = folder.split("/")
            if len(parts) != 4 or parts[0] != "projects" or parts[2] != "sessions":
                continue
            if parts[3].startswith(id_or_prefix):
                with contextlib.suppress(InvalidSessionId):  # not a folder a runtime makes
                    matching.append(SessionLocation(home, parts[1], parts[3]))
        if matching and runtime_alive(home, path.stem):  # one probe of its lock per file
            found += matching
    return found


def await_handover(home: Path, id_or_prefix: str) -> bool:
    """Wait until every session matching ``id_or_prefix`` being handed over has its folder.

    True if there was one (look again), False at once if there is none.
    Blocking; at most ``HANDOVER_WAIT``.
    """
    deadline = time.monotonic() + HANDOVER_WAIT
    found = False
    while listed := handed_over(home, id_or_prefix):
        found = True
        if all(location.directory.is_dir() for location in listed):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(_PAUSE * 2)
    return found
