"""``amplifier session export``: a session tree as Markdown, JSON or one HTML file.

Markdown and JSON are rendered by ``_export_text``, HTML by ``_export_html``;
the layout of the tree (which sub-session goes where) is ``_export_tree``'s.
The renderers are imported when a session is exported: every other command
starts without them.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from ._app import FormatOption, JsonFlag, OutputFormat, _json_mode, open_runtime, session_app
from ._complete import complete_session
from ._render import safe, write_json
from ._running import execute, fail, say


class ExportFormat(StrEnum):
    md = "md"
    json = "json"
    html = "html"


@session_app.command("export")
def export(
    session_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="Session id, unique prefix or name.", autocompletion=complete_session
        ),
    ],
    format_: Annotated[
        ExportFormat | None,
        typer.Option("--format", "-f", help="md, json or html (default: md; json with --json)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the --output file if it exists.")
    ] = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Export a session with its sub-sessions, nested where they were delegated.

    With --json, stdout is one JSON document: the export itself (as --format
    json), or, with --output, where it was written.
    """
    as_json = _json_mode(json_flag, output_format)
    chosen = format_ or (ExportFormat.json if as_json else ExportFormat.md)
    if as_json and output is None and chosen is not ExportFormat.json:
        fail(
            f"--json prints the export as JSON; --format {chosen.value} needs --output FILE",
            code=2,
            as_json=True,
        )

    from ._export_html import tree_html
    from ._export_text import tree_json, tree_markdown
    from ._export_tree import load_tree

    async def main(interrupts: AsyncIterator[int]) -> None:
        async with open_runtime(durability="none", trust_project=False) as rt:
            tree = await load_tree(rt, session_id)
        if chosen is ExportFormat.json:
            text = orjson.dumps(tree_json(tree), option=orjson.OPT_INDENT_2).decode() + "\n"
        elif chosen is ExportFormat.html:
            text = tree_html(tree)
        else:
            text = tree_markdown(tree)
        if output is None or str(output) == "-":  # "-": standard output, as for most tools
            # At a terminal, what the session holds (a command's output, a file name) must
            # not drive it: escape sequences are shown, not sent. A file or a pipe gets it all.
            sys.stdout.write(safe(text) if sys.stdout.isatty() else text)
            return
        if output.is_dir():
            fail(f"{output} is a folder: give a file name to write to", code=2, as_json=as_json)
        try:
            with output.open("w" if force else "x", encoding="utf-8") as file:
                file.write(text)
        except FileExistsError:
            fail(f"{output} exists: --force overwrites it", code=2, as_json=as_json)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}", code=1, as_json=as_json)
        if as_json:
            written = {"session_id": tree.session_id, "format": chosen.value, "output": str(output)}
            write_json(written)
        else:
            say(f"Exported {tree.session_id} to {output}")

    execute(main, as_json=as_json)
