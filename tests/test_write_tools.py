"""``write_file`` and ``edit_file``: what they change, what they refuse, what they keep."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from amplifier.agents import FileChange
from amplifier.agents._exceptions import ToolFailed
from amplifier.agents._specs import AgentSpec
from amplifier.agents._tools import Tool, ToolContext, parse_arguments
from amplifier.agents._write_tools import MAX_FILE_BYTES, EditFile, WriteFile
from amplifier.runtime import Turn


class _Kept:
    """What a session would keep in its file history, by digest."""

    def __init__(self) -> None:
        self.contents: dict[str, bytes] = {}

    async def keep_file(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        self.contents[digest] = content
        return digest


class _Turn:
    def __init__(self) -> None:
        self.session = _Kept()


@pytest.fixture
def kept() -> _Kept:
    return _Kept()


@pytest.fixture
def context(project: Path, kept: _Kept) -> ToolContext:
    turn = _Turn()
    turn.session = kept
    return ToolContext(
        root=project.resolve(), turn=cast(Turn, turn), agent=AgentSpec(name="t"), call_id="c1"
    )


async def call(tool: Tool, context: ToolContext, **arguments: Any) -> str:
    return await tool.run(parse_arguments(tool, arguments), context)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_write_file_creates_parent_folders_and_records_the_change(
    context: ToolContext, project: Path
) -> None:
    """A new file in new folders is written, and the change says it did not exist before."""
    result = await call(WriteFile(), context, file_path="src/app/auth.py", content="x = 1\n")
    assert (project / "src/app/auth.py").read_text() == "x = 1\n"
    assert result.startswith("Created src/app/auth.py")
    change = FileChange(path="src/app/auth.py", before=None, after=sha(b"x = 1\n"))
    assert context.changes == [change]


async def test_write_file_keeps_the_old_content_before_overwriting(
    context: ToolContext, project: Path, kept: _Kept
) -> None:
    """Overwriting twice keeps both earlier contents: nothing is lost."""
    (project / "a.txt").write_text("one\n")
    await call(WriteFile(), context, file_path="a.txt", content="two\n")
    await call(WriteFile(), context, file_path="a.txt", content="three\n")
    assert sorted(kept.contents.values()) == [b"one\n", b"two\n"]
    assert [c.before for c in context.changes] == [sha(b"one\n"), sha(b"two\n")]
    assert (project / "a.txt").read_text() == "three\n"


async def test_write_file_keeps_the_files_permissions(context: ToolContext, project: Path) -> None:
    """An executable script stays executable when the agent rewrites it."""
    script = project / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o750)
    await call(WriteFile(), context, file_path="run.sh", content="#!/bin/sh\necho hi\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o750


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/amplifier-test", "a/../../b.txt"])
async def test_write_file_refuses_paths_outside_the_project(
    context: ToolContext, project: Path, path: str
) -> None:
    """A path that leaves the project is refused, and nothing is written."""
    with pytest.raises(ToolFailed, match="outside the project"):
        await call(WriteFile(), context, file_path=path, content="x")
    assert not (project.parent / "escape.txt").exists()
    assert not Path("/etc/amplifier-test").exists()


@pytest.mark.parametrize(
    "path", [".amplifier/mcp.json", ".amplifier/profiles/base.yaml", "./.amplifier/agents/x.md"]
)
async def test_the_write_tools_leave_the_agents_configuration_alone(
    context: ToolContext, project: Path, path: str
) -> None:
    """A grant to write files is not a grant to run commands: the project's `.amplifier/`
    (MCP servers, profiles and their permissions, agents) is refused to write_file and
    edit_file alike, and nothing is written there."""
    with pytest.raises(ToolFailed, match="holds the agents' configuration"):
        await call(WriteFile(), context, file_path=path, content="{}")
    config = project / ".amplifier"
    config.mkdir(exist_ok=True)
    (config / "mcp.json").write_text("{}\n")
    with pytest.raises(ToolFailed, match="holds the agents' configuration"):
        await call(
            EditFile(), context, file_path=".amplifier/mcp.json", old_string="{}", new_string="[]"
        )
    assert [p.name for p in config.rglob("*")] == ["mcp.json"]
    assert (config / "mcp.json").read_text() == "{}\n"


async def test_write_file_refuses_a_symlink_that_leads_out(
    context: ToolContext, project: Path, tmp_path: Path
) -> None:
    """Writing through a link (to a file or a folder) out of the project is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("safe\n")
    (project / "link.txt").symlink_to(outside / "target.txt")
    (project / "dir").symlink_to(outside, target_is_directory=True)
    for path in ("link.txt", "dir/new.txt"):
        with pytest.raises(ToolFailed, match="outside the project"):
            await call(WriteFile(), context, file_path=path, content="pwned")
    assert (outside / "target.txt").read_text() == "safe\n"
    assert not (outside / "new.txt").exists()


async def test_write_file_refuses_content_over_the_cap(context: ToolContext, project: Path) -> None:
    """Content over 10 MiB is refused with a clear message."""
    with pytest.raises(ToolFailed, match="over the 10 MiB"):
        await call(WriteFile(), context, file_path="big.txt", content="x" * (MAX_FILE_BYTES + 1))
    assert not (project / "big.txt").exists()


