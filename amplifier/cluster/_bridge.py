"""Awaiting a Ray call on asyncio and on trio alike.

Rule: Ray's object refs are awaitable only on asyncio, so on trio the
call's future wakes the trio loop through its token. No thread per call
(a thread limiter would cap the calls in flight); cancelling the wait
cancels the remote call.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import ray
import sniffio
from ray.exceptions import RayTaskError


async def call(ref: Any, *, cancel_remote: bool = True) -> Any:
    """The result of the Ray call ``ref`` (see the Rule). Checkpoint; cancelling cancels it."""
    if sniffio.current_async_library() == "asyncio":
        future = asyncio.wrap_future(ref.future())
        try:
            return await future
        except asyncio.CancelledError:
            if cancel_remote:
                ray.cancel(ref)
            raise
    import trio

    done = trio.Event()
    token = trio.lowlevel.current_trio_token()
    pending = ref.future()

    def wake(_: object) -> None:
        # The run may have ended while the call was in flight.
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    pending.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        if cancel_remote and not pending.done():
            ray.cancel(ref)
        raise
    return pending.result()


async def unwrapped(ref: Any) -> Any:
    """``call(ref)``, where an error the actor raised comes out as itself, not wrapped by
    Ray, with the actor's traceback as a note (``_failures``' Rule)."""
    try:
        return await call(ref)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, Exception):
            cause.add_note(f"Raised in a Ray actor:\n{remote_traceback(exc).rstrip()}")
            raise cause from None
        raise


def remote_traceback(exc: RayTaskError) -> str:
    """The traceback the actor raised ``exc`` with.

    Ray's error that also derives from its cause's class keeps no traceback
    attribute of its own (its look-ups fall through to the cause); its text,
    which Ray formats from that traceback, is the traceback then.
    """
    text = vars(exc).get("traceback_str")
    return text if isinstance(text, str) and text else str(exc)
