"""The built-in file tools: what a model sees, and that nothing outside the project leaks."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

import amplifier
from amplifier.agents import _file_tools
from amplifier.agents._exceptions import ToolFailed
from amplifier.agents._file_tools import (
    GLOB_LIMIT,
    GREP_LIMIT,
    LIST_LIMIT,
    Glob,
    Grep,
    ListDir,
    ReadFile,
    file_tools,
)
from amplifier.agents._specs import AgentSpec
from amplifier.agents._tools import (
    MAX_TOOL_OUTPUT,
    Tool,
    ToolBox,
    ToolContext,
    parse_arguments,
    spec_of,
    storable,
)

from .helpers import events, transcript

if TYPE_CHECKING:
    from amplifier.runtime import Turn

SECRET = "TOP SECRET"


@pytest.fixture
def context(project: Path) -> ToolContext:
    # The file tools use only the root; the turn is never touched.
    return ToolContext(
        root=project.resolve(),
        turn=cast("Turn", None),
        agent=AgentSpec(name="explorer"),
        call_id="call-1",
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the project holding a secret file."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text(f"{SECRET}\n")
    return path


@pytest.fixture
def escapes(project: Path, outside: Path) -> Path:
    """Symlinks inside the project to a directory and a file outside it."""
    (project / "out-dir").symlink_to(outside, target_is_directory=True)
    (project / "out-file.txt").symlink_to(outside / "secret.txt")
    return project


async def call(tool: Tool, context: ToolContext, **arguments: Any) -> str:
    """Run a tool the way the agent loop does: validate the arguments, then run."""
    return await tool.run(parse_arguments(tool, arguments), context)


def write(project: Path, relative: str, text: str = "") -> Path:
    path = project / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


OUTSIDE_PATHS = ["../outside", "../outside/secret.txt", "/etc/passwd", "/etc"]


# -- the tool set and its schemas ---------------------------------------------------------


def test_file_tools_returns_one_of_each() -> None:
    """An agent given the file tools gets read_file, list_dir, glob and grep."""
    assert ToolBox(file_tools()).names == ["glob", "grep", "list_dir", "read_file"]


@pytest.mark.parametrize(
    ("tool", "properties", "required"),
    [
        (ReadFile(), {"path", "offset", "limit"}, ["path"]),
        (ListDir(), {"path"}, []),
        (Glob(), {"pattern", "path"}, ["pattern"]),
        (Grep(), {"pattern", "path", "glob", "case_insensitive"}, ["pattern"]),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_file_tools_schema_lists_documented_parameters(
    tool: Tool, properties: set[str], required: list[str]
) -> None:
    """A provider sees each tool's parameters, each described, and which are required."""
    schema = spec_of(tool).parameters
    assert set(schema["properties"]) == properties
    assert sorted(schema.get("required", [])) == sorted(required)
    assert all(field.get("description") for field in schema["properties"].values())
    assert schema["additionalProperties"] is False
    assert spec_of(tool).description


def test_read_file_schema_rejects_zero_offset() -> None:
    """A model asking for line 0 gets a readable argument error, not a crash."""
    with pytest.raises(ToolFailed, match="offset"):
        parse_arguments(ReadFile(), {"path": "a.txt", "offset": 0})


# -- read_file ----------------------------------------------------------------------------


async def test_read_file_numbers_lines_like_cat_n(project: Path, context: ToolContext) -> None:
    """The model sees each line with its number, as `cat -n` prints it."""
    write(project, "a.txt", "alpha\nbeta\n")
    assert await call(ReadFile(), context, path="a.txt") == "     1\talpha\n     2\tbeta"


async def test_read_file_offset_and_limit_select_lines(project: Path, context: ToolContext) -> None:
    """offset and limit show a window of the file, numbered as in the file."""
    write(project, "a.txt", "".join(f"line {n}\n" for n in range(1, 11)))
    text = await call(ReadFile(), context, path="a.txt", offset=3, limit=2)
    assert text.splitlines()[:2] == ["     3\tline 3", "     4\tline 4"]


