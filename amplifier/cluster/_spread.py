"""Spreading delegated children over the session hosts (``spread_children=True``).

Each host's Runtime gets a ``ChildSpreader`` as its child launcher; without
peers (the default) it places nothing, and every child runs in its
parent's task group, on its parent's host.

Rule 1: a host places its sessions' children on the hosts in turn, starting
        with the one after itself and skipping hosts known dead; a turn
        that falls on itself runs the child here, in its parent's task group.
Rule 2: a child on another host runs there through the runtime's
        ``run_child``, with the runtime's rules for a child run elsewhere:
        the parent's ``delegate:start`` is durable before the child starts,
        the child's final records before its outcome comes back.
Rule 3: a child whose host dies (the call fails with ``RayActorError``) is a
        failed delegation whose error names the child; that host gets no
        more children. Its writer is fenced at the persistence service
        first (as the driver does, Rule 2 there), so none of the child's
        records lands after the parent's ``delegate:end``, and the fence
        ends the child (``session:end``) before it. A child the host never
        created is said to have never started: the user is sent to resume
        the parent, not a session that does not exist. The parent session
        goes on.
Rule 4: cancelling the parent's wait asks the child's host to cancel the
        child (by the launch's ticket), then waits, shielded and bounded,
        for its outcome: the child's ``session:end`` is durable before the
        parent's ``delegate:end``.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import anyio
from ray.exceptions import RayActorError, RayTaskError

from amplifier.persistence import SessionMetadata
from amplifier.runtime.lowlevel import ChildOutcome, ChildRun, Launch

from ._bridge import call, remote_traceback

CANCEL_WAIT = 10.0
"""Seconds a cancelled parent waits for its remote child's final records (Rule 4)."""
FENCE_WAIT = 30.0
"""Seconds a parent waits for a dead child host to be fenced (Rule 3)."""


class ChildSpreader:
    """The child launcher of the host at ``index`` (see the module's Rules)."""

    def __init__(self, index: int, persistence: Any) -> None:
        self._index = index
        self._persistence = persistence
        self._peers: list[tuple[Any, str]] = []
        self._lost: set[int] = set()
        self._next = index + 1
        self._tickets = itertools.count(1)
        self.kept = 0
        """Children placed here, in their parent's task group."""

    def spread(self, peers: list[tuple[Any, str]]) -> None:
        """Place children on ``peers``: every host of the runtime (its actor and writer id),
        this one included, by index."""
        self._peers = list(peers)

    def lose(self, index: int) -> None:
        """The host at ``index`` died: place nothing more there."""
        self._lost.add(index)

    def place(self, run: ChildRun) -> Launch | None:
        """Where the next child goes (Rule 1): a launch on another host, or None for here."""
        count = len(self._peers)
        if count < 2:
            self.kept += 1
            return None
        chosen = next(
            (
                candidate
                for step in range(count)
                if (candidate := (self._next + step) % count) not in self._lost
            ),
            self._index,
        )
        self._next = chosen + 1
        if chosen == self._index:
            self.kept += 1
            return None
        peer, writer = self._peers[chosen]
        ticket = f"{self._index}/{next(self._tickets)}"

        async def launch() -> ChildOutcome:
            return await self._launch(chosen, peer, writer, run, ticket)

        return launch

    async def _launch(
        self, index: int, peer: Any, writer: str, run: ChildRun, ticket: str
    ) -> ChildOutcome:
        child_id = run.location.session_id
        ref = peer.run_child.remote(run, ticket)
        try:
            try:
                outcome: ChildOutcome = await call(ref, cancel_remote=False)
            except anyio.get_cancelled_exc_class():
                peer.cancel_child.remote(ticket)
                with (
                    anyio.move_on_after(CANCEL_WAIT, shield=True),
                    contextlib.suppress(RayActorError, RayTaskError),
                ):
                    await call(ref, cancel_remote=False)
                raise
        except RayActorError:
            self.lose(index)
            started = True  # unless the service says otherwise
            with anyio.move_on_after(FENCE_WAIT), contextlib.suppress(Exception):
                await call(self._persistence.fence.remote(writer))
                started = await call(self._persistence.exists.remote(run.location))
            if not started and run.create is not None:
                return ChildOutcome("failed", error=_never_started(child_id, run.create))
            return ChildOutcome("failed", error=_host_died(child_id))
        except RayTaskError as exc:  # it could not start there: its traceback is kept
            return ChildOutcome(
                "failed", error=f"sub-session {child_id}: {exc.cause}", trace=remote_traceback(exc)
            )
        return outcome


def _never_started(child_id: str, child: SessionMetadata) -> str:
    return (
        f"sub-session {child_id} never started: its host died before creating it, and "
        f"nothing of it is stored; to run it again, resume the parent: "
        f"amplifier session resume {child.parent_id}"
    )


def _host_died(child_id: str) -> str:
    return (
        f"the host of sub-session {child_id} died mid-turn; its stored records are "
        f"intact: resume it with: amplifier session resume {child_id}"
    )
