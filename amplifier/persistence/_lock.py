"""One owner per session: an OS lock on the session folder's ``.lock`` file.

The lock is ``flock(LOCK_EX)`` on an open file description, so it conflicts
between processes AND between two runtimes of one process, and the kernel
drops it when its holder dies: a lock left by a dead process never blocks.
The file's content names the holder (pid, host, since) for the error shown
to a second opener; the content alone proves nothing, only the flock does.

The standard library's ``fcntl.flock`` is the OS primitive itself; the
ecosystem's lock packages wrap the same call without a way to record who
holds it, which is what a user needs to see.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from pathlib import Path

import orjson

from ._exceptions import SessionLocked

# A reader probing whether a session is live holds the lock for microseconds;
# an owner that collides with such a probe tries again before giving up.
_ACQUIRE_ATTEMPTS = 5
_ACQUIRE_PAUSE = 0.01


class FileLock:
    """An exclusive flock held on ``path`` until ``release``."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(
        cls, path: Path, *, session_id: str, label: str = "", create: bool = True
    ) -> FileLock:
        """Lock ``path`` (creating it 0600 if ``create``) or raise ``SessionLocked``.

        ``SessionLocked`` names the holder. ``FileNotFoundError`` if the file
        is not there, or was removed (its session deleted) while we waited
        for it: a lock on a file no longer at ``path`` guards nothing.
        Blocking (a few short retries); call from a worker thread.
        """
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            for attempt in range(_ACQUIRE_ATTEMPTS):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == _ACQUIRE_ATTEMPTS - 1:
                        raise SessionLocked(session_id, describe_holder(path)) from None
                    time.sleep(_ACQUIRE_PAUSE)
            if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(errno.ENOENT, "removed while being locked", str(path))
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.time(),
                "label": label,
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps(holder), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def is_locked(path: Path) -> bool:
    """True if a live process (or runtime) holds the lock at ``path`` right now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def describe_holder(path: Path) -> str:
    """``process 1234 on host (since 10:30:00)``, or ``another process`` if unknown."""
    try:
        info = orjson.loads(path.read_bytes())
        pid = int(info["pid"])
        host = str(info.get("host", "?"))
        since = time.strftime("%H:%M:%S", time.localtime(float(info.get("since", 0))))
    except (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return "another process"
    if pid == os.getpid():
        return f"another runtime in this process ({pid})"
    return f"process {pid} on {host} (since {since})"
