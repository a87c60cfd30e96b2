"""The write-behind in a process of its own: the session files written beside the loop.

A Runtime's event loop and the thread that writes its session files share
the interpreter's lock: every system call of the writer (some 65 for an
agent task with a sub-agent: folders, files, renames, the index) gives the
lock up and waits to take it back from the loop. A process has its own.
``WriterProcess`` serves ``Materialiser.apply`` and ``sync`` over a pipe:
the parent sends a backlog, the writer writes it (the same code, the same
rules) and answers with the sessions whose close it passed.

Rule 1: the writer starts only when a Runtime keeps writing (``START_AFTER``
        rounds back to back: one after which nothing was left behind
        starts the count again; or sooner when a round written in the
        thread runs past its time: a loop that never idles starves that
        thread), never to write the last backlog at shutdown: a command
        that writes once, or a session at a person's pace, pays no
        interpreter start. Until it answers, rounds are written in the
        parent's thread. Nor in a frozen application (``sys.frozen``,
        PyInstaller's and cx_Freeze's mark): its executable is the
        application itself, which would start again with the writer's
        arguments; its rounds stay in the thread.
Rule 2: it holds the Runtime's journal lock (an inherited descriptor of the
        journal): while it may still write, nobody replays that journal.
Rule 3: it never outlives the Runtime: it ignores the terminal's signals
        (the Runtime decides when to stop) and exits when its pipe closes,
        which the kernel does when the Runtime's process dies (a child that
        process forks without exec holds ``/dev/null`` in the pipe's place:
        ``_files.kept_from_forks``).
Rule 4: a writer that dies holding a request leaves that request's files in
        an unknown state: nothing more is written behind, and the journal,
        kept at shutdown, is replayed by the next Runtime (as after a crash).
        One that dies between requests (it reads a request whole before it
        writes) has written all it was asked: the Runtime's thread goes on
        writing, and the next sync is of the home's whole file system,
        since only the writer knew which of its files await one.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ._files import sync_file_system
from ._materialise import Backlog, Materialiser
from ._paths import SessionLocation

if TYPE_CHECKING:
    from ._writer_process import WriterProcess

START_AFTER = 3
"""Rounds of writing behind, back to back, a Runtime does in its own thread before it starts
a writer."""


class WriterGone(OSError):
    """The writer process died, or its pipe broke."""

    def __init__(self, message: str, *, untouched: bool) -> None:
        super().__init__(message)
        self.untouched = untouched
        """It died before it had the request whole: nothing of it was written (Rule 4)."""


class FilesWriter:
    """Writes backlogs into the session files: in the calling thread, or through a writer.

    Blocking, and called under the actor's files lock (one call at a time).
    Only durability ``fsync`` and ``none`` write behind in rounds; under
    ``flush`` each batch is written before it is answered, in the thread.
    """

    def __init__(self, materialiser: Materialiser, durability: str) -> None:
        self.local = materialiser
        self._durability = durability
        self._rounds = 0
        self._process: WriterProcess | None = None
        self._lock_fd: int | None = None
        self._lost: WriterGone | None = None
        """The writer died holding a request: its files are in an unknown state (Rule 4)."""
        self._unsynced = False
        """A writer died between requests: what it wrote may await a sync (Rule 4)."""

    def writing_as(self, lock_fd: int) -> None:
        """The Runtime's journal is open at ``lock_fd``: a writer may start (Rule 2)."""
        self._lock_fd = lock_fd

    def apply(
        self,
        backlog: Backlog,
        *,
        keep_open: bool = False,
        until: float | None = None,
        last: bool = False,
        released: list[SessionLocation] | None = None,
    ) -> list[SessionLocation]:
        """Write ``backlog``; written here, stop at the first barrier past ``until`` and
        leave the rest in it (``Materialiser.apply``'s Rule 5). A writer takes it all.
        The ``last`` one (at shutdown) starts no writer. The sessions whose close it
        passed are returned, and added to ``released`` even if it fails."""
        if released is None:
            released = []
        process = self._writer(starting=not last and bool(backlog))
        if process is not None:
            unindexed = self.local.take_unindexed()
            try:
                return process.apply(backlog, unindexed if any(unindexed) else None, released)
            except WriterGone as exc:
                if exc.untouched:
                    self.local.adopt_unindexed(unindexed)
                self._gone(exc)
        return self.local.apply(backlog, keep_open=keep_open, until=until, released=released)

    def sync(self) -> None:
        self.local.sync()
        process = self._writer(starting=False)
        if process is not None:
            try:
                process.sync()
                return
            except WriterGone as exc:
                self._gone(exc)
        if self._unsynced:
            sync_file_system(self.local.home)
            self._unsynced = False

    def idle(self) -> None:
        """Nothing is left behind: the rounds that may start a writer are counted anew."""
        self._rounds = 0

    def hurry(self) -> None:
        """Writing in this thread falls behind (a round ran past its time): the next round
        starts a writer (Rule 1)."""
        self._rounds = max(self._rounds, START_AFTER - 1)

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.close()

    def _gone(self, failure: WriterGone) -> None:
        """The writer died: raise if it held a request, else write in this thread (Rule 4)."""
        if not failure.untouched:
            self._lost = failure
            raise failure
        self.close()
        self._lock_fd = None  # no other writer: this Runtime's thread writes from now on
        self._unsynced = True

    def _writer(self, *, starting: bool = True) -> WriterProcess | None:
        """The writer, if it is ready; None: write in this thread. Raises after Rule 4."""
        if self._lost is not None:
            raise WriterGone(str(self._lost), untouched=False)
        process = self._process
        if process is None:
            if not starting or self._durability == "flush" or self._lock_fd is None:
                return None
            if getattr(sys, "frozen", False):
                return None  # no interpreter to start (Rule 1)
            self._rounds += 1
            if self._rounds < START_AFTER:
                return None
            from ._writer_process import WriterProcess  # only when one starts: see there

            try:
                process = self._process = WriterProcess(
                    self.local.home, self._durability, self._lock_fd
                )
            except OSError:
                self._lock_fd = None  # no processes here: the thread writes, as before
                return None
        return process if process.poll_ready() else None
