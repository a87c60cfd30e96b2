"""The Ray backend: sessions on a pool of Ray session hosts, one persistence actor.

``open_runtime`` here is the public ``amplifier.open_runtime``: without
``cluster`` it is the in-process runtime of the agents layer, and Ray is
never imported; with it, the sessions run on the cluster (``_driver``),
with the same files, events and guarantees. Needs ``amplifier[ray]``.
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
from ._open import open_runtime

__all__ = [
    "ClusterError",
    "ClusterInfo",
    "ClusterUnavailable",
    "HostInfo",
    "HostLost",
    "Joined",
    "PersistenceRestarted",
    "PersistenceUnavailable",
    "open_runtime",
]

_name_as_public(globals(), __all__, "amplifier.cluster")
