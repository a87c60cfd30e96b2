"""Cancellation: a turn cut off by a deadline or a cancel scope leaves honest, resumable files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from amplifier import Delegation, Session, Turn, TurnCancelled
from amplifier.persistence import SessionWriter, _actor, _store
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import FnHandler, events, first, metadata, transcript, until


class Hang:
    """A turn that persists a 'working' event, says so, and then never finishes."""

    def __init__(self, *, only: str | None = None) -> None:
        self.working = anyio.Event()
        self.only = only

    async def __call__(self, turn: Turn) -> str:
        if self.only is not None and turn.prompt != self.only:
            return "quick"
        await turn.emit("working", {})
        self.working.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_cancelled_runtime_ends_the_session_cancelled(home: Path, project: Path) -> None:
    """Cancelling everything mid-turn still writes prompt:complete and session:end as cancelled."""
    hang = Hang()
    ids: list[str] = []
    with anyio.CancelScope() as scope:
        async with open_runtime(cwd=project, handler=FnHandler(hang)) as rt:
            session = await rt.open_session()
            ids.append(session.id)
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.ask, "long job")
                await hang.working.wait()
                scope.cancel()
    (session_id,) = ids
    log = events(home, session_id)
    assert log[-2]["event"] == "prompt:complete"
    assert log[-2]["data"]["status"] == "cancelled"
    assert log[-1]["event"] == "session:end"
    assert log[-1]["data"]["status"] == "cancelled"
    assert metadata(home, session_id)["status"] == "cancelled"
    assert [m["content"] for m in transcript(home, session_id)] == ["long job"]


async def test_cancelled_session_resumes_with_its_history(home: Path, project: Path) -> None:
    """After a cancelled run the session resumes, keeps its prompt, and answers again."""
    hang = Hang()
    with anyio.CancelScope() as scope:
        async with open_runtime(cwd=project, handler=FnHandler(hang)) as rt:
            session = await rt.open_session()
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.ask, "long job")
                await hang.working.wait()
                scope.cancel()
    async with open_runtime(cwd=project) as rt, rt.resume(session.id) as again:
        reply = await again.ask("are you back?")
    assert reply.text == "echo: are you back?"
    assert [m["content"] for m in transcript(home, session.id)][:2] == ["long job", "are you back?"]
    assert metadata(home, session.id)["status"] == "completed"
    resumed = first(events(home, session.id), "session:resume")
    assert resumed["data"]["previous_status"] == "cancelled"


@pytest.mark.parametrize("room", [True, False], ids=["mailbox-with-room", "mailbox-full"])
async def test_cancelled_runtime_with_children_keeps_the_causal_order(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch, room: bool
) -> None:
    """Cancelling a parent with running children ends the children first, all as cancelled,
    with their turns' ends: sent at once where the persistence mailbox has room for them,
    in a shielded scope where sending them could wait."""
    if not room:
        monkeypatch.setattr(SessionWriter, "has_room", lambda self, requests: False)
    ready = anyio.Event()
    started = 0

    async def work(turn: Turn) -> str:
        nonlocal started
        if turn.session.depth == 0:
            await turn.delegate_all([Delegation(agent="explorer", instruction="x")] * 3)
            return "unreachable"
        started += 1
        if started == 3:
            ready.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    ids: list[str] = []
    with anyio.CancelScope() as scope:
        async with open_runtime(cwd=project, handler=FnHandler(work)) as rt:
            session = await rt.open_session()
            ids.append(session.id)
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.ask, "fan out")
                await ready.wait()
                scope.cancel()
    parent = events(home, ids[0])
    children = metadata(home, ids[0])["children"]
    assert len(children) == 3
    for child in children:
        end = events(home, child)[-1]
        assert (end["event"], end["data"]["status"]) == ("session:end", "cancelled")
        turn_end = first(events(home, child), "prompt:complete")
        assert turn_end["data"]["status"] == "cancelled"
        assert metadata(home, child)["status"] == "cancelled"
        assert end["seq"] < first(parent, "delegate:end", child_id=child)["seq"]
    assert parent[-1]["data"]["status"] == "cancelled"


async def test_giving_up_on_an_ask_cancels_only_that_turn(home: Path, project: Path) -> None:
    """A caller that stops waiting cancels the turn; the session answers the next prompt."""
    hang = Hang(only="hang")
    async with open_runtime(cwd=project, handler=FnHandler(hang)) as rt, rt.open_session() as s:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def stop_waiting() -> None:
                    await hang.working.wait()
                    scope.cancel()

                tg.start_soon(stop_waiting)
                await s.ask("hang")
        assert (await s.ask("next")).text == "quick"
    completed = [e["data"]["status"] for e in events(home, s.id) if e["event"] == "prompt:complete"]
    assert completed == ["cancelled", "completed"]


async def test_a_prompt_given_up_while_it_waits_its_turn_is_never_run(
    home: Path, project: Path
) -> None:
    """A caller that stops waiting before the session reaches its prompt costs no turn:
    the prompt is dropped, and the prompts around it are answered in order."""
    release = anyio.Event()
    seen: list[str] = []

    async def work(turn: Turn) -> str:
        seen.append(turn.prompt)
        if turn.prompt == "first":
            await release.wait()
        return f"answer to {turn.prompt}"

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        answers: list[str] = []
        async with anyio.create_task_group() as tg:

            async def ask(text: str) -> None:
                answers.append((await s.ask(text)).text)

            tg.start_soon(ask, "first")
            await until(lambda: seen == ["first"])
            with anyio.move_on_after(0.05):  # gives up while "first" still runs
                await s.ask("second")
            release.set()
        assert (await s.ask("third")).text == "answer to third"
    assert seen == ["first", "third"]
    assert answers == ["answer to first"]
    prompts = [e["data"]["prompt"] for e in events(home, s.id) if e["event"] == "prompt:submit"]
    assert prompts == ["first", "third"]


async def test_session_cancel_interrupts_the_turn_and_keeps_the_session(
    home: Path, project: Path
) -> None:
    """Session.cancel() makes ask raise TurnCancelled; the session stays usable."""
    hang = Hang(only="hang")
    async with open_runtime(cwd=project, handler=FnHandler(hang)) as rt, rt.open_session() as s:
        async with anyio.create_task_group() as tg:

            async def cancel_soon() -> None:
                await hang.working.wait()
                s.cancel()

            tg.start_soon(cancel_soon)
            with pytest.raises(TurnCancelled):
                await s.ask("hang")
        assert (await s.ask("next")).text == "quick"
    assert metadata(home, s.id)["status"] == "completed"


async def test_children_cancelled_behind_a_full_persistence_mailbox_still_end_recorded(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The persistence actor stuck on a slow disk, its mailbox full, and the Runtime
    cancelled: each child's final records wait, shielded, for room and are written once the
    disk answers, so every child still ends cancelled on disk, before its delegate:end."""
    monkeypatch.setattr(_store, "MAILBOX_SIZE", 4)
    disk = anyio.Event()
    holding = anyio.Event()
    hold = False
    commit = _actor.PersistenceActor._commit

    async def slow_disk(self: _actor.PersistenceActor, requests: list[Any]) -> None:
        if hold and not disk.is_set():
            holding.set()
            with anyio.CancelScope(shield=True):  # a disk does not stop when cancelled
                await disk.wait()
        await commit(self, requests)

    monkeypatch.setattr(_actor.PersistenceActor, "_commit", slow_disk)

    async def work(turn: Turn) -> str:
        nonlocal hold
        if turn.session.depth == 0:
            await turn.delegate_all([Delegation(agent="explorer", instruction=n) for n in "ab"])
            return "unreachable"
        if turn.prompt == "a":
            hold = True
            await turn.emit("working", {})  # held: the disk is slow
        else:
            await holding.wait()
            for n in range(50):  # fills the mailbox, then waits for room
                await turn.post("filler", {"n": n})
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    ids: list[str] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as outside:
            with anyio.CancelScope() as scope:
                async with open_runtime(cwd=project, handler=FnHandler(work)) as rt:
                    session = await rt.open_session()
                    ids.append(session.id)
                    outside.start_soon(_ask_cancelled, session, "fan out")
                    await holding.wait()
                    await anyio.wait_all_tasks_blocked()  # the mailbox is full
                    scope.cancel()
                    outside.start_soon(_answer_later, disk)
    parent = events(home, ids[0])
    children = metadata(home, ids[0])["children"]
    assert len(children) == 2
    for child in children:
        log = events(home, child)
        assert first(log, "prompt:complete")["data"]["status"] == "cancelled"
        assert (log[-1]["event"], log[-1]["data"]["status"]) == ("session:end", "cancelled")
        assert metadata(home, child)["status"] == "cancelled"
        assert log[-1]["seq"] < first(parent, "delegate:end", child_id=child)["seq"]


async def _ask_cancelled(session: Session, prompt: str) -> None:
    with contextlib.suppress(TurnCancelled):
        await session.ask(prompt)


async def _answer_later(disk: anyio.Event) -> None:
    """The slow disk answers once everything cancelled has reached where it waits."""
    await anyio.wait_all_tasks_blocked()
    disk.set()
