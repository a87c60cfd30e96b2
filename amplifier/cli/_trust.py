"""``amplifier trust``, and the question a command that runs agents asks at a terminal when
the project's own configuration is not trusted (``amplifier.agents._trust``).

Rule 1: the question comes before the Runtime opens, only at a terminal (stdin and
        stderr, no --json), and only if the project has such files the home's
        record does not trust as they are. It shows each file, and what the
        project's mcp.json would run. Only ``y`` trusts; Enter, ``n``, Ctrl-D
        leave the files out this time (the Runtime says so), and ask again the
        next time. Ctrl-C ends the command, as while it opens.
Rule 2: without a terminal nothing is asked: the files are left out, with one
        warning naming ``amplifier trust``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import anyio
import typer

from ._app import JsonFlag, app
from ._approval import SCREEN, at_a_terminal, drop_typed_ahead, read_line
from ._render import safe, write_json
from ._running import Leave, execute, say


async def settle_trust(interrupts: AsyncIterator[int], *, as_json: bool) -> None:
    """Ask at a terminal whether to trust what the record does not (Rule 1); a signal
    while it asks ends the command (``Leave``, 128 + its number)."""
    if not at_a_terminal(as_json):
        return
    signum: int | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal signum
            async for received in interrupts:
                signum = received
                tg.cancel_scope.cancel()
                return

        tg.start_soon(watch)
        await _ask(as_json)
        tg.cancel_scope.cancel()
    if signum is not None:
        say("\nInterrupted before the session opened; nothing ran.")
        raise Leave(128 + signum)


async def _ask(as_json: bool) -> None:
    from amplifier.agents._trust import ProjectTrust, trust_project
    from amplifier.persistence import resolve_home_and_cwd

    home, cwd = resolve_home_and_cwd(None, None)
    trust = await anyio.to_thread.run_sync(lambda: ProjectTrust.of(cwd, home=home))
    refused = await anyio.to_thread.run_sync(trust.refused)
    if not refused:
        return
    with SCREEN.paused():
        _show(cwd, refused, changed=trust.recorded)
        if not await _yes():
            return
    trusted = await anyio.to_thread.run_sync(lambda: trust_project(cwd, home=home))
    say(f"Trusted {len(trusted)} file(s) of {cwd} ('amplifier trust --revoke' takes it back).")


def _show(project: Path, files: list[Path], *, changed: bool) -> None:
    head = (
        "This project's own Amplifier configuration changed since you trusted it"
        if changed
        else "This project has its own Amplifier configuration"
    )
    lines = [
        "",
        f"{head} ({project}).",
        "It can start programs, grant tools permissions and choose where prompts and API "
        "keys go:",
    ]
    for path in files:
        lines.append(f"    {path.relative_to(project)}")
        lines += [f"        {server}" for server in _servers(path)]
    sys.stderr.write("\n".join(safe(line) for line in lines) + "\n")
    sys.stderr.flush()


def _servers(path: Path) -> list[str]:
    """What an mcp.json's servers run or reach, as written (no variable replaced)."""
    if path.name != "mcp.json":
        return []
    from amplifier.agents._config_text import read_config_text
    from amplifier.agents._mcp_config import server_config

    try:
        entries = json.loads(read_config_text(path)).get("mcpServers", {})
        return [
            f"{name}: {server_config(name, entry, source=str(path)).target or '(nothing)'}"
            for name, entry in entries.items()
        ]
    except (OSError, ValueError, AttributeError):
        return []


async def _yes() -> bool:
    drop_typed_ahead()
    while True:
        sys.stderr.write("Trust it? Only if you trust whoever wrote it. [y]es, [n]o: ")
        sys.stderr.flush()
        line = await read_line()
        answer = line.strip().lower()
        if line == "":
            sys.stderr.write("\n")
            return False
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no", ""):
            return False
        sys.stderr.write("Type y or n.\n")


@app.command()
def trust(
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Take the trust back: leave the files out again.")
    ] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Trust this project's own configuration (.amplifier/mcp.json and profiles) as it is now.

    Until then, and after any of those files changes, they are left out: they
    can start programs, grant tools permissions and choose where prompts go.
    """
    from amplifier.agents._trust import revoke_trust, trust_project
    from amplifier.persistence import resolve_home_and_cwd

    async def main(interrupts: AsyncIterator[int]) -> None:
        home, cwd = resolve_home_and_cwd(None, None)
        if revoke:
            had = await anyio.to_thread.run_sync(lambda: revoke_trust(cwd, home=home))
            files: list[Path] = []
        else:
            files = await anyio.to_thread.run_sync(lambda: trust_project(cwd, home=home))
        if json_flag:
            write_json(
                {
                    "project": str(cwd),
                    "trusted": not revoke,
                    "files": [str(path.relative_to(cwd)) for path in files],
                }
            )
        elif revoke:
            print(safe(f"No longer trusted: {cwd}" if had else f"Was not trusted: {cwd}"))
        elif files:
            print(safe(f"Trusted, as they are now, in {cwd}:"))
            for path in files:
                print(safe(f"    {path.relative_to(cwd)}"))
        else:
            print(
                safe(
                    f"Trusted {cwd}; it has no .amplifier/mcp.json or profiles yet (files added "
                    "later are trusted once this is run again)."
                )
            )

    execute(main, as_json=json_flag)
