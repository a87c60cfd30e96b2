"""The writer process of ``_writer``: its side of the pipe, and the Runtime's.

Imported only when a Runtime starts a writer (``pickle`` and ``subprocess``
cost a command that never does some milliseconds of start-up).

Messages are pickles, each after its length; the writer is this Runtime's
own child, reading only from the pipe its parent made.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pickle
import select
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._files import kept_from_forks, no_fork_meanwhile, released_from_forks, write_all
from ._materialise import Backlog, Materialiser
from ._paths import SessionLocation
from ._upkeep import IndexUpkeep
from ._writer import WriterGone

_HEADER = struct.Struct("<Q")
_READY = b"ready"
_DIED = "the process writing the session files died"
_EXIT_WAIT = 2.0
"""Seconds a writer told to stop has to exit before it is killed."""
PIPE_BYTES = 1 << 20
"""The pipe to the writer holds this much (Linux's default limit for a process): the thread
that sends a round takes the interpreter's lock back after each write, which costs a wait
while the loop runs."""

# The writer imports the persistence modules it needs without ``amplifier``'s
# package initialisers (the runtime, the agents): bare packages stand in for them.
# It looks for modules where the Runtime's process does (a program may have added paths).
_BOOT = """\
# amplifier: the writer of a Runtime's session files (amplifier/persistence/_writer.py)
import json, signal, sys, types
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
root, home, durability, path = sys.argv[1:5]
sys.path[:] = json.loads(path)
for name, path in (("amplifier", root), ("amplifier.persistence", root + "/persistence")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from amplifier.persistence._writer_process import serve
serve(home, durability)
"""


def _send(fd: int, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    write_all(fd, _HEADER.pack(len(data)) + data)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class _Unpickler(pickle.Unpickler):
    """Finds a class that names itself by its public package (``amplifier.SessionLocation``)
    in the persistence module that defines it: a writer has no ``amplifier`` package proper."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except AttributeError:
            for loaded in list(sys.modules.values()):
                if loaded is not None and loaded.__name__.startswith("amplifier.persistence."):
                    found = getattr(loaded, name, None)
                    if isinstance(found, type) and found.__qualname__ == name:
                        return found
            raise


def _receive(fd: int) -> Any:
    """The next message on ``fd``; None at end of file."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    data = _read_exactly(fd, size)
    if data is None:
        return None
    return _Unpickler(io.BytesIO(data)).load()


def serve(home: str, durability: str) -> None:
    """The writer's side: answer requests on stdin until it closes."""
    upkeep = IndexUpkeep(Path(home))
    materialiser = Materialiser(Path(home), upkeep, track_dirty=durability == "fsync")
    _send(1, _READY)
    while (request := _receive(0)) is not None:
        operation, backlog, unindexed = request
        released: list[SessionLocation] = []
        try:
            if operation == "apply":
                if unindexed is not None:
                    materialiser.adopt_unindexed(unindexed)
                materialiser.apply(backlog, released=released)
            else:
                materialiser.sync()
        except Exception as exc:  # the parent raises it, as the thread would have
            _send(1, (released, exc, backlog))
        else:
            _send(1, (released, None, None))
    upkeep.close()


class WriterProcess:
    """The parent's side: a writer started, then used once it has said it is ready."""

    def __init__(self, home: Path, durability: str, lock_fd: int) -> None:
        root = Path(__file__).resolve().parent.parent
        # -P: not the current folder first on its path. The writer runs in the project,
        # whose json.py must not be what its first import finds.
        command = [
            sys.executable,
            "-P",
            "-c",
            _BOOT,
            str(root),
            str(home),
            durability,
            json.dumps(sys.path),
        ]
        # A child forked without exec holding the pipe would keep the writer past this
        # process's death (Rule 3): no thread forks between the pipe's making and its noting.
        with no_fork_meanwhile():
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                pass_fds=(lock_fd,),
            )
            assert self._process.stdin is not None
            assert self._process.stdout is not None
            self._to = self._process.stdin.fileno()
            self._from = self._process.stdout.fileno()
            kept_from_forks(self._to)
            kept_from_forks(self._from)
        with contextlib.suppress(AttributeError, OSError):  # Linux: a round in fewer writes
            fcntl.fcntl(self._to, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.ready = False
        self.gone = False
        """It died, or stopped answering (it never starts again)."""

    def poll_ready(self) -> bool:
        """True once the writer has said it is ready (never blocks)."""
        if not self.ready and not self.gone:
            readable, _, _ = select.select([self._from], [], [], 0)
            if readable:
                if _receive(self._from) == _READY:
                    self.ready = True
                else:
                    self.gone = True
        return self.ready

    def apply(
        self,
        backlog: Backlog,
        unindexed: Any = None,
        released: list[SessionLocation] | None = None,
    ) -> list[SessionLocation]:
        """``Materialiser.apply`` in the writer: ``backlog`` is left empty, or on failure
        holds the rest; the sessions whose close it passed go to ``released`` (on failure
        too) and are returned. ``unindexed``: what the Runtime's thread wrote and left for
        the index (``Materialiser.take_unindexed``), indexed first."""
        if released is None:
            released = []
        self._call("apply", backlog, unindexed, released)
        backlog.take()
        return released

    def sync(self) -> None:
        self._call("sync", None)

    def _call(
        self,
        operation: str,
        backlog: Backlog | None,
        unindexed: Any = None,
        released: list[SessionLocation] | None = None,
    ) -> None:
        try:
            _send(self._to, (operation, backlog, unindexed))
        except OSError as exc:
            # It reads a request whole before it writes anything: this one it never saw.
            self.gone = True
            raise WriterGone(_DIED, untouched=True) from exc
        cause: OSError | None = None
        try:
            reply = _receive(self._from)
        except OSError as exc:
            reply, cause = None, exc
        if reply is None:
            self.gone = True
            raise WriterGone(_DIED, untouched=False) from cause
        passed, failure, rest = reply
        if released is not None:
            released += passed
        if failure is not None:
            if backlog is not None and rest is not None:
                backlog.segments, backlog.size = rest.segments, rest.size
            raise failure

    def close(self) -> None:
        """Stop the writer and wait for it (called with no request outstanding).

        A ready writer exits at the end of its input; one that does not within
        ``_EXIT_WAIT`` (stopped, or stuck) is killed, which loses nothing now.
        """
        process = self._process
        if not self.ready or self.gone:
            process.kill()
        released_from_forks(self._to)
        released_from_forks(self._from)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        try:
            process.wait(_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
