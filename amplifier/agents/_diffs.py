"""Unified diffs of text files, as ``edit_file``, ``session diff`` and asking show them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

SHORT_DIFF_LINES = 60
"""Lines of diff a tool result or a question shows; the rest is counted, not shown."""


@dataclass(frozen=True, slots=True)
class Diff:
    """The unified diff between two versions of one file."""

    lines: tuple[str, ...]
    added: int
    removed: int

    def text(self, limit: int | None = None) -> str:
        """The diff as text, cut after ``limit`` lines with a note saying how many more."""
        if limit is None or len(self.lines) <= limit:
            return "\n".join(self.lines)
        more = len(self.lines) - limit
        return "\n".join((*self.lines[:limit], f"[... {more} more diff lines not shown]"))


def diff_texts(before: str | None, after: str | None, path: str) -> Diff:
    """``before`` -> ``after`` of ``path`` (None: the file does not exist on that side)."""
    old = (before or "").splitlines(keepends=True)
    new = (after or "").splitlines(keepends=True)
    lines: list[str] = []
    added = removed = 0
    for line in difflib.unified_diff(
        old,
        new,
        fromfile=f"a/{path}" if before is not None else "/dev/null",
        tofile=f"b/{path}" if after is not None else "/dev/null",
        n=3,
    ):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
        text = line.rstrip("\r\n")
        lines.append(text)
        if not line.endswith("\n") and not line.startswith(("---", "+++", "@@")):
            lines.append("\\ No newline at end of file")
    return Diff(tuple(lines), added, removed)


def decode(data: bytes | None) -> str | None:
    """Bytes as text for a diff (undecodable bytes shown as U+FFFD)."""
    return data.decode("utf-8", errors="replace") if data is not None else None
