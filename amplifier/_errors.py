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


class AmplifierError(Exception):
    """Root of the failures: the request was valid, carrying it out failed."""


class UsageError(ValueError):
    """Root of the misuses: the request itself is invalid."""
