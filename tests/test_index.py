"""The session index: listing and id lookup that stay fast, and always agree with the files."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from amplifier.cli import app
from amplifier.persistence import find_session, list_sessions
from amplifier.persistence._index import index_path, open_built
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import session_dirs


async def _sessions(project: Path, count: int) -> list[str]:
    ids = []
    async with open_runtime(cwd=project, durability="flush") as rt:
        for n in range(count):
            async with rt.open_session() as session:
                await session.ask(f"prompt {n}")
            ids.append(session.id)
    return ids


async def test_first_page_is_the_newest_sessions(home: Path, project: Path) -> None:
    """A limited listing returns exactly the newest N, newest first."""
    ids = await _sessions(project, 7)
    async with open_runtime(cwd=project) as rt:
        page = await rt.sessions(limit=3)
    assert [row.session_id for row in page] == ids[::-1][:3]


async def test_listing_survives_a_lost_index(home: Path, project: Path) -> None:
    """Removing the index file costs nothing: the next listing rebuilds it from the files."""
    ids = await _sessions(project, 3)
    index_path(home).unlink()
    rows = list_sessions(home, project=str(project).replace("/", "-"))
    assert {row.session_id for row in rows} == set(ids)
    assert index_path(home).exists()


async def test_folder_removed_behind_our_back_is_not_listed(home: Path, project: Path) -> None:
    """A session folder deleted by hand disappears from the listing, index or not."""
    gone, kept = await _sessions(project, 2)
    shutil.rmtree(session_dirs(home)[gone])
    async with open_runtime(cwd=project) as rt:
        assert [row.session_id for row in await rt.sessions()] == [kept]


async def test_reindex_picks_up_sessions_the_index_missed(home: Path, project: Path) -> None:
    """A session copied in from elsewhere is found by id and listed at once; reindex counts it."""
    (original,) = await _sessions(project, 1)
    source = session_dirs(home)[original]
    copy = source.with_name("20200101T000000Z-00000000000000aa")
    shutil.copytree(source, copy)
    slug = str(project).replace("/", "-")
    assert find_session(home, copy.name[:20], project=slug).session_id == copy.name
    async with open_runtime(cwd=project) as rt:
        assert copy.name in {row.session_id for row in await rt.sessions()}
        assert await rt.reindex() == 2
        assert copy.name in {row.session_id for row in await rt.sessions()}


async def test_prefix_lookup_through_the_index_spans_projects(home: Path, tmp_path: Path) -> None:
    """An id prefix from any project is found through the index."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (session_id,) = await _sessions(elsewhere, 1)
    found = find_session(home, session_id[:22], project="-nowhere")
    assert (found.session_id, found.project) == (session_id, str(elsewhere).replace("/", "-"))


