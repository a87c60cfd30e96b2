"""Where sessions live on disk, and which names are safe to put there.

Rule 1: nothing is read or written through a symbolic link that leads out
        of the store: files are opened with O_NOFOLLOW, and a session whose
        folder resolves elsewhere is refused (``SessionLocation.leads_outside``).

Layout (DESIGN.md, "On disk")::

    $AMPLIFIER_HOME/projects/<project-slug>/sessions/<session-id>/
        transcript.jsonl  events.jsonl  metadata.json  .lock

Rule 2: every id that reaches the file system has passed ``validate_session_id``
first, so no id can name a path outside its project's ``sessions`` folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from amplifier._errors import UsageError

from ._exceptions import CorruptSession, InvalidSessionId
from ._files import fsync_dir

MAX_ID_LENGTH = 128
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

TRANSCRIPT = "transcript.jsonl"
EVENTS = "events.jsonl"
METADATA = "metadata.json"
LOCK = ".lock"


def validate_session_id(value: str) -> str:
    """Return ``value`` if it is safe to use as a session id (or prefix); raise otherwise.

    Allowed: letters, digits, ``-``, ``_`` and ``.``, starting with a letter or
    digit, at most ``MAX_ID_LENGTH`` characters, and never ``..``.
    """
    if not value:
        raise InvalidSessionId(value, "it is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidSessionId(value, f"longer than {MAX_ID_LENGTH} characters")
    if ".." in value:
        raise InvalidSessionId(value, "'..' is not allowed")
    if "/" in value or "\\" in value or "\x00" in value:
        raise InvalidSessionId(value, "path separators are not allowed")
    if not _SAFE_ID.fullmatch(value):
        raise InvalidSessionId(
            value,
            "only letters, digits, '-', '_' and '.' are allowed, starting with a letter or digit",
        )
    return value


_ROOT_ID = re.compile(r"\d{8}T\d{6}Z-(?P<span>[0-9a-f]{16})")
_CHILD_ID = re.compile(r"(?P<parent>[0-9a-f]{16})-(?P<span>[0-9a-f]{16})_[a-z0-9][a-z0-9-]*")


def id_spans(session_id: str) -> tuple[str | None, str | None]:
    """The parent's span and the session's own span that an id carries.

    DESIGN.md, "Identifiers": a root is ``{timestamp}-{span}``, a sub-session
    ``{parent-span}-{span}_{agent}``, so a child's id starts with its
    parent's span. That finds a session's children when its metadata (the
    list of them) is damaged. An id of another form carries neither.
    """
    if match := _CHILD_ID.fullmatch(session_id):
        return match["parent"], match["span"]
    if match := _ROOT_ID.fullmatch(session_id):
        return None, match["span"]
    return None, None


def project_slug(directory: str | os.PathLike[str]) -> str:
    """The folder name of a project: its absolute path with every ``/`` turned into ``-``.

    ``/home/user/projects/my-app`` becomes ``-home-user-projects-my-app``.
    """
    return os.path.abspath(os.fspath(directory)).replace(os.sep, "-")


def project_slugs(directory: str | os.PathLike[str]) -> tuple[str, ...]:
    """The project folders that may hold the sessions of ``directory``: ours, then the
    Amplifier CLI's when it differs.

    That tool names a project by its path with symbolic links resolved, and
    drops every ``:`` (``/tmp/p:q`` is ``-tmp-pq`` to it, ``-tmp-p:q`` to us).
    """
    ours = project_slug(directory)
    theirs = os.path.realpath(os.fspath(directory)).replace(os.sep, "-").replace(":", "")
    theirs = theirs if theirs.startswith("-") else "-" + theirs
    return (ours,) if theirs == ours else (ours, theirs)


def directory_names(directory: str | os.PathLike[str]) -> tuple[str, ...]:
    """The ways a session may have recorded ``directory``: as given (ours), and with its
    symbolic links resolved (the Amplifier CLI's ``working_dir``)."""
    given = os.path.abspath(os.fspath(directory))
    resolved = os.path.realpath(given)
    return (given,) if resolved == given else (given, resolved)


def default_home() -> Path:
    """``$AMPLIFIER_HOME`` if set, else ``~/.amplifier``."""
    configured = os.environ.get("AMPLIFIER_HOME")
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.home() / ".amplifier"


def holds_utf8(text: str) -> bool:
    """Whether UTF-8 can hold ``text``, as every record must: not a lone surrogate, which
    is what ``os.listdir``, ``sys.argv`` or the working directory make of bytes that are
    not UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def resolve_home_and_cwd(
    home: str | os.PathLike[str] | None, cwd: str | os.PathLike[str] | None
) -> tuple[Path, Path]:
    """Absolute home (default ``default_home()``) and project directory (default: current)."""
    root = Path(home).expanduser().absolute() if home is not None else default_home()
    directory = Path(cwd).absolute() if cwd is not None else Path.cwd()
    if not holds_utf8(str(directory)):
        raise UsageError(
            f"the project directory {str(directory).encode(errors='surrogateescape')!r} is not "
            "a UTF-8 path, which session records cannot hold: run from one that is"
        )
    return root, directory


def is_safe_slug(slug: str) -> bool:
    """True if ``slug`` can name a folder under ``projects/`` without leaving it."""
    return bool(slug) and "/" not in slug and "\x00" not in slug and slug not in {".", ".."}


@dataclass(frozen=True, slots=True)
class SessionLocation:
    """Where one session's files live: the home, the project folder and the id."""

    home: Path
    project: str
    session_id: str

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)
        if not is_safe_slug(self.project):
            raise InvalidSessionId(self.project, "not a valid project folder name")

    @property
    def relative(self) -> str:
        """The session folder relative to the home, as the journal names it."""
        return f"projects/{self.project}/sessions/{self.session_id}"

    @property
    def directory(self) -> Path:
        return self.home / "projects" / self.project / "sessions" / self.session_id

    @property
    def transcript(self) -> Path:
        return self.directory / TRANSCRIPT

    @property
    def events(self) -> Path:
        return self.directory / EVENTS

    @property
    def metadata(self) -> Path:
        return self.directory / METADATA

    @property
    def lock(self) -> Path:
        return self.directory / LOCK

    def leads_outside(self) -> bool:
        """True if a symbolic link on the way makes the folder lie outside the store.

        Session files are opened without following a final link (O_NOFOLLOW);
        this catches a link in the middle (the session folder, ``sessions``
        or the project folder), so nothing is read or written outside home.
        """
        expected = os.path.join(os.path.realpath(self.home), self.relative)
        return os.path.realpath(self.directory) != expected

    @classmethod
    def from_relative(cls, home: Path, relative: str) -> SessionLocation:
        """Parse a journal's relative folder name back into a location (validated)."""
        parts = relative.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "sessions":
            raise InvalidSessionId(relative, "not a session folder")
        return cls(home, parts[1], parts[3])