async def test_read_file_says_how_to_read_more(project: Path, context: ToolContext) -> None:
    """A cut file ends with how many lines are left and the offset to read them from."""
    write(project, "a.txt", "".join(f"line {n}\n" for n in range(1, 11)))
    text = await call(ReadFile(), context, path="a.txt", offset=3, limit=2)
    assert text.splitlines()[-1] == "... 6 more lines; read again with offset=5"


async def test_read_file_whole_file_has_no_more_note(project: Path, context: ToolContext) -> None:
    """A file read to its end carries no "more lines" note."""
    write(project, "a.txt", "one\ntwo\n")
    assert "more lines" not in await call(ReadFile(), context, path="a.txt", limit=2)


async def test_read_file_stops_at_output_budget_with_offset_note(
    project: Path, context: ToolContext
) -> None:
    """A file too big for one answer stops at whole lines and says where to continue."""
    write(project, "big.txt", "".join(f"{n:05d} {'x' * 1000}\n" for n in range(1, 201)))
    text = await call(ReadFile(), context, path="big.txt")
    assert len(text) <= MAX_TOOL_OUTPUT
    last_shown = int(text.splitlines()[-2].split("\t")[0])
    assert text.splitlines()[-1] == (
        f"... {200 - last_shown} more lines; read again with offset={last_shown + 1}"
    )


async def test_read_file_clips_very_long_lines(project: Path, context: ToolContext) -> None:
    """A minified one-line file shows the start of the line and how much was cut."""
    write(project, "min.js", "y" * 10_000)
    text = await call(ReadFile(), context, path="min.js")
    assert text.endswith("[... 8000 more characters on this line]")


async def test_read_file_refuses_binary(project: Path, context: ToolContext) -> None:
    """A binary file is refused instead of pouring bytes into the transcript."""
    (project / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ToolFailed, match="binary file, not shown"):
        await call(ReadFile(), context, path="image.png")


