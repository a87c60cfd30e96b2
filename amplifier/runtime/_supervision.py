"""Supervising a delegated child: start it, ask it, close it, and say how it ended.

A child that fails, times out or cannot start is an outcome for its
parent, not an error; only cancellation propagates, and the child ends as
cancelled first. A failure keeps its cause (STYLE rule 16).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never

import anyio

from amplifier._log import formatted_traceback, log_failure
from amplifier.persistence import EndStatus

from ._children import ChildOutcome
from ._delegation import Delegation, DelegationStatus
from ._exceptions import describe_error
from ._messages import Answered, Cancelled, Failed, Outcome

if TYPE_CHECKING:
    from ._actor import SessionActor

async def drive_child(child: SessionActor, request: Delegation) -> ChildOutcome:
    """Open ``child``, ask it ``request``'s instruction, close it; how it ended.

    The child runs in the caller's task (``SessionActor`` Rule 2). A child
    that fails, times out or cannot start is an outcome, not an error; only
    cancellation propagates (the child ends as cancelled first).
    """
    try:
        await child.open_here()
    except Exception as exc:
        trace = log_failure(f"sub-session {child.id} could not start", exc)
        error = describe_error(exc)
        # It never started: its files stay as they were found.
        await child.close_here("failed", error, keep_previous=True)
        return ChildOutcome("failed", error=error, trace=trace, cause=exc)
    except BaseException:
        await child.close_here("cancelled")
        raise
    return await _supervise(child, request)


async def _supervise(child: SessionActor, request: Delegation) -> ChildOutcome:
    """Ask the child, then close it with the matching end status."""
    status: DelegationStatus
    response = error = trace = None
    cause: BaseException | None = None
    end: EndStatus = "cancelled"
    session_trace: str | None = None
    try:
        with anyio.move_on_after(request.timeout if request.timeout else float("inf")) as timer:
            try:
                outcome: Outcome = await child.answer_here(request.instruction, request.context)
            except Exception as exc:  # the session failed, not its turn: it ends failed
                session_trace = log_failure(f"session {child.id} failed", exc)
                outcome = Failed(reason=describe_error(exc), error=exc)
        if timer.cancelled_caught:
            status, error = "timed_out", f"no answer within {request.timeout:g} s"
        else:
            match outcome:
                case Answered(reply=reply):
                    status, response, end = "completed", reply.text, "completed"
                case Failed(reason=reason, error=cause):
                    status, error, end = "failed", reason, "failed"
                    if cause is not None:  # the parent's delegate:end keeps where it failed
                        trace = formatted_traceback(cause)
                case Cancelled():
                    status, error = "cancelled", "the child's turn was cancelled"
                case _:
                    assert_never(outcome)
    finally:
        await child.close_here(end, error, session_trace)
    return ChildOutcome(status, response, error, trace=trace, cause=cause)
