"""Materialising sessions: what the journal holds, written into the session folders.

Plain blocking functions and the state they keep; they run in the
persistence actor's worker thread, and in recovery, which replays a dead
journal through the same code.

Rule 1: writes follow ``seq`` order at every barrier. Between barriers the
        files of different sessions may be written in any order (nothing
        in one refers to the other); a barrier (a session created, opened
        or closed) waits until everything before it is written. So at
        every instant, even before a journal replay, a child's folder
        appears only after its parent's ``delegate:start`` and
        ``children`` are written, and a parent's ``delegate:end`` only
        after the child's ``session:end``.
Rule 2: a session folder appears complete or not at all: it is built in
        the project's ``.staging`` folder (claim and ``metadata.json``
        first) and renamed into ``sessions/``. What the session wrote
        before the next barrier (its first lines, its newest metadata) is
        built in with it: those files may be written in any order
        relative to others between the two barriers (Rule 1), so they can
        appear with the folder, in one rename, rather than after it.
Rule 3: a session's index row is written before its folder appears, so a
        crash leaves a row without a folder (which readers skip), never a
        session the index lacks.
Rule 4: on failure, what was not written stays in the backlog, in order,
        and a file written part-way is cut back: the next attempt resumes
        exactly where this one stopped.
Rule 5: a call given a deadline stops at the first barrier past it, and
        what it did not reach stays in the backlog, as after a failure: a
        thread that shares the interpreter's lock with a loop that never
        idles waits for the lock after every system call, and a backlog
        that grows faster than it is written must not keep it writing
        forever (its caller hands the rest to a writer of its own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ._exceptions import CorruptSession
from ._files import atomic_replace, read_file, set_aside, sync_all, write_all
from ._ownership import Owner, runtime_alive
from ._paths import EVENTS, LOCK, METADATA, TRANSCRIPT, SessionLocation, ensure_private_dir
from ._upkeep import IndexUpkeep

_TRANSCRIPT = "/transcript.jsonl"
_TAKEN = (errno.EEXIST, errno.ENOTEMPTY)
"""What renaming a folder onto a session folder that is there already raises."""
STAGING = ".staging"
"""Beside ``sessions/``: where a new session's folder is built before it is renamed in."""
NOTE_AHEAD = 16
"""Index rows of new sessions written in one transaction by a round with a deadline."""
OPEN_FILE_LIMIT = 256
"""Session files kept open at most: within one round of writing, or between the batches
of durability ``flush``, which close them when writing stops (``Materialiser.close_files``)."""


@dataclass(frozen=True, slots=True)
class Create:
    """Build a new session's folder from its first metadata."""

    location: SessionLocation
    document: bytes
    owner: Owner | None
    """Who the new folder's claim names (None: nobody, as recovery builds it)."""


@dataclass(frozen=True, slots=True)
class Release:
    """A session was closed: once its files are durable, its claim can be cleared."""

    location: SessionLocation


@dataclass(slots=True)
class Segment:
    """Records between two barriers, then the barrier itself."""

    lines: dict[str, list[bytes]] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)
    """The newest ``metadata.json`` of each session (older ones need never be written)."""
    barrier: Create | Release | None = None

    def __bool__(self) -> bool:
        return bool(self.lines or self.documents or self.barrier)