async def test_read_file_replaces_undecodable_bytes(project: Path, context: ToolContext) -> None:
    """A file that is not valid UTF-8 is still shown, bad bytes replaced."""
    (project / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert (
        await call(ReadFile(), context, path="latin1.txt") == "     1\tcaf\N{REPLACEMENT CHARACTER}"
    )


async def test_read_file_missing_file_says_so(context: ToolContext) -> None:
    """Reading a file that does not exist names it and says it does not exist."""
    with pytest.raises(ToolFailed, match=r"^nope\.txt: no such file"):
        await call(ReadFile(), context, path="nope.txt")


async def test_read_file_refuses_directory(project: Path, context: ToolContext) -> None:
    """Reading a directory points the model at list_dir."""
    (project / "src").mkdir()
    with pytest.raises(ToolFailed, match="is a directory; use list_dir"):
        await call(ReadFile(), context, path="src")


async def test_read_file_offset_past_end_says_so(project: Path, context: ToolContext) -> None:
    """An offset beyond the last line says how long the file is."""
    write(project, "a.txt", "one\ntwo\n")
    with pytest.raises(ToolFailed, match=r"past the end of the file \(2 lines\)"):
        await call(ReadFile(), context, path="a.txt", offset=5)


async def test_read_file_empty_file_says_so(project: Path, context: ToolContext) -> None:
    """An empty file reads as 'empty file', not as an empty answer."""
    write(project, "empty.txt")
    assert await call(ReadFile(), context, path="empty.txt") == "empty.txt: empty file"


@pytest.mark.parametrize("path", OUTSIDE_PATHS)
async def test_read_file_refuses_paths_outside_project(
    context: ToolContext, outside: Path, path: str
) -> None:
    """A relative or absolute path out of the project is refused."""
    with pytest.raises(ToolFailed, match="outside the project directory; refused"):
        await call(ReadFile(), context, path=path)


async def test_read_file_refuses_symlink_out_of_project(
    escapes: Path, context: ToolContext
) -> None:
    """A link inside the project that points outside it is refused, not read through."""
    with pytest.raises(ToolFailed, match="outside the project directory; refused") as caught:
        await call(ReadFile(), context, path="out-file.txt")
    assert SECRET not in str(caught.value)


async def test_read_file_follows_symlink_inside_project(
    project: Path, context: ToolContext
) -> None:
    """A link to another file in the project reads like that file."""
    write(project, "real.txt", "hello\n")
    (project / "alias.txt").symlink_to(project / "real.txt")
    assert await call(ReadFile(), context, path="alias.txt") == "     1\thello"


# -- list_dir -----------------------------------------------------------------------------


async def test_list_dir_sorts_and_marks_directories(project: Path, context: ToolContext) -> None:
    """Entries come sorted by name, directories ending with '/'."""
    write(project, "b.txt")
    write(project, "a.txt")
    write(project, "src/main.py")
    write(project, ".git/HEAD")
    assert await call(ListDir(), context) == ".git/\na.txt\nb.txt\nsrc/"


async def test_list_dir_lists_subdirectory(project: Path, context: ToolContext) -> None:
    """Listing a subdirectory shows its entries by name."""
    write(project, "src/main.py")
    write(project, "src/pkg/__init__.py")
    assert await call(ListDir(), context, path="src") == "main.py\npkg/"


async def test_list_dir_caps_entries(project: Path, context: ToolContext) -> None:
    """A huge directory shows the first entries and says how many were left out."""
    for n in range(LIST_LIMIT + 7):
        write(project, f"f{n:04d}.txt")
    lines = (await call(ListDir(), context)).splitlines()
    assert len(lines) == LIST_LIMIT + 1
    assert lines[-1] == "... 7 more entries not shown"


async def test_list_dir_empty_directory_says_so(project: Path, context: ToolContext) -> None:
    """An empty directory reads as 'empty directory'."""
    (project / "empty").mkdir()
    assert await call(ListDir(), context, path="empty") == "empty: empty directory"


async def test_list_dir_refuses_file(project: Path, context: ToolContext) -> None:
    """Listing a file points the model at read_file."""
    write(project, "a.txt")
    with pytest.raises(ToolFailed, match="not a directory; use read_file"):
        await call(ListDir(), context, path="a.txt")


async def test_list_dir_missing_directory_says_so(context: ToolContext) -> None:
    """Listing a directory that does not exist says so."""
    with pytest.raises(ToolFailed, match=r"^nope: no such directory"):
        await call(ListDir(), context, path="nope")


@pytest.mark.parametrize("path", OUTSIDE_PATHS)
async def test_list_dir_refuses_paths_outside_project(
    context: ToolContext, outside: Path, path: str
) -> None:
    """A relative or absolute path out of the project is refused."""
    with pytest.raises(ToolFailed, match="outside the project directory; refused"):
        await call(ListDir(), context, path=path)


async def test_list_dir_refuses_symlink_out_of_project(escapes: Path, context: ToolContext) -> None:
    """Listing a link that leads out of the project is refused."""
    with pytest.raises(ToolFailed, match="outside the project directory; refused"):
        await call(ListDir(), context, path="out-dir")


async def test_list_dir_marks_links_out_of_project(escapes: Path, context: ToolContext) -> None:
    """Links out of the project are listed as such, without their target or contents."""
    text = await call(ListDir(), context)
    assert text.splitlines() == [
        "out-dir@ (link out of the project; not followed)",
        "out-file.txt@ (link out of the project; not followed)",
    ]
    assert "outside" not in text.replace("out of the project", "")


# -- glob ---------------------------------------------------------------------------------


async def test_glob_finds_paths_recursively(project: Path, context: ToolContext) -> None:
    """'**/*.py' finds Python files at every depth, sorted, relative to the project root."""
    write(project, "setup.py")
    write(project, "src/pkg/core.py")
    write(project, "src/pkg/notes.md")
    write(project, "src/app.py")
    assert await call(Glob(), context, pattern="**/*.py") == (
        "setup.py\nsrc/app.py\nsrc/pkg/core.py"
    )


async def test_glob_under_path_stays_relative_to_root(project: Path, context: ToolContext) -> None:
    """Searching below a path still returns paths relative to the project root."""
    write(project, "src/app.py")
    write(project, "src/pkg/core.py")
    write(project, "other/app.py")
    assert await call(Glob(), context, pattern="*", path="src") == "src/app.py\nsrc/pkg/"


async def test_glob_no_match_says_so(project: Path, context: ToolContext) -> None:
    """A pattern that matches nothing says so rather than answering with nothing."""
    write(project, "a.txt")
    assert await call(Glob(), context, pattern="**/*.rs") == "no paths match '**/*.rs'"


async def test_glob_caps_results(project: Path, context: ToolContext) -> None:
    """Too many matches show the first ones and say how many more there are."""
    for n in range(GLOB_LIMIT + 3):
        write(project, f"d/f{n:04d}.txt")
    lines = (await call(Glob(), context, pattern="**/*.txt")).splitlines()
    assert len(lines) == GLOB_LIMIT + 1
    assert lines[0] == "d/f0000.txt"
    assert lines[-1] == "... 3 more paths not shown; narrow the pattern"


async def test_glob_skips_git_directory(project: Path, context: ToolContext) -> None:
    """A recursive pattern does not wander into .git."""
    write(project, ".git/config")
    write(project, ".git/hooks/pre-commit.sample")
    write(project, "config")
    assert await call(Glob(), context, pattern="**/*") == "config"


async def test_glob_enters_git_when_pattern_names_it(project: Path, context: ToolContext) -> None:
    """A pattern that names .git outright does look inside it."""
    write(project, ".git/config")
    assert await call(Glob(), context, pattern=".git/*") == ".git/config"


@pytest.mark.parametrize("pattern", ["../*", "../outside/*", "src/../../*", "/etc/*"])
async def test_glob_refuses_patterns_leaving_project(
    project: Path, context: ToolContext, outside: Path, pattern: str
) -> None:
    """A pattern that climbs out or is absolute is refused."""
    (project / "src").mkdir()
    with pytest.raises(ToolFailed, match=r"refused|must be relative"):
        await call(Glob(), context, pattern=pattern)


@pytest.mark.parametrize("path", OUTSIDE_PATHS)
async def test_glob_refuses_paths_outside_project(
    context: ToolContext, outside: Path, path: str
) -> None:
    """A search directory out of the project is refused."""
    with pytest.raises(ToolFailed, match="outside the project directory; refused"):
        await call(Glob(), context, pattern="*", path=path)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", "here.txt"),
        ("**/*", "here.txt"),
        ("*/*", "no paths match '*/*'"),
        ("out-dir/*", "no paths match 'out-dir/*'"),
        ("**/secret.txt", "no paths match '**/secret.txt'"),
    ],
)
async def test_glob_skips_links_out_of_project(
    escapes: Path, context: ToolContext, pattern: str, expected: str
) -> None:
    """Links out of the project are neither matched nor walked through."""
    write(escapes, "here.txt")
    assert await call(Glob(), context, pattern=pattern) == expected


