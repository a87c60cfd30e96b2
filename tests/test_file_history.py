"""File history: what a session tree changed, ``session_diff`` and ``session_rewind``."""

from __future__ import annotations

import json
import os
import stat
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest

import amplifier
from amplifier import AgentWarning, RewindRefused, Runtime
from amplifier.agents import (
    OfflineProvider,
    ProviderRequest,
    ProviderResponse,
    TextSink,
    UserMessage,
)
from amplifier.agents._file_history import MAX_COMPARED
from amplifier.persistence.lowlevel import FILE_HISTORY

from .helpers import events, session_dirs


class Recording(OfflineProvider):
    """The offline provider, keeping the user messages of each turn's first model call."""

    def __init__(self) -> None:
        self.prompts: list[list[str]] = []

    async def complete(
        self, request: ProviderRequest, *, on_text: TextSink | None = None
    ) -> ProviderResponse:
        self.prompts.append([m.content for m in request.messages if isinstance(m, UserMessage)])
        return await super().complete(request, on_text=on_text)


def opened(home: Path, project: Path) -> AbstractAsyncContextManager[Runtime]:
    """A runtime whose tool calls run without asking (file history is what is tested)."""
    return amplifier.open_runtime(home=home, cwd=project, assume_yes=True, durability="flush")


def write(path: str, content: str) -> str:
    return "/tool write_file " + json.dumps({"file_path": path, "content": content})


def edit(path: str, old: str, new: str) -> str:
    arguments = {"file_path": path, "old_string": old, "new_string": new}
    return "/tool edit_file " + json.dumps(arguments)


async def three_turns(rt: Runtime, project: Path) -> str:
    """Turn 1 edits auth.py, turn 2 a sub-session writes a test, turn 3 edits auth.py again."""
    (project / "auth.py").write_text("query = 'unsafe'\n")
    async with rt.open_session() as session:
        await session.ask(edit("auth.py", "unsafe", "safe"))
        await session.ask("/delegate default: " + write("tests/test_auth.py", "assert True\n"))
        await session.ask(edit("auth.py", "safe", "safest"))
    return session.id


async def test_diff_shows_each_file_the_tree_changed_from_before_to_now(
    home: Path, project: Path
) -> None:
    """One diff per file across parent and child, naming who changed it."""
    async with opened(home, project) as rt:
        session_id = await three_turns(rt, project)
        report = await amplifier.session_diff(rt, session_id)
    files = {file.path: file for file in report.files}
    assert set(files) == {"auth.py", "tests/test_auth.py"}
    auth = files["auth.py"]
    assert auth.state == "modified"
    assert "-query = 'unsafe'" in auth.lines
    assert "+query = 'safest'" in auth.lines
    assert auth.sessions == (session_id,)
    test = files["tests/test_auth.py"]
    assert test.state == "created"
    assert test.sessions[0].endswith("_default")
    assert (test.added, test.removed) == (1, 0)


async def test_rewind_restores_every_file_and_removes_created_ones(
    home: Path, project: Path
) -> None:
    """All changes of parent and child are undone; the rewind itself is recorded."""
    async with opened(home, project) as rt:
        session_id = await three_turns(rt, project)
        report = await amplifier.session_rewind(rt, session_id)
    assert (project / "auth.py").read_text() == "query = 'unsafe'\n"
    assert not (project / "tests/test_auth.py").exists()
    assert [(f.path, f.action) for f in report.files] == [
        ("auth.py", "restore"),
        ("tests/test_auth.py", "remove"),
    ]
    rewound = [e for e in events(home, session_id) if e["event"] == "session:rewind"]
    assert len(rewound) == 1
    assert {f["path"] for f in rewound[0]["data"]["files"]} == {"auth.py", "tests/test_auth.py"}


async def test_rewind_from_a_turn_keeps_the_earlier_turns(home: Path, project: Path) -> None:
    """--turn 3 undoes turn 3 only: turn 1's edit and turn 2's new file stay."""
    async with opened(home, project) as rt:
        session_id = await three_turns(rt, project)
        await amplifier.session_rewind(rt, session_id, turn=3)
    assert (project / "auth.py").read_text() == "query = 'safe'\n"
    assert (project / "tests/test_auth.py").exists()


async def test_a_rewind_can_itself_be_rewound(home: Path, project: Path) -> None:
    """undo puts back what the last rewind restored."""
    async with opened(home, project) as rt:
        session_id = await three_turns(rt, project)
        await amplifier.session_rewind(rt, session_id)
        await amplifier.session_rewind(rt, session_id, undo=True)
    assert (project / "auth.py").read_text() == "query = 'safest'\n"
    assert (project / "tests/test_auth.py").read_text() == "assert True\n"


