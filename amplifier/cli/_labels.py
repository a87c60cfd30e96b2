"""``amplifier session rename`` and ``amplifier session tag``: names and tags of sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import typer

from ._app import FormatOption, JsonFlag, OutputFormat, _json_mode, open_runtime, session_app
from ._complete import complete_session
from ._render import label, safe, write_json
from ._running import execute, fail

IdArgument = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="Session id, unique prefix or name.", autocompletion=complete_session
    ),
]


@session_app.command("rename")
def rename(
    session_id: IdArgument,
    name: Annotated[
        str | None, typer.Argument(help='The new name, e.g. "auth fix" (quote it).')
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Take the name away.")] = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Name a session; the name then finds it wherever an ID is asked for."""
    as_json = _json_mode(json_flag, output_format)
    if (name is None) == (not clear):
        fail("give a new name, or --clear to take the name away", code=2, as_json=as_json)

    async def main(interrupts: AsyncIterator[int]) -> None:
        async with open_runtime(durability="none", trust_project=False) as rt:
            meta = await rt.rename(session_id, None if clear else name)
        if as_json:
            write_json({"session_id": meta.session_id, "name": meta.name, "tags": meta.tags})
        elif meta.name is None:
            print(f"{meta.session_id} has no name now")
        else:
            print(f"{meta.session_id} is named {safe(meta.name)!r}")

    execute(main, as_json=as_json)


@session_app.command("tag", context_settings={"ignore_unknown_options": True})
def tag(
    session_id: IdArgument,
    changes: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[+TAG|-TAG]...", help="+tag adds (or a bare tag), -tag removes."
        ),
    ] = None,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Add and remove a session's tags (no change: show them); `list --tag` filters by them."""
    as_json = _json_mode(json_flag, output_format)
    add = [change.removeprefix("+") for change in changes or () if not change.startswith("-")]
    remove = [change[1:] for change in changes or () if change.startswith("-")]

    async def main(interrupts: AsyncIterator[int]) -> None:
        async with open_runtime(durability="none", trust_project=False) as rt:
            if add or remove:
                meta = await rt.tag(session_id, add=add, remove=remove)
            else:
                head = (await rt.tree(session_id))[0]
                if head.metadata is None:
                    fail(head.problem or f"{head.session_id} is damaged", code=1, as_json=as_json)
                meta = head.metadata
        if as_json:
            write_json({"session_id": meta.session_id, "name": meta.name, "tags": meta.tags})
        elif meta.tags:
            print(f"{meta.session_id}: {label(meta.model_copy(update={'name': None}))}")
        else:
            print(f"{meta.session_id} has no tags")

    execute(main, as_json=as_json)
