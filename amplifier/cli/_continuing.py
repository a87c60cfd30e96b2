"""Which session a command goes on with, and what it says about it.

- ``continue`` from a directory without sessions (a subdirectory of the
  project, say) goes on with the session of the nearest parent directory
  that has some, and says so.
- A session whose profile file is gone cannot be resumed under it: the
  error says which profile it was created with and how to pick another.
- An interactive session that never got a prompt is not kept: it holds
  nothing to resume, and would only stand in the way of ``continue``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amplifier import Cleanup, Runtime, Session, SessionSummary


async def latest_here_or_above(
    rt: Runtime, say: Callable[[str], None]
) -> SessionSummary | None:
    """The session ``continue`` takes: this directory's used last, else the nearest parent's."""
    found = await rt.latest()
    if found is not None:
        return found
    for parent in Path(rt.cwd).parents:
        found = await rt.latest(cwd=parent)
        if found is not None:
            say(
                f"(no session in {rt.cwd}: continuing the one of {parent}, "
                "the nearest parent directory with sessions)"
            )
            return found
    return None


@asynccontextmanager
async def resumed(
    rt: Runtime, session_id: str, *, profile: str | None
) -> AsyncIterator[Session]:
    """``rt.resume``, whose error for a profile that no longer exists names the session's."""
    from amplifier import UnknownProfile, UsageError

    try:
        async with rt.resume(session_id, profile=profile) as session:
            yield session
    except UnknownProfile as exc:
        if profile is not None:
            raise  # the one asked for on the command line: its own error says it
        raise UsageError(
            f"session {session_id} was created with the profile {exc.name!r}, which no "
            f"longer exists (available: {', '.join(exc.available) or 'none'}); "
            "resume it under another one with --profile NAME"
        ) from exc


async def forget_if_empty(rt: Runtime, session: Session) -> bool:
    """Delete ``session`` if it never got a prompt nor a name or tag; True if it is gone."""
    from amplifier import AmplifierError

    meta = session.metadata
    if meta.turns > 0 or meta.name or meta.tags:
        return False  # used, or labelled on purpose (/rename, /tag)
    with contextlib.suppress(AmplifierError, OSError):
        await rt.delete(session.id)
        return True
    return False


async def confirm_cleanup(plan: Cleanup, interrupts: AsyncIterator[int]) -> bool | None:
    """Ask at the terminal whether the sessions of ``plan`` go: their count, oldest, newest.

    Anything but yes (Ctrl-D too) is a no; None if Ctrl-C interrupted the question.
    """
    import anyio
    import typer

    from ._render import when
    from ._running import unless_interrupted

    trees = plan.trees
    count = sum(len(tree) for tree in trees)
    used = sorted(max(_last_use(row) for row in tree) for tree in trees)
    subs = count - len(trees)
    what = f"{len(trees)} session(s)" + (f" and {subs} sub-session(s)" if subs else "")
    question = (
        f"Delete {what}, last used between {when(used[0])} and {when(used[-1])}?"
        if len(used) > 1
        else f"Delete {what}, last used {when(used[0])}?"
    )
    answer: bool | None = False

    async def ask() -> None:
        nonlocal answer
        with contextlib.suppress(typer.Abort, EOFError):
            answer = await anyio.to_thread.run_sync(
                lambda: typer.confirm(question, default=False, err=True), abandon_on_cancel=True
            )

    if await unless_interrupted(interrupts, ask) is not None:
        return None
    return answer


def _last_use(row: SessionSummary) -> datetime:
    return row.metadata.updated if row.metadata is not None else datetime.min.replace(tzinfo=UTC)
