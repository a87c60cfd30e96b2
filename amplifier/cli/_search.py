"""``amplifier session search``: where a text occurs, shown in its session tree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._app import FormatOption, JsonFlag, OutputFormat, _json_mode, open_runtime, session_app
from ._render import console, label, plain, safe, when, write_json
from ._running import execute, say

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from amplifier import SearchHit, SessionSummary

MARK_STYLE = "bold reverse"


@session_app.command("search")
def search(
    query: Annotated[
        str,
        typer.Argument(
            help='Words that must all occur; "quoted words" as a phrase, word* as a prefix.'
        ),
    ],
    all_projects: Annotated[
        bool, typer.Option("--all", help="Search every project, not only this one.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="Show the newest N matches.")
    ] = 20,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Search prompts, answers, tool output, names and tags of sessions and sub-sessions."""
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> None:
        from amplifier import AmplifierError

        async with open_runtime(durability="none", trust_project=False) as rt:
            hits = await rt.search(query, all_projects=all_projects, limit=limit)
            trees: dict[str, list[SessionSummary]] = {}
            for hit in hits:
                if hit.root_id not in trees:
                    try:
                        trees[hit.root_id] = await rt.tree(hit.root_id)
                    except AmplifierError:
                        trees[hit.root_id] = []  # its root is gone: the hits still show
        if as_json:
            write_json([hit_json(hit) for hit in hits])
            return
        if not hits:
            scope = "any project" if all_projects else "this project (--all: every project)"
            say(f"No match for {safe(query)!r} in {scope}.")
            return
        show_hits(hits, trees, out=console(), show_project=all_projects)
        if len(hits) == limit:
            say(f"(the newest {limit} matches shown; --limit N shows more)")

    execute(main, as_json=as_json)


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        "session_id": hit.session_id,
        "root_id": hit.root_id,
        "project": hit.location.project,
        "seq": hit.seq,
        "ts": hit.ts.isoformat() if hit.ts else None,
        "role": hit.role,
        "tool": hit.tool,
        "snippet": hit.snippet,
        "marks": [list(mark) for mark in hit.marks],
    }


def show_hits(
    hits: Sequence[SearchHit],
    trees: dict[str, list[SessionSummary]],
    *,
    out: Console,
    show_project: bool = False,
) -> None:
    """Matches grouped by session tree (the tree of the newest match first).

    In a tree, the root's matches come first, then each sub-session's
    under its id and agent, indented by depth; newest first within each.
    """
    from rich.text import Text  # drawn here only (``_render`` Rule 3)

    bare = plain(out.file)
    groups: dict[str, dict[str, list[SearchHit]]] = {}
    for hit in hits:
        groups.setdefault(hit.root_id, {}).setdefault(hit.session_id, []).append(hit)
    for root_id, by_session in groups.items():
        tree = trees.get(root_id, [])
        order = {row.session_id: n for n, row in enumerate(tree)}
        nodes = {row.session_id: row for row in tree}
        root = nodes.get(root_id)
        base = root.metadata.depth if root is not None and root.metadata is not None else 0
        head = Text(root_id, style="bold")
        if root is not None and root.metadata is not None:
            labels = label(root.metadata)
            head.append(f"  {labels}" if labels else "")
            head.append(f"  {when(root.metadata.created)}", style="dim")
            if show_project:
                head.append(f"  {safe(root.metadata.cwd)}", style="dim")
        out.print(head)
        for session_id in sorted(by_session, key=lambda s: (s != root_id, order.get(s, 1 << 30))):
            node = nodes.get(session_id)
            depth = 0
            if session_id != root_id:
                meta = node.metadata if node is not None else None
                depth = max(1, meta.depth - base) if meta is not None else 1
                agent = safe(meta.agent) if meta is not None else "?"
                out.print(Text(f"{'  ' * depth}└─ {session_id} [{agent}]"))
            for hit in by_session[session_id]:
                out.print(_hit_line(hit, indent="  " * (depth + 1), bare=bare))
        out.print()


def _hit_line(hit: SearchHit, *, indent: str, bare: bool) -> Text:
    from rich.text import Text

    if hit.role == "label":
        where = "name/tags"
    elif hit.role == "tool":
        where = f"#{hit.seq} tool {safe(hit.tool or '?')}"
    else:
        where = f"#{hit.seq} {safe(hit.role)}"
    line = Text(f"{indent}{where}: ", style="dim")
    position = 0
    for start, end in hit.marks:
        if start < position:
            continue
        line.append(safe(hit.snippet[position:start]))
        found = safe(hit.snippet[start:end])
        line.append(f"**{found}**" if bare else found, style=None if bare else MARK_STYLE)
        position = end
    line.append(safe(hit.snippet[position:]))
    return line