def test_cli_reindex_reports_the_count_and_list_says_there_is_more(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`session reindex` says how many sessions it indexed; a long list says how to see more."""
    anyio.run(_sessions, project, 4)
    monkeypatch.chdir(project)
    runner = CliRunner()
    result = runner.invoke(app, ["session", "reindex"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "Indexed 4 sessions."
    listing = runner.invoke(app, ["session", "list", "--limit", "2"])
    assert len(listing.stdout.strip().splitlines()) == 3
    assert "the newest 2 shown" in listing.stderr


# -- damage found after the index was opened, and an index older than the files ------------------


def _damage_the_sessions_table(home: Path) -> None:
    """Garbage in the pages of the index's ``sessions`` table and its indexes, nowhere else:
    the file opens and its other tables read, but no listing or lookup works."""
    path = index_path(home)
    assert not path.with_name(path.name + "-wal").exists(), "a runtime is still open"
    with contextlib.closing(sqlite3.connect(path)) as db:
        pages = [
            page
            for (page,) in db.execute(
                "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'sessions' AND rootpage > 1"
            )
        ]
    assert pages
    data = bytearray(path.read_bytes())
    for page in pages:
        data[(page - 1) * 4096 : page * 4096] = bytes(range(256)) * 16
    path.write_bytes(bytes(data))


async def test_listing_with_a_damaged_index_page_shows_every_folder(
    home: Path, project: Path
) -> None:
    """An index that opens but is damaged inside still lists every session on disk."""
    ids = await _sessions(project, 3)
    _damage_the_sessions_table(home)
    async with open_runtime(cwd=project, durability="flush") as rt:
        assert {row.session_id for row in await rt.sessions()} == set(ids)


async def test_resume_through_a_damaged_index_finds_another_projects_session(
    home: Path, project: Path, tmp_path: Path
) -> None:
    """An id prefix of another project's session resumes it, however damaged the index is."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (session_id,) = await _sessions(elsewhere, 1)
    _damage_the_sessions_table(home)
    async with open_runtime(cwd=project, durability="flush") as rt:
        async with rt.resume(session_id[:22]) as session:
            assert session.id == session_id


async def test_a_damaged_index_is_rebuilt_at_its_first_use(home: Path, project: Path) -> None:
    """After one listing over a damaged index, the index is sound again and holds every session."""
    ids = await _sessions(project, 3)
    _damage_the_sessions_table(home)
    list_sessions(home, project=str(project).replace("/", "-"))
    with sqlite3.connect(index_path(home)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert {row[0] for row in db.execute("SELECT session_id FROM sessions")} == set(ids)


def test_cli_lists_shows_and_searches_through_a_damaged_index(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`session list`, `show` and `search` answer (exit 0) with an index damaged inside."""
    anyio.run(_sessions, project, 2)
    _damage_the_sessions_table(home)
    monkeypatch.chdir(project)
    runner = CliRunner()
    listed = runner.invoke(app, ["session", "list", "--json"])
    assert listed.exit_code == 0, listed.stderr
    first = json.loads(listed.stdout)[0]["session_id"]
    shown = runner.invoke(app, ["session", "show", first[:22], "--json"])
    assert shown.exit_code == 0, shown.stderr
    found = runner.invoke(app, ["session", "search", "prompt", "--json"])
    assert found.exit_code == 0, found.stderr
    assert len(json.loads(found.stdout)) >= 2


USE_THEN_DIE = """
import os, sys, anyio
from amplifier.runtime.lowlevel import open_local_runtime

async def main():
    async with open_local_runtime(home=sys.argv[1], cwd=sys.argv[2]) as rt:
        second = await rt.open_session()
        await second.ask("a word for the index: wombat")
        first = await rt.resume(sys.argv[3])
        await first.ask("used last")
        await rt.sessions()  # the files and the index written, nothing synced yet
        os._exit(0)  # dies with both sessions open, their records in its journal

anyio.run(main)
"""


async def test_replay_brings_an_index_that_lost_its_last_writes_up_to_date(
    home: Path, project: Path
) -> None:
    """An index that lost its last writes to a power cut (the files kept theirs) agrees with
    the files again once the journal is replayed: which session was used last, and search."""
    (first,) = await _sessions(project, 1)
    async with open_runtime(cwd=project, durability="flush") as rt:
        assert await rt.search("wombat") == []  # the search part of the index is built
    before = {p.name: p.read_bytes() for p in home.glob("index.sqlite3*")}
    done = await anyio.run_process(
        [sys.executable, "-c", USE_THEN_DIE, str(home), str(project), first], check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    for path in home.glob("index.sqlite3*"):
        path.unlink()
    for name, data in before.items():
        (home / name).write_bytes(data)
    assert list((home / "journal").glob("*.journal")), "the runtime left no journal"
    async with open_runtime(cwd=project, durability="flush") as rt:
        newest = await rt.sessions(sort="used", limit=1)
        hits = await rt.search("wombat")
    (second,) = {p.name for p in session_dirs(home).values()} - {first}
    assert [row.session_id for row in newest] == [first]
    assert {hit.session_id for hit in hits} == {second}


async def test_an_index_replaced_under_a_running_runtime_gets_its_later_writes(
    home: Path, project: Path
) -> None:
    """When another process replaces a damaged index while a runtime runs, what the runtime
    writes next reaches the new index: the session it used last is listed as used last."""
    async with open_runtime(cwd=project, durability="flush") as rt:
        async with rt.open_session() as first:
            await first.ask("one")
        async with rt.open_session() as second:
            await second.ask("two")
        await anyio.to_thread.run_sync(lambda: open_built(home, damaged=True).close())
        async with rt.resume(first.id) as again:
            await again.ask("three")
        newest = await rt.sessions(sort="used", limit=1)
    assert [row.session_id for row in newest] == [first.id]


async def test_what_the_index_could_not_take_is_found_once_it_can(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the index's write lock while a session is written (a stopped
    `reindex`, say): the session's turn is stored, and once the lock is gone the listing
    and search find it; nothing waits longer than the index's busy timeout."""
    import amplifier.persistence._index as index_module

    monkeypatch.setattr(index_module, "BUSY_TIMEOUT", 0.2)
    async with open_runtime(cwd=project, durability="flush") as rt:
        async with rt.open_session() as first:
            await first.ask("the first wombat")
        assert [hit.session_id for hit in await rt.search("wombat")] == [first.id, first.id]
    holder = sqlite3.connect(index_path(home), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async with open_runtime(cwd=project, durability="flush") as rt:
            async with rt.open_session() as second:
                await second.ask("a second quokka")
    finally:
        holder.rollback()
        holder.close()
    async with open_runtime(cwd=project, durability="flush") as rt:
        hits = await rt.search("quokka")
        newest = await rt.sessions(sort="used", limit=1)
    assert {hit.session_id for hit in hits} == {second.id}
    assert [row.session_id for row in newest] == [second.id]


async def test_a_listing_does_not_wait_for_another_process_holding_the_index(
    home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the index's write lock for long (a stopped reindex),
    listing and finding sessions answer from the folders instead of waiting for it."""
    import amplifier.persistence._index as index_module

    ids = await _sessions(project, 2)
    monkeypatch.setattr(index_module, "BUSY_TIMEOUT", 120.0)
    holder = sqlite3.connect(index_path(home), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        source = session_dirs(home)[ids[0]]  # a session the index has not seen yet
        copy = source.with_name("20200101T000000Z-00000000000000bb")
        shutil.copytree(source, copy)
        with anyio.fail_after(30):  # far less than the writers' wait: the folders answered
            rows = await anyio.to_thread.run_sync(
                lambda: list_sessions(home, project=str(project).replace("/", "-"))
            )
            found = await anyio.to_thread.run_sync(
                lambda: find_session(home, ids[1][:22], project=None)
            )
    finally:
        holder.rollback()
        holder.close()
    assert {row.session_id for row in rows} == {*ids, copy.name}
    assert found.session_id == ids[1]
