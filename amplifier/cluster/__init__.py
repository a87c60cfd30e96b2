"""The Ray backend: sessions on a pool of Ray session hosts, one persistence actor.

``amplifier.open_runtime(cluster=...)`` opens it: the sessions run on the
cluster (``_driver``), with the same files, events and guarantees as in
process. Needs ``amplifier[ray]``.
"""

from amplifier._exports import name_as_public as _name_as_public

from ._exceptions import (
    ClusterError,
    ClusterUnavailable,
    HostLost,
    PersistenceRestarted,
    PersistenceUnavailable,
)
from ._info import ClusterInfo, HostInfo, Joined

__all__ = [
    "ClusterError",
    "ClusterInfo",
    "ClusterUnavailable",
    "HostInfo",
    "HostLost",
    "Joined",
    "PersistenceRestarted",
    "PersistenceUnavailable",
]

_name_as_public(globals(), __all__, "amplifier.cluster")
