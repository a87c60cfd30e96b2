"""The runtime's machinery: ids, lifecycle tables, the event bus, cleanup plans, child placement.

Rarely needed: ``amplifier.runtime`` holds what the other layers use, and
``amplifier`` what programs use. These names may change more freely.
"""

from amplifier._exports import name_as_public as _name_as_public

from ._bus import EventBus
from ._children import ChildLauncher, ChildOutcome, ChildRun, Launch
from ._handle import LocalSession
from ._ids import agent_slug, is_child_id, is_root_id, new_child_id, new_root_id, span_of
from ._labels import check_end
from ._lifecycle import ALLOWED, Lifecycle
from ._messages import check_prompt
from ._runtime import LocalRuntime, open_local_runtime, plan_cleanup, run_child

__all__ = [
    "ALLOWED",
    "ChildLauncher",
    "ChildOutcome",
    "ChildRun",
    "EventBus",
    "Launch",
    "Lifecycle",
    "LocalRuntime",
    "LocalSession",
    "agent_slug",
    "check_end",
    "check_prompt",
    "is_child_id",
    "is_root_id",
    "new_child_id",
    "new_root_id",
    "open_local_runtime",
    "plan_cleanup",
    "run_child",
    "span_of",
]

_name_as_public(globals(), __all__, "amplifier.runtime.lowlevel")
