"""Crash states: what a power cut may leave of a traced run, under two persistence models.

A crash state is a crash point ``k`` (the first ``k`` operations had
returned when the power went) and the set of those operations that reached
the disk. Which sets are possible is what a model says (after ALICE,
Pillai et al., OSDI 2014):

``ext4``   ``data=ordered``: every operation but an overwrite (folder
           entries, appends, truncations) reaches the disk in program
           order, as the file system's journal commits them; an overwrite
           of bytes already in the file, page by page, at any time. Any
           fsync, a folder's included, commits the whole journal; an
           fdatasync commits it only when its file has changes to commit
           (an append, a truncation), else it writes that file's pages.
``posix``  ALICE's stricter default: no order at all, except what syncs
           force. An fsync or fdatasync forces only that file's data
           and size; a folder's fsync, only its own entries (the entry of
           a new folder in its parent needs the parent's fsync).

In both, ``syncfs`` forces everything, a rename is atomic, and an
overwrite never makes a file longer than it is in the crash state (its
size is metadata an overwrite does not carry); an append may reach the
disk before an earlier one (``posix``), leaving zeros in between.

Kinds of state (``KINDS``):

``prefix``    every operation before the crash point (legal in both models);
``lost``      only what syncs forced: everything not synced is lost;
``reorder``   what syncs forced, and a random legal choice of the rest;
``omit``      every operation before the crash point but one the model lets go.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .ops import Link, Node, Op, Rename, Sync, Trace, Truncate, Unlink, Write

ModelName = Literal["ext4", "posix"]
MODELS: tuple[ModelName, ...] = ("ext4", "posix")
Kind = Literal["prefix", "lost", "reorder", "omit"]
KINDS: tuple[Kind, ...] = ("prefix", "lost", "reorder", "omit")
NEVER = 1 << 62


@dataclass(frozen=True)
class CrashState:
    """A crash point and the operations before it that reached the disk."""

    model: ModelName
    kind: Kind
    point: int
    persisted: frozenset[int]
    note: str = ""

    def describe(self) -> str:
        lost = self.point - len(self.persisted)
        return (
            f"{self.model} {self.kind} at operation {self.point} "
            f"({lost} of them not persisted){' ' + self.note if self.note else ''}"
        )


class Persistence:
    """When each operation of a trace is forced to disk, under one model."""

    def __init__(self, trace: Trace, model: ModelName) -> None:
        self.trace = trace
        self.model = model
        ops = trace.ops
        self.ordered = [model == "ext4" and _journalled(op) for op in ops]
        self.forced_at = self._forced(ops)
        """Operation i has surely reached the disk in every crash at a point >= forced_at[i]."""

    def _forced(self, ops: Sequence[Op]) -> list[int]:
        forced = [NEVER] * len(ops)
        by_ino: dict[int | None, list[int]] = {}
        by_folder: dict[int, list[int]] = {}
        for index, op in enumerate(ops):
            if isinstance(op, Write | Truncate):
                by_ino.setdefault(op.ino, []).append(index)
            elif isinstance(op, Link | Unlink):
                by_folder.setdefault(op.folder, []).append(index)
            elif isinstance(op, Rename):
                by_folder.setdefault(op.source, []).append(index)
                if op.target != op.source:
                    by_folder.setdefault(op.target, []).append(index)
        committed = 0  # ext4: journalled operations below this are committed
        for index, op in enumerate(ops):
            if not isinstance(op, Sync):
                continue
            since = index + 1
            covered: Iterable[int]
            if op.ino is None:
                covered = range(op.covers)
            elif self.model == "posix":
                own = by_ino.get(op.ino, []) + by_folder.get(op.ino, [])
                covered = (i for i in own if i < op.covers)
            else:
                own = [i for i in by_ino.get(op.ino, []) if i < op.covers]
                changes = any(self.ordered[i] and i >= committed for i in own)
                if not op.data_only or op.ino not in by_ino or changes:
                    # A commit: every journalled operation so far, and this file's pages.
                    covered = [i for i in range(committed, op.covers) if self.ordered[i]] + own
                    committed = max(committed, op.covers)
                else:
                    covered = own
            for i in covered:
                if forced[i] > since:
                    forced[i] = since
        if self.model == "ext4":
            # The journal commits in order: an operation is forced once any later one is.
            later = NEVER
            for i in range(len(ops) - 1, -1, -1):
                if self.ordered[i]:
                    later = min(later, forced[i])
                    forced[i] = later
        return forced

    # -- crash states -------------------------------------------------------------------------

    def candidates(self, point: int) -> list[int]:
        """Operations before ``point`` that need not have reached the disk (syncs aside)."""
        return [
            i
            for i in range(point)
            if self.forced_at[i] > point and not isinstance(self.trace.ops[i], Sync)
        ]

    def prefix(self, point: int) -> CrashState:
        return CrashState(self.model, "prefix", point, frozenset(range(point)))

    def lost(self, point: int) -> CrashState:
        kept = frozenset(i for i in range(point) if self.forced_at[i] <= point)
        return CrashState(self.model, "lost", point, kept)

    def reorder(self, point: int, rng: random.Random) -> CrashState:
        free = self.candidates(point)
        keep = rng.random()
        chosen = {i for i in free if rng.random() < keep}
        if self.model == "ext4":
            # Journalled operations: a prefix of them; overwrites: any subset.
            journalled = [i for i in free if self.ordered[i]]
            if journalled:
                cut = rng.randrange(len(journalled) + 1)
                chosen -= set(journalled[cut:])
                chosen |= set(journalled[:cut])
        kept = frozenset(i for i in range(point) if self.forced_at[i] <= point) | chosen
        return CrashState(self.model, "reorder", point, kept, note=f"(kept {keep:.2f} of the rest)")

    def omit(self, point: int, victim: int) -> CrashState:
        """Every operation before ``point`` but ``victim`` (in ext4's journal: and what follows)."""
        gone = {victim}
        if self.ordered[victim]:
            gone |= {i for i in range(victim, point) if self.ordered[i]}
        kept = frozenset(i for i in range(point) if i not in gone or self.forced_at[i] <= point)
        return CrashState(
            self.model,
            "omit",
            point,
            kept,
            note=f"(without operation {victim}: {self.trace.ops[victim]!r:.120})",
        )


def _journalled(op: Op) -> bool:
    """ext4 ``data=ordered``: everything but an overwrite goes through the journal in order."""
    return not (isinstance(op, Write) and not op.append) and not isinstance(op, Sync)


# -- applying a state ------------------------------------------------------------------------------


@dataclass
class Disk:
    """What is on disk in a crash state: every inode's content, reachable or not."""

    files: dict[int, bytearray]
    dirs: dict[int, dict[str, int]]

    @classmethod
    def initial(cls, nodes: dict[int, Node]) -> Disk:
        files: dict[int, bytearray] = {}
        dirs: dict[int, dict[str, int]] = {}
        for ino, node in nodes.items():
            if node.entries is not None:
                dirs[ino] = dict(node.entries)
            else:
                files[ino] = bytearray(node.data or b"")
        return cls(files, dirs)

    def tree(self, root: int = 0) -> dict[str, bytes | None]:
        """Every path reachable from ``root`` (relative), with its bytes (None: a folder)."""
        found: dict[str, bytes | None] = {}
        stack = [("", root)]
        seen = {root}
        while stack:
            prefix, ino = stack.pop()
            for name, child in self.dirs.get(ino, {}).items():
                path = f"{prefix}{name}"
                if child in self.dirs:
                    if child in seen:
                        continue  # a folder reached twice: keep the first
                    seen.add(child)
                    found[path] = None
                    stack.append((f"{path}/", child))
                else:
                    found[path] = bytes(self.files.get(child, b""))
        return found


def apply(trace: Trace, state: CrashState) -> Disk:
    """The disk a crash state leaves: the persisted operations applied in program order."""
    disk = Disk.initial(trace.initial)
    for index in sorted(state.persisted):
        op = trace.ops[index]
        match op:
            case Link(folder=folder, name=name, ino=ino, is_dir=is_dir):
                if is_dir:
                    disk.dirs.setdefault(ino, {})
                else:
                    disk.files.setdefault(ino, bytearray())
                disk.dirs.setdefault(folder, {})[name] = ino
            case Unlink(folder=folder, name=name, ino=ino):
                entries = disk.dirs.setdefault(folder, {})
                if entries.get(name) == ino:
                    del entries[name]
            case Rename():
                entries = disk.dirs.setdefault(op.source, {})
                if entries.get(op.source_name) == op.ino:
                    del entries[op.source_name]
                disk.dirs.setdefault(op.target, {})[op.target_name] = op.ino
                if op.is_dir:  # its mkdir may not have reached the disk: the rename did
                    disk.dirs.setdefault(op.ino, {})
                else:
                    disk.files.setdefault(op.ino, bytearray())
            case Write(ino=ino, offset=offset, data=data, append=append):
                content = disk.files.setdefault(ino, bytearray())
                if not append:
                    data = data[: max(0, len(content) - offset)]  # never beyond the file's size
                    if not data:
                        continue
                if offset > len(content):
                    content.extend(bytes(offset - len(content)))
                content[offset : offset + len(data)] = data
            case Truncate(ino=ino, size=size):
                content = disk.files.setdefault(ino, bytearray())
                if size < len(content):
                    del content[size:]
                else:
                    content.extend(bytes(size - len(content)))
            case Sync():
                pass
    return disk


def fingerprint(tree: dict[str, bytes | None]) -> str:
    """One digest for a tree: states that leave the same files are the same state."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(tree):
        content = tree[path]
        digest.update(path.encode() + b"\0")
        digest.update(
            b"D" if content is None else hashlib.blake2b(content, digest_size=16).digest()
        )
    return digest.hexdigest()


def materialise(tree: dict[str, bytes | None], target: Path, *, under: str) -> None:
    """Write the part of ``tree`` under ``under`` (relative to the traced base) into ``target``."""
    prefix = under.rstrip("/") + "/"
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in sorted(tree):
        if not path.startswith(prefix):
            continue
        destination = target / path[len(prefix) :]
        content = tree[path]
        if content is None:
            destination.mkdir(mode=0o700, exist_ok=True)
        else:
            fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
