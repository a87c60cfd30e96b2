"""Errors of the Ray backend.

AmplifierError
├── ClusterError                the cluster could not be reached or used
└── PersistenceError
    ├── PersistenceUnavailable  the persistence service did not answer a batch
    ├── PersistenceRestarted    the session was opened before the service restarted
    └── HostLost                the writer's host died; nothing more of it is applied
UsageError
└── ClusterUnavailable          ``cluster=`` given, but the ``ray`` extra is not installed

A turn that was running on a host that died fails with ``TurnFailed``
naming the session, like any failed turn.
"""

from __future__ import annotations

from typing import Any

from amplifier._errors import AmplifierError, UsageError
from amplifier.persistence import PersistenceError


class ClusterError(AmplifierError):
    """The Ray cluster could not be started, reached or used."""


class ClusterUnavailable(UsageError):
    """A cluster was asked for, but Ray is not installed (``pip install 'amplifier[ray]'``)."""


class PersistenceUnavailable(PersistenceError):
    """The persistence service gave no answer: the batch may or may not be stored."""


class PersistenceRestarted(PersistenceError):
    """The session was opened before the persistence service restarted: resume it."""

    def __init__(self) -> None:
        super().__init__(
            "the persistence service restarted since this session was opened; "
            "its stored records are intact: resume the session to go on"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), ()


class HostLost(PersistenceError):
    """The host that wrote these records died; nothing more of it is applied."""

    def __init__(self, writer: str) -> None:
        self.writer = writer
        super().__init__(f"the session host {writer} died; its sessions can be resumed")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.writer,)
