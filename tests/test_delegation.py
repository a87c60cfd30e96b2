"""Delegation: child sessions run inside their parent, concurrently, in one causal order."""

from __future__ import annotations

import gc
import pickle
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from amplifier import (
    Delegation,
    DelegationResult,
    SessionState,
    Turn,
    TurnCancelled,
)
from amplifier.persistence import _store, open_store
from amplifier.runtime import Runtime
from amplifier.runtime.lowlevel import ChildOutcome, ChildRun, Launch, is_child_id, run_child
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import FnHandler, events, first, lines, metadata, session_dirs, transcript


def _all_records(home: Path, session_id: str) -> list[dict[str, object]]:
    folder = session_dirs(home)[session_id]
    return lines(folder / "events.jsonl") + lines(folder / "transcript.jsonl")


async def test_three_concurrent_children_share_one_causal_seq_order(
    home: Path, project: Path
) -> None:
    """Parent + 3 concurrent children: one strictly increasing seq; children end before results."""
    running = 0
    peak = 0
    all_started = anyio.Event()

    async def work(turn: Turn) -> str:
        nonlocal running, peak
        if turn.session.depth == 0:
            results = await turn.delegate_all(
                [Delegation(agent="explorer", instruction=f"part {n}") for n in range(3)]
            )
            for result in results:
                await turn.record({"role": "tool", "content": result.response})
            return " | ".join(r.response or "" for r in results)
        running += 1
        peak = max(peak, running)
        if running == 3:
            all_started.set()
        with anyio.fail_after(5):
            await all_started.wait()  # only returns if all three children run at once
        await turn.emit("note", {"child": turn.session.id})
        running -= 1
        return f"done {turn.prompt}"

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        reply = await s.ask("split the work")
    assert reply.text == "done part 0 | done part 1 | done part 2"
    assert peak == 3

    children = metadata(home, s.id)["children"]
    assert len(children) == 3
    seqs = [r["seq"] for sid in [s.id, *children] for r in _all_records(home, sid)]
    assert len(seqs) == len(set(seqs)), "seq values repeat across sessions"
    for sid in [s.id, *children]:
        for name in ("events.jsonl", "transcript.jsonl"):
            file_seqs = [r["seq"] for r in lines(session_dirs(home)[sid] / name)]
            assert file_seqs == sorted(file_seqs)

    parent_events = events(home, s.id)
    for child in children:
        child_events = events(home, child)
        started = first(parent_events, "delegate:start", child_id=child)["seq"]
        ended = first(parent_events, "delegate:end", child_id=child)["seq"]
        assert started < first(child_events, "session:start")["seq"]
        assert first(child_events, "session:end")["seq"] < ended
        tool_results = [m for m in transcript(home, s.id) if m["role"] == "tool"]
        assert all(ended < m["seq"] for m in tool_results)