async def test_glob_does_not_loop_through_link_to_ancestor(
    project: Path, context: ToolContext
) -> None:
    """A link back up the tree does not send '**' round in circles."""
    write(project, "src/a.py")
    (project / "src" / "loop").symlink_to(project, target_is_directory=True)
    assert await call(Glob(), context, pattern="**/*.py") == "src/a.py"


# -- grep ---------------------------------------------------------------------------------


async def test_grep_reports_path_line_and_text(project: Path, context: ToolContext) -> None:
    """Each match comes as 'path:line: text', the path relative to the project root."""
    write(project, "src/app.py", "import os\n\ndef main():\n    return os.getcwd()\n")
    write(project, "README.md", "run main() to start\n")
    assert await call(Grep(), context, pattern=r"main\(\)") == (
        "README.md:1: run main() to start\nsrc/app.py:3: def main():"
    )


async def test_grep_glob_filters_files(project: Path, context: ToolContext) -> None:
    """A glob filter limits the search to matching file names."""
    write(project, "src/app.py", "TODO: py\n")
    write(project, "notes.md", "TODO: md\n")
    assert await call(Grep(), context, pattern="TODO", glob="*.py") == "src/app.py:1: TODO: py"


async def test_grep_searches_single_file(project: Path, context: ToolContext) -> None:
    """A path naming one file searches just that file."""
    write(project, "a.txt", "needle\n")
    write(project, "b.txt", "needle\n")
    assert await call(Grep(), context, pattern="needle", path="b.txt") == "b.txt:1: needle"


