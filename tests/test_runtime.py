"""Sessions through the Python API: open, ask, close, resume, observe."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import traceback
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from anyio.abc import TaskStatus

from amplifier import (
    AmbiguousSessionId,
    InvalidSessionId,
    RuntimeClosed,
    Session,
    SessionClosed,
    SessionLocked,
    SessionNotFound,
    Turn,
    TurnCancelled,
    TurnFailed,
    UsageError,
)
from amplifier.persistence import SessionWriter
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import FnHandler, events, metadata, names, session_dirs, transcript


async def test_open_session_writes_identity_before_the_first_turn(
    home: Path, project: Path
) -> None:
    """A new session is stored (metadata, session:start) before it is asked anything."""
    async with open_runtime(cwd=project, profile="dev") as rt:
        session = await rt.open_session(agent="explorer")
        await rt.flush()
        stored = metadata(home, session.id)
        assert stored["status"] == "active"
        assert stored["agent"] == "explorer"
        assert stored["profile"] == "dev"
        assert stored["cwd"] == str(project)
        assert [e.event async for e in rt.events(session.id)] == ["session:start"]
        assert (
            home / "projects" / str(project).replace("/", "-") / "sessions" / session.id
        ).is_dir()


async def test_ask_returns_the_answer_and_persists_both_messages(home: Path, project: Path) -> None:
    """A turn leaves the prompt and the answer in the transcript, and its events in the log."""
    async with open_runtime(cwd=project) as rt, rt.open_session() as session:
        reply = await session.ask("hello")
    assert reply.text == "echo: hello"
    assert reply.turn == 1
    assert [(m["role"], m["content"]) for m in transcript(home, session.id)] == [
        ("user", "hello"),
        ("assistant", "echo: hello"),
    ]
    assert names(events(home, session.id)) == [
        "session:start",
        "prompt:submit",
        "prompt:complete",
        "session:end",
    ]


async def test_closing_a_session_marks_it_completed(home: Path, project: Path) -> None:
    """Leaving the session's block writes session:end and the final metadata."""
    async with open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("one")
            await session.ask("two")
        with pytest.raises(SessionClosed):
            await session.ask("three")
    stored = metadata(home, session.id)
    assert stored["status"] == "completed"
    assert stored["message_count"] == 4
    assert stored["last_prompt"] == "two"
    assert stored["turns"] == 2
    assert events(home, session.id)[-1]["data"] == {"status": "completed"}


async def test_closing_behind_a_full_mailbox_keeps_the_status_asked_for(
    home: Path, project: Path
) -> None:
    """close(status="failed") while prompts fill the mailbox: the queued ones are answered,
    then the session ends failed, with the error given, not completed."""
    started, release = anyio.Event(), anyio.Event()

    async def work(turn: Turn) -> str:
        started.set()
        await release.wait()
        return "ok"

    answers: list[str] = []

    async def ask(session: Session, n: int) -> None:
        with contextlib.suppress(SessionClosed):
            answers.append((await session.ask(f"question {n}")).text)

    async with open_runtime(cwd=project, handler=FnHandler(work), mailbox_size=2) as rt:
        session = await rt.open_session()
        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(ask, session, n)
            await started.wait()
            await anyio.wait_all_tasks_blocked()  # one turn running, the mailbox full
            tg.start_soon(partial(session.close, status="failed", error="the caller gave up"))
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert answers[:3] == ["ok"] * 3
    stored = metadata(home, session.id)
    assert (stored["status"], stored["error"]) == ("failed", "the caller gave up")
    assert events(home, session.id)[-1]["data"] == {
        "status": "failed",
        "error": "the caller gave up",
    }


async def test_sessions_left_open_end_with_the_runtime(home: Path, project: Path) -> None:
    """A session opened without a block is closed, and durable, when the runtime exits."""
    async with open_runtime(cwd=project) as rt:
        session = await rt.open_session()
        await session.ask("hi")
    assert metadata(home, session.id)["status"] == "completed"


