"""What a person types, as text a session can store.

Rule 1: input is decoded leniently. Bytes that are not UTF-8 (a Latin-1
        file piped in, a stray byte in an argument) become U+FFFD, so the
        prompt is stored and answered instead of refused. Python hands over
        such bytes in ``sys.argv`` as lone surrogates (``surrogateescape``);
        they are turned back into bytes first, then decoded.
"""

from __future__ import annotations

import io
import sys


def lenient(text: str) -> str:
    """``text`` with every byte that was not UTF-8 replaced by U+FFFD (Rule 1)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that does not stand for a byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def read_stdin() -> str:
    """All of stdin, decoded leniently."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        data: bytes = buffer.read()
        return data.decode("utf-8", "replace")
    return lenient(sys.stdin.read())


def read_line() -> str:
    """One line of stdin (empty at its end), decoded leniently.

    Read through the text layer, not its byte buffer: interactive mode reads
    in a daemon thread, and one blocked in the buffer's ``readline`` holds a
    lock that the interpreter needs at exit (a fatal error, not an exit).
    """
    stdin = sys.stdin
    if isinstance(stdin, io.TextIOWrapper) and stdin.errors != "surrogateescape":
        stdin.reconfigure(errors="surrogateescape")  # undecodable bytes come through (Rule 1)
    return lenient(stdin.readline())
