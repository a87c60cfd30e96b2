"""Built-in file tools: ``read_file``, ``list_dir``, ``glob`` and ``grep``.

They let an agent look at the project, and only at the project.

Rule 1: every path a model names goes through ``confine``, which resolves
symlinks first; a path, pattern or link that leads out of the project is
refused (``ToolFailed``) before anything is read.

Rule 2: walks (``glob``, ``grep``) never follow a symlink out of the project
and never descend into a symlinked directory through ``**``: the target lies
inside the project and is walked under its own name, and a link to an
ancestor cannot make the walk loop. ``.git`` is not walked unless named.

Rule 3: all blocking file I/O (``confine`` included: it calls ``realpath``)
runs in a worker thread, so the event loop is never blocked. Walks check for
cancellation between directories and files, so cancelling a turn does not
wait for a whole-tree ``grep`` to finish.

Rule 4: every result goes through ``clip``, and each tool caps what it lists
and says how much more there was, so one call cannot flood the transcript.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import ClassVar, Literal

from anyio import from_thread, to_thread
from pydantic import BaseModel, ConfigDict, Field

from ._exceptions import ToolFailed
from ._tools import MAX_TOOL_OUTPUT, Tool, ToolContext, clip, confine

READ_LIMIT = 2000
"""Lines ``read_file`` returns when the model does not ask for fewer."""
READ_LINE_CHARS = 2000
"""Characters of one line ``read_file`` shows; a minified file stays readable."""
LIST_LIMIT = 500
"""Entries ``list_dir`` shows."""
GLOB_LIMIT = 500
"""Paths ``glob`` shows."""
GREP_LIMIT = 200
"""Matching lines ``grep`` shows."""
GREP_LINE_CHARS = 500
"""Characters of one matching line ``grep`` shows."""

_BINARY_PROBE = 8 * 1024
"""A NUL byte within this many leading bytes marks a file as binary."""
_READ_BUDGET = MAX_TOOL_OUTPUT - 200
"""``read_file`` stops adding lines here, so its "read again" note is never clipped away."""
_UNWALKED = ".git"
"""Walks skip this directory: it is large, and never what a question about the code means."""

_Kind = Literal["file", "dir", "linked_dir", "outside", "broken", "other"]


class _Arguments(BaseModel):
    # Frozen like every message; unknown fields are an error the model can read
    # rather than silently ignored, and the schema says so (additionalProperties).
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReadFileArguments(_Arguments):
    """What ``read_file`` takes."""

    path: str = Field(description="The file, relative to the project root.")
    offset: int = Field(default=1, ge=1, description="The first line to show (1-based).")
    limit: int = Field(default=READ_LIMIT, ge=1, description="How many lines to show at most.")


class ReadFile:
    """``read_file``: a text file's lines, numbered like ``cat -n``."""

    name: ClassVar[str] = "read_file"
    description: ClassVar[str] = (
        "Read a text file in the project. Lines come numbered like `cat -n` "
        "('     1<TAB>text'). Long files are cut with a note saying which offset "
        "to read next; use offset and limit to read them in pieces."
    )

    side_effects: ClassVar[bool] = False
    subject: ClassVar[str | None] = "path"
    Arguments: ClassVar[type[BaseModel]] = ReadFileArguments

    async def run(self, arguments: ReadFileArguments, context: ToolContext) -> str:
        text = await to_thread.run_sync(
            _read_file, context.root, arguments.path, arguments.offset, arguments.limit
        )
        return clip(text)


class ListDirArguments(_Arguments):
    """What ``list_dir`` takes."""

    path: str = Field(default=".", description="The directory, relative to the project root.")


class ListDir:
    """``list_dir``: a directory's entries, sorted, directories marked with ``/``."""

    name: ClassVar[str] = "list_dir"
    description: ClassVar[str] = (
        "List a directory in the project: one entry per line, sorted by name; "
        "directories end with '/', links out of the project end with '@'."
    )

    side_effects: ClassVar[bool] = False
    subject: ClassVar[str | None] = "path"
    Arguments: ClassVar[type[BaseModel]] = ListDirArguments

    async def run(self, arguments: ListDirArguments, context: ToolContext) -> str:
        return clip(await to_thread.run_sync(_list_dir, context.root, arguments.path))