async def test_who_waits_behind_a_cancelled_session_is_told_it_ended(
    home: Path, project: Path
) -> None:
    """A Runtime cancelled while one turn runs and a prompt and a change wait in the
    session's mailbox: the turn is cancelled, and the prompt and the change behind it are
    answered that the session ended, not left waiting for ever (they are asked from
    outside the Runtime's tasks, as a server's request handlers would)."""
    started = anyio.Event()

    async def forever(turn: Turn) -> str:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("never answers")

    host_scope = anyio.CancelScope()
    results: dict[str, object] = {}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            session = await tg.start(hosted_session, host_scope, project, FnHandler(forever))
            tg.start_soon(outcome, results, "running", partial(session.ask, "one"))
            await started.wait()
            tg.start_soon(outcome, results, "queued", partial(session.ask, "two"))
            change = partial(session.set_attributes, {"k": "v"})
            tg.start_soon(outcome, results, "change", change)
            await anyio.wait_all_tasks_blocked()
            host_scope.cancel()
    assert isinstance(results["running"], TurnCancelled)
    assert isinstance(results["queued"], RuntimeClosed)
    assert isinstance(results["change"], SessionClosed)
    stored = metadata(home, session.id)
    assert (stored["status"], stored["turns"]) == ("cancelled", 1)
    assert "k" not in stored["attributes"]
    assert [m["content"] for m in transcript(home, session.id)] == ["one"]


@contextlib.asynccontextmanager
async def shared_worker_threads_all_busy() -> AsyncIterator[None]:
    """Every token of anyio's shared thread limiter held by a blocking call (as a program's
    own calls, or its tools', may hold them) for as long as the block runs, at most 10 s."""
    release = threading.Event()
    busy = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
    async with anyio.create_task_group() as tg:
        for _ in range(busy):
            tg.start_soon(partial(anyio.to_thread.run_sync, release.wait))
        await anyio.wait_all_tasks_blocked()
        try:
            with anyio.fail_after(10):
                yield
        finally:
            release.set()


async def test_a_turn_is_durable_while_the_shared_worker_threads_are_all_busy(
    home: Path, project: Path
) -> None:
    """A program's own blocking calls (or its tools') hold every token of anyio's shared
    thread limiter: a session's turn still becomes durable and answers; the store's
    journal does not queue behind them."""
    async with open_runtime(cwd=project) as rt, rt.open_session() as session:
        async with shared_worker_threads_all_busy():
            reply = await session.ask("hello")
    assert reply.text == "echo: hello"
    assert [m["content"] for m in transcript(home, session.id)] == ["hello", "echo: hello"]


async def test_sessions_are_read_while_the_shared_worker_threads_are_all_busy(
    home: Path, project: Path
) -> None:
    """With every token of anyio's shared thread limiter held by the program's blocking
    calls, the Runtime still resumes, lists, searches and reads its sessions: its reads of
    the session files run in threads of its own."""
    async with open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("hello")
    async with open_runtime(cwd=project) as rt:
        async with shared_worker_threads_all_busy():
            listed = [row.session_id for row in await rt.sessions()]
            found = [hit.session_id for hit in await rt.search("hello")]
            stored = [record.message()["content"] for record in await rt.transcript(session.id)]
            kinds = [event.event async for event in rt.events(session.id)]
            async with await rt.resume(session.id) as resumed:
                reply = await resumed.ask("again")
    assert listed == [session.id]
    assert set(found) == {session.id}
    assert stored == ["hello", "echo: hello"]
    assert "prompt:complete" in kinds
    assert reply.text == "echo: again"
    assert [m["content"] for m in transcript(home, session.id)][-2:] == ["again", "echo: again"]


