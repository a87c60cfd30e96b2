"""Standard output whose reader may go away: ``amplifier session show ID | head -1``.

When the reader of a pipe exits early, the next write fails with a broken
pipe; when the terminal goes away (its window closed), with an I/O error.
That is the reader's choice, not a failure of the command: as the usual
tools do, nothing is said, and the command's own outcome (a turn's, for
``run``; the hangup's, when the terminal closed) decides the exit code.
What would have been written is dropped: the stream is pointed at
``/dev/null``, so neither a later write nor the interpreter's last flush at
exit fails again. Standard error is treated the same way.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_TERMINAL_GONE = frozenset({errno.EIO, errno.ENXIO})
"""What writing to a terminal that hung up fails with."""


class ReaderGone:
    """A text stream that drops its output, without a word, once its reader has gone."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._drop_if_gone(exc)
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._drop_if_gone(exc)

    def _drop_if_gone(self, exc: OSError) -> None:
        if not isinstance(exc, BrokenPipeError) and exc.errno not in _TERMINAL_GONE:
            raise exc
        self._drop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _drop(self) -> None:
        self.gone = True
        drop(self._stream)


def drop(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at ``/dev/null``: nothing written to it later, nor the
    interpreter's last flush at exit, fails again."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # not a file (a test's capture): nothing to point away
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


@contextmanager
def tolerant_stdout() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` as ``ReaderGone`` while the block runs."""
    out, err = sys.stdout, sys.stderr
    if not isinstance(out, ReaderGone):
        sys.stdout = ReaderGone(out)
    if not isinstance(err, ReaderGone):
        sys.stderr = ReaderGone(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
