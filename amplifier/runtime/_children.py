"""Delegated children: running one under its parent's supervision, here or elsewhere.

A child runs in its parent's task group by default. A ``ChildLauncher`` in the
Runtime's services may place some children elsewhere (another session host
of a cluster): there the same code runs the child on that process's Runtime
(``Runtime.run_child``), and its outcome comes back as a value.

Rule 1: causality across writers. A child run elsewhere writes through
        another mailbox, so mailbox order no longer orders it after its
        parent: the parent waits until its ``delegate:start`` (and the
        metadata listing the child) is durable before it launches the
        child, and the child's host returns only once the child's final
        records are durable, so the parent's ``delegate:end`` follows them.
Rule 2: a launcher reports the child's outcome exactly as a local child
        reports it (completed, failed, cancelled, timed_out); if the child
        cannot be reached (its host died) the result is ``failed`` with a
        reason naming the child. Cancelling the wait cancels the child,
        and still waits (shielded, bounded) for its final records (Rule 1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from amplifier.persistence import SessionLocation, SessionMetadata

from ._delegation import Delegation, DelegationStatus


@dataclass(frozen=True, slots=True)
class ChildRun:
    """One delegation, as whoever runs the child needs it."""

    location: SessionLocation
    create: SessionMetadata | None
    """The new child's metadata; None: continue the stored child at ``location``."""
    request: Delegation


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """How a child ended, as its parent records it in ``delegate:end``."""

    status: DelegationStatus
    response: str | None = None
    error: str | None = None
    trace: str | None = None
    """The formatted traceback of the child's failure (its turn's, or its start's)."""
    final_error: BaseException | None = None
    """What the child's final records failed with, if they could not be stored."""
    cause: BaseException | None = None
    """The exception that failed the child, in the process that ran it (``trace`` travels)."""

    def __reduce__(self) -> tuple[object, ...]:
        # An outcome crosses processes on a cluster. Any exception may be the
        # cause, and not every one survives pickling: its formatted
        # traceback (``trace``) travels in its place.
        return (
            ChildOutcome,
            (self.status, self.response, self.error, self.trace, self.final_error),
        )


Launch = Callable[[], Awaitable[ChildOutcome]]
"""Runs the placed child to its end (Rule 2)."""


class ChildLauncher(Protocol):
    """Places delegated children outside the parent's Runtime (see the module's Rules)."""

    def place(self, run: ChildRun) -> Launch | None:
        """How to run ``run``'s child elsewhere, or None to run it in its parent's task group."""
        ...