@pytest.mark.parametrize("change", ["edited", "deleted"])
async def test_rewind_refuses_a_file_changed_since_unless_forced(
    home: Path, project: Path, change: str
) -> None:
    """Someone changed (or removed) a file since: nothing is restored, the file is named;
    with force everything is."""
    async with opened(home, project) as rt:
        session_id = await three_turns(rt, project)
        if change == "edited":
            (project / "auth.py").write_text("query = 'mine'\n")
        else:
            (project / "auth.py").unlink()
        with pytest.raises(RewindRefused, match=r"auth\.py was changed since"):
            await amplifier.session_rewind(rt, session_id)
        assert (project / "tests/test_auth.py").exists()  # all or nothing
        report = await amplifier.session_rewind(rt, session_id, force=True)
    assert report.forced == ("auth.py",)
    assert (project / "auth.py").read_text() == "query = 'unsafe'\n"
    assert not (project / "tests/test_auth.py").exists()


async def test_rewind_and_diff_never_follow_a_link_made_since_out_of_the_project(
    home: Path, project: Path, tmp_path: Path
) -> None:
    """A folder the tree wrote into, since moved out and replaced by a link to it: rewind
    refuses naming the file, and even forced writes and removes nothing outside the
    project; diff shows nothing of what lies there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "d").mkdir()
    (project / "d" / "a.txt").write_text("ORIGINAL\n")
    async with opened(home, project) as rt:
        async with rt.open_session() as session:
            await session.ask(write("d/a.txt", "AGENT\n"))
            await session.ask(write("d/b.txt", "NEW\n"))
        (project / "d").rename(outside / "d")
        (project / "d").symlink_to(outside / "d", target_is_directory=True)
        with pytest.raises(RewindRefused, match="leads outside the project"):
            await amplifier.session_rewind(rt, session.id)
        report = await amplifier.session_rewind(rt, session.id, force=True)
        diffs = await amplifier.session_diff(rt, session.id)
    assert sorted(report.skipped) == ["d/a.txt", "d/b.txt"]
    assert (outside / "d" / "a.txt").read_text() == "AGENT\n"
    assert (outside / "d" / "b.txt").read_text() == "NEW\n"
    assert [(d.path, d.lines) for d in diffs.files] == [("d/a.txt", ()), ("d/b.txt", ())]
    assert all(
        d.problem == "it leads outside the project now (through a link); not followed"
        for d in diffs.files
    )


async def test_rewind_with_damaged_history_names_what_it_cannot_restore(
    home: Path, project: Path
) -> None:
    """A kept content that is gone refuses the rewind; forced, the rest is restored."""
    async with opened(home, project) as rt:
        session_id = await three_turns(rt, project)
        await rt.flush()
        for kept in (session_dirs(home)[session_id] / FILE_HISTORY).iterdir():
            kept.write_bytes(b"damaged")
        with pytest.raises(RewindRefused, match=r"auth\.py: a kept content .* is damaged"):
            await amplifier.session_rewind(rt, session_id)
        report = await amplifier.session_rewind(rt, session_id, force=True)
    assert report.skipped == ("auth.py",)
    assert (project / "auth.py").read_text() == "query = 'safest'\n"
    assert not (project / "tests/test_auth.py").exists()


async def test_file_history_is_owner_only_and_keeps_a_content_once(
    home: Path, project: Path
) -> None:
    """The same old content kept twice is one file; the folder and files are 0700/0600."""
    (project / "a.txt").write_text("same\n")
    async with opened(home, project) as rt:
        async with rt.open_session() as session:
            await session.ask(write("a.txt", "other\n"))
            await session.ask(write("a.txt", "same\n"))
            await session.ask(write("a.txt", "other\n"))
    folder = session_dirs(home)[session.id] / FILE_HISTORY
    kept = sorted(path.read_bytes() for path in folder.iterdir())
    assert kept == [b"other\n", b"same\n"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()} == {0o600}


async def test_rewind_of_a_session_in_use_is_refused(home: Path, project: Path) -> None:
    """A session open in a runtime is not rewound under it."""
    async with opened(home, project) as rt:
        async with rt.open_session() as session:
            await session.ask(write("a.txt", "x"))
            with pytest.raises(amplifier.SessionLocked):
                await amplifier.session_rewind(rt, session.id)
    assert (project / "a.txt").exists()


async def test_rewind_to_a_turn_the_session_lacks_is_a_usage_error(
    home: Path, project: Path
) -> None:
    """--turn beyond the session's turns says how many it has."""
    async with opened(home, project) as rt:
        session_id = await three_turns(rt, project)
        with pytest.raises(amplifier.UsageError, match="has no turn 9 \\(it has 3 turns\\)"):
            await amplifier.session_rewind(rt, session_id, turn=9)


