"""The tools that change files: ``write_file`` and ``edit_file``.

Names and arguments are the Amplifier CLI's, so its sessions resume with
the same tools.

Rule 1: a path stays inside the project: it is resolved (symlinks
        followed) before anything is read or written, and a path, ``..`` or
        link that leads out is refused (``confine``).
Rule 2: a file's content before the change is kept in the session's file
        history, durably, before the file is touched (write-ahead), and the
        change is reported to the loop for the call's ``tool:post``: path,
        hashes before and after. So ``session diff`` and ``session rewind``
        work, and overwriting a file twice loses nothing.
Rule 3: a file is replaced atomically (a temporary file beside it, then a
        rename): a crash leaves the old content or the new, never half. Its
        permission bits are kept.
Rule 4: files over ``MAX_FILE_BYTES`` are refused, and ``edit_file``
        refuses binary and non-UTF-8 files: it edits text.
Rule 5: all blocking file work runs in a worker thread.
Rule 6: changes to one file run one at a time, in this process (the calls of
        one answer run at once; so do sessions): each reads what the one
        before wrote, so no edit is lost and the file history chains.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio
from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field

from amplifier.persistence.lowlevel import content_digest

from ._diffs import SHORT_DIFF_LINES, diff_texts
from ._events import FileChange
from ._exceptions import ToolFailed
from ._permissions import project_relative
from ._tools import ToolContext, confine

MAX_FILE_BYTES = 10 * 1024 * 1024
"""The largest file the write tools write or edit (its old content is kept whole)."""
_BINARY_PROBE = 8 * 1024


class _Arguments(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WriteFileArguments(_Arguments):
    """What ``write_file`` takes."""

    file_path: str = Field(description="The file to write, relative to the project root.")
    content: str = Field(description="The whole new content of the file.")


class EditFileArguments(_Arguments):
    """What ``edit_file`` takes."""

    file_path: str = Field(description="The file to edit, relative to the project root.")
    old_string: str = Field(
        description="The exact text to replace (copy it from read_file, without the "
        "line-number prefix). It must occur exactly once unless replace_all is true."
    )
    new_string: str = Field(description="The text to put in its place.")
    replace_all: bool = Field(
        default=False, description="Replace every occurrence, not just a unique one."
    )


@dataclass(frozen=True, slots=True)
class _Target:
    """A file a write tool is about to change: where, and what it holds now."""

    path: Path
    shown: str
    """The path as the project sees it (relative to its root)."""
    old: bytes | None
    """The current content (None: the file does not exist)."""


class WriteFile:
    """``write_file``: create or overwrite a file with the given content."""

    name: ClassVar[str] = "write_file"
    description: ClassVar[str] = (
        "Create a file in the project, or overwrite one, with the given content "
        "(parent directories are created). Prefer edit_file to change part of an "
        "existing file. Paths stay inside the project."
    )
    Arguments: ClassVar[type[BaseModel]] = WriteFileArguments
    side_effects: ClassVar[bool] = True
    subject: ClassVar[str | None] = "file_path"

    async def preview(self, arguments: WriteFileArguments, context: ToolContext) -> str:
        target = await to_thread.run_sync(_target, context.root, arguments.file_path, False)
        new = _encoded(arguments.content, target.shown)
        return _diff(target.old, new, target.shown)

    async def run(self, arguments: WriteFileArguments, context: ToolContext) -> str:
        async with _one_at_a_time(context.root, arguments.file_path):
            target = await to_thread.run_sync(_target, context.root, arguments.file_path, False)
            new = _encoded(arguments.content, target.shown)
            if target.old == new:
                return f"{target.shown}: unchanged (it already holds this content)"
            await _change(context, target, new)
        lines = arguments.content.count("\n") + (not arguments.content.endswith("\n"))
        verb = "Created" if target.old is None else "Wrote"
        return f"{verb} {target.shown} ({len(new)} bytes, {lines if new else 0} lines)"


class EditFile:
    """``edit_file``: replace an exact piece of text in a file."""

    name: ClassVar[str] = "edit_file"
    description: ClassVar[str] = (
        "Edit a text file in the project by exact string replacement: old_string must "
        "occur exactly once (give more surrounding lines to make it unique), or set "
        "replace_all to change every occurrence. Read the file first and keep its "
        "indentation exactly. The result shows the diff."
    )
    Arguments: ClassVar[type[BaseModel]] = EditFileArguments
    side_effects: ClassVar[bool] = True
    subject: ClassVar[str | None] = "file_path"

    async def preview(self, arguments: EditFileArguments, context: ToolContext) -> str:
        target, new, _ = await to_thread.run_sync(_edited, context.root, arguments)
        return _diff(target.old, new, target.shown)

    async def run(self, arguments: EditFileArguments, context: ToolContext) -> str:
        async with _one_at_a_time(context.root, arguments.file_path):
            target, new, count = await to_thread.run_sync(_edited, context.root, arguments)
            await _change(context, target, new)
        diff = _diff(target.old, new, target.shown)
        return f"Edited {target.shown}: {count} replacement(s)\n{diff}"


def write_tools() -> list[WriteFile | EditFile]:
    """One of each tool that changes files: ``write_file``, ``edit_file``."""
    return [WriteFile(), EditFile()]


# -- shared ------------------------------------------------------------------------------

_changing: dict[Path, tuple[anyio.Lock, int]] = {}
"""The files being changed, each with its lock and how many calls hold or wait for it."""


@asynccontextmanager
async def _one_at_a_time(root: Path, file_path: str) -> AsyncIterator[None]:
    """Hold the file at ``file_path`` (resolved: two names of one file are one) for one
    change (Rule 6). A path that leads out raises ``ToolFailed`` here, as ``_target``'s."""
    path = await to_thread.run_sync(confine, root, file_path)
    lock, users = _changing.get(path, (None, 0))
    lock = lock or anyio.Lock()
    _changing[path] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _changing[path]
        if users == 1:
            del _changing[path]
        else:
            _changing[path] = (lock, users - 1)



