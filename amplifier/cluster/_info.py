"""What a cluster runtime reports about itself: the cluster it joined, its session hosts.

Plain data, without Ray: the command line reads it without importing Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Joined = Literal["address", "RAY_ADDRESS", "ray start", "this process", "started"]
"""How the cluster was found: the address given, ``RAY_ADDRESS``, the one ``ray start``
recorded on this machine, the one this process was already connected to, or
a local cluster started for this runtime (none was running)."""


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """The Ray cluster a runtime runs on, and how it was found."""

    address: str
    joined: Joined
    note: str = ""
    """Why a local cluster was started instead (the one recorded does not answer, say)."""

    def describe(self) -> str:
        """One line for a person: which cluster, and why that one."""
        if self.joined == "started":
            why = self.note or "no running cluster was found"
            return f"Started a local Ray cluster at {self.address} ({why}); it stops at the end"
        how = {
            "address": "",
            "RAY_ADDRESS": " (from RAY_ADDRESS)",
            "ray start": " (the one `ray start` recorded on this machine)",
            "this process": " (this process was connected to it)",
        }[self.joined]
        return f"Joined the Ray cluster at {self.address}{how}"


@dataclass(frozen=True, slots=True)
class HostInfo:
    """A session host: where it runs and what it holds."""

    index: int
    pid: int
    node: str
    """The Ray node it runs on (its id)."""
    alive: bool
    roots: int
    """Root sessions open there."""
