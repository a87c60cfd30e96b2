"""`amplifier session export`: Markdown, JSON and one self-contained HTML page of a session tree."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from amplifier import Turn
from amplifier.cli._export_text import tree_json
from amplifier.cli._export_tree import load_tree
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import FnHandler
from .test_cli_process import amp

PROMPT = (
    '/delegate explorer: /tool read_file {"path": "login.py"}\n'
    "/tool list_dir {}\n"
    "/delegate reviewer: check the <b>answer</b>"
)
SOURCE = 'query = "SELECT * FROM users WHERE name=" + name  # <script>alert("x")</script>\n'


@pytest.fixture
def tree_id(home: Path, project: Path) -> str:
    """A session that read a file and delegated to two sub-agents (one of which read it)."""
    (project / "login.py").write_text(SOURCE)
    done = amp("run", PROMPT, "--json", "--name", "audit <i>", cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["session_id"])


def _export(tree_id: str, fmt: str, *, home: Path, project: Path) -> str:
    done = amp("session", "export", tree_id, "--format", fmt, cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_markdown_nests_each_sub_session_in_its_delegate_call(
    tree_id: str, home: Path, project: Path
) -> None:
    """In Markdown, each sub-session's heading sits inside the folded call that delegated it."""
    text = _export(tree_id, "md", home=home, project=project)
    assert text.startswith(f"# Session {tree_id} — audit &lt;i&gt;\n")
    explorer_call = text.index("<summary>delegate → explorer:")
    explorer = text.index("\n## Sub-session ", explorer_call)
    list_dir_call = text.index("<summary>list_dir")
    reviewer_call = text.index("<summary>delegate → reviewer:")
    reviewer = text.index("\n## Sub-session ", reviewer_call)
    answer = text.rindex("\n**Assistant**")
    assert explorer_call < explorer < list_dir_call < reviewer_call < reviewer < answer
    assert text[explorer : text.index("\n", explorer + 1)].endswith("_explorer (explorer)")
    assert text[reviewer : text.index("\n", reviewer + 1)].endswith("_reviewer (reviewer)")
    assert explorer < text.index("<summary>read_file") < list_dir_call


def test_json_nests_sub_sessions_where_they_were_delegated(
    tree_id: str, home: Path, project: Path
) -> None:
    """The JSON export is one document; each delegate call carries its sub-session's tree."""
    document = json.loads(_export(tree_id, "json", home=home, project=project))
    calls = [item for item in document["timeline"] if item["kind"] == "tool_call"]
    assert [call["call"]["name"] for call in calls] == ["delegate", "list_dir", "delegate"]
    explorer, reviewer = calls[0]["sub_session"], calls[2]["sub_session"]
    assert explorer["metadata"]["agent"] == "explorer"
    assert reviewer["metadata"]["agent"] == "reviewer"
    inner = [item for item in explorer["timeline"] if item["kind"] == "tool_call"]
    assert inner[0]["call"]["name"] == "read_file"
    assert SOURCE.strip() in inner[0]["result"]["content"]


class _Page(HTMLParser):
    """What a browser would load and show: tags with their nesting, resources, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.loads: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.child_sections_inside_details = 0
        self.details = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster") or (value and "url(" in value):
                self.loads.append((tag, name, value or ""))
        classes = dict(attrs).get("class") or ""
        if tag == "details":
            self.details += 1
        if tag == "section" and "child" in classes.split() and "details" in self.stack:
            self.child_sections_inside_details += 1
        if tag not in ("meta", "br", "hr", "img", "input", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1]}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], parser.stack
    return parser


def test_html_is_one_self_contained_escaped_page(tree_id: str, home: Path, project: Path) -> None:
    """The HTML loads nothing, runs nothing, and shows a transcript's markup as text."""
    page = _parse(_export(tree_id, "html", home=home, project=project))
    assert page.loads == []
    assert "script" not in page.tags
    assert set(page.tags) <= {
        "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "span",
        "ul", "li", "div", "pre", "details", "summary", "section", "footer",
    }  # fmt: skip
    text = "".join(page.text)
    assert '<script>alert("x")</script>' in text
    assert "check the <b>answer</b>" in text
    assert "audit <i>" in text