async def test_resume_names_files_changed_since_and_tells_the_model(
    home: Path, project: Path
) -> None:
    """Files someone changed after the session wrote them are named on resume, and the next
    turn's model is told."""
    async with opened(home, project) as rt:
        session_id = await three_turns(rt, project)
    (project / "tests/test_auth.py").write_text("assert False\n")
    model = Recording()
    async with amplifier.open_runtime(home=home, cwd=project, provider=model) as rt:
        changed = r"since session \S+ last wrote them: tests/test_auth\.py \("
        with pytest.warns(AgentWarning, match=changed):
            session = await rt.resume(session_id)
        async with session:
            await session.ask("what changed?")
            await session.ask("and now?")
    first_turn, second_turn = model.prompts
    assert "someone else changed these files: tests/test_auth.py." in first_turn[-2]
    assert first_turn[-1] == "what changed?"
    assert not any("someone else changed" in text for text in second_turn)
    transcript = (session_dirs(home)[session_id] / "transcript.jsonl").read_text()
    assert "someone else changed" not in transcript


async def test_what_cannot_be_compared_is_named_never_waited_for(
    home: Path, project: Path
) -> None:
    """A FIFO where the session wrote a file (an agent's ``mkfifo``), and a file grown past
    what is compared: diff names why, rewind calls them changed since (forced, it puts the
    files back), and resuming lists them; nothing waits on the FIFO."""
    async with opened(home, project) as rt:
        async with rt.open_session() as session:
            await session.ask(write("pipe.txt", "one\n") + "\n" + write("big.txt", "two\n"))
    (project / "pipe.txt").unlink()
    os.mkfifo(project / "pipe.txt")
    with open(project / "big.txt", "wb") as file:
        file.truncate(MAX_COMPARED + 1)
    with anyio.fail_after(30):
        async with opened(home, project) as rt:
            report = await amplifier.session_diff(rt, session.id)
            problems = {file.path: file.problem for file in report.files}
            assert problems == {
                "pipe.txt": "not a regular file now",
                "big.txt": f"{MAX_COMPARED + 1:,} bytes now, too large to compare",
            }
            with pytest.raises(RewindRefused, match="changed since"):
                await amplifier.session_rewind(rt, session.id)
            with pytest.warns(AgentWarning, match=r"(pipe\.txt, big\.txt|big\.txt, pipe\.txt)"):
                resumed = await rt.resume(session.id)
            await resumed.close()
            await amplifier.session_rewind(rt, session.id, force=True)
    assert not (project / "pipe.txt").exists()
    assert not (project / "big.txt").exists()


async def test_a_kept_content_that_is_no_file_is_a_damaged_one(
    home: Path, project: Path
) -> None:
    """A folder where a kept content belongs: that file has no diff, saying why; the others
    do."""
    (project / "a.txt").write_text("before\n")
    (project / "b.txt").write_text("before\n")
    async with opened(home, project) as rt:
        async with rt.open_session() as session:
            await session.ask(write("a.txt", "after\n") + "\n" + write("b.txt", "later\n"))
    kept = session_dirs(home)[session.id] / FILE_HISTORY
    (blob,) = [p for p in kept.iterdir() if p.read_bytes() == b"before\n"][:1]
    for other in kept.iterdir():
        other.unlink()
    os.mkfifo(blob)
    async with opened(home, project) as rt:
        report = await amplifier.session_diff(rt, session.id)
    problems = {file.path: file.problem for file in report.files}
    assert all("cannot be read" in (problem or "") for problem in problems.values())


async def test_a_rewind_that_cannot_write_a_file_names_that_file(
    home: Path, project: Path
) -> None:
    """A folder where the session wrote a file: a forced rewind fails naming the file, not
    the temporary name it writes beside it."""
    (project / "a.txt").write_text("zero\n")
    async with opened(home, project) as rt:
        async with rt.open_session() as session:
            await session.ask(write("a.txt", "one\n"))
    (project / "a.txt").unlink()
    (project / "a.txt").mkdir()
    (project / "a.txt" / "inside").write_text("kept\n")
    async with opened(home, project) as rt:
        with pytest.raises(OSError, match=r"a\.txt") as failed:
            await amplifier.session_rewind(rt, session.id, force=True)
    assert failed.value.filename == str(project / "a.txt")
    assert (project / "a.txt" / "inside").read_text() == "kept\n"