async def test_grep_case_insensitive_matches_any_case(project: Path, context: ToolContext) -> None:
    """case_insensitive finds a word whatever its case."""
    write(project, "a.txt", "Error here\n")
    text = await call(Grep(), context, pattern="error", case_insensitive=True)
    assert text == "a.txt:1: Error here"


async def test_grep_no_match_says_so(project: Path, context: ToolContext) -> None:
    """A search that finds nothing says so."""
    write(project, "a.txt", "hay\n")
    assert await call(Grep(), context, pattern="needle") == "no matches for 'needle' in ."


async def test_grep_invalid_regex_reports_error(context: ToolContext) -> None:
    """A broken regular expression comes back with Python's explanation."""
    with pytest.raises(ToolFailed, match=r"invalid regular expression '\(unclosed'.*missing \)"):
        await call(Grep(), context, pattern="(unclosed")


async def test_grep_caps_matches(project: Path, context: ToolContext) -> None:
    """Too many matches show the first ones and say how many more there are."""
    write(project, "a.txt", "hit\n" * (GREP_LIMIT + 5))
    lines = (await call(Grep(), context, pattern="hit")).splitlines()
    assert len(lines) == GREP_LIMIT + 1
    assert lines[-1] == "... 5 more matches not shown; narrow the pattern or path"


async def test_grep_clips_long_lines(project: Path, context: ToolContext) -> None:
    """A matching line thousands of characters long is shown cut, with a note."""
    write(project, "min.js", "needle" + "z" * 5000 + "\n")
    text = await call(Grep(), context, pattern="needle")
    assert text.startswith("min.js:1: needle")
    assert text.endswith("[... 4506 more characters on this line]")


async def test_grep_output_is_clipped(project: Path, context: ToolContext) -> None:
    """Even within the match cap, an answer too long for the transcript is cut with a note."""
    write(project, "wide.txt", ("needle" + "w" * 600 + "\n") * GREP_LIMIT)
    text = await call(Grep(), context, pattern="needle")
    assert len(text) < MAX_TOOL_OUTPUT + 100
    assert text.splitlines()[-1].startswith("[... ")
    assert text.endswith("more characters not shown]")


async def test_grep_skips_binary_files(project: Path, context: ToolContext) -> None:
    """Binary files are not searched during a walk."""
    (project / "blob.bin").write_bytes(b"needle\x00\x01\x02")
    write(project, "a.txt", "needle\n")
    assert await call(Grep(), context, pattern="needle") == "a.txt:1: needle"


async def test_grep_refuses_binary_file_named_outright(project: Path, context: ToolContext) -> None:
    """Naming a binary file to search says it is binary."""
    (project / "blob.bin").write_bytes(b"needle\x00")
    with pytest.raises(ToolFailed, match="binary file, not searched"):
        await call(Grep(), context, pattern="needle", path="blob.bin")


async def test_grep_skips_git_directory(project: Path, context: ToolContext) -> None:
    """A search of the project does not report hits inside .git."""
    write(project, ".git/COMMIT_EDITMSG", "needle\n")
    write(project, "a.txt", "needle\n")
    assert await call(Grep(), context, pattern="needle") == "a.txt:1: needle"


async def test_grep_missing_path_says_so(context: ToolContext) -> None:
    """Searching a path that does not exist says so."""
    with pytest.raises(ToolFailed, match=r"^nope: no such file or directory"):
        await call(Grep(), context, pattern="x", path="nope")


@pytest.mark.parametrize("path", OUTSIDE_PATHS)
async def test_grep_refuses_paths_outside_project(
    context: ToolContext, outside: Path, path: str
) -> None:
    """A relative or absolute path out of the project is refused."""
    with pytest.raises(ToolFailed, match="outside the project directory; refused"):
        await call(Grep(), context, pattern="SECRET", path=path)


