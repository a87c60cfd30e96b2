"""``@path`` in an interactive prompt: that file's content goes with the prompt.

Rule 1: a mention stays inside the project: a path that leads out of it
        (``..``, an absolute path elsewhere, a symbolic link pointing out)
        is not read, and the person is told.
Rule 2: a file larger than ``MAX_BYTES`` is cut there, and the attachment
        says so (the model knows it saw a part). A file that is not text
        is not attached.
Rule 3: a mention is a word that starts with ``@`` (at the start or after
        a space), so an e-mail address is not one; one that names nothing
        stays in the prompt as typed, and the person is told.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from amplifier.persistence.lowlevel import NotAFile, open_to_read

MAX_BYTES = 100_000
"""Bytes of a mentioned file attached; the rest is cut, with a note."""
MAX_ENTRIES = 200
"""Entries of a mentioned directory listed."""

_MENTION = re.compile(r"(?:^|(?<=\s))@([^\s@]+)")
_TRAILING = ".,;:!?)]}'\""


@dataclass
class Mentions:
    """A prompt with the mentioned files attached, and what the person should be told."""

    prompt: str
    attached: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def attach(text: str, root: Path) -> Mentions:
    """``text`` followed by the content of each file it mentions (once each), inside ``root``."""
    result = Mentions(prompt=text)
    blocks: list[str] = []
    seen: set[Path] = set()
    top = root.resolve()
    for word in _mentioned(text):
        found = _find(word, top)
        if found is None:
            result.notes.append(f"@{word}: no such file in the project; left as typed")
            continue
        shown, path = found
        if path is None:
            result.notes.append(f"@{shown}: outside the project; not attached")
            continue
        if path in seen:
            continue
        seen.add(path)
        block, note = _block(shown, path)
        if note:
            result.notes.append(note)
        if block is not None:
            blocks.append(block)
            result.attached.append(shown)
    if blocks:
        result.prompt = text + "\n\n" + "\n\n".join(blocks)
    return result


def _mentioned(text: str) -> Iterator[str]:
    for match in _MENTION.finditer(text):
        yield match.group(1)


def _find(word: str, top: Path) -> tuple[str, Path | None] | None:
    """The mention's name and its path (None: outside the project), or None if it names
    nothing; trailing punctuation (``see @a.py,``) is not part of a name."""
    candidates = [word]
    stripped = word.rstrip(_TRAILING)
    if stripped and stripped != word:
        candidates.append(stripped)
    for name in candidates:
        try:
            path = (top / os.path.expanduser(name)).resolve()
            if not path.exists():
                continue
        except (OSError, ValueError):  # a name too long, a NUL: no file is named so
            continue
        if path != top and top not in path.parents:
            return name, None
        return name, path
    return None


def _block(shown: str, path: Path) -> tuple[str | None, str | None]:
    """The attachment for ``path`` and a note for the person, if any."""
    try:
        if path.is_dir():
            with os.scandir(path) as found:
                entries = sorted(e.name + ("/" if e.is_dir() else "") for e in found)
            listed = entries[:MAX_ENTRIES]
            left = len(entries) - len(listed)
            more = f"\n[... {left} more entries]" if left else ""
            listing = "\n".join(listed) + more
            return f'<directory path="{shown}">\n{listing}\n</directory>', None
        # Never blocking: a FIFO would hold the prompt until something wrote to it.
        fd, info = open_to_read(path)  # resolved already: a link here came meanwhile
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_BYTES + 1)
        size = info.st_size
    except NotAFile:
        return None, f"@{shown}: not a regular file; not attached"
    except OSError as exc:
        return None, f"@{shown}: cannot be read ({exc.strerror or exc}); not attached"
    if b"\0" in data:
        return None, f"@{shown}: not a text file; not attached"
    cut = len(data) > MAX_BYTES
    text = data[:MAX_BYTES].decode("utf-8", "replace")
    note = None
    if cut:
        text += f"\n[cut: the first {MAX_BYTES:,} of {size:,} bytes]"
        note = f"@{shown}: {size:,} bytes; only the first {MAX_BYTES:,} attached"
    return f'<file path="{shown}">\n{text}\n</file>', note


def complete_path(partial: str, root: Path) -> list[tuple[str, bool]]:
    """Names under ``root`` that complete ``partial`` (a mention without its ``@``), each
    with whether it is a directory; hidden ones only when ``partial`` asks for them."""
    folder, _, prefix = partial.rpartition("/")
    try:
        base = (root / folder).resolve() if folder else root.resolve()
        top = root.resolve()
        if base != top and top not in base.parents:
            return []
        with os.scandir(base) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except (OSError, ValueError):  # unreadable, a name too long, a NUL: nothing to offer
        return []
    found = []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        if entry.name.startswith(".") and not prefix.startswith("."):
            continue
        if any(ch.isspace() for ch in entry.name):
            continue  # a mention ends at a space (Rule 3): such a name cannot be one
        name = f"{folder}/{entry.name}" if folder else entry.name
        found.append((name, entry.is_dir()))
    return found