async def test_children_started_together_are_listed_by_one_document_before_each_exists(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every child is listed by its parent before it exists, and children started together
    share the document that lists them: a parent delegating to 40 children at once used to
    send 40 documents of up to 40 entries (51 MB of JSON for a fan-out of 1,000)."""
    sent: list[tuple[str, str, list[str]]] = []
    post_metadata = _store.SessionWriter.post_metadata
    create = _store.Store.create

    async def listed(self: Any, meta: Any) -> Any:
        sent.append(("metadata", meta.session_id, list(meta.children)))
        return await post_metadata(self, meta)

    async def created(self: Any, location: Any, meta: Any, **options: Any) -> Any:
        sent.append(("create", location.session_id, []))
        return await create(self, location, meta, **options)

    monkeypatch.setattr(_store.SessionWriter, "post_metadata", listed)
    monkeypatch.setattr(_store.Store, "create", created)

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            many = [Delegation(agent="explorer", instruction=str(n)) for n in range(40)]
            results = await turn.delegate_all(many)
            return ",".join(r.status for r in results)
        return turn.prompt

    async with open_runtime(cwd=project, handler=FnHandler(work), max_children=40) as rt:
        async with rt.open_session() as s:
            assert (await s.ask("go")).text == ",".join(["completed"] * 40)
    children = metadata(home, s.id)["children"]
    assert len(children) == 40
    assert set(children) <= set(session_dirs(home))
    for child in children:
        created_at = sent.index(("create", child, []))
        assert any(
            kind == "metadata" and sid == s.id and child in listing
            for kind, sid, listing in sent[:created_at]
        ), f"{child} was created before its parent listed it"
    listings = [listing for kind, sid, listing in sent if kind == "metadata" and sid == s.id]
    assert sum(1 for listing in listings if listing) <= 3, [len(x) for x in listings]


async def test_child_metadata_names_its_parent_root_and_depth(home: Path, project: Path) -> None:
    """A sub-session has the documented id format and its lineage in metadata."""

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            return (await turn.delegate("Code Reviewer", "check")).session_id
        return "ok"

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        child_id = (await s.ask("go")).text
    assert is_child_id(child_id)
    assert child_id.startswith(s.id.split("-")[1] + "-")
    assert child_id.endswith("_code-reviewer")
    stored = metadata(home, child_id)
    assert (stored["parent_id"], stored["root_id"], stored["depth"]) == (s.id, s.id, 1)
    assert stored["agent"] == "Code Reviewer"
    assert stored["status"] == "completed"
    assert metadata(home, s.id)["children"] == [child_id]


async def test_child_metadata_counts_its_answered_turn(home: Path, project: Path) -> None:
    """A finished sub-session lists its turn, both messages and its prompt, as a root does."""

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            return (await turn.delegate("explorer", "look around")).session_id
        await turn.record({"role": "assistant", "content": "looked"})
        return "looked"

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        child_id = (await s.ask("go")).text
    stored = metadata(home, child_id)
    spoken = [m for m in transcript(home, child_id) if m["role"] in ("user", "assistant")]
    counts = (stored["turns"], stored["message_count"], stored["last_prompt"], stored["status"])
    assert counts == (1, len(spoken), "look around", "completed")
    assert stored["updated"] > stored["created"]


async def test_finished_sessions_are_freed_without_the_cycle_collector(project: Path) -> None:
    """A closed session and its sub-session free their memory at once, not at a later GC."""

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            return (await turn.delegate("explorer", "look around")).status
        return "looked"

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with open_runtime(cwd=project, handler=FnHandler(work)) as rt:
            for _ in range(2):
                async with rt.open_session() as s:
                    assert (await s.ask("go")).text == "completed"
            del s
            gc.collect()
        left = [type(o).__name__ for o in gc.garbage if type(o).__name__ == "SessionActor"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


async def test_failing_child_returns_a_failed_result_and_the_parent_goes_on(
    home: Path, project: Path
) -> None:
    """A child that raises gives the parent a failed result carrying the child's id."""
    results: list[DelegationResult] = []

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            results.append(await turn.delegate("explorer", "crash please"))
            results.append(await turn.delegate("explorer", "fine"))
            return "parent finished"
        if turn.prompt == "crash please":
            raise ValueError("cannot read the file")
        return "child ok"

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        assert (await s.ask("go")).text == "parent finished"
    failed, fine = results
    assert failed.status == "failed"
    assert "ValueError: cannot read the file" in (failed.error or "")
    assert failed.exception is not None
    assert failed.exception.session_id == failed.session_id
    assert fine.ok
    assert fine.response == "child ok"
    assert metadata(home, failed.session_id)["status"] == "failed"
    assert (
        first(events(home, s.id), "delegate:end", child_id=failed.session_id)["data"]["status"]
        == "failed"
    )


async def test_failing_child_keeps_its_cause_in_delegate_end_and_the_result(
    home: Path, project: Path
) -> None:
    """A child's failure reaches its parent with its traceback: in delegate:end and the result."""
    results: list[DelegationResult] = []

    def read_the_file() -> None:
        raise ValueError("cannot read the file")

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            results.append(await turn.delegate("explorer", "crash please"))
            return "parent finished"
        read_the_file()
        return "unreachable"

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        await s.ask("go")
    (failed,) = results
    trace = first(events(home, s.id), "delegate:end")["data"]["traceback"]
    assert "in read_the_file" in trace
    assert trace.rstrip().endswith("ValueError: cannot read the file")
    assert failed.traceback == trace
    assert failed.exception is not None
    cause = failed.exception.__cause__
    assert isinstance(cause, ValueError)
    assert traceback.extract_tb(cause.__traceback__)[-1].name == "read_the_file"


@pytest.mark.virtual_time
async def test_child_exceeding_its_timeout_is_cancelled_and_reported(
    home: Path, project: Path
) -> None:
    """A child that takes too long is cancelled at its timeout; the parent gets 'timed_out'."""
    results: list[DelegationResult] = []
    waited: list[float] = []

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            started = anyio.current_time()
            results.append(await turn.delegate("explorer", "hang", timeout=30))
            waited.append(anyio.current_time() - started)
            return "parent finished"
        await turn.emit("note", {"started": True})
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with open_runtime(cwd=project, handler=FnHandler(work), durability="none") as rt:
        async with rt.open_session() as s:
            assert (await s.ask("go")).text == "parent finished"
    (result,) = results
    assert result.status == "timed_out"
    assert waited == [pytest.approx(30)]
    child = events(home, result.session_id)
    assert first(child, "prompt:complete")["data"]["status"] == "cancelled"
    assert child[-1]["event"] == "session:end"
    assert child[-1]["data"]["status"] == "cancelled"


@pytest.mark.virtual_time
async def test_timed_out_child_metadata_still_counts_its_turn(home: Path, project: Path) -> None:
    """A sub-session cut off at its timeout lists its turn and prompt, ended as cancelled."""
    children: list[str] = []

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            children.append((await turn.delegate("explorer", "hang", timeout=30)).session_id)
            return "parent finished"
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with open_runtime(cwd=project, handler=FnHandler(work), durability="none") as rt:
        async with rt.open_session() as s:
            await s.ask("go")
    stored = metadata(home, children[0])
    assert (stored["turns"], stored["last_prompt"], stored["status"]) == (1, "hang", "cancelled")


@pytest.mark.virtual_time
async def test_children_beyond_the_limit_wait_their_turn(project: Path) -> None:
    """max_children bounds how many children of one session run at once: six children of a
    minute each, two at a time, take three minutes."""
    running = 0
    peak = 0
    took: list[float] = []

    async def work(turn: Turn) -> str:
        nonlocal running, peak
        if turn.session.depth == 0:
            started = anyio.current_time()
            results = await turn.delegate_all(
                [Delegation(agent="explorer", instruction=str(n)) for n in range(6)]
            )
            took.append(anyio.current_time() - started)
            return ",".join(r.response or "?" for r in results)
        running += 1
        peak = max(peak, running)
        await anyio.sleep(60)
        running -= 1
        return turn.prompt

    async with open_runtime(
        cwd=project, handler=FnHandler(work), durability="none", max_children=2
    ) as rt:
        async with rt.open_session() as s:
            assert (await s.ask("go")).text == "0,1,2,3,4,5"
    assert peak == 2
    assert took == [pytest.approx(180)]


async def test_nested_delegation_and_the_depth_limit(home: Path, project: Path) -> None:
    """Children may delegate again, down to max_depth; deeper requests are refused with a reason."""
    seen: dict[int, DelegationResult] = {}

    async def work(turn: Turn) -> str:
        depth = turn.session.depth
        result = await turn.delegate("worker", f"level {depth + 1}")
        seen[depth] = result
        return f"{depth}<{result.status}>"

    async with open_runtime(cwd=project, handler=FnHandler(work), max_depth=2) as rt:
        async with rt.open_session() as s:
            assert (await s.ask("go")).text == "0<completed>"
    assert seen[1].ok
    assert seen[2].status == "failed"
    assert "depth limit (2)" in (seen[2].error or "")
    grandchild = metadata(home, seen[1].session_id)
    assert (grandchild["depth"], grandchild["root_id"]) == (2, s.id)


async def test_cancelling_the_parent_turn_cancels_children_first(home: Path, project: Path) -> None:
    """Cancelling a turn with children running ends the children, then the parent records it."""
    children_running = anyio.Event()
    count = 0

    async def work(turn: Turn) -> str:
        nonlocal count
        if turn.session.depth == 0:
            await turn.delegate_all([Delegation(agent="explorer", instruction="wait")] * 2)
            return "unreachable"
        count += 1
        if count == 2:
            children_running.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        async with anyio.create_task_group() as tg:

            async def cancel_when_ready() -> None:
                await children_running.wait()
                s.cancel()

            tg.start_soon(cancel_when_ready)
            with pytest.raises(TurnCancelled):
                await s.ask("go")
        assert s.state is SessionState.IDLE  # the session goes on after the cancelled turn
    parent = events(home, s.id)
    for child in metadata(home, s.id)["children"]:
        child_end = events(home, child)[-1]
        assert child_end["event"] == "session:end"
        assert child_end["data"]["status"] == "cancelled"
        parent_end = first(parent, "delegate:end", child_id=child)
        assert parent_end["data"]["status"] == "cancelled"
        assert child_end["seq"] < parent_end["seq"]
    assert first(parent, "prompt:complete")["data"]["status"] == "cancelled"


async def test_a_child_can_be_continued_later(home: Path, project: Path) -> None:
    """delegate(..., session_id=) continues an earlier child with its history."""
    results: list[DelegationResult] = []

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            if not results:
                results.append(await turn.delegate("explorer", "remember 42"))
            else:
                results.append(
                    await turn.delegate(
                        "explorer", "what was it?", session_id=results[0].session_id
                    )
                )
            return "ok"
        history = await turn.session.history()
        return " / ".join(m["content"] for m in history if m["role"] == "user")

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        await s.ask("first")
        await s.ask("second")
    assert results[1].session_id == results[0].session_id
    assert results[1].response == "remember 42 / what was it?"
    assert metadata(home, s.id)["children"] == [results[0].session_id]


async def test_only_own_children_can_be_continued(project: Path) -> None:
    """A session cannot take over another session's child (or any other session) by id."""
    results: list[DelegationResult] = []

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            target = turn.prompt.removeprefix("steal ")
            if target != turn.prompt:
                results.append(await turn.delegate("explorer", "hi", session_id=target))
            else:
                results.append(await turn.delegate("explorer", "hi"))
        return "ok"

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt:
        async with rt.open_session() as owner:
            await owner.ask("make a child")
        async with rt.open_session() as thief:
            await thief.ask(f"steal {results[0].session_id}")
            await thief.ask("steal ../../x")
    assert results[1].status == "failed"
    assert "is not a sub-session of" in (results[1].error or "")
    assert results[2].status == "failed"
    assert "invalid session id" in (results[2].error or "")


async def _parent_with_two_children(project: Path) -> tuple[str, list[str]]:
    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            results = await turn.delegate_all(
                [Delegation(agent="explorer", instruction=f"part {n}") for n in range(2)]
            )
            return " ".join(r.session_id for r in results)
        return "done"

    async with open_runtime(cwd=project, handler=FnHandler(work)) as rt, rt.open_session() as s:
        reply = await s.ask("split")
    return s.id, reply.text.split()


async def test_events_of_a_tree_come_in_one_seq_order(home: Path, project: Path) -> None:
    """Runtime.events(tree=True) gives every event of a parent and its children, merged
    into the one seq order they were committed in."""
    parent, children = await _parent_with_two_children(project)
    async with open_runtime(cwd=project) as rt:
        read = [(e.session_id, e.seq) async for e in rt.events(parent, tree=True)]
    stored = sorted(
        (record["seq"], record["session_id"])
        for session_id in [parent, *children]
        for record in events(home, session_id)
    )
    assert [(session_id, seq) for seq, session_id in stored] == read


async def test_a_listed_child_without_a_folder_is_left_out_and_dropped_on_resume(
    home: Path, project: Path
) -> None:
    """A parent lists a child before creating it: a crash between leaves an id with no folder.

    The tree shows only the children that exist, and resuming the parent drops the
    others from its metadata, saying so in its session:resume event.
    """
    parent, (kept, gone) = await _parent_with_two_children(project)
    session_dirs(home)[gone].rename(home / "elsewhere")  # as if it had never been created
    async with open_runtime(cwd=project) as rt:
        assert [row.session_id for row in await rt.tree(parent)] == [parent, kept]
        async with rt.resume(parent):
            pass
    assert metadata(home, parent)["children"] == [kept]
    assert first(events(home, parent), "session:resume")["data"]["children_dropped"] == [gone]


async def test_metadata_rebuilt_from_the_log_keeps_the_children(home: Path, project: Path) -> None:
    """Damaged parent metadata is rebuilt with its children, read from its delegate:start events."""
    parent, children = await _parent_with_two_children(project)
    (session_dirs(home)[parent] / "metadata.json").write_bytes(b'{"session_id": "tru')
    async with open_runtime(cwd=project) as rt:
        async with rt.resume(parent):
            pass
        tree = [row.session_id for row in await rt.tree(parent)]
    assert tree[0] == parent
    assert sorted(tree[1:]) == sorted(children)
    assert sorted(metadata(home, parent)["children"]) == sorted(children)


class _Elsewhere:
    """A child launcher that runs every child through ``run_child``, as another host would,
    noting which events were committed when the child was launched."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.committed: list[str] = []
        self.committed_at_launch: list[str] = []

    def listen(self, records: Sequence[dict[str, Any]]) -> None:
        self.committed.extend(record["event"] for record in records)

    def place(self, run: ChildRun) -> Launch:
        async def launch() -> ChildOutcome:
            assert self.runtime is not None
            self.committed_at_launch = list(self.committed)
            return await run_child(self.runtime, run, scope=anyio.CancelScope())

        return launch


async def test_child_placed_elsewhere_starts_after_its_delegation_is_durable(
    home: Path, project: Path
) -> None:
    """A child run by a launcher starts only once its parent's delegate:start is committed."""
    launcher = _Elsewhere()

    async def work(turn: Turn) -> str:
        if turn.session.depth == 0:
            result = await turn.delegate("explorer", "look")
            return f"{result.status}: {result.response}"
        return f"seen {turn.prompt}"

    async with open_store(home) as store:
        store.add_listener(launcher.listen)
        async with open_runtime(
            cwd=project, handler=FnHandler(work), store=store, children=launcher
        ) as rt:
            launcher.runtime = rt
            async with rt.open_session() as s:
                assert (await s.ask("go")).text == "completed: seen look"
    assert launcher.committed_at_launch[-1] == "delegate:start"
    (child_id,) = metadata(home, s.id)["children"]
    parent, child = events(home, s.id), events(home, child_id)
    assert first(parent, "delegate:start")["seq"] < child[0]["seq"]
    assert child[-1]["event"] == "session:end"
    assert child[-1]["seq"] < first(parent, "delegate:end")["seq"]


class _Unpicklable(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


def test_child_outcome_travels_to_another_process_with_its_traceback() -> None:
    """A child failed by an exception that cannot be pickled still reports to a parent on
    another host, with its traceback (the exception itself stays where it was raised)."""
    outcome = ChildOutcome(
        "failed", error="x: gone", trace="Traceback ...", cause=_Unpicklable("x", "gone")
    )
    arrived = pickle.loads(pickle.dumps(outcome))
    assert (arrived.status, arrived.error, arrived.trace) == ("failed", "x: gone", "Traceback ...")
    assert arrived.cause is None
