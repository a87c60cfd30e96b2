"""A failure that crosses the process boundary keeps its type and its traceback.

The same idea as tractor's ``pack_error`` / ``unpack_error``: the side that
failed sends the exception with its formatted traceback and where it ran;
the other side raises it again as the cause of its own error.

Rule: the rebuilt exception is of the same type where it can be (its class
        imports on both sides and its arguments and attributes pickle: it
        is rebuilt from them without calling ``__init__``, whose signature
        is often not its ``args``; else the nearest root this package
        knows, with the same message: ``_wire.portable``), so a
        caller's ``isinstance`` holds on either side of the boundary (the
        command line tells a turn that could not be stored by its cause).
        The remote traceback rides along as a note, which Python prints
        with the exception: ``--debug`` shows where it came from.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

from amplifier._log import formatted_traceback

from ._wire import portable

State = tuple[type[BaseException], tuple[Any, ...], dict[str, Any]]
"""An exception's class, ``args`` and attributes."""


@dataclass(frozen=True, slots=True)
class PackedError:
    """A failure as it travels: the exception, its traceback, where it ran."""

    state: State | None
    """What rebuilds it as its own type; None: ``portable`` is all there is."""
    portable: BaseException | None
    traceback: str
    where: str


def pack(error: BaseException, where: str) -> PackedError:
    """``error`` for the other side; ``where`` names the process it ran in (a session host)."""
    traceback = formatted_traceback(error)
    where = f"{where}, pid {os.getpid()}"
    try:
        state: State = (type(error), error.args, dict(vars(error)))
        pickle.loads(pickle.dumps(state))
    except Exception:  # an attribute that does not pickle, a class defined in a function
        return PackedError(None, portable(error), traceback, where)
    return PackedError(state, None, traceback, where)


def unpack(packed: PackedError) -> BaseException:
    """The exception again, with the remote traceback as a note (see the Rule)."""
    if packed.state is not None:
        kind, args, attributes = packed.state
        error = kind.__new__(kind)
        error.args = args
        error.__dict__.update(attributes)
    else:
        assert packed.portable is not None
        error = packed.portable
    error.add_note(f"Raised in {packed.where}:\n{packed.traceback.rstrip()}")
    return error