class GlobArguments(_Arguments):
    """What ``glob`` takes."""

    pattern: str = Field(
        min_length=1,
        description="The glob pattern, relative to path, e.g. '**/*.py' or 'src/*.md'.",
    )
    path: str = Field(
        default=".",
        description="The directory to search, relative to the project root.",
    )


class Glob:
    """``glob``: project paths matching a pattern, relative to the project root."""

    name: ClassVar[str] = "glob"
    description: ClassVar[str] = (
        "Find files in the project by name pattern: '*' and '?' match within one "
        "path segment, '**' matches any number of directories (e.g. '**/*.py'). "
        "Paths come sorted, relative to the project root; directories end with '/'. "
        ".git is skipped unless the pattern names it."
    )

    side_effects: ClassVar[bool] = False
    subject: ClassVar[str | None] = "path"
    Arguments: ClassVar[type[BaseModel]] = GlobArguments

    async def run(self, arguments: GlobArguments, context: ToolContext) -> str:
        text = await to_thread.run_sync(_glob, context.root, arguments.pattern, arguments.path)
        return clip(text)


class GrepArguments(_Arguments):
    """What ``grep`` takes."""

    pattern: str = Field(
        min_length=1, description="A Python regular expression, e.g. 'def \\w+_tool'."
    )
    path: str = Field(
        default=".",
        description="A file or directory to search, relative to the project root.",
    )
    glob: str | None = Field(
        default=None,
        description=(
            "Only search files whose name matches this glob, e.g. '*.py'; "
            "with a '/', it is matched against the path below `path`."
        ),
    )
    case_insensitive: bool = Field(default=False, description="Ignore upper/lower case.")


class Grep:
    """``grep``: lines matching a regular expression, as ``path:line: text``."""

    name: ClassVar[str] = "grep"
    description: ClassVar[str] = (
        "Search file contents in the project with a Python regular expression, "
        "matched line by line. Each match comes as 'path:line: text', the path "
        "relative to the project root. Binary files and .git are skipped."
    )

    side_effects: ClassVar[bool] = False
    subject: ClassVar[str | None] = "path"
    Arguments: ClassVar[type[BaseModel]] = GrepArguments

    async def run(self, arguments: GrepArguments, context: ToolContext) -> str:
        flags = re.IGNORECASE if arguments.case_insensitive else 0
        try:
            regex = re.compile(arguments.pattern, flags)
        except re.error as exc:
            raise ToolFailed(f"invalid regular expression {arguments.pattern!r}: {exc}") from None
        text = await to_thread.run_sync(_grep, context.root, regex, arguments.path, arguments.glob)
        return clip(text)


def file_tools() -> list[Tool]:
    """One of each file tool: ``read_file``, ``list_dir``, ``glob``, ``grep``."""
    return [ReadFile(), ListDir(), Glob(), Grep()]


# -- read_file ---------------------------------------------------------------------------


def _read_file(root: Path, shown: str, offset: int, limit: int) -> str:
    path = confine(root, shown)
    info = _stat(path, shown, missing="no such file; list_dir or glob show what exists")
    if stat.S_ISDIR(info.st_mode):
        raise ToolFailed(f"{shown}: is a directory; use list_dir to see inside it")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or device would block the worker thread, or never end.
        raise ToolFailed(f"{shown}: not a regular file")
    lines: list[str] = []
    used = 0
    total = 0
    first_unshown: int | None = None
    try:
        with path.open("rb") as file:
            if b"\x00" in file.read(_BINARY_PROBE):
                raise ToolFailed(f"{shown}: binary file, not shown")
            file.seek(0)
            # Streamed line by line: a large file is counted, never held whole.
            for total, raw in enumerate(file, 1):
                if total < offset or first_unshown is not None:
                    continue
                entry = f"{total:>6}\t{_line_text(raw, READ_LINE_CHARS)}"
                if len(lines) == limit or used + len(entry) + 1 > _READ_BUDGET:
                    first_unshown = total
                    continue
                lines.append(entry)
                used += len(entry) + 1
    except OSError as exc:
        raise ToolFailed(f"{shown}: {exc.strerror or exc}") from None
    if total == 0:
        return f"{shown}: empty file"
    if offset > total:
        raise ToolFailed(f"{shown}: offset {offset} is past the end of the file ({total} lines)")
    if first_unshown is not None:
        more = total - first_unshown + 1
        lines.append(f"... {more} more lines; read again with offset={first_unshown}")
    return "\n".join(lines)


