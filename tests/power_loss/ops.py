"""The operations of a traced run on the file system it was recorded under.

Inodes are numbered by the trace (0 is the recorded folder). A write is one
piece of a ``write(2)``, cut at page boundaries (``trace._pieces``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Link:
    """A new entry ``name`` in folder ``folder`` for inode ``ino`` (a file created, a mkdir)."""

    folder: int
    name: str
    ino: int
    is_dir: bool


@dataclass(frozen=True, slots=True)
class Unlink:
    folder: int
    name: str
    ino: int


@dataclass(frozen=True, slots=True)
class Rename:
    source: int
    source_name: str
    target: int
    target_name: str
    ino: int
    is_dir: bool


@dataclass(frozen=True, slots=True)
class Write:
    """One piece of a write: ``append`` if it lies beyond the file's end when written."""

    ino: int
    offset: int
    data: bytes
    append: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    ino: int
    size: int


@dataclass(frozen=True, slots=True)
class Sync:
    """fsync/fdatasync of ``ino`` (a file or a folder); ``ino`` None: syncfs, sync."""

    ino: int | None
    data_only: bool
    covers: int
    """Operations numbered below this had returned when the sync was called."""


Op = Link | Unlink | Rename | Write | Truncate | Sync


@dataclass(frozen=True, slots=True)
class Ack:
    """The workload acknowledged something after the first ``after`` operations."""

    after: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Node:
    """A file (``data``) or a folder (``entries``) of a snapshot."""

    data: bytes | None = None
    entries: dict[str, int] | None = None

    @property
    def is_dir(self) -> bool:
        return self.entries is not None


@dataclass
class Trace:
    """What a recorded run did under ``base``: the tree it started from, then its operations."""

    base: Path
    initial: dict[int, Node]
    """Inode 0 is ``base``."""
    ops: list[Op]
    acks: list[Ack]
    paths: dict[int, str] = field(default_factory=dict)
    """The last path each inode had under ``base`` (for messages)."""
    journal_syncs: dict[int, bytes] = field(default_factory=dict)
    """For each sync of a runtime's journal (its operation number): what the journal held."""
