"""The session store: records, seq, files on disk, torn lines, the journal, locks, full disks."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import amplifier.persistence._actor as actor_module
import amplifier.persistence._journal as journal_module
import amplifier.persistence._materialise as materialise_module
import amplifier.persistence._paths as paths_module
from amplifier import RecoveryWarning, SessionLocked, StoreWarning, UsageError, WriteFailed
from amplifier.persistence import (
    SessionLocation,
    SessionMetadata,
    SessionWriter,
    iter_events,
    list_sessions,
    load_transcript,
    open_store,
    project_slug,
    read_metadata,
)
from amplifier.persistence._journal import (
    FIRST_CHUNK,
    FrameKind,
    Journal,
    decode_frames,
    encode_batch,
    encode_entry,
    header,
)
from amplifier.persistence.lowlevel import encode_data

from .helpers import lines, session_dirs, until

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


def _meta(session_id: str, **extra: object) -> SessionMetadata:
    return SessionMetadata(
        session_id=session_id,
        created=NOW,
        updated=NOW,
        cwd="/p",
        project="-p",
        agent="default",
        root_id=session_id,
        **extra,  # type: ignore[arg-type]
    )


def _where(home: Path, session_id: str) -> SessionLocation:
    return SessionLocation(home, "-p", session_id)


async def test_records_nobody_waits_for_share_the_journal_sync_of_the_next_wait(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posted records ride with the next answer: one fdatasync for the lot, not one each."""
    syncs: list[int] = []
    append = journal_module.Journal.append

    def counted(self: journal_module.Journal, batch: bytes, last_seq: int) -> None:
        syncs.append(last_seq)
        append(self, batch, last_seq)

    monkeypatch.setattr(journal_module.Journal, "append", counted)
    async with open_store(home) as store:
        writer = await store.create(_where(home, "s1"), _meta("s1"), wait=False)
        for n in range(5):
            await writer.post_event("note", {"n": n}, parent_id=None)
            await anyio.lowlevel.checkpoint()  # the actor picks each one up as it comes
        stamp = await writer.append_event("answer", {}, parent_id=None)
        assert syncs == [stamp.seq]  # the create, five notes and the answer: one group
        await writer.close()


async def test_records_nobody_waits_for_are_still_committed_promptly(home: Path) -> None:
    """Without any waiter, posted records are committed (and seen by listeners) on their own."""
    committed = anyio.Event()
    seen: list[str] = []

    def listener(records: Sequence[dict[str, object]]) -> None:
        seen.extend(str(r["event"]) for r in records)
        if "note" in seen:
            committed.set()

    async with open_store(home) as store:
        store.add_listener(listener)
        writer = await store.create(_where(home, "s1"), _meta("s1"), wait=False)
        await writer.post_event("note", {}, parent_id=None)
        with anyio.fail_after(5):
            await committed.wait()
        await writer.close()
    assert seen == ["note"]


async def test_seq_is_strictly_increasing_across_sessions(home: Path) -> None:
    """Records of different sessions, written concurrently, form one total order."""
    async with open_store(home) as store:
        writers = [await store.create(_where(home, f"s{i}"), _meta(f"s{i}")) for i in range(5)]
        seqs: list[int] = []

        async def write(index: int) -> None:
            for n in range(20):
                stamp = await writers[index].append_event("note", {"n": n}, parent_id=None)
                seqs.append(stamp.seq)

        async with anyio.create_task_group() as tg:
            for index in range(5):
                tg.start_soon(write, index)
        for writer in writers:
            await writer.close()
    assert len(set(seqs)) == len(seqs) == 100
    for i in range(5):
        written = [r["seq"] for r in lines(_where(home, f"s{i}").events)]
        assert written == sorted(written)
        assert len(written) == 20


async def test_metadata_exists_before_any_record(home: Path) -> None:
    """Creating a session writes metadata.json first, marked active."""
    async with open_store(home) as store:
        writer = await store.create(_where(home, "s1"), _meta("s1"))
        await store.flush()
        metadata = read_metadata(_where(home, "s1"))
        assert metadata.status == "active"
        assert metadata.session_id == "s1"
        assert not _where(home, "s1").events.exists()
        await writer.close()


