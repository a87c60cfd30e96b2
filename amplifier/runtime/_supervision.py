"""Supervising a delegated child: start it, ask it, close it, and say how it ended.

A child that fails, times out or cannot start is an outcome for its
parent, not an error; only cancellation propagates, and the child ends as
cancelled first. A failure keeps its cause (STYLE rule 16).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, assert_never

import anyio

from amplifier._log import formatted_traceback, log_failure
from amplifier.persistence import EndStatus

from ._children import ChildOutcome
from ._delegation import Delegation, DelegationStatus
from ._exceptions import RuntimeClosed, SessionClosed, describe_error
from ._messages import Answered, Cancelled, Failed, Outcome

if TYPE_CHECKING:
    from ._actor import SessionActor

CHILD_CLOSE_GRACE = 5.0
"""Seconds a child may take to end after its answer (or timeout) before it is cancelled."""


async def drive_child(child: SessionActor, request: Delegation) -> ChildOutcome:
    """Start ``child``, ask it ``request``'s instruction, close it; how it ended.

    A child that fails, times out or cannot start is an outcome, not an
    error; only cancellation propagates (the child ends as cancelled first).
    """
    outcome = ChildOutcome("cancelled")
    async with anyio.create_task_group() as tg:
        try:
            await tg.start(child.run)
        except Exception as exc:
            trace = log_failure(f"sub-session {child.id} could not start", exc)
            outcome = ChildOutcome("failed", error=describe_error(exc), trace=trace, cause=exc)
        else:
            outcome = await _supervise(child, request, tg)
    return outcome


async def _supervise(
    child: SessionActor, request: Delegation, tg: anyio.abc.TaskGroup
) -> ChildOutcome:
    """Ask the child, then close it with the matching end status."""
    status: DelegationStatus
    response = error = trace = None
    cause: BaseException | None = None
    end: EndStatus = "cancelled"
    # A child without a timeout (the usual one) needs no cancel scope of its own.
    timer = anyio.move_on_after(request.timeout) if request.timeout else None
    try:
        with timer or contextlib.nullcontext():
            try:
                outcome: Outcome = await child.ask(
                    request.instruction, request.context, durable=False
                )
            except (RuntimeClosed, SessionClosed) as exc:
                outcome = Failed(reason=str(exc), error=exc)
        if timer is not None and timer.cancelled_caught:
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
        child.close_mailbox(end, error)
    if timer is not None and timer.cancelled_caught:
        # The child may still be in its turn. The task group's end waits for the child's;
        # past the grace, its deadline cancels it. A child that gave an outcome has left
        # its turn, and its end is time-bounded already (``_actor`` Rule 4): no deadline.
        tg.cancel_scope.deadline = anyio.current_time() + CHILD_CLOSE_GRACE
    return ChildOutcome(status, response, error, trace=trace, cause=cause)
