"""The two roots of Amplifier's exception tree.

Every part of the package (``persistence``, ``runtime``, ``agents``, ``cli``)
raises subclasses of one of these, so callers can tell a failure from a
mistake with a single ``except``::

    AmplifierError        something went wrong while doing what was asked
    UsageError            the caller asked for something that cannot be done

``UsageError`` also derives from ``ValueError`` because a misuse is almost
always a bad argument (a malformed session id, an unknown agent name).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from amplifier._exports import name_as_public as _name_as_public


class AmplifierError(Exception):
    """Root of the failures: the request was valid, carrying it out failed."""


class UsageError(ValueError):
    """Root of the misuses: the request itself is invalid."""


@contextmanager
def unwrap_single_error() -> Iterator[None]:
    """Let a lone exception out of a task group as itself, not as a one-member group.

    ``open_runtime`` and ``open_store`` run the caller's block inside a task
    group; an error raised by that block (or by one task) should reach the
    caller as the error it is, with its own traceback and cause.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        context = error.__context__
        try:
            raise error
        finally:
            error.__context__ = context
            del error, group


_name_as_public(globals(), ["AmplifierError", "UsageError"], "amplifier._errors")