async def test_session_files_are_owner_only(home: Path) -> None:
    """Transcripts may hold secrets: files are 0600 and folders 0700."""
    async with open_store(home) as store:
        writer = await store.create(_where(home, "s1"), _meta("s1"))
        await writer.append_event("note", {}, parent_id=None)
        await writer.append_message({"role": "user", "content": "secret"})
        await writer.close()
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {oct(mode)}"


async def test_creating_an_existing_session_fails_and_keeps_it(home: Path) -> None:
    """A second create with the same id is refused; the first session's files are untouched."""
    async with open_store(home) as store:
        writer = await store.create(_where(home, "s1"), _meta("s1", last_prompt="first"))
        await writer.close()
        with pytest.raises(FileExistsError):
            await store.create(_where(home, "s1"), _meta("s1", last_prompt="second"))
    assert read_metadata(_where(home, "s1")).last_prompt == "first"


async def test_a_folder_made_before_its_session_is_built_is_not_replaced(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process makes a session's folder after the create was admitted and before the
    write-behind builds it: that folder stays (the build's rename fails and is taken as done),
    the session's records still reach it, and nothing is left in ``.staging``."""
    monkeypatch.setattr(actor_module, "WRITE_BEHIND_DELAY", 0.5)
    where = _where(home, "s1")
    async with open_store(home) as store:
        writer = await store.create(where, _meta("s1"))
        where.directory.mkdir(mode=0o700, parents=True)
        (where.directory / "theirs.txt").write_text("made by another process")
        await writer.append_message({"role": "user", "content": "ours"})
        await writer.close()
    assert (where.directory / "theirs.txt").read_text() == "made by another process"
    assert [m["content"] for m in lines(where.transcript)] == ["ours"]
    assert list((home / "projects" / "-p" / ".staging").iterdir()) == []


async def test_metadata_is_replaced_whole(home: Path) -> None:
    """Each metadata write replaces the file atomically; no temporary files are left."""
    async with open_store(home) as store:
        writer = await store.create(_where(home, "s1"), _meta("s1"))
        for n in range(10):
            await writer.write_metadata(_meta("s1", message_count=n))
        await writer.close()
    assert read_metadata(_where(home, "s1")).message_count == 9
    assert sorted(p.name for p in _where(home, "s1").directory.iterdir()) == [
        ".lock",
        "metadata.json",
    ]


async def test_reader_skips_torn_last_line_without_touching_it(home: Path) -> None:
    """A reader ignores a half-written last line and leaves the file as it is."""
    location = await _session_with_events(home, 3)
    with location.events.open("ab") as f:
        f.write(b'{"version":1,"seq":99,"ts":"2026')
    before = location.events.read_bytes()
    assert [e.data["n"] for e in iter_events(location)] == [0, 1, 2]
    assert location.events.read_bytes() == before


async def test_open_sets_torn_last_line_aside_with_warning(home: Path) -> None:
    """Opening a session for writing moves a torn fragment to a side file and says so."""
    location = await _session_with_events(home, 3)
    fragment = b'{"version":1,"seq":99,"ts":"2026'
    with location.events.open("ab") as f:
        f.write(fragment)
    async with open_store(home) as store:
        with pytest.warns(RecoveryWarning, match="moved to events.jsonl.torn-"):
            writer, opened = await store.open(location)
        await writer.append_event("after", {}, parent_id=None)
        await writer.close()
    assert [side.read_bytes() for side in opened.torn] == [fragment]
    assert [r["event"] for r in lines(location.events)] == ["note"] * 3 + ["after"]


async def test_damaged_middle_line_is_skipped_with_warning(home: Path) -> None:
    """A corrupt line (a bit flip) costs that record only, and the reader says which line."""
    location = await _session_with_events(home, 3)
    data = location.events.read_bytes().split(b"\n")
    data[1] = b"{garbage"
    location.events.write_bytes(b"\n".join(data))
    with pytest.warns(RecoveryWarning, match=r"skipped 1 damaged line\(s\) \(2\)"):
        kept = [e.data["n"] for e in iter_events(location)]
    assert kept == [0, 2]


async def test_reopened_session_continues_above_its_last_seq(home: Path) -> None:
    """A later runtime's records sort after the earlier ones within the session's files."""
    location = await _session_with_events(home, 5)
    last = lines(location.events)[-1]["seq"]
    async with open_store(home) as store:
        writer, opened = await store.open(location)
        stamp = await writer.append_event("later", {}, parent_id=None)
        await writer.close()
    assert opened.last_seq >= last
    assert stamp.seq > opened.last_seq


async def test_two_runtimes_cannot_write_one_session(home: Path) -> None:
    """A second opener gets an error naming who holds the session."""
    location = await _session_with_events(home, 1)
    async with open_store(home) as first, open_store(home) as second:
        writer, _ = await first.open(location)
        with pytest.raises(SessionLocked, match="in use by another runtime in this process"):
            await second.open(location)
        await writer.close()
        writer, _ = await second.open(location)
        await writer.close()


async def test_journal_of_dead_runtime_is_replayed(home: Path) -> None:
    """Records that reached the journal but not the session files are restored on start-up."""
    location = await _session_with_events(home, 2)
    have = lines(location.events)
    last = have[-1]["seq"]
    folder = location.relative.encode()

    def event(seq: int, n: int) -> bytes:
        return orjson.dumps({**have[-1], "seq": seq, "data": {"n": n}}) + b"\n"

    message = {"version": 1, "seq": last + 3, "ts": have[-1]["ts"], "role": "user", "content": "hi"}
    already = encode_entry(have[0]["seq"], FrameKind.EVENT, folder, orjson.dumps(have[0]) + b"\n")
    missing = [
        encode_entry(last + 1, FrameKind.EVENT, folder, event(last + 1, 101)),
        encode_entry(last + 2, FrameKind.EVENT, folder, event(last + 2, 102)),
        encode_entry(last + 3, FrameKind.MESSAGE, folder, orjson.dumps(message) + b"\n"),
    ]
    stale = encode_batch(1, encode_entry(1, FrameKind.EVENT, folder, event(1, 666)))
    torn = encode_batch(last + 9, encode_entry(last + 9, FrameKind.EVENT, folder, event(1, 777)))
    journal = home / "journal" / "20261124T000000Z-1-dead.journal"
    journal.parent.mkdir(mode=0o700, exist_ok=True)
    journal.write_bytes(
        header()
        + encode_batch(have[0]["seq"], already)
        + encode_batch(last + 1, b"".join(missing))
        + stale  # left beyond the end by a reset: its seq is not above the last one
        + torn[:-5]
    )
    with pytest.warns(RecoveryWarning, match="restored 3 record"):
        async with open_store(home) as store:
            assert store.recovered.records == 3
    assert [e.data["n"] for e in iter_events(location)] == [0, 1, 101, 102]
    assert [m.message()["content"] for m in load_transcript(location)] == ["hi"]
    assert not journal.exists()


async def test_handover_list_left_without_its_journal_is_removed_at_start_up(home: Path) -> None:
    """A crash between removing a journal and its handover list leaves no file for good."""
    location = await _session_with_events(home, 1)
    left = home / "journal" / "20261124T000000Z-1-dead.handover"
    left.write_bytes(f"{location.relative}\n".encode())
    async with open_store(home):
        pass
    assert not left.exists()
    assert not list((home / "journal").glob("*.handover"))


@pytest.mark.parametrize("ahead", [False, True], ids=["by-batches", "made-room-ahead"])
def test_journal_grown_past_its_first_chunk_keeps_every_batch(home: Path, ahead: bool) -> None:
    """A runtime that writes far more than its journal first held loses no record in a crash,
    whether the batches grew the file or room was made ahead of them."""
    journal = Journal.create(home)
    payload = b"x" * 10_000
    for seq in range(1, 41):  # 400 KB: the zeroed chunks double several times
        journal.append(encode_batch(seq, encode_entry(seq, FrameKind.EVENT, b"p/s", payload)), seq)
        if ahead and journal.short_of_room():
            journal.make_room()
    journal.abandon()  # the process died: the file is what a replay reads
    data = journal.path.read_bytes()
    assert [frame.seq for frame in decode_frames(data)] == list(range(1, 41))
    assert len(data) > 6 * FIRST_CHUNK


async def test_acknowledgements_never_wait_for_the_journal_to_grow(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Growing the journal syncs a change of its size (an ext4 journal commit: 0.3 to 5 ms
    here); the actor makes room after answering a batch, so no batch that fits pays it."""
    grown_by_a_batch: list[int] = []
    append = Journal.append

    def watched(self: Journal, batch: bytes, last_seq: int) -> None:
        if self.size + len(batch) > self._allocated:
            grown_by_a_batch.append(last_seq)
        append(self, batch, last_seq)

    monkeypatch.setattr(Journal, "append", watched)
    text = "x" * 1000
    async with open_store(home) as store:
        writer = await store.create(_where(home, "s1"), _meta("s1"))
        for n in range(400):  # about 450 KB: the first chunk of 64 KiB, doubled three times
            await writer.append_event("note", {"n": n, "text": text}, parent_id=None)
        (journal,) = (home / "journal").glob("*.journal")
        grown_to = journal.stat().st_size
        await writer.close()
    assert grown_to > 6 * FIRST_CHUNK
    assert grown_by_a_batch == []
    assert [r["data"]["n"] for r in lines(_where(home, "s1").events)] == list(range(400))


async def test_journal_of_live_runtime_is_left_alone(home: Path) -> None:
    """Starting a second runtime on the same home never replays the first one's journal."""
    async with open_store(home) as first:
        writer = await first.create(_where(home, "s1"), _meta("s1"))
        await writer.append_event("note", {}, parent_id=None)
        journals = sorted((home / "journal").glob("*.journal"))
        async with open_store(home) as second:
            assert second.recovered.records == 0
            assert set(journals) <= set((home / "journal").glob("*.journal"))
        await writer.close()
    assert not list((home / "journal").glob("*.journal"))


@pytest.mark.parametrize("durability", ["fsync", "flush", "none"])
async def test_every_durability_mode_writes_the_same_files(home: Path, durability: str) -> None:
    """The durability mode changes when data is safe, never what ends up on disk."""
    async with open_store(home, durability=durability) as store:  # type: ignore[arg-type]
        writer = await store.create(_where(home, "s1"), _meta("s1"))
        for n in range(50):
            await writer.append_event("note", {"n": n}, parent_id=None)
        await store.flush()
        assert len(lines(_where(home, "s1").events)) == 50
        await writer.close()
    assert [r["data"]["n"] for r in lines(_where(home, "s1").events)] == list(range(50))
    assert not list((home / "journal").glob("*"))


def _half_then_full(fd: int, data: bytes) -> None:
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_full_disk_fails_a_flushed_batch_and_keeps_stored_records(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durability flush, ENOSPC mid-write: a clear error, no partial line, and it works again."""
    location = await _session_with_events(home, 2)
    before = location.events.read_bytes()
    async with open_store(home, durability="flush") as store:
        writer, _ = await store.open(location)
        monkeypatch.setattr(materialise_module, "write_all", _half_then_full)
        with pytest.raises(WriteFailed, match="the disk is full"):
            await writer.append_event("lost", {}, parent_id=None)
        assert location.events.read_bytes() == before
        monkeypatch.undo()
        await writer.append_event("kept", {}, parent_id=None)
        await writer.close()
    assert [r["event"] for r in lines(location.events)] == ["note", "note", "kept"]


async def test_full_disk_refuses_records_the_journal_cannot_take(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durability fsync, the journal write fails: nothing is acknowledged, nothing is stored."""
    location = await _session_with_events(home, 2)

    def full(self: object, batch: bytes, last_seq: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async with open_store(home) as store:
        writer, _ = await store.open(location)
        monkeypatch.setattr(journal_module.Journal, "append", full)
        with pytest.raises(WriteFailed, match="the disk is full"):
            await writer.append_event("lost", {}, parent_id=None)
        monkeypatch.undo()
        await writer.append_event("kept", {}, parent_id=None)
        await writer.close()
    assert [r["event"] for r in lines(location.events)] == ["note", "note", "kept"]


async def test_failed_batch_gives_each_waiter_its_own_error_from_the_one_cause(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions refused by one failed batch each get a traceback of their own frames only
    (not one that grows with every other waiter's), caused by the batch's failure."""

    def full(self: object, batch: bytes, last_seq: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    caught: list[WriteFailed] = []

    async def append(writer: SessionWriter) -> None:
        try:
            await writer.append_event("lost", {}, parent_id=None)
        except WriteFailed as exc:
            caught.append(exc)

    async with open_store(home) as store:
        writers = [await store.create(_where(home, f"s{i}"), _meta(f"s{i}")) for i in range(4)]
        monkeypatch.setattr(journal_module.Journal, "append", full)
        async with anyio.create_task_group() as tg:
            for writer in writers:
                tg.start_soon(append, writer)
        monkeypatch.undo()
        for writer in writers:
            await writer.close()
    assert len(caught) == 4
    assert len({id(exc) for exc in caught}) == 4
    assert {id(exc.__cause__) for exc in caught} == {id(caught[0].__cause__)}
    assert all(str(exc) == str(caught[0]) for exc in caught)
    frames = {len(traceback.extract_tb(exc.__traceback__)) for exc in caught}
    assert len(frames) == 1, frames


async def test_full_disk_behind_the_journal_loses_nothing_acknowledged(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durability fsync, the session file write fails: the record is safe, flush says why, and
    it lands exactly once when space returns."""
    location = await _session_with_events(home, 2)
    before = location.events.read_bytes()
    async with open_store(home) as store:
        writer, _ = await store.open(location)
        monkeypatch.setattr(materialise_module, "write_all", _half_then_full)
        stamp = await writer.append_event("safe", {}, parent_id=None)
        with (
            pytest.warns(StoreWarning, match="safe in the journal"),
            pytest.raises(WriteFailed, match="the disk is full"),
        ):
            await store.flush()
        assert location.events.read_bytes() == before
        monkeypatch.undo()
        await store.flush()
        await writer.close()
    written = lines(location.events)
    assert [(r["event"], r["seq"]) for r in written[2:]] == [("safe", stamp.seq)]


async def test_a_close_written_before_a_round_failed_still_releases_its_session(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durability fsync, a round of writing behind fails after it wrote one session's close
    (the next session's folder cannot be built: the disk is full): once the round is
    retried, that session is released all the same, so another process may open it
    (its claim used to stay until the runtime ended)."""
    from amplifier.persistence._ownership import read_claim

    build = materialise_module.Materialiser._build
    failures: list[str] = []

    def full_once(self: materialise_module.Materialiser, create: Any, *args: Any) -> int:
        if create.location.session_id == "s2" and not failures:
            failures.append("s2")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return build(self, create, *args)

    monkeypatch.setattr(materialise_module.Materialiser, "_build", full_once)
    async with open_store(home) as store:
        first = await store.create(_where(home, "s1"), _meta("s1"))
        await first.append_event("note", {}, parent_id=None)
        await first.close()
        # In the same round as that close: the round fails building it, and is retried.
        second = await store.create(_where(home, "s2"), _meta("s2"))
        with pytest.warns(StoreWarning, match="safe in the journal"):
            await until(lambda: _where(home, "s2").directory.exists())
        assert failures == ["s2"]
        await until(lambda: read_claim(_where(home, "s1")) is None)
        await second.close()


async def test_listing_marks_damaged_metadata_and_shows_the_rest(home: Path) -> None:
    """One session with broken metadata does not hide the others."""
    await _session_with_events(home, 1, "good")
    bad = await _session_with_events(home, 1, "bad")
    bad.metadata.write_bytes(b'{"session_id": ')
    rows = list_sessions(home, "-p")
    assert [(r.session_id, r.status) for r in rows] == [("good", "interrupted"), ("bad", "damaged")]


async def _session_with_events(home: Path, count: int, session_id: str = "s1") -> SessionLocation:
    location = _where(home, session_id)
    async with open_store(home) as store:
        writer = await store.create(location, _meta(session_id))
        for n in range(count):
            await writer.append_event("note", {"n": n}, parent_id=None)
        await writer.close()
    return location


CREATE_THEN_DIE = """
import os, sys, anyio
from amplifier.runtime.lowlevel import open_local_runtime
import amplifier.persistence._actor as actor

actor.WRITE_BEHIND_DELAY = 3600  # nothing is written behind before the end below

async def main():  # the echo handler: its turn reads nothing back (no flush)
    async with open_local_runtime(home=sys.argv[1], cwd=sys.argv[2]) as rt:
        session = await rt.open_session()
        reply = await session.ask("remember this")
        print(session.id, reply.text, flush=True)
        os._exit(0)  # dies with the session in the journal only

anyio.run(main)
"""


def _die_with_a_session_in_the_journal(home: Path, tmp_path: Path) -> str:
    """Run a Runtime in a process that dies with a new session in its journal only; its id."""
    project = tmp_path / "project"
    project.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", CREATE_THEN_DIE, str(home), str(project)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()[0]


def _copy_of_its_lock_for_a_moment(journal: Path, seconds: float) -> None:
    """What a process forked an instant before the journal's runtime died holds: a copy of
    its lock, until that process starts its program (here: released after ``seconds``)."""
    import fcntl
    import threading

    copy = os.open(journal, os.O_RDONLY | os.O_CLOEXEC)
    fcntl.flock(copy, fcntl.LOCK_EX)  # the runtime's own lock, as the copy holds it
    threading.Timer(seconds, os.close, [copy]).start()


def test_a_dead_runtime_is_not_taken_for_alive_by_a_forked_copy_of_its_lock(
    home: Path, tmp_path: Path
) -> None:
    """A runtime killed as it started a command: its sessions are free once the command starts."""
    from amplifier.persistence._ownership import runtime_alive

    _die_with_a_session_in_the_journal(home, tmp_path)
    (journal,) = (home / "journal").glob("*.journal")
    _copy_of_its_lock_for_a_moment(journal, 0.03)
    assert not runtime_alive(home, journal.stem)


def test_recovery_replays_a_journal_a_forked_copy_of_its_lock_holds_for_a_moment(
    home: Path, tmp_path: Path
) -> None:
    """Recovery does not leave a dead runtime's journal behind for a lock copy that soon goes."""
    from amplifier.persistence.lowlevel import recover_dead_journals

    session_id = _die_with_a_session_in_the_journal(home, tmp_path)
    (journal,) = (home / "journal").glob("*.journal")
    _copy_of_its_lock_for_a_moment(journal, 0.03)
    with pytest.warns(RecoveryWarning, match="restored"):
        report = recover_dead_journals(home)
    assert report.journals == 1
    assert session_id in report.sessions
    assert not journal.exists()


def test_a_session_created_just_before_a_crash_comes_back_whole(home: Path, tmp_path: Path) -> None:
    """A session is durable once created: killed before its folder exists, it comes back."""
    session_id = _die_with_a_session_in_the_journal(home, tmp_path)
    assert not list(home.glob(f"projects/*/sessions/{session_id}")), "written before the crash"
    rows = list_sessions(home, None)  # a reader: replays nothing by itself
    assert session_id not in [row.session_id for row in rows]

    async def reopen() -> None:
        async with open_store(home):
            pass

    with pytest.warns(RecoveryWarning, match="restored"):
        anyio.run(reopen)
    (folder,) = home.glob(f"projects/*/sessions/{session_id}")
    assert read_metadata(SessionLocation(home, folder.parent.parent.name, session_id)).agent
    events = [r["event"] for r in lines(folder / "events.jsonl")]
    assert events == ["session:start", "prompt:submit", "prompt:complete"]
    assert [m["content"] for m in lines(folder / "transcript.jsonl")] == [
        "remember this",
        "echo: remember this",
    ]


async def test_recovery_removes_what_a_dead_runtime_left_half_built(
    home: Path, tmp_path: Path
) -> None:
    """A session folder a killed runtime was building in `.staging` is gone once its journal
    is replayed, and the session comes back whole where it belongs."""
    project = tmp_path / "project"
    project.mkdir()
    done = await anyio.run_process([sys.executable, "-c", CREATE_THEN_DIE, str(home), str(project)])
    session_id = done.stdout.decode().split()[0]
    (journal,) = (home / "journal").glob("*.journal")
    staging = home / "projects" / project_slug(project) / ".staging"
    half_built = staging / f"{session_id}~{journal.stem}~0a1b2c"
    half_built.mkdir(parents=True)
    (half_built / "metadata.json").write_bytes(b'{"session_id": ')
    with pytest.warns(RecoveryWarning, match="restored"):
        async with open_store(home):
            pass
    assert list(staging.iterdir()) == []
    assert [m["content"] for m in lines(session_dirs(home)[session_id] / "transcript.jsonl")] == [
        "remember this",
        "echo: remember this",
    ]


async def test_each_new_folder_is_synced_into_its_parent_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every folder the store makes (the home, its journal and projects folders, a project's
    folders) is synced into its parent when it is made, and only then: a power cut cannot
    lose a folder under files that were synced later."""
    synced: list[Path] = []
    real = paths_module.fsync_dir

    def recording(path: str | Path) -> None:
        synced.append(Path(path))
        real(path)

    monkeypatch.setattr(paths_module, "fsync_dir", recording)
    async with open_store(home) as store:
        writer = await store.create(_where(home, "s1"), _meta("s1"))
        await writer.close()
    sessions = _where(home, "s1").directory.parent
    for made in (home, home / "journal", home / "projects", sessions.parent, sessions):
        assert made.parent in synced, f"{made} was not synced into {made.parent}"
    synced.clear()
    async with open_store(home) as store:
        writer = await store.create(_where(home, "s2"), _meta("s2"))
        await writer.close()
    assert synced == []


async def test_write_behind_writes_each_file_once_however_many_batches_fed_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records acknowledged in many batches reach each session file in one write, and only
    the newest metadata is written: writing behind costs per file, not per record."""
    monkeypatch.setattr(actor_module, "WRITE_BEHIND_DELAY", 3600)  # only the flush writes
    appended: list[int] = []
    replaced: list[str] = []
    real_write, real_replace = materialise_module.write_all, materialise_module.atomic_replace

    def counting_write(fd: int, data: bytes) -> None:
        appended.append(fd)
        real_write(fd, data)

    def counting_replace(path: str | Path, data: bytes, *, sync: bool) -> None:
        replaced.append(str(path))
        real_replace(path, data, sync=sync)

    monkeypatch.setattr(materialise_module, "write_all", counting_write)
    monkeypatch.setattr(materialise_module, "atomic_replace", counting_replace)
    async with open_store(home, durability="none") as store:
        writers = [await store.create(_where(home, f"s{i}"), _meta(f"s{i}")) for i in range(2)]
        await store.flush()  # the folders are built; from here on only records are behind
        appended.clear()
        for i in range(20):
            for writer in writers:
                await writer.append_event("e", {"i": i}, parent_id=None)  # a batch each
                await writer.write_metadata(_meta(writer.session_id, name=f"v{i}"))
        await store.flush()
        assert len(appended) == 2, f"{len(appended)} writes for 2 files"
        assert sorted(replaced) == sorted(str(_where(home, f"s{i}").metadata) for i in range(2))
        for writer in writers:
            stored = [e["data"]["i"] for e in lines(_where(home, writer.session_id).events)]
            assert stored == list(range(20))
            assert read_metadata(_where(home, writer.session_id)).name == "v19"
            await writer.close()


async def test_new_session_folder_appears_with_its_first_records(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session created and written to within one round of writing behind appears with its
    lines and newest metadata already in its folder: no append, no metadata replace."""
    monkeypatch.setattr(actor_module, "WRITE_BEHIND_DELAY", 3600)  # only the flush writes
    written: list[str] = []
    real_append = materialise_module._OpenFiles.write
    real_replace = materialise_module.atomic_replace

    def counting_append(files: object, path: str, data: bytes) -> None:
        written.append(path)
        real_append(files, path, data)  # type: ignore[arg-type]

    def counting_replace(path: str | Path, data: bytes, *, sync: bool) -> None:
        written.append(str(path))
        real_replace(path, data, sync=sync)

    monkeypatch.setattr(materialise_module._OpenFiles, "write", counting_append)
    monkeypatch.setattr(materialise_module, "atomic_replace", counting_replace)
    async with open_store(home, durability="none") as store:
        writer = await store.create(_where(home, "s1"), _meta("s1"), wait=False)
        await writer.append_event("e", {"i": 0}, parent_id=None)
        await writer.append_message({"role": "user", "content": "hi"})
        await writer.write_metadata(_meta("s1", name="newest"))
        await store.flush()
        assert written == []
        await writer.close()
    location = _where(home, "s1")
    assert [e["data"] for e in lines(location.events)] == [{"i": 0}]
    assert [m["content"] for m in lines(location.transcript)] == ["hi"]
    assert read_metadata(location).name == "newest"


async def test_flush_durability_holds_no_session_file_open_once_writing_stops(
    home: Path,
) -> None:
    """Under durability flush, an idle Runtime soon holds no descriptor of a session file."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd to count descriptors with")

    def session_files_open() -> list[str]:
        found = []
        for name in os.listdir(fds):
            with contextlib.suppress(OSError):
                target = os.readlink(fds / name)
                if target.startswith(str(home / "projects")):
                    found.append(target)
        return found

    async with open_store(home, durability="flush") as store:
        writer = await store.create(_where(home, "s1"), _meta("s1"))
        for i in range(5):
            await writer.append_event("e", {"i": i}, parent_id=None)
        with anyio.fail_after(5):
            while session_files_open():  # noqa: ASYNC110 - the worker thread closes them
                await anyio.sleep(0.01)
        assert len(lines(_where(home, "s1").events)) == 5
        await writer.close()


WRITE_THEN_DIE = """
import os, sys, anyio
from amplifier.runtime.lowlevel import open_local_runtime

async def main():
    async with open_local_runtime(home=sys.argv[1], cwd=sys.argv[2]) as rt:
        session = await rt.open_session()
        await session.ask("first")
        await session.ask("second")
        await rt.sessions()  # the files written; nothing synced, no checkpoint
        print(session.id, flush=True)
        os._exit(0)  # dies with every record in its journal

anyio.run(main)
"""


async def test_replay_fills_a_hole_a_power_cut_left_in_a_file(home: Path, tmp_path: Path) -> None:
    """A file whose first line a power cut lost while later ones reached the disk (zeros in
    its place) gets every record back in seq order; the damaged bytes are kept beside it."""
    project = tmp_path / "project"
    project.mkdir()
    done = await anyio.run_process([sys.executable, "-c", WRITE_THEN_DIE, str(home), str(project)])
    folder = session_dirs(home)[done.stdout.decode().split()[0]]
    events = folder / "events.jsonl"
    whole = events.read_bytes()
    first, second = whole.index(b"\n") + 1, whole.index(b"\n", whole.index(b"\n") + 1) + 1
    events.write_bytes(bytes(first) + whole[first:])  # the first line and its newline: zeros
    with pytest.warns(RecoveryWarning) as caught:
        async with open_store(home):
            pass
    assert any("left damaged were moved" in str(w.message) for w in caught)
    assert events.read_bytes() == whole
    (side,) = folder.glob("events.jsonl.damaged-*")
    assert side.read_bytes() == bytes(first) + whole[first:second]


async def test_only_data_encoded_by_the_store_goes_into_a_line_as_it_is(home: Path) -> None:
    """Data a sender encoded with ``encode_data`` is stored byte for byte; bytes from
    anywhere else are refused, so no line can be spliced from something that is not JSON."""
    where = _where(home, "s1")
    async with open_store(home) as store:
        writer = await store.create(where, _meta("s1"))
        encoded = encode_data({"text": "é\n", "n": [1, 2.5, None]})
        await writer.append_event("note", encoded, parent_id="p1")
        unfinished = b'{"text": "unfinished'
        with pytest.raises(UsageError, match="JSON values only"):
            await writer.append_event("note", unfinished, parent_id="p1")  # type: ignore[arg-type]
        await writer.append_event("after", {"fine": True}, parent_id="p1")
        await writer.close()
    lines = (where.directory / "events.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["event"] for line in lines] == ["note", "after"]
    assert lines[0].endswith(
        b',"session_id":"s1","parent_id":"p1","event":"note",'
        b'"data":{"text":"\xc3\xa9\\n","n":[1,2.5,null]}}'
    )


@pytest.mark.parametrize("chunk", [7, 64, 1 << 16])
def test_a_log_read_in_chunks_gives_each_line_whole_whatever_its_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Lines shorter and many times longer than a chunk, lines ending on a chunk's edge,
    blank lines and a torn last line: the complete records, in order, each whole."""
    import amplifier.persistence._files as files_module

    monkeypatch.setattr(files_module, "STREAM_CHUNK", chunk)
    records: list[dict[str, Any]] = [
        {"n": 0},
        {"n": 1, "text": "x" * 200_000},
        {"n": 2},
        {"n": 3, "text": "y" * (3 * chunk)},
        {"n": 4, "text": "z" * max(chunk - 20, 0)},
    ]
    path = tmp_path / "events.jsonl"
    body = b"".join(orjson.dumps(r) + b"\n" for r in records[:3]) + b"\n"
    body += b"".join(orjson.dumps(r) + b"\n" for r in records[3:])
    path.write_bytes(body + b'{"n": 5, "torn": "' + b"w" * (2 * chunk))
    assert list(files_module.iter_jsonl(path)) == records
