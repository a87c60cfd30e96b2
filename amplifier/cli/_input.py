"""What a person types, as text a session can store.

Rule 1: input is decoded leniently. Bytes that are not UTF-8 (a Latin-1
        file piped in, a stray byte in an argument) become U+FFFD, so the
        prompt is stored and answered instead of refused. Python hands over
        such bytes in ``sys.argv`` as lone surrogates (``surrogateescape``);
        they are turned back into bytes first, then decoded.
"""

from __future__ import annotations

import io
import os
import stat
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


def stdin_is_piped() -> bool:
    """stdin is a pipe or a file (``echo x |``, ``< prompt.txt``): a prompt comes that way.

    Not a terminal, and not an empty device such as ``/dev/null`` (a script
    or service that gave the command no input at all).
    """
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        return not sys.stdin.isatty()  # a stream that is no file: input handed over in memory
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


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