class Backlog:
    """Acknowledged records not yet in the session files, as segments in ``seq`` order."""

    __slots__ = ("_open", "segments", "size", "through")

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._open: Segment | None = None
        self.size = 0
        """Bytes of lines and documents held."""
        self.through = 0
        """The highest seq added so far."""

    def line(self, path: str, data: bytes, seq: int) -> None:
        segment = self._current()
        lines = segment.lines.get(path)
        if lines is None:
            segment.lines[path] = [data]
        else:
            lines.append(data)
        self.size += len(data)
        self.through = seq

    def document(self, path: str, data: bytes, seq: int) -> None:
        documents = self._current().documents
        replaced = documents.get(path)
        if replaced is not None:
            self.size -= len(replaced)
        documents[path] = data
        self.size += len(data)
        self.through = seq

    def barrier(self, barrier: Create | Release, seq: int = 0) -> None:
        self._current().barrier = barrier
        self._open = None
        if isinstance(barrier, Create):
            self.size += len(barrier.document)
        self.through = max(self.through, seq)

    def extend(self, other: Backlog) -> None:
        """Add ``other``'s segments after this backlog's (``other`` must not be used again).

        Its first segment joins this backlog's open one: between barriers the
        order of different files is free (Rule 1), so a file gets one write
        per round however many batches fed it, and a session's metadata only
        its newest version.
        """
        if not other.segments:
            return
        segments = other.segments
        joined = self._open
        if joined is not None:
            first = segments[0]
            lines = joined.lines
            for path, more in first.lines.items():
                held = lines.get(path)
                if held is None:
                    lines[path] = more
                else:
                    held.extend(more)
            for path, document in first.documents.items():
                replaced = joined.documents.pop(path, None)
                if replaced is not None:
                    self.size -= len(replaced)  # never written: a newer one follows
                joined.documents[path] = document
            joined.barrier = first.barrier
            segments = segments[1:]
            self._open = joined if joined.barrier is None and not segments else None
        self.segments.extend(segments)
        if segments:
            self._open = other._open
        self.size += other.size
        self.through = max(self.through, other.through)

    def take(self) -> Backlog:
        """Everything held, as a backlog of its own; this one is left empty."""
        taken = Backlog()
        taken.segments, taken.size, taken.through = self.segments, self.size, self.through
        self.segments, self._open, self.size = [], None, 0
        return taken

    def recount(self) -> None:
        """Measure ``size`` again from what is held (after a write stopped part-way)."""
        size = 0
        for segment in self.segments:
            size += sum(len(line) for lines in segment.lines.values() for line in lines)
            size += sum(len(document) for document in segment.documents.values())
            if isinstance(segment.barrier, Create):
                size += len(segment.barrier.document)
        self.size = size

    def put_back(self, rest: Backlog) -> None:
        """Return what could not be written, in front of what came since (Rule 4)."""
        if not rest:
            return
        rest.segments.extend(self.segments)
        self.segments = rest.segments
        self._open = self.segments[-1] if self.segments and not self.segments[-1].barrier else None
        self.size += rest.size

    def _current(self) -> Segment:
        segment = self._open
        if segment is None:
            segment = self._open = Segment()
            self.segments.append(segment)
        return segment

    def __bool__(self) -> bool:
        return bool(self.segments)


class _OpenFiles:
    """A bounded cache of append-mode descriptors, with each file's length for rollback."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._fds: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def write(self, path: str, data: bytes) -> None:
        """Append ``data``; if the write fails part-way, cut the file back first."""
        entry = self._fds.get(path)
        if entry is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                fd = os.open(path, flags, 0o600)
            except IsADirectoryError:
                set_aside(path)
                fd = os.open(path, flags, 0o600)
            info = os.fstat(fd)
            if info.st_nlink > 1:
                # A hard link shares the file with another name (another session's, after
                # a copy made with links): this one gets a copy of its own, so appending
                # to it never writes into the other.
                os.close(fd)
                atomic_replace(path, read_file(Path(path)), sync=True)
                fd = os.open(path, flags, 0o600)
                info = os.fstat(fd)
            entry = (fd, info.st_size)
            self._fds[path] = entry
            if len(self._fds) > self._limit:
                _, (old_fd, _) = self._fds.popitem(last=False)
                os.close(old_fd)
        else:
            self._fds.move_to_end(path)
        fd, size = entry
        try:
            write_all(fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        self._fds[path] = (fd, size + len(data))

    def length(self, path: str) -> int:
        """The file's length as this cache knows it (0 if it does not exist)."""
        entry = self._fds.get(path)
        if entry is not None:
            return entry[1]
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0

    def truncate(self, path: str, length: int) -> None:
        """Cut a file back to ``length`` (undoing appends of a failed batch)."""
        entry = self._fds.get(path)
        if entry is not None:
            os.ftruncate(entry[0], length)
            self._fds[path] = (entry[0], length)
        else:
            os.truncate(path, length)

    def __bool__(self) -> bool:
        return bool(self._fds)

    def close_all(self) -> None:
        while self._fds:
            _, (fd, _) = self._fds.popitem()
            with contextlib.suppress(OSError):
                os.close(fd)


