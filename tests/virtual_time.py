"""Virtual time for tests marked ``virtual_time``, on both backends (STYLE rule 9).

On trio it is trio's own ``MockClock(autojump_threshold=0)``. asyncio has no
such clock, so ``VirtualTimeLoop`` does the same for it: time stands still
while any task can run, and when every task waits and only a timer could
wake one, the clock jumps to that timer at once. A test then asserts exact
durations (a timeout of 30 s takes 30.0 s) and takes milliseconds.

A wait for a worker thread is a wait like any other: the clock may jump
past deadlines while a thread works. Tests on virtual time therefore open
their runtime with ``durability="none"``, under which no session waits for
the persistence actor's worker thread.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

from trio.testing import MockClock


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """Polls; where the loop would sleep until its next timer, moves its clock there instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:  # no timer at all: only I/O or a thread can wake anyone
            found: list[Any] = super().select(None)
            return found
        self._loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (see the module's docstring)."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self.now

    async def shutdown_default_executor(self, *args: Any) -> None:
        # Joining the worker threads takes real time, which this clock would skip
        # past any timeout on it: wait for them without one.
        await super().shutdown_default_executor()


def on_virtual_time(backend: str) -> tuple[str, dict[str, Any]]:
    """``backend`` with the options that put its tests on virtual time."""
    if backend == "trio":
        return backend, {"clock": MockClock(autojump_threshold=0)}
    return backend, {"loop_factory": VirtualTimeLoop}
