"""Full-text search through the Python API: kept up to date as records land, rebuilt on demand."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import anyio
import pytest

from amplifier import Durability, UsageError
from amplifier.persistence._index import index_path
from amplifier.persistence._search import index_rows, transcript_rows
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import session_dirs, until


def _generation(home: Path) -> int:
    return _state(home, "generation")


def _state(home: Path, key: str) -> int:
    db = sqlite3.connect(index_path(home))
    try:
        row = db.execute("SELECT value FROM search_state WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


@pytest.mark.parametrize("durability", ["fsync", "flush", "none"])
async def test_new_messages_are_found_without_a_rebuild(
    home: Path, project: Path, durability: Durability
) -> None:
    """A message written after the index was built is found at once, with no reindex."""
    async with open_runtime(cwd=project, durability=durability) as rt:
        async with rt.open_session() as first:
            await first.ask("the first walrus")
        assert [hit.session_id for hit in await rt.search("walrus")] == [first.id, first.id]
        built = _generation(home)
        async with rt.open_session() as second:
            await second.ask("a second walrus")
        hits = await rt.search("second walrus")
    assert {hit.session_id for hit in hits} == {second.id}
    assert _generation(home) == built


async def test_reindex_rebuilds_search_from_the_transcripts(home: Path, project: Path) -> None:
    """A lost index, and a session copied in by hand, are searchable again after reindex."""
    async with open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("a quokka appears")
    source = session_dirs(home)[session.id]
    copy = source.with_name("20200101T000000Z-00000000000000aa")
    shutil.copytree(source, copy)
    index_path(home).unlink()
    async with open_runtime(cwd=project) as rt:
        assert await rt.reindex() == 2
        hits = await rt.search("quokka")
    assert {hit.session_id for hit in hits} == {session.id, copy.name}


async def test_a_damaged_full_text_index_is_rebuilt_by_the_search_that_finds_it(
    home: Path, project: Path
) -> None:
    """SQLite calls a broken full-text table SQLITE_CORRUPT_VTAB: damage like any other, so
    the search that meets it rebuilds the index and answers, with no reindex by hand."""
    async with open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("a numbat digs")
        assert await rt.search("numbat")
    with sqlite3.connect(index_path(home)) as db:
        db.execute("DELETE FROM search_text_docsize")
    async with open_runtime(cwd=project) as rt:
        hits = await rt.search("numbat")
    assert {hit.session_id for hit in hits} == {session.id}


async def test_deleted_sessions_are_not_found(home: Path, project: Path) -> None:
    """Deleting a session takes its messages out of search."""
    async with open_runtime(cwd=project) as rt:
        async with rt.open_session() as kept:
            await kept.ask("an ibis here")
        async with rt.open_session() as gone:
            await gone.ask("an ibis there")
        await rt.search("ibis")
        await rt.delete(gone.id)
        hits = await rt.search("ibis")
    assert {hit.session_id for hit in hits} == {kept.id}


async def test_newest_matches_come_first_and_limit_cuts(home: Path, project: Path) -> None:
    """Matches come newest first; ``limit`` keeps the newest."""
    async with open_runtime(cwd=project) as rt:
        ids = []
        for n in range(3):
            async with rt.open_session() as session:
                await session.ask(f"gecko number {n}")
            ids.append(session.id)
        hits = await rt.search("gecko", limit=2)
    assert [hit.session_id for hit in hits] == [ids[2], ids[2]]
    assert [hit.role for hit in hits] == ["assistant", "user"]


async def test_a_line_indexed_twice_is_found_once(home: Path, project: Path) -> None:
    """Indexing the same transcript lines again (a retried write) adds no duplicate match."""
    async with open_runtime(cwd=project) as rt:
        async with rt.open_session() as session:
            await session.ask("one okapi")
        await rt.search("okapi")
        path = session_dirs(home)[session.id] / "transcript.jsonl"
        db = sqlite3.connect(index_path(home), isolation_level=None)
        try:
            index_rows(db, transcript_rows({str(path): path.read_bytes().splitlines()}))
        finally:
            db.close()
        hits = await rt.search("okapi")
    assert len(hits) == 2


async def test_a_query_is_text_whatever_it_holds(home: Path, project: Path) -> None:
    """A NUL in a query separates words, as a space does; a word given many times finds
    what it finds once, as quickly; more words than a search takes is a UsageError."""
    async with open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            await session.ask("the walrus and the carpenter " + "walrus " * 2_000)
        with_nul = await rt.search("walrus\x00carpenter")
        once = await rt.search("walrus carpenter")
        with anyio.fail_after(5):  # each repeat was a scan of the long message: minutes
            repeated = await rt.search("walrus " * 5_000 + "carpenter")
        with pytest.raises(UsageError, match="at most 32 words"):
            await rt.search(" ".join(f"word{n}" for n in range(33)))
    assert [hit.session_id for hit in once] == [session.id, session.id]
    assert [(hit.seq, hit.snippet) for hit in with_nul] == [(hit.seq, hit.snippet) for hit in once]
    assert [(hit.seq, hit.snippet) for hit in repeated] == [(hit.seq, hit.snippet) for hit in once]


async def test_a_cancelled_search_stops_its_work(home: Path, project: Path) -> None:
    """The first search of a large store indexes every transcript: cancelled (Ctrl-C, a
    deadline), it stops part-way instead of running on in its thread to the end, and the
    next search builds the index whole and finds what is there."""
    async with open_runtime(cwd=project, durability="none") as rt:
        async with rt.open_session() as session:
            await session.ask("the walrus")
    transcript = session_dirs(home)[session.id] / "transcript.jsonl"
    line = json.loads(transcript.read_text().splitlines()[0])
    with transcript.open("a") as file:
        for n in range(60_000):
            line["seq"] = 100 + n
            line["content"] = f"line {n}: the quick brown fox and walrus number {n % 977}"
            file.write(json.dumps(line) + "\n")
    index_path(home).unlink()
    async with open_runtime(cwd=project, durability="none") as rt:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def search() -> None:
                    await rt.search("walrus")
                    pytest.fail("the search ran to its end")

                tg.start_soon(search)
                await until(lambda: _generation(home) > 0)  # the rebuild has begun
                tg.cancel_scope.cancel()
        assert _state(home, "built") == 0
        hits = await rt.search("number 976", limit=200)
    assert len(hits) == 61  # n % 977 == 976 for n below 60,000
    assert _state(home, "built") > 0
