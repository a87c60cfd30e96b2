"""Repairing a session file that a power cut left with a hole: recovery's last resort.

A file's appends reach the disk in any order unless synced (POSIX promises
no more), so a power cut can keep a later line and lose an earlier one:
zeros, or the fragment of a line, where the earlier line was. Such a hole
can only lie after the file's last sync, where every record is still in
the dead runtime's journal. Recovery reads the file back to the first
record the journal does not hold (``read_tail``); if a record of the
journal is missing in it, or a line there is damaged, ``repair`` writes the
file again: what came before untouched, then every record of that part in
``seq`` order, those found and those the journal gives back, and lines
without a ``seq`` (another tool's) where they were. The damaged bytes are
kept in a side file beside it, with a warning; the new file replaces the
old one atomically and is synced.
"""

from __future__ import annotations

import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ._exceptions import RecoveryWarning
from ._files import atomic_replace, fsync_dir, lines_backwards, read_file, write_new_file


@dataclass(slots=True)
class Tail:
    """The end of a JSONL file, from just after its last record below some seq."""

    start: int = 0
    """Where the tail begins in the file."""
    lines: list[tuple[bytes, dict[str, Any] | None]] = field(default_factory=list)
    """Its complete lines in file order, each with its record (None: damaged)."""
    last: int = 0
    """The seq of the file's last record (0 if it has none)."""

    @property
    def seqs(self) -> set[int]:
        return {r["seq"] for _, r in self.lines if r is not None and isinstance(r.get("seq"), int)}

    @property
    def damaged(self) -> list[bytes]:
        return [line for line, record in self.lines if record is None]


def read_tail(path: Path, below: int) -> Tail:
    """``path`` read backwards to its last record whose seq is below ``below`` (exclusive).

    Reads only that far: a long history costs what the journal holds of it.
    A torn last line must have been set aside first.
    """
    tail = Tail()
    backwards: list[tuple[bytes, dict[str, Any] | None]] = []
    for offset, line in lines_backwards(path):
        record = _record(line)
        seq = record.get("seq") if record is not None else None
        if isinstance(seq, int) and not tail.last:
            tail.last = seq
        if isinstance(seq, int) and seq < below:
            tail.start = offset + len(line) + 1
            break
        backwards.append((line, record))
    tail.lines = backwards[::-1]
    return tail


def needs_repair(tail: Tail, seqs: list[int]) -> bool:
    """Whether a record of ``seqs`` at or below the file's last is missing, or a line is damaged."""
    present = tail.seqs
    return bool(tail.damaged) or any(s <= tail.last and s not in present for s in seqs)


def repair(path: Path, records: dict[int, bytes], below: int) -> int:
    """Rewrite ``path`` from its tail on with ``records`` (seq -> line) in seq order.

    ``below``: the lowest seq of ``records``. Returns how many records it
    put back. The damaged lines of the tail go to a side file, with a
    ``RecoveryWarning``.
    """
    tail = read_tail(path, below)
    present = tail.seqs
    missing = sorted((seq, line) for seq, line in records.items() if seq not in present)
    out: list[bytes] = []
    for line, record in tail.lines:
        if record is None:
            continue
        seq = record.get("seq")
        if isinstance(seq, int):
            while missing and missing[0][0] < seq:
                out.append(missing.pop(0)[1])
        out.append(line + b"\n")
    put_back = len(out) - sum(1 for _, record in tail.lines if record is not None) + len(missing)
    out.extend(line for _, line in missing)
    damaged = tail.damaged
    if damaged:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        side = path.with_name(f"{path.name}.damaged-{stamp}-{secrets.token_hex(3)}")
        write_new_file(side, b"".join(line + b"\n" for line in damaged), sync=True)
        fsync_dir(side.parent)  # kept before the file loses them
        warnings.warn(
            f"{path}: {len(damaged)} line(s) a crash left damaged were moved to {side.name}; "
            "their records were restored from the journal",
            RecoveryWarning,
            stacklevel=2,
        )
    head = read_file(path)[: tail.start]
    atomic_replace(path, head + b"".join(out), sync=True)
    return put_back


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
