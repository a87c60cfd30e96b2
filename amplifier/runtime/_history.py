"""What a turn reads of its session's history, and the copy a session keeps of it.

Rule 1: a session's transcript is written only through its own actor, so
        the actor can keep the end of it in memory exactly: once read from
        the file, every message the session records is added to the copy,
        and later turns read the copy, not the file.
Rule 2: the copy is bounded by the widest window asked for (plus a quarter);
        a request wider than what was read goes back to the file.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from amplifier.persistence import MessageTail

_STAMP_BYTES = 64
"""About what the store's stamp (version, seq, ts) adds to a message's line."""
FRESH_WINDOW = 2 * 1024 * 1024
"""Bytes of history a new session keeps in memory before older messages give way
(its turns then read what they need from the file)."""


@dataclass(frozen=True, slots=True)
class HistoryTail:
    """The start and the end of a history (see ``SessionContext.history_tail``)."""

    first: dict[str, Any] | None
    """The first message, when ``messages`` does not reach back to it."""
    messages: list[dict[str, Any]]
    complete: bool
    """``messages`` is the whole history."""


class HistoryCopy:
    """The end of one session's transcript, kept in step with what it records (Rule 1)."""

    __slots__ = ("_complete", "_first", "_messages", "_sizes", "_total", "_window")

    def __init__(self, tail: MessageTail, window: int) -> None:
        self._first = tail.first
        self._messages: deque[dict[str, Any]] = deque(tail.messages)
        self._sizes: deque[int] = deque(tail.sizes)
        """Each message's bytes, about as its line in the file takes."""
        self._total = sum(tail.sizes)
        self._complete = tail.complete
        self._window = window

    @classmethod
    def empty(cls, window: int) -> HistoryCopy:
        """The copy of a new session's history: nothing yet, and complete (Rule 1)."""
        return cls(MessageTail(first=None, messages=[], sizes=[], complete=True), window)

    def covers(self, max_bytes: int) -> bool:
        """True if this copy holds all that a read of ``max_bytes`` from the file would."""
        return self._complete or self._window >= max_bytes

    def add(self, message: dict[str, Any]) -> None:
        """A message the session just recorded."""
        size = len(orjson.dumps(message)) + _STAMP_BYTES
        self._messages.append(message)
        self._sizes.append(size)
        self._total += size
        limit = self._window + self._window // 4
        while self._total > limit and len(self._messages) > 1:
            dropped = self._messages.popleft()
            if self._complete:
                self._first, self._complete = dropped, False
            self._total -= self._sizes.popleft()

    def tail(self, max_bytes: int) -> HistoryTail:
        """The last ``max_bytes`` or so, as a read of the file would give them."""
        start = 0
        if self._total > max_bytes:  # else all of it: a turn of a short session reads no sizes
            taken = 0
            start = len(self._sizes)
            while start > 0 and taken < max_bytes:
                start -= 1
                taken += self._sizes[start]
        messages = list(itertools.islice(self._messages, start, None))
        if start == 0:
            return HistoryTail(None if self._complete else self._first, messages, self._complete)
        first = self._messages[0] if self._complete else self._first
        return HistoryTail(first, messages, False)