class Materialiser:
    """Writes backlogs into the session folders of one home; remembers what awaits a sync."""

    def __init__(
        self, home: Path, upkeep: IndexUpkeep, *, track_dirty: bool, replaying: str | None = None
    ) -> None:
        self.home = home
        self.upkeep = upkeep
        self._replaying = replaying
        """The dead runtime whose journal this materialiser replays (recovery holds its lock)."""
        self._files = _OpenFiles(OPEN_FILE_LIMIT)
        self._track = track_dirty
        self.dirty: set[str] = set()
        """Files written since the last sync (tracked only where a sync will follow)."""
        self.dirty_folders: set[str] = set()
        self._swept: set[str] = set()
        """Staging folders already cleared of crash leftovers by this materialiser."""
        self._recent = False
        """``write_now`` wrote since the last ``close_files``."""
        self._unindexed: dict[str, bytes] = {}
        """Metadata documents written and not yet in the index (``write_now`` leaves them)."""
        self._unsearched: dict[str, list[bytes]] = {}
        """Transcript lines written and not yet indexed for search (likewise)."""
        self._noted: set[Create] = set()
        """New sessions whose index rows are written and folders not yet built (Rule 3)."""

    def apply(
        self,
        backlog: Backlog,
        *,
        keep_open: bool = False,
        index_later: bool = False,
        until: float | None = None,
        released: list[SessionLocation] | None = None,
    ) -> list[SessionLocation]:
        """Write ``backlog`` (emptying it as it goes); the sessions whose close it passed
        (added to ``released`` as they pass, so that a caller whose call failed has them).

        On ``OSError`` the backlog holds exactly what is still to be written
        (Rule 4) and the error is raised. Descriptors are closed before
        returning, so an idle Runtime holds none; with ``keep_open``, the
        caller closes them (``close_files``) once writing stops. The index
        is brought up to date with what was written, and with what earlier
        calls left; with ``index_later``, that is left to the next call
        without (the rows of new sessions are written at once: Rule 3).
        With ``until`` (a ``time.monotonic()`` deadline), it stops at the
        first barrier past it and the backlog keeps the rest (Rule 5).
        """
        if released is None:
            released = []
        noted = self._noted
        # What lands is noted for the index as it lands, after what earlier calls left.
        documents, messages = self._unindexed, self._unsearched
        try:
            while backlog.segments:
                segment = backlog.segments[0]
                barrier = segment.barrier
                if isinstance(barrier, Create) and barrier not in noted:
                    # Rule 3, in one transaction for the sessions ahead (with a deadline,
                    # a few at a time: each row is a wait for the interpreter's lock).
                    self._note_ahead(backlog, None if until is None else NOTE_AHEAD)
                self._write_segment(segment, documents, messages)
                if isinstance(barrier, Create):
                    following = backlog.segments[1] if len(backlog.segments) > 1 else None
                    backlog.size -= self._build(barrier, following, documents, messages)
                    noted.discard(barrier)
                elif isinstance(barrier, Release):
                    released.append(barrier.location)
                segment.barrier = None
                backlog.segments.pop(0)
                if until is not None and backlog.segments and time.monotonic() >= until:
                    backlog.recount()  # Rule 5
                    break
            else:
                backlog.size = 0
        finally:
            if not keep_open:
                self._files.close_all()
            # Stopped at its deadline, the index waits for the next call, due at once, or
            # for the writer that takes over (``take_unindexed``): a cache of the files.
            if not index_later and (until is None or not backlog.segments):
                self._index_written()
        return released

    def take_unindexed(self) -> tuple[dict[str, bytes], dict[str, list[bytes]]]:
        """What was written and is not yet in the index (documents, transcript lines),
        for another materialiser to index (``adopt_unindexed``); this one forgets it."""
        taken = self._unindexed, self._unsearched
        self._unindexed, self._unsearched = {}, {}
        return taken

    def adopt_unindexed(self, taken: tuple[dict[str, bytes], dict[str, list[bytes]]]) -> None:
        """Index with the next call what another materialiser wrote (before what comes)."""
        documents, lines = taken
        self._unindexed = {**documents, **self._unindexed}
        for path, more in lines.items():
            self._unsearched[path] = more + self._unsearched.get(path, [])

    def _note_ahead(self, backlog: Backlog, limit: int | None) -> None:
        """Write the index rows of the next sessions ``backlog`` builds (at most ``limit``)."""
        ahead: list[Create] = []
        for segment in backlog.segments:
            barrier = segment.barrier
            if isinstance(barrier, Create) and barrier not in self._noted:
                ahead.append(barrier)
                if len(ahead) == limit:
                    break
        self.upkeep.note((barrier.location, barrier.document) for barrier in ahead)
        self._noted.update(ahead)

    def _index_written(self) -> None:
        """Bring the index up to date with the documents and lines written (in order)."""
        documents, self._unindexed = self._unindexed, {}
        lines, self._unsearched = self._unsearched, {}
        self.upkeep.note_paths(documents)
        self.upkeep.note_lines(lines)  # what landed, for search

    def write_now(self, backlog: Backlog) -> list[SessionLocation]:
        """Durability flush: write a batch's records or none of them (lines cut back on failure).

        The files stay open for the next batch: the caller closes them when writing stops.
        The index follows with the next ``apply``, the write-behind's round: a batch waits
        for its files, not for a cache (the rows of new sessions are written at once).
        """
        written: list[tuple[str, int]] = []
        try:
            for segment in backlog.segments:
                for path in segment.lines:
                    written.append((path, self._files.length(path)))
        except OSError:
            written = []
        try:
            self._recent = True
            return self.apply(backlog, keep_open=True, index_later=True)
        except OSError:
            for path, length in written:
                with contextlib.suppress(OSError):
                    self._files.truncate(path, length)
            raise

    @property
    def holding_files(self) -> bool:
        """Descriptors are open (``write_now`` keeps them for the next batch)."""
        return bool(self._files)

    def close_files(self) -> None:
        """Close what ``write_now`` keeps open, unless it wrote since the last call.

        Called every round of writing behind: files in use stay open (a
        batch that reopened them all would wait for it), idle ones close.
        """
        if self._recent:
            self._recent = False
        else:
            self._files.close_all()

    def sync(self) -> None:
        """Make every file and folder written since the last sync durable, and the index."""
        files = self.dirty | self.upkeep.unsynced()
        sync_all(files, self.dirty_folders | {os.path.dirname(p) for p in files})
        self.upkeep.synced()
        self.dirty.clear()
        self.dirty_folders.clear()

    # -- one segment -------------------------------------------------------------------

    def _write_segment(
        self, segment: Segment, written: dict[str, bytes], messages: dict[str, list[bytes]]
    ) -> None:
        """Write a segment's lines and documents, removing each as it lands (Rule 4)."""
        lines = segment.lines
        while lines:
            path = next(iter(lines))
            self._files.write(path, b"".join(lines[path]))
            if path.endswith(_TRANSCRIPT):
                messages.setdefault(path, []).extend(lines[path])
            del lines[path]
            if self._track:
                self.dirty.add(path)
        documents = segment.documents
        while documents:
            path, data = next(iter(documents.items()))
            atomic_replace(path, data, sync=False)
            del documents[path]
            written[path] = data
            if self._track:
                self.dirty.add(path)

    def _build(
        self,
        create: Create,
        following: Segment | None,
        written: dict[str, bytes],
        messages: dict[str, list[bytes]],
    ) -> int:
        """Build a new session's folder in ``.staging`` and rename it in (Rules 2 and 3).

        The session's lines and newest metadata in ``following`` (the segment
        after its creation) are built in and taken out of it once the folder
        is in place. Returns the bytes of the backlog this wrote.
        """
        location = create.location
        project = f"{self.home}/projects/{location.project}"
        sessions = f"{project}/sessions"
        directory = f"{sessions}/{location.session_id}"
        staging = f"{project}/{STAGING}"
        if staging not in self._swept:
            ensure_private_dir(Path(sessions), below=self.home)
            ensure_private_dir(Path(staging), below=self.home)
            if os.path.realpath(sessions) != os.path.join(
                os.path.realpath(self.home), location.relative.rsplit("/", 1)[0]
            ):
                raise CorruptSession(
                    location.session_id, "its project folder is a link out of the store"
                )
            sweep_staging(Path(staging), dead=self._replaying)
            self._swept.add(staging)
        # A replay finds the folders built before the crash: it keeps them. A folder
        # this runtime creates is new (its id drawn at random, or found free when the
        # create was admitted); one that appeared since fails the rename, and is kept.
        if self._replaying is not None and os.path.exists(directory):
            return len(create.document)
        # A replay builds under the dead runtime's name: while its journal's lock is
        # held, others take the folder for work in progress; after, for a leftover.
        owner = create.owner.runtime if create.owner is not None else self._replaying or "recovered"
        hidden = f"{staging}/{location.session_id}~{owner}~{secrets.token_hex(3)}"
        metadata = f"{directory}/{METADATA}"
        document = create.document
        files: dict[str, bytes] = {}
        if following is not None:
            newer = following.documents.get(metadata)
            if newer is not None:
                document = newer
            for name in (EVENTS, TRANSCRIPT):
                lines = following.lines.get(f"{directory}/{name}")
                if lines is not None:
                    files[name] = b"".join(lines)
        os.mkdir(hidden, 0o700)
        try:
            claim = create.owner.document() if create.owner is not None else b""
            _new_file(f"{hidden}/{LOCK}", claim)
            _new_file(f"{hidden}/{METADATA}", document)
            for name, data in files.items():
                _new_file(f"{hidden}/{name}", data)
            os.rename(hidden, directory)
        except BaseException as exc:
            shutil.rmtree(hidden, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in _TAKEN and os.path.isdir(directory):
                return len(create.document)
            raise
        size = len(create.document)
        if document is not create.document:
            assert following is not None
            del following.documents[metadata]
            written[metadata] = document
            size += len(document)
        for name, data in files.items():
            assert following is not None
            path = f"{directory}/{name}"
            lines = following.lines.pop(path)
            if name == TRANSCRIPT:
                messages.setdefault(path, []).extend(lines)
            size += len(data)
        if self._track:
            self.dirty.add(metadata)
            self.dirty.update(f"{directory}/{name}" for name in files)
            self.dirty_folders.add(directory)
            self.dirty_folders.add(sessions)
        return size


def _new_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def sweep_staging(staging: Path, *, dead: str | None = None) -> None:
    """Remove what crashes left in ``.staging``: folders whose runtime is no longer running.

    A folder being built or deleted is named ``<id>~<runtime>~<random>``;
    its runtime's journal lock says whether it is still at work. ``dead``:
    a runtime known to be dead although its journal is locked (the one whose
    journal the caller is replaying, under that lock).
    """
    try:
        leftovers = list(staging.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return
    home = staging.parent.parent.parent
    for folder in leftovers:
        parts = folder.name.split("~")
        if len(parts) == 3 and parts[1] != dead and runtime_alive(home, parts[1]):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)


def remove_session_folder(location: SessionLocation, owner: Owner) -> bool:
    """Move a session folder into ``.staging`` and remove it there; False if it was gone.

    Moved first, so anyone opening it finds the whole session or none.
    """
    staging = location.directory.parent.parent / STAGING
    ensure_private_dir(staging, below=location.home)
    doomed = staging / f"{location.session_id}~{owner.runtime}~{secrets.token_hex(3)}"
    try:
        os.rename(location.directory, doomed)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ENOENT):
            return False
        raise
    shutil.rmtree(doomed, ignore_errors=True)
    return True