async def _change(context: ToolContext, target: _Target, new: bytes) -> None:
    """Keep the old content (durably), then write the new one; report the change (Rule 2)."""
    before = await context.keep(target.old) if target.old is not None else None
    written = False

    def write() -> None:
        nonlocal written
        _replace(target.path, new)
        written = True

    try:
        await to_thread.run_sync(write)
    finally:
        # A turn cancelled while the thread wrote still has the change on record.
        if written:
            change = FileChange(path=target.shown, before=before, after=content_digest(new))
            context.changed(change)


CONFIGURATION = ".amplifier"
"""A project's folder of agent configuration (profiles, agents, MCP servers), and the store's
default home under a home directory: what they say decides what runs, and with which
permissions, so no write tool changes them (a grant to write files would grant the rest)."""


def _target(root: Path, file_path: str, must_exist: bool) -> _Target:
    path = confine(root, file_path)
    shown = project_relative(str(path), root)
    if shown.split("/", 1)[0] == CONFIGURATION:
        raise ToolFailed(
            f"{file_path}: {CONFIGURATION}/ holds the agents' configuration (profiles, agents, "
            "MCP servers) and sessions; the write tools do not change it: the user does"
        )
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if must_exist:
            raise ToolFailed(f"{file_path}: no such file; write_file creates one") from None
        return _Target(path, shown, None)
    except OSError as exc:
        raise ToolFailed(f"{file_path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ToolFailed(f"{file_path}: is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise ToolFailed(f"{file_path}: not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ToolFailed(
            f"{file_path}: {info.st_size} bytes, over the {MAX_FILE_BYTES // (1024 * 1024)} MiB "
            "the write tools change (its old content could not be kept); not changed"
        )
    try:
        with open(path, "rb") as file:
            old = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ToolFailed(f"{file_path}: {exc.strerror or exc}") from None
    return _Target(path, shown, old)


def _encoded(content: str, shown: str) -> bytes:
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolFailed(
            f"{shown}: the content is not valid text (it holds a lone surrogate); not written"
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise ToolFailed(
            f"{shown}: {len(data)} bytes of content, over the "
            f"{MAX_FILE_BYTES // (1024 * 1024)} MiB the write tools write; not written"
        )
    return data


def _edited(root: Path, arguments: EditFileArguments) -> tuple[_Target, bytes, int]:
    """The file and its content after the edit, and how many replacements it makes."""
    target = _target(root, arguments.file_path, True)
    assert target.old is not None
    shown = target.shown
    if b"\x00" in target.old[:_BINARY_PROBE]:
        raise ToolFailed(f"{shown}: binary file; edit_file changes text files only")
    try:
        text = target.old.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolFailed(
            f"{shown}: not UTF-8 text; edit_file changes UTF-8 text files only"
        ) from None
    old, new = arguments.old_string, arguments.new_string
    if not old:
        raise ToolFailed("old_string is empty: give the exact text to replace")
    if old == new:
        raise ToolFailed("old_string and new_string are the same: nothing to change")
    count = text.count(old)
    if count == 0 and "\r\n" in text and "\n" in old:
        # A file with Windows line ends, quoted with plain ones: match it as written.
        old, new = old.replace("\r\n", "\n").replace("\n", "\r\n"), new.replace(
            "\r\n", "\n"
        ).replace("\n", "\r\n")
        count = text.count(old)
    if count == 0:
        raise ToolFailed(
            f"old_string not found in {shown}; read_file shows its current text (copy it "
            "exactly, with its indentation, without the line-number prefix)"
        )
    if count > 1 and not arguments.replace_all:
        raise ToolFailed(
            f"old_string occurs {count} times in {shown}; give more surrounding text so it "
            "occurs once, or set replace_all to change every occurrence"
        )
    result = text.replace(old, new) if arguments.replace_all else text.replace(old, new, 1)
    data = _encoded(result, shown)
    return target, data, count if arguments.replace_all else 1


def _replace(path: Path, data: bytes) -> None:
    try:
        replace_file(path, data)
    except OSError as exc:
        raise ToolFailed(f"{path.name}: could not write: {exc.strerror or exc}") from None


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, keeping its permission bits (Rule 3).

    Missing parent folders are created. Raises ``OSError``.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None
    temp = folder / f".{path.name}.{secrets.token_hex(4)}.amplifier.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError) and exc.filename == str(temp):
            # Said of the file being written, not of the temporary name beside it.
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def _diff(before: bytes | None, after: bytes, shown: str) -> str:
    old = before.decode("utf-8", errors="replace") if before is not None else None
    diff = diff_texts(old, after.decode("utf-8", errors="replace"), shown)
    return diff.text(SHORT_DIFF_LINES) or "(no change)"