def refuse_links_out(location: SessionLocation) -> None:
    """Raise ``CorruptSession`` if the session's folder leads out of the store (Rule 1)."""
    if location.leads_outside():
        raise CorruptSession(
            location.session_id, "its folder is a link out of the session store; not followed"
        )
    for path in (location.transcript, location.events, location.metadata, location.lock):
        if path.is_symlink():
            raise CorruptSession(
                location.session_id, f"{path.name} is a symbolic link; not followed"
            )


def projects_root(home: Path) -> Path:
    return home / "projects"


def sessions_root(home: Path, project: str) -> Path:
    return home / "projects" / project / "sessions"


def journal_root(home: Path) -> Path:
    return home / "journal"


def ensure_private_dir(path: Path, *, below: Path) -> None:
    """Create ``path`` and every missing folder between it and ``below`` owner-only (0700).

    ``Path.mkdir(parents=True)`` would give the parents the default mode, so
    each level is made here. ``below`` itself is created too (it is the home),
    and so are its own missing parents: a home in a folder that does not
    exist yet is made, not refused.

    Each folder made is made durable at once, by a sync of the folder that
    holds it: a file synced later in it (a journal, a session file) would
    otherwise survive a power cut that the folder's own entry did not,
    unreachable. ext4 hides this (any sync commits every entry made
    before it); XFS, btrfs and POSIX in general do not. Once per folder:
    one that exists costs nothing.
    """
    chain = [path, *path.parents]
    stop = chain.index(below) if below in chain else len(chain) - 1
    while stop + 1 < len(chain) and not chain[stop + 1].exists():
        stop += 1
    for folder in reversed(chain[: stop + 1]):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        fsync_dir(folder.parent)