async def test_a_change_being_stored_when_its_session_is_cancelled_is_told_it_ended(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Runtime cancelled while a session's change waits to be durable: the change's
    caller (outside the Runtime's tasks) is answered that the session ended."""
    storing = anyio.Event()
    hold = True
    sync = SessionWriter.sync

    async def held_sync(writer: SessionWriter) -> None:
        nonlocal hold
        if hold:
            hold = False
            storing.set()
            await anyio.sleep_forever()
        await sync(writer)

    monkeypatch.setattr(SessionWriter, "sync", held_sync)
    host_scope = anyio.CancelScope()
    results: dict[str, object] = {}
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            session = await tg.start(hosted_session, host_scope, project, FnHandler())
            change = partial(session.set_attributes, {"k": "v"})
            tg.start_soon(outcome, results, "change", change)
            await storing.wait()
            host_scope.cancel()
    assert len(results) == 1
    assert isinstance(results["change"], SessionClosed)
    assert metadata(home, session.id)["status"] == "cancelled"


async def hosted_session(
    scope: anyio.CancelScope,
    project: Path,
    handler: FnHandler,
    *,
    task_status: TaskStatus[Session] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """A Runtime with one open session, served until ``scope`` is cancelled; the session is
    handed to the caller, who asks it from outside the Runtime's tasks (as a server's
    request handlers would)."""
    with scope:
        async with open_runtime(cwd=project, handler=handler) as rt:
            task_status.started(await rt.open_session())
            await anyio.sleep_forever()


async def outcome(
    results: dict[str, object], key: str, call: Callable[[], Awaitable[object]]
) -> None:
    """What ``call`` returned, or the exception it raised, kept in ``results`` under ``key``."""
    try:
        results[key] = await call()
    except Exception as exc:
        results[key] = exc


async def test_resume_keeps_history_and_id(home: Path, project: Path) -> None:
    """A resumed session has its old messages and goes on under the same id."""
    seen: list[list[str]] = []

    async def remember(turn: Turn) -> str:
        seen.append([m["content"] for m in await turn.session.history()])
        return "ok"

    async with open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("first")
    handler = FnHandler(remember)
    async with open_runtime(cwd=project, handler=handler) as rt, rt.resume(session.id) as again:
        assert again.id == session.id
        reply = await again.ask("second")
    assert handler.resumed == [session.id]
    assert reply.turn == 2
    assert seen == [["first", "echo: first", "second"]]
    resumed = [e for e in events(home, session.id) if e["event"] == "session:resume"]
    assert resumed[0]["data"]["messages"] == 2
    assert resumed[0]["data"]["previous_status"] == "completed"


async def test_resume_accepts_a_unique_prefix(project: Path) -> None:
    """Typing the start of an id is enough when it is unambiguous."""
    async with open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("x")
        async with rt.resume(session.id[:20]) as again:
            assert again.id == session.id


async def test_resume_with_ambiguous_prefix_lists_the_matches(project: Path) -> None:
    """A prefix matching two sessions is refused with both ids named."""
    async with open_runtime(cwd=project) as rt:
        first = await rt.open_session()
        second = await rt.open_session()
        await first.close()
        await second.close()
        with pytest.raises(AmbiguousSessionId) as caught:
            await rt.resume("2")
    assert {first.id, second.id} <= set(caught.value.matches)


async def test_resume_of_unknown_or_malformed_id_fails_clearly(project: Path) -> None:
    """Unknown ids say 'not found' and point at --all; path tricks are refused outright."""
    async with open_runtime(cwd=project) as rt:
        with pytest.raises(SessionNotFound, match="session list --all"):
            await rt.resume("20990101T000000Z-0000000000000000")
        with pytest.raises(InvalidSessionId):
            await rt.resume("../../etc")


async def test_resume_finds_a_session_of_another_project(home: Path, tmp_path: Path) -> None:
    """A session started in one directory can be resumed from another; it stays in its project."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    async with open_runtime(cwd=first) as rt, rt.open_session() as session:
        await session.ask("in a")
    async with open_runtime(cwd=second) as rt, rt.resume(session.id) as again:
        await again.ask("from b")
        assert again.location.project == str(first).replace("/", "-")
    assert len(transcript(home, session.id)) == 4


async def test_same_session_cannot_be_open_twice(project: Path) -> None:
    """Opening a session another runtime holds fails and names the holder."""
    async with open_runtime(cwd=project) as rt:
        session = await rt.open_session()
        await rt.flush()
        async with open_runtime(cwd=project) as other:
            with pytest.raises(SessionLocked, match="in use by"):
                await other.resume(session.id)


async def test_new_session_reaches_other_runtimes_within_the_write_behind_delay(
    project: Path,
) -> None:
    """Another runtime (another process) sees a new session a moment later, with no flush."""
    async with open_runtime(cwd=project) as rt:
        session = await rt.open_session()
        async with open_runtime(cwd=project) as other:
            with anyio.fail_after(2):
                while True:
                    try:
                        await other.resume(session.id)
                    except SessionNotFound:
                        await anyio.sleep(0.01)
                    except SessionLocked:
                        break


async def test_closed_session_can_be_opened_elsewhere_at_once(project: Path) -> None:
    """Once ``close`` returns, another runtime may resume the session straight away."""
    async with open_runtime(cwd=project) as rt, open_runtime(cwd=project) as other:
        session = await rt.open_session()
        await session.ask("hello")
        await session.close()
        async with other.resume(session.id) as again:
            assert (await again.ask("there")).turn == 2


async def _closed_then_resumed_elsewhere(
    project: Path,
    waiting: threading.Event,
    gate: threading.Event,
    closed: Callable[[Any], Awaitable[None]],
) -> int:
    """Ask and close a session; once ``closed`` has looked at it, resume it in another
    runtime and let the handover finish (``gate``) only once that one waits (``waiting``)."""
    turns: list[int] = []
    async with open_runtime(cwd=project) as rt, open_runtime(cwd=project) as other:
        session = await rt.open_session()
        await session.ask("hello")
        await session.close()
        await closed(session)

        async def resume() -> None:
            async with other.resume(session.id) as again:
                turns.append((await again.ask("there")).turn)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(resume)
            await anyio.to_thread.run_sync(waiting.wait, 10)
            assert waiting.is_set()
            assert not turns  # waiting: neither refused nor answered
            gate.set()
    return turns[0]


async def test_close_answers_before_the_folder_is_built_and_a_resume_waits_for_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close returns once the records are durable; a runtime that resumes the session
    before its folder is built waits for it instead of being told it does not exist."""
    from amplifier.persistence import _actor, _ownership

    gate, waiting = threading.Event(), threading.Event()
    write_round, handed_over = _actor.PersistenceActor._write_round, _ownership.handed_over

    def held_back(self: Any, **options: Any) -> bool:
        gate.wait(10)
        return write_round(self, **options)

    def watched(home: Path, id_or_prefix: str) -> list[Any]:
        found = handed_over(home, id_or_prefix)
        if found and not found[0].directory.exists():
            waiting.set()
        return found

    async def not_built(session: Any) -> None:
        assert not session.location.directory.exists()

    monkeypatch.setattr(_actor.PersistenceActor, "_write_round", held_back)
    monkeypatch.setattr(_ownership, "handed_over", watched)
    assert await _closed_then_resumed_elsewhere(project, waiting, gate, not_built) == 2


async def test_close_answers_before_the_claim_is_released_and_a_resume_waits_for_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime that resumes a closed session whose files are still being synced waits
    for the release instead of being refused as if the session were in use."""
    from amplifier.persistence import _materialise, _ownership

    gate, built, waiting = threading.Event(), threading.Event(), threading.Event()
    sync, handing_over = _materialise.Materialiser.sync, _ownership.handing_over

    def held_back(self: Any) -> None:
        built.set()
        gate.wait(10)
        sync(self)

    def watched(home: Path, runtime: str, session_id: str) -> bool:
        listed = handing_over(home, runtime, session_id)
        if listed:
            waiting.set()
        return listed

    async def built_and_claimed(session: Any) -> None:
        await anyio.to_thread.run_sync(built.wait, 10)
        assert _ownership.read_claim(session.location) is not None

    monkeypatch.setattr(_materialise.Materialiser, "sync", held_back)
    monkeypatch.setattr(_ownership, "handing_over", watched)
    assert await _closed_then_resumed_elsewhere(project, waiting, gate, built_and_claimed) == 2


async def test_failed_turn_is_reported_and_the_session_goes_on(home: Path, project: Path) -> None:
    """An error inside a turn reaches the caller; the next prompt still works."""

    async def flaky(turn: Turn) -> str:
        if turn.prompt == "boom":
            raise RuntimeError("provider unavailable")
        return "fine"

    async with open_runtime(cwd=project, handler=FnHandler(flaky)) as rt, rt.open_session() as s:
        with pytest.raises(TurnFailed, match="provider unavailable"):
            await s.ask("boom")
        assert (await s.ask("again")).text == "fine"
    completed = [e["data"] for e in events(home, s.id) if e["event"] == "prompt:complete"]
    assert completed[0]["status"] == "failed"
    assert "RuntimeError: provider unavailable" in completed[0]["error"]
    assert completed[1]["status"] == "completed"
    assert metadata(home, s.id)["status"] == "completed"


async def _broken_handler(turn: Turn) -> str:
    return str(turn.session.no_such_attribute)  # type: ignore[attr-defined]


async def test_failed_turn_raises_from_the_handlers_exception(project: Path) -> None:
    """TurnFailed carries the handler's own exception as its cause, traceback and all."""
    async with (
        open_runtime(cwd=project, handler=FnHandler(_broken_handler)) as rt,
        rt.open_session() as s,
    ):
        with pytest.raises(TurnFailed) as caught:
            await s.ask("hi")
    cause = caught.value.__cause__
    assert isinstance(cause, AttributeError)
    assert cause.__traceback__ is not None
    assert "_broken_handler" in "".join(traceback.format_tb(cause.__traceback__))


async def test_failed_turn_records_its_traceback(home: Path, project: Path) -> None:
    """The prompt:complete of a failed turn holds the traceback: where the handler failed."""
    async with (
        open_runtime(cwd=project, handler=FnHandler(_broken_handler)) as rt,
        rt.open_session() as s,
    ):
        with pytest.raises(TurnFailed):
            await s.ask("hi")
    (completed,) = [e["data"] for e in events(home, s.id) if e["event"] == "prompt:complete"]
    assert completed["traceback"].startswith("Traceback (most recent call last):")
    assert "in _broken_handler" in completed["traceback"]
    assert "AttributeError" in completed["traceback"]


async def test_failed_turn_is_logged_with_its_traceback(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The `amplifier` logger gets an error record of the failed turn, with the exception."""
    async with (
        open_runtime(cwd=project, handler=FnHandler(_broken_handler)) as rt,
        rt.open_session() as s,
    ):
        with caplog.at_level(logging.ERROR, logger="amplifier"), pytest.raises(TurnFailed):
            await s.ask("hi")
    (record,) = [r for r in caplog.records if r.name == "amplifier"]
    assert s.id in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], AttributeError)


async def test_events_are_read_back_in_seq_order(project: Path) -> None:
    """Runtime.events yields what was persisted, in seq order."""
    async with open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            await session.ask("hi")
        read = [e async for e in rt.events(session.id)]
    assert next(e.event for e in read) == "session:start"
    assert [e.seq for e in read] == sorted(e.seq for e in read)
    assert read[-1].event == "session:end"


async def test_events_of_a_long_log_are_read_in_bounded_memory(home: Path, project: Path) -> None:
    """Reading a long event log through Runtime.events costs memory for a few events at a
    time, not for the whole log, and still yields every event in seq order."""
    async with open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            pass
    log = session_dirs(home)[session.id] / "events.jsonl"
    last = orjson.loads(log.read_bytes().splitlines()[-1])
    note = " ".join(["a note of some length"] * 45)  # about 1 KB a line
    with log.open("ab") as out:
        for n in range(1, 3001):
            line = {**last, "seq": last["seq"] + n, "event": "note", "data": {"text": note}}
            out.write(orjson.dumps(line) + b"\n")
    size = log.stat().st_size
    count, previous = 0, 0
    async with open_runtime(cwd=project, durability="none") as rt:
        tracemalloc.start()
        try:
            async for event in rt.events(session.id):
                assert event.seq is not None
                assert event.seq > previous
                count, previous = count + 1, event.seq
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == len(events(home, session.id))
    assert peak < size / 2, f"{peak} bytes at the peak, reading {size} bytes of log"


async def test_subscriber_sees_events_as_they_are_persisted(project: Path) -> None:
    """A subscription receives each event of the session once it is durable, in order."""
    got: list[str] = []
    async with open_runtime(cwd=project) as rt, rt.open_session() as session:
        async with session.subscribe() as stream:
            await session.ask("hi")
            with anyio.fail_after(5):
                async for event in stream:
                    got.append(event.event)
                    if event.event == "prompt:complete":
                        break
    # session:start may be committed before or after the subscription began.
    assert [e for e in got if e != "session:start"] == ["prompt:submit", "prompt:complete"]


async def test_subscriptions_end_with_their_runtime_or_their_session(project: Path) -> None:
    """A subscription to every session ends once its Runtime has closed, after the last
    event stored; one taken on a session that has ended, or on a closed Runtime, ends at
    once: none leaves its reader waiting for ever."""
    seen: list[str] = []

    async def read_all() -> None:
        async for event in everything:
            seen.append(event.event)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with open_runtime(cwd=project) as rt:
                everything = rt.subscribe()
                tg.start_soon(read_all)
                session = await rt.open_session()
                await session.ask("hi")
                await session.close()
                late = [event.event async for event in session.subscribe()]
            after = [event.event async for event in rt.subscribe()]
    assert seen[-1] == "session:end"
    assert "prompt:complete" in seen
    assert late == []
    assert after == []


async def test_a_subscriber_sees_each_event_as_its_line_in_the_file(project: Path) -> None:
    """Every field a subscriber receives is the stored line's: seq, ts and data as JSON
    holds them (a tuple the handler sent arrives as the list the file has)."""

    async def notes(turn: Turn) -> str:
        await turn.emit("note", {"pair": (1, "two"), "nested": {"n": [3]}})
        await turn.post("note", {"pair": (4, "five")})
        return "done"

    got: list[dict[str, Any]] = []
    async with open_runtime(cwd=project, handler=FnHandler(notes)) as rt:
        async with rt.open_session() as session:
            async with session.subscribe() as stream:
                await session.ask("go")
                with anyio.fail_after(5):
                    async for event in stream:
                        got.append(event.model_dump(mode="python"))
                        if event.event == "prompt:complete":
                            break
    stored = {e["seq"]: e for e in events(rt.home, session.id)}
    assert [e["event"] for e in got if e["event"] == "note"] == ["note", "note"]
    for event in got:
        line = stored[event["seq"]]
        assert (event["ts"], event["event"], event["data"]) == (
            datetime.fromisoformat(line["ts"]),
            line["event"],
            line["data"],
        )
    assert [e["data"]["pair"] for e in got if e["event"] == "note"] == [[1, "two"], [4, "five"]]


@pytest.mark.parametrize("durability", ["fsync", "flush", "none"])
async def test_an_event_posted_mid_turn_reaches_subscribers_while_the_turn_runs(
    project: Path, durability: str
) -> None:
    """What a turn sends without waiting (``post``) is committed within a few
    milliseconds, not held back until the turn answers: a subscriber sees it while
    the turn still runs, in every durability (the turn goes on only once it has)."""
    seen = anyio.Event()

    async def waits_for_its_audience(turn: Turn) -> str:
        await turn.post("progress", {"step": 1})
        with anyio.fail_after(5):
            await seen.wait()
        return "done"

    handler = FnHandler(waits_for_its_audience)
    async with open_runtime(cwd=project, handler=handler, durability=durability) as rt:
        async with rt.open_session() as session, session.subscribe() as stream:
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.ask, "go")
                with anyio.fail_after(5):
                    async for event in stream:
                        if event.event == "progress":
                            seen.set()
                            break
    assert [e["event"] for e in events(rt.home, session.id)][-2:] == [
        "prompt:complete",
        "session:end",
    ]


async def test_slow_subscriber_is_cut_off_not_waited_for(project: Path) -> None:
    """A subscriber that never reads does not hold sessions back; it learns it fell behind."""
    from amplifier import SubscriberTooSlow

    async def chatty(turn: Turn) -> str:
        for n in range(20):
            await turn.emit("note", {"n": n})
        return "done"

    async with open_runtime(cwd=project, handler=FnHandler(chatty)) as rt:
        async with rt.open_session() as session, session.subscribe(buffer=5) as stream:
            assert (await session.ask("go")).text == "done"
            with pytest.raises(SubscriberTooSlow):
                async for _ in stream:
                    pass


async def test_listing_shows_this_projects_sessions_newest_first(tmp_path: Path) -> None:
    """sessions() lists this project's sessions; all_projects adds the others."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    async with open_runtime(cwd=first) as rt:
        older = await rt.open_session()
        await older.close()
        newer = await rt.open_session()
        await newer.close()
    async with open_runtime(cwd=second) as rt:
        elsewhere = await rt.open_session()
        await elsewhere.close()
        here = [row.session_id for row in await rt.sessions()]
        everywhere = {row.session_id for row in await rt.sessions(all_projects=True)}
    async with open_runtime(cwd=first) as rt:
        mine = [row.session_id for row in await rt.sessions()]
    assert here == [elsewhere.id]
    assert everywhere == {older.id, newer.id, elsewhere.id}
    assert mine == [newer.id, older.id]


async def test_interrupted_session_lists_as_interrupted(home: Path, project: Path) -> None:
    """A session whose process died while it was active is shown as interrupted, not active."""
    async with open_runtime(cwd=project) as rt:
        session = await rt.open_session()
        listed = {row.session_id: row.status for row in await rt.sessions()}
        assert listed[session.id] == "active"
    path = next(home.glob(f"projects/*/sessions/{session.id}/metadata.json"))
    path.write_text(path.read_text().replace('"completed"', '"active"'))
    async with open_runtime(cwd=project) as rt:
        listed = {row.session_id: row.status for row in await rt.sessions()}
    assert listed[session.id] == "interrupted"


async def test_damaged_metadata_is_rebuilt_on_resume(home: Path, project: Path) -> None:
    """A session with unreadable metadata still resumes, and says it rebuilt it."""
    async with open_runtime(cwd=project) as rt, rt.open_session(agent="reviewer") as session:
        await session.ask("hi")
    path = next(home.glob(f"projects/*/sessions/{session.id}/metadata.json"))
    path.write_bytes(b"\x00\x01garbage")
    async with open_runtime(cwd=project) as rt, rt.resume(session.id) as again:
        assert again.metadata.agent == "reviewer"
        assert again.metadata.message_count == 2
    resumed = next(e for e in events(home, session.id) if e["event"] == "session:resume")
    assert resumed["data"]["metadata_rebuilt"] is True
    assert metadata(home, session.id)["agent"] == "reviewer"


async def test_subscription_ends_when_its_session_ends(project: Path) -> None:
    """Iterating a session's subscription stops after its session:end instead of hanging."""
    async with open_runtime(cwd=project) as rt:
        session = await rt.open_session()
        async with session.subscribe() as stream:
            await session.ask("hi")
            await session.close()
            with anyio.fail_after(5):
                got = [event.event async for event in stream]
    # session:start may be committed before or after the subscription began.
    assert [e for e in got if e != "session:start"] == [
        "prompt:submit",
        "prompt:complete",
        "session:end",
    ]


async def test_an_event_that_is_not_json_fails_only_that_call(project: Path) -> None:
    """A turn that emits a value JSON cannot hold gets an error; the runtime keeps running."""

    async def bad(turn: Turn) -> str:
        with pytest.raises(UsageError, match="JSON values only"):
            await turn.emit("note", {"when": object()})
        await turn.emit("note", {"fine": True})
        return "survived"

    async with open_runtime(cwd=project, handler=FnHandler(bad)) as rt, rt.open_session() as s:
        assert (await s.ask("go")).text == "survived"
        assert (await s.ask("again")).text == "survived"


async def test_resume_removes_temporary_files_a_dead_writer_left(home: Path, project: Path) -> None:
    """A process killed while replacing metadata.json leaves a temporary file; resume removes it."""
    async with open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask("hi")
    folder = next(home.glob(f"projects/*/sessions/{session.id}"))
    left = folder / ".metadata.json.4242.0badcafe.tmp"
    left.write_bytes(b'{"session_id": "half')
    async with open_runtime(cwd=project) as rt, rt.resume(session.id):
        pass
    assert not left.exists()
    assert metadata(home, session.id)["session_id"] == session.id


async def test_cleanup_keeps_a_damaged_child_of_a_session_in_use(home: Path, project: Path) -> None:
    """An old sub-session whose metadata is damaged still belongs to its parent's tree:
    while the parent is in use, cleanup leaves it alone."""
    old = datetime.now(UTC) - timedelta(days=40)

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            await turn.delegate("explorer", "look")
        return "done"

    handler = FnHandler(work)
    async with open_runtime(cwd=project, handler=handler, clock=lambda: old) as rt:
        async with rt.open_session() as root:
            await root.ask("delegate")
            await rt.flush()
            (child,) = metadata(home, root.id)["children"]
            folder = session_dirs(home)[child]
            (folder / "metadata.json").write_text("{not json")
            os.utime(folder, (old.timestamp(), old.timestamp()))
            async with open_runtime(cwd=project, durability="none") as other:
                report = await other.cleanup(days=7)
    assert child in session_dirs(home)
    assert [row.session_id for row in report.removed] == []
    assert {row.session_id for row in report.in_use} == {root.id}


@pytest.mark.parametrize("call", ["cleanup", "latest"])
async def test_dating_a_damaged_session_does_not_block_the_event_loop(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """A session whose metadata is damaged is dated by its files; cleanup and latest look
    at them in a worker thread, so a slow disk stalls no other session meanwhile."""
    async with open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            await session.ask("hi")
    (session_dirs(home)[session.id] / "metadata.json").write_text("{not json")
    loop_thread = threading.get_ident()
    on_the_loop: list[str] = []
    real_stat, real_lstat = os.stat, os.lstat

    def watched(real: Any) -> Any:
        def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == loop_thread and str(path).startswith(str(home)):
                on_the_loop.append(str(path))
            return real(path, *args, **kwargs)

        return stat

    async with open_runtime(cwd=project, durability="none") as rt:
        monkeypatch.setattr(os, "stat", watched(real_stat))
        monkeypatch.setattr(os, "lstat", watched(real_lstat))
        if call == "cleanup":
            plan = await rt.cleanup(days=0, dry_run=True)
            assert [row.session_id for tree in plan.trees for row in tree] == [session.id]
        else:
            found = await rt.latest()
            assert found is not None
            assert found.session_id == session.id
        monkeypatch.undo()
    assert on_the_loop == []


async def test_a_turn_its_asker_gave_up_on_is_recorded_as_the_asker_was_told(
    home: Path, project: Path
) -> None:
    """A turn that finishes anyway after its asker gave up (its last step could not be
    interrupted) is recorded cancelled, as the asker was told; one whose outcome was already
    being recorded when a deadline came is given to the asker. Either way the asker and the
    record agree."""
    started, release, gave_up = anyio.Event(), anyio.Event(), anyio.Event()

    async def stubborn(turn: Turn) -> str:
        if turn.prompt == "stubborn":
            started.set()
            with anyio.CancelScope(shield=True):
                await release.wait()
        return f"echo: {turn.prompt}"

    async with open_runtime(
        home=home, cwd=project, handler=FnHandler(stubborn), durability="fsync"
    ) as rt:
        async with rt.open_session() as session:
            asking = anyio.CancelScope()

            async def ask() -> None:
                with asking:
                    await session.ask("stubborn")
                gave_up.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                await started.wait()
                asking.cancel()
                await gave_up.wait()  # told at once, while the turn still runs
                release.set()
            assert asking.cancelled_caught
            told: dict[str, str] = {}
            for n in range(40):
                with anyio.move_on_after(n * 0.00005) as cut:
                    await session.ask(f"p{n}")
                told[f"p{n}"] = "cancelled" if cut.cancelled_caught else "completed"
    submitted = {
        e["seq"]: e["data"]["prompt"]
        for e in events(home, session.id)
        if e["event"] == "prompt:submit"
    }
    recorded = {}
    for e in events(home, session.id):
        if e["event"] == "prompt:complete":
            prompt = [p for seq, p in submitted.items() if seq < e["seq"]][-1]
            recorded[prompt] = e["data"]["status"]
    assert recorded.pop("stubborn") == "cancelled"
    assert all(told[prompt] == status for prompt, status in recorded.items())
    assert {p for p, was in told.items() if was == "completed"} <= set(recorded)