async def test_grep_refuses_symlink_out_of_project(escapes: Path, context: ToolContext) -> None:
    """Naming a link that leads out of the project is refused."""
    for path in ("out-dir", "out-file.txt"):
        with pytest.raises(ToolFailed, match="outside the project directory; refused"):
            await call(Grep(), context, pattern="SECRET", path=path)


async def test_grep_walk_skips_links_out_of_project(escapes: Path, context: ToolContext) -> None:
    """A project-wide search never reads through links that lead outside."""
    write(escapes, "here.txt", "no secrets\n")
    text = await call(Grep(), context, pattern="SECRET", case_insensitive=True)
    assert SECRET not in text
    assert text == "here.txt:1: no secrets"


# -- the event loop -----------------------------------------------------------------------


async def test_grep_keeps_event_loop_responsive(project: Path, context: ToolContext) -> None:
    """Other tasks keep running while a search reads files (the I/O is in a thread)."""
    for n in range(200):
        write(project, f"d{n % 10}/f{n}.txt", "line\n" * 200)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await call(Grep(), context, pattern="nothing-matches-this")
        tg.cancel_scope.cancel()
    assert ticks > 10


async def test_grep_stops_walking_when_cancelled(
    project: Path, context: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling a turn stops a project-wide search at the next file, not at the end."""
    for n in range(20):
        write(project, f"f{n:02d}.txt", "line\n")
    searched: list[str] = []
    started, resume = anyio.Event(), threading.Event()
    search = _file_tools._search

    def held_search(path: str, regex: re.Pattern[str]) -> Iterator[tuple[int, str]]:
        searched.append(path)
        anyio.from_thread.run_sync(started.set)
        resume.wait(5)  # hold the first file until the search has been cancelled
        return search(path, regex)

    monkeypatch.setattr(_file_tools, "_search", held_search)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(call, Grep(), context, pattern="line"))
            await started.wait()
            scope.cancel()
            resume.set()
    assert len(searched) == 1


@pytest.mark.parametrize("tool", ["list_dir", "glob"])
async def test_a_file_name_that_is_not_utf8_is_shown_escaped_and_the_turn_goes_on(
    home: Path, project: Path, tool: str
) -> None:
    """A project holding a file whose name is not UTF-8 (Latin-1, say): listing it shows
    the name's odd bytes escaped, as `ls -b` does, and the turn completes and is stored."""
    with open(bytes(project) + b"/caf\xe9.txt", "wb") as named_in_latin_1:
        named_in_latin_1.write(b"x")
    arguments = '{"path": "."}' if tool == "list_dir" else '{"pattern": "*.txt"}'
    async with amplifier.open_runtime(cwd=project) as rt, rt.open_session() as session:
        await session.ask(f"/tool {tool} {arguments}")
    results = [m for m in transcript(home, session.id) if m["role"] == "tool"]
    assert len(results) == 1
    assert not results[0].get("is_error")
    assert "caf\\xe9.txt" in results[0]["content"]
    finished = [e for e in events(home, session.id) if e["event"] == "tool:post"]
    assert [e["data"]["is_error"] for e in finished] == [False]
    assert [
        e["data"]["status"] for e in events(home, session.id) if e["event"] == "prompt:complete"
    ] == ["completed"]


async def test_a_file_shown_with_escaped_bytes_is_read_by_that_name(
    project: Path, context: ToolContext
) -> None:
    """The name `list_dir` shows for a file that is not UTF-8 (`caf\\xe9.txt`) opens that
    file; a file really named with a backslash is still read by its own name."""
    with open(bytes(project) + b"/caf\xe9.txt", "wb") as named_in_latin_1:
        named_in_latin_1.write(b"latin one\n")
    (project / "lit\\x41.txt").write_text("literal\n")
    shown = storable(await ListDir().run(ListDir.Arguments(path="."), context))  # as stored
    name = next(line.strip() for line in shown.splitlines() if "caf" in line)
    assert name == "caf\\xe9.txt"
    read = await ReadFile().run(ReadFile.Arguments(path=name), context)
    assert "latin one" in read
    literal = await ReadFile().run(ReadFile.Arguments(path="lit\\x41.txt"), context)
    assert "literal" in literal