async def test_write_file_refuses_text_it_cannot_store(context: ToolContext, project: Path) -> None:
    """A lone surrogate in the content is refused, not written half."""
    with pytest.raises(ToolFailed, match="not valid text"):
        await call(WriteFile(), context, file_path="s.txt", content="a\ud800b")
    assert not (project / "s.txt").exists()


async def test_edit_file_replaces_a_unique_string_and_shows_the_diff(
    context: ToolContext, project: Path, kept: _Kept
) -> None:
    """The edit is made, its result shows a short diff, and the old content is kept."""
    old = "q = f\"SELECT * FROM users WHERE name = '{name}'\"\nprint(q)\n"
    (project / "auth.py").write_text(old)
    result = await call(
        EditFile(),
        context,
        file_path="auth.py",
        old_string="f\"SELECT * FROM users WHERE name = '{name}'\"",
        new_string='("SELECT * FROM users WHERE name = ?", (name,))',
    )
    assert (project / "auth.py").read_text().startswith('q = ("SELECT * FROM users WHERE name = ?"')
    assert '-q = f"SELECT' in result
    assert '+q = ("SELECT' in result
    assert kept.contents[sha(old.encode())] == old.encode()


async def test_edit_file_says_when_old_string_is_missing(
    context: ToolContext, project: Path
) -> None:
    """A string that is not in the file is a clear error; the file is untouched."""
    (project / "a.py").write_text("x = 1\n")
    with pytest.raises(ToolFailed, match=r"old_string not found in a\.py"):
        await call(EditFile(), context, file_path="a.py", old_string="y = 2", new_string="y = 3")
    assert (project / "a.py").read_text() == "x = 1\n"
    assert context.changes == []


async def test_edit_file_refuses_an_ambiguous_string_unless_replace_all(
    context: ToolContext, project: Path
) -> None:
    """Two occurrences: refused, naming the count; with replace_all both change."""
    (project / "a.py").write_text("x = 1\nx = 1\n")
    with pytest.raises(ToolFailed, match="occurs 2 times"):
        await call(EditFile(), context, file_path="a.py", old_string="x = 1", new_string="x = 2")
    result = await call(
        EditFile(),
        context,
        file_path="a.py",
        old_string="x = 1",
        new_string="x = 2",
        replace_all=True,
    )
    assert (project / "a.py").read_text() == "x = 2\nx = 2\n"
    assert "2 replacement(s)" in result


async def test_edit_file_keeps_windows_line_ends(context: ToolContext, project: Path) -> None:
    """A CRLF file edited with plain line ends in the strings keeps its CRLFs."""
    (project / "w.txt").write_bytes(b"a\r\nb\r\nc\r\n")
    await call(EditFile(), context, file_path="w.txt", old_string="a\nb", new_string="a\nB")
    assert (project / "w.txt").read_bytes() == b"a\r\nB\r\nc\r\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"\x00\x01binary", "binary file"), (b"caf\xe9 latin-1\n", "not UTF-8 text")],
)
async def test_edit_file_refuses_binary_and_non_utf8_files(
    context: ToolContext, project: Path, data: bytes, message: str
) -> None:
    """It edits text only: a binary or Latin-1 file is refused and left as it was."""
    (project / "f.bin").write_bytes(data)
    with pytest.raises(ToolFailed, match=message):
        await call(EditFile(), context, file_path="f.bin", old_string="a", new_string="b")
    assert (project / "f.bin").read_bytes() == data


async def test_edit_file_of_a_missing_file_says_to_write_it(context: ToolContext) -> None:
    """Editing a file that does not exist points to write_file."""
    with pytest.raises(ToolFailed, match="no such file; write_file creates one"):
        await call(EditFile(), context, file_path="none.py", old_string="a", new_string="b")


async def test_edit_file_refuses_a_file_over_the_cap(context: ToolContext, project: Path) -> None:
    """A file over 10 MiB is not edited (its old content could not be kept)."""
    big = project / "big.log"
    with big.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ToolFailed, match="over the 10 MiB"):
        await call(EditFile(), context, file_path="big.log", old_string="a", new_string="b")
    assert os.path.getsize(big) == MAX_FILE_BYTES + 1


async def test_changes_to_one_file_at_once_each_see_the_one_before(
    context: ToolContext, project: Path, kept: _Kept
) -> None:
    """The calls of one answer run at once: three edits of one file all land, and three
    writes keep each content before the next (the history chains)."""
    (project / "f.txt").write_text("alpha\nbeta\ngamma\n")
    async with anyio.create_task_group() as tg:
        for word in ("alpha", "beta", "gamma"):
            tg.start_soon(
                functools.partial(
                    call,
                    EditFile(),
                    context,
                    file_path="f.txt",
                    old_string=word,
                    new_string=word.upper(),
                )
            )
    assert (project / "f.txt").read_text() == "ALPHA\nBETA\nGAMMA\n"
    (project / "a.txt").write_text("0")
    async with anyio.create_task_group() as tg:
        for n in (1, 2, 3):
            tg.start_soon(
                functools.partial(call, WriteFile(), context, file_path="a.txt", content=str(n))
            )
    writes = [c for c in context.changes if c.path == "a.txt"]
    assert [c.before for c in writes] == [sha(b"0"), *[c.after for c in writes[:-1]]]
    assert sha((project / "a.txt").read_bytes()) == writes[-1].after
