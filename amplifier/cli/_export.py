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

from ._app import _execute, _fail, _say, open_runtime, session_app
from ._complete import complete_session


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
        ExportFormat, typer.Option("--format", "-f", help="md, json or html.")
    ] = ExportFormat.md,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """Export a session with its sub-sessions, nested where they were delegated."""

    from ._export_html import tree_html
    from ._export_text import tree_json, tree_markdown
    from ._export_tree import load_tree

    async def main(interrupts: AsyncIterator[int]) -> None:
        async with open_runtime(durability="none") as rt:
            tree = await load_tree(rt, session_id)
        if format_ is ExportFormat.json:
            text = orjson.dumps(tree_json(tree), option=orjson.OPT_INDENT_2).decode() + "\n"
        elif format_ is ExportFormat.html:
            text = tree_html(tree)
        else:
            text = tree_markdown(tree)
        if output is None:
            sys.stdout.write(text)
            return
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot write {output}: {exc.strerror or exc}", code=1)
        _say(f"Exported {tree.session_id} to {output}")

    _execute(main)