# -- list_dir ----------------------------------------------------------------------------


def _list_dir(root: Path, shown: str) -> str:
    path = confine(root, shown)
    info = _stat(path, shown, missing="no such directory")
    if not stat.S_ISDIR(info.st_mode):
        raise ToolFailed(f"{shown}: not a directory; use read_file to read it")
    try:
        entries = _entries(str(path))
    except OSError as exc:
        raise ToolFailed(f"{shown}: {exc.strerror or exc}") from None
    if not entries:
        return f"{shown}: empty directory"
    lines = [_describe(root, entry) for entry in entries[:LIST_LIMIT]]
    if len(entries) > LIST_LIMIT:
        lines.append(f"... {len(entries) - LIST_LIMIT} more entries not shown")
    return "\n".join(lines)


def _describe(root: Path, entry: os.DirEntry[str]) -> str:
    match _kind(root, entry):
        case "dir" | "linked_dir":
            return f"{entry.name}/"
        case "outside":
            # Listed so nothing is hidden, but its target is neither named nor read.
            return f"{entry.name}@ (link out of the project; not followed)"
        case "broken":
            return f"{entry.name}@ (broken link)"
        case "file" | "other":
            return entry.name


# -- glob --------------------------------------------------------------------------------


def _glob(root: Path, pattern: str, shown: str) -> str:
    segments, dirs_only = _pattern_segments(pattern)
    base = confine(root, shown)
    info = _stat(base, shown, missing="no such directory")
    if not stat.S_ISDIR(info.st_mode):
        raise ToolFailed(f"{shown}: not a directory")
    found: set[str] = set()
    for path, is_dir in _select(root, str(base), segments):
        if dirs_only and not is_dir:
            continue
        relative = _relative(root, path)
        found.add(f"{relative}/" if is_dir else relative)
    if not found:
        where = "" if shown in (".", "") else f" under {shown}"
        return f"no paths match {pattern!r}{where}"
    ordered = sorted(found)
    lines = ordered[:GLOB_LIMIT]
    if len(ordered) > GLOB_LIMIT:
        lines.append(f"... {len(ordered) - GLOB_LIMIT} more paths not shown; narrow the pattern")
    return "\n".join(lines)


def _pattern_segments(pattern: str) -> tuple[tuple[str, ...], bool]:
    """The pattern's segments, and whether it asks for directories only (a trailing '/')."""
    if os.path.isabs(pattern):
        raise ToolFailed(
            f"{pattern}: the pattern must be relative; name the directory to search in path"
        )
    segments = tuple(part for part in pattern.split("/") if part not in ("", "."))
    if ".." in segments:
        raise ToolFailed(f"{pattern}: '..' would leave the search directory; refused")
    if not segments:
        raise ToolFailed(f"{pattern!r}: the pattern matches nothing; try '**/*'")
    return segments, pattern.endswith("/")


def _select(root: Path, directory: str, segments: tuple[str, ...]) -> Iterator[tuple[str, bool]]:
    """``(path, is_dir)`` for each entry below ``directory`` that ``segments`` match.

    The walk follows the pattern, so ``src/*.py`` reads only ``src``. A
    literal or wildcard segment may step through a symlinked directory (the
    pattern is finite, so that cannot loop); ``**`` does not (Rule 2).
    """
    from_thread.check_cancelled()
    head, rest = segments[0], segments[1:]
    try:
        entries = _entries(directory)
    except OSError:
        return  # An unreadable directory holds no matches we could show.
    if head == "**":
        if rest:
            yield from _select(root, directory, rest)  # '**' also matches no directory
        for entry in entries:
            if entry.name == _UNWALKED:
                continue
            kind = _kind(root, entry)
            if kind in ("outside", "broken"):
                continue
            if not rest:
                yield entry.path, kind in ("dir", "linked_dir")
            if kind == "dir":
                yield from _select(root, entry.path, segments)
        return
    for entry in entries:
        if not fnmatchcase(entry.name, head):
            continue
        if entry.name == _UNWALKED and head != _UNWALKED:
            continue
        kind = _kind(root, entry)
        if kind in ("outside", "broken"):
            continue
        is_dir = kind in ("dir", "linked_dir")
        if not rest:
            yield entry.path, is_dir
        elif is_dir:
            yield from _select(root, entry.path, rest)