def test_html_folds_tool_calls_with_sub_sessions_inside(
    tree_id: str, home: Path, project: Path
) -> None:
    """Every tool call is a folded <details>; both sub-sessions sit inside their calls."""
    page = _parse(_export(tree_id, "html", home=home, project=project))
    assert page.details == 4  # delegate, list_dir, delegate, and the explorer's read_file
    assert page.child_sections_inside_details == 2


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_renders_in_a_headless_browser(
    tree_id: str, home: Path, project: Path, tmp_path: Path
) -> None:
    """Chromium renders the page: the sub-sessions are in the DOM, the file's script is text."""
    page = tmp_path / "export.html"
    done = amp("session", "export", tree_id, "-f", "html", "-o", str(page), cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    browser = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
    ]  # fmt: skip
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert dom.count('class="session child"') == 2
    assert "&lt;script&gt;alert" in dom
    assert "<script>" not in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*browser, "--window-size=1100,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_writes_the_file_given_with_o(
    tree_id: str, home: Path, project: Path, tmp_path: Path
) -> None:
    """-o FILE writes the export there, prints nothing on stdout and names the file on stderr."""
    target = tmp_path / "tree.md"
    done = amp("session", "export", tree_id, "-o", str(target), cwd=project, home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip() == f"Exported {tree_id} to {target}"
    assert target.read_text().startswith(f"# Session {tree_id}")


def test_export_to_a_folder_says_so_and_to_a_dash_prints(
    tree_id: str, home: Path, project: Path, tmp_path: Path
) -> None:
    """-o naming a folder (or "") is a usage error saying it is one, not a hint to --force
    that fails; -o - prints the export, as most tools read a dash, and writes no file."""
    to_folder = amp("session", "export", tree_id, "-o", str(tmp_path), cwd=project, home=home)
    assert to_folder.returncode == 2
    assert (
        to_folder.stderr.strip() == f"Error: {tmp_path} is a folder: give a file name to write to"
    )
    forced = amp("session", "export", tree_id, "-o", "", "--force", cwd=project, home=home)
    assert forced.returncode == 2
    assert "is a folder" in forced.stderr
    dashed = amp("session", "export", tree_id, "-o", "-", cwd=project, home=home)
    assert dashed.returncode == 0, dashed.stderr
    assert dashed.stdout.startswith(f"# Session {tree_id}")
    assert not (project / "-").exists()


async def test_a_child_no_call_names_is_placed_at_its_delegation(project: Path) -> None:
    """A handler that delegates directly (no tool call) gets its child placed at delegate:start."""

    async def turn(t: Turn) -> str:
        await t.record({"role": "assistant", "content": "before"})
        await t.delegate("helper", "do it")
        return "after"

    async with open_runtime(cwd=project, handler=FnHandler(turn)) as rt:
        async with rt.open_session() as session:
            await session.ask("go")
        document: dict[str, Any] = tree_json(await load_tree(rt, session.id))
    kinds = [
        (item["kind"], item.get("content") or item["session"]["metadata"]["agent"])
        for item in document["timeline"]
    ]
    assert kinds == [
        ("message", "go"),
        ("message", "before"),
        ("sub_session", "helper"),
        ("message", "after"),
    ]


def test_export_to_a_terminal_shows_escape_sequences_without_sending_them(
    home: Path, project: Path
) -> None:
    """A command's output that sets the window title and clears the screen: at a terminal
    the export shows it escaped; into a file it is kept as it was."""
    from .test_cli_act import amplifier as run_cli
    from .test_cli_act import tool
    from .test_cli_interactive import interactive

    command = r"printf '\033]0;TITLE\007\033[2J'"
    done = run_cli("run", "--yes", tool("bash", command=command), cwd=project, home=home)
    session_id = done.stderr.split("Session: ")[1].split()[0]
    with interactive(
        ["session", "export", session_id], cwd=project, home=home, backend="asyncio"
    ) as term:
        assert term.leave() == 0
    assert "\\x1b]0;TITLE\\x07\\x1b[2J" in term.output
    assert "\x1b]0;TITLE" not in term.output
    piped = amp("session", "export", session_id, cwd=project, home=home)
    assert "\x1b]0;TITLE\x07\x1b[2J" in piped.stdout
