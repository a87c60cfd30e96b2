"""The session index: listing and id lookup that stay fast, and always agree with the files."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from amplifier.cli import app
from amplifier.persistence import find_session, list_sessions
from amplifier.persistence._index import index_path
from amplifier.runtime import open_runtime

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
