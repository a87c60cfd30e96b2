"""``amplifier session diff`` and ``session rewind``: the files a session tree changed."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from ._app import FormatOption, JsonFlag, OutputFormat, _json_mode, open_runtime, session_app
from ._complete import complete_session
from ._render import console, safe, write_json
from ._running import execute, fail, say

if TYPE_CHECKING:
    from amplifier import DiffReport, FileRewind, RewindReport

_VERBS = {"restore": "Restored", "remove": "Removed", "recreate": "Recreated"}
_DRY = {"restore": "Would restore", "remove": "Would remove", "recreate": "Would recreate"}


@session_app.command("diff")
def diff(
    session_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="Session id, prefix or name.", autocompletion=complete_session
        ),
    ],
    stat: Annotated[
        bool, typer.Option("--stat", help="Only the files and their added and removed lines.")
    ] = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """What the session and its sub-sessions changed in the project's files, up to now."""
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> None:
        from amplifier import session_diff

        async with open_runtime(durability="none", trust_project=False) as rt:
            report = await session_diff(rt, session_id)
        if as_json:
            write_json(report.as_json())
            return
        _show_diff(report, stat=stat)

    execute(main, as_json=as_json)


def _show_diff(report: DiffReport, *, stat: bool) -> None:
    out = console()
    if not report.files:
        say(f"Session {report.session_id} changed no files with its file tools.")
    added = removed = 0
    for file in report.files:
        added += file.added
        removed += file.removed
        by = ", ".join(file.sessions)
        counts = f"+{file.added} -{file.removed}"
        if stat:
            out.print(f"{safe(file.path)}  {counts}  ({file.state})", markup=False)
            continue
        out.print(f"{safe(file.path)}  {file.state}  {counts}  by {by}", style="bold")
        if file.problem is not None:
            out.print(f"  (no diff: {safe(file.problem)})", markup=False)
        for line in file.lines:
            style = (
                "green"
                if line.startswith("+") and not line.startswith("+++")
                else "red"
                if line.startswith("-") and not line.startswith("---")
                else "cyan"
                if line.startswith("@@")
                else None
            )
            out.print(safe(line), style=style, markup=False, highlight=False)
        out.print("")
    if stat and report.files:
        out.print(f"{len(report.files)} file(s), +{added} -{removed}", markup=False)
    _bash_note(report.bash_calls, "shown")


def _bash_note(calls: int, verb: str) -> None:
    if calls:
        say(
            f"Note: changes made by bash commands are not tracked and not {verb} "
            f"({calls} command(s) ran)."
        )


@session_app.command("rewind")
def rewind(
    session_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="Session id, prefix or name.", autocompletion=complete_session
        ),
    ],
    turn: Annotated[
        int | None,
        typer.Option("--turn", min=1, help="Undo the changes from this turn on (default: all)."),
    ] = None,
    undo: Annotated[
        bool, typer.Option("--undo", help="Rewind the last rewind: put back what it restored.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be restored.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also restore files someone changed since (losing that)."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Restore the files the session and its sub-sessions changed to what they were before."""
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> int | None:
        from amplifier import session_rewind

        async with open_runtime(durability="none", trust_project=False) as rt:
            plan = await session_rewind(rt, session_id, turn=turn, undo=undo, dry_run=True)
            if dry_run or not plan.files:
                _report(plan, as_json=as_json)
                return 0
            if not force and any(file.conflict or file.problem for file in plan.files):
                await session_rewind(rt, session_id, turn=turn, undo=undo)  # refuses, naming them
            if not yes:
                if not sys.stdin.isatty():
                    fail("not rewinding without confirmation: pass --yes", code=2, as_json=as_json)
                _show_plan(plan.files)
                confirmed = await anyio.to_thread.run_sync(
                    lambda: typer.confirm(
                        f"Rewind {len(plan.files)} file(s) of session {plan.session_id}?",
                        default=False,
                        err=True,
                    )
                )
                if not confirmed:
                    say("Nothing rewound.")
                    if as_json:
                        write_json({**plan.as_json(), "files": [], "dry_run": False})
                    return 0
            report = await session_rewind(rt, session_id, turn=turn, undo=undo, force=force)
        _report(report, as_json=as_json)
        return 0

    execute(main, as_json=as_json)


def _show_plan(files: tuple[FileRewind, ...]) -> None:
    for file in files:
        note = " (changed since: --force overwrites it)" if file.conflict else ""
        problem = f" ({file.problem})" if file.problem else ""
        say(f"  {_DRY[file.action].lower()} {file.path}{note}{problem}")


def _report(report: RewindReport, *, as_json: bool) -> None:
    if as_json:
        write_json(report.as_json())
        return
    if not report.files:
        say(f"Nothing to rewind: the files of session {report.session_id} are as they were.")
    verbs = _DRY if report.dry_run else _VERBS
    for file in report.files:
        extra = ""
        if file.problem:
            extra = f"  (cannot: {file.problem})"
        elif file.conflict:
            extra = "  (changed since" + (": overwritten)" if not report.dry_run else ")")
        print(f"{verbs[file.action]} {safe(file.path)}{safe(extra)}")
    for path in report.skipped:
        print(f"Skipped {safe(path)} (its kept content is missing or damaged)")
    _bash_note(report.bash_calls, "undone")