def _matches(segments: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether a relative path (as ``parts``) matches a pattern (as ``segments``)."""
    if not segments:
        return not parts
    head, rest = segments[0], segments[1:]
    if head == "**":
        return any(_matches(rest, parts[index:]) for index in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _matches(rest, parts[1:])


# -- grep --------------------------------------------------------------------------------


def _grep(root: Path, regex: re.Pattern[str], shown: str, glob: str | None) -> str:
    target = confine(root, shown)
    info = _stat(target, shown, missing="no such file or directory")
    files: Iterator[str]
    if stat.S_ISDIR(info.st_mode):
        files = _files_under(root, str(target))
        if glob is not None:
            files = _filtered(files, str(target), glob)
    elif stat.S_ISREG(info.st_mode):
        # A file named outright is searched whatever the glob says.
        if _is_binary(target, shown):
            raise ToolFailed(f"{shown}: binary file, not searched")
        files = iter([str(target)])
    else:
        raise ToolFailed(f"{shown}: not a regular file or directory")
    shown_lines: list[str] = []
    total = 0
    for path in files:
        from_thread.check_cancelled()
        relative = _relative(root, path)
        for number, text in _search(path, regex):
            total += 1
            if len(shown_lines) < GREP_LIMIT:
                shown_lines.append(f"{relative}:{number}: {_clip_line(text, GREP_LINE_CHARS)}")
    if total == 0:
        return f"no matches for {regex.pattern!r} in {shown}"
    if total > GREP_LIMIT:
        shown_lines.append(
            f"... {total - GREP_LIMIT} more matches not shown; narrow the pattern or path"
        )
    return "\n".join(shown_lines)


def _files_under(root: Path, directory: str) -> Iterator[str]:
    """Regular files below ``directory``, depth first in name order (Rule 2)."""
    from_thread.check_cancelled()
    try:
        entries = _entries(directory)
    except OSError:
        return
    for entry in entries:
        kind = _kind(root, entry)
        if kind == "file":
            yield entry.path
        elif kind == "dir" and entry.name != _UNWALKED:
            yield from _files_under(root, entry.path)


def _filtered(files: Iterator[str], base: str, glob: str) -> Iterator[str]:
    if "/" not in glob:
        return (path for path in files if fnmatchcase(os.path.basename(path), glob))
    segments, _ = _pattern_segments(glob)
    return (path for path in files if _matches(segments, Path(os.path.relpath(path, base)).parts))


def _search(path: str, regex: re.Pattern[str]) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for each matching line; nothing for a binary or unreadable file."""
    try:
        with open(path, "rb") as file:
            if b"\x00" in file.read(_BINARY_PROBE):
                return
            file.seek(0)
            for number, raw in enumerate(file, 1):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if regex.search(text):
                    yield number, text
    except OSError:
        return  # Unreadable (permissions, vanished mid-walk): nothing to report from it.


# -- shared ------------------------------------------------------------------------------


def _stat(path: Path, shown: str, *, missing: str) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise ToolFailed(f"{shown}: {missing}") from None
    except OSError as exc:
        raise ToolFailed(f"{shown}: {exc.strerror or exc}") from None


def _entries(directory: str) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as iterator:
        return sorted(iterator, key=lambda entry: entry.name)


def _kind(root: Path, entry: os.DirEntry[str]) -> _Kind:
    """What an entry is; a symlink is judged by where it really leads."""
    try:
        if entry.is_symlink():
            target = Path(os.path.realpath(entry.path))
            if target != root and root not in target.parents:
                return "outside"
            if target.is_dir():
                return "linked_dir"
            if target.is_file():
                return "file"
            return "broken" if not target.exists() else "other"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file(follow_symlinks=False):
            return "file"
    except OSError:
        pass  # Vanished or unreadable while we looked: treat as something we do not open.
    return "other"


def _is_binary(path: Path, shown: str) -> bool:
    try:
        with path.open("rb") as file:
            return b"\x00" in file.read(_BINARY_PROBE)
    except OSError as exc:
        raise ToolFailed(f"{shown}: {exc.strerror or exc}") from None


def _relative(root: Path, path: str) -> str:
    return Path(path).relative_to(root).as_posix()


def _line_text(raw: bytes, limit: int) -> str:
    return _clip_line(raw.decode("utf-8", errors="replace").rstrip("\r\n"), limit)


def _clip_line(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} [... {len(text) - limit} more characters on this line]"
