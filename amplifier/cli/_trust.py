"""``amplifier trust``, and the question a command that runs agents asks at a terminal when
the project's own configuration is not trusted (``amplifier.agents._trust``).

Rule 1: the question comes before the Runtime opens, only at a terminal (stdin and
        stderr, no --json), and only if the project has such files the home's
        record does not trust as they are. It shows each such file whole (as
        written, every character that does not print as itself escaped), and
        what it showed is what is trusted. Only ``y`` trusts; Enter, ``n``, Ctrl-D
        leave the files out this time (the Runtime says so), and ask again the
        next time. Ctrl-C ends the command, as while it opens.
Rule 2: without a terminal nothing is asked: the files are left out, with one
        warning naming ``amplifier trust``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import anyio
import typer

from ._app import JsonFlag, app
from ._approval import SCREEN, at_a_terminal, drop_typed_ahead, read_line
from ._render import write_json
from ._running import Leave, execute, say, unless_interrupted


async def settle_trust(interrupts: AsyncIterator[int], *, as_json: bool) -> None:
    """Ask at a terminal whether to trust what the record does not (Rule 1); a signal
    while it asks ends the command (``Leave``, 128 + its number)."""
    if not at_a_terminal(as_json):
        return
    signum = await unless_interrupted(interrupts, _ask)
    if signum is not None:
        say("\nInterrupted before the session opened; nothing ran.")
        raise Leave(128 + signum)


async def _ask() -> None:
    from amplifier.agents._trust import ProjectTrust, configuration, trust_project
    from amplifier.persistence import resolve_home_and_cwd

    home, cwd = resolve_home_and_cwd(None, None)
    trust = await anyio.to_thread.run_sync(lambda: ProjectTrust.of(cwd, home=home))
    files = await anyio.to_thread.run_sync(configuration, cwd)
    refused = [(path, text) for path, text in files if not trust.admits(path, text)]
    if not refused:
        return
    with SCREEN.paused():
        _show(cwd, refused, changed=trust.recorded)
        if not await _yes():
            return
    # The texts shown are the ones trusted (``_trust`` Rule 5), with those trusted before.
    await anyio.to_thread.run_sync(lambda: trust_project(cwd, home=home, files=files))
    say(f"Trusted {len(refused)} file(s) of {cwd} ('amplifier trust --revoke' takes it back).")


SHOWN_LINES = 200
"""Lines of one file the question shows; it says how many more there are."""
_WIDTH = 150


def _show(project: Path, files: list[tuple[Path, str]], *, changed: bool) -> None:
    head = (
        "This project's own Amplifier configuration changed since you trusted it"
        if changed
        else "This project has its own Amplifier configuration"
    )
    lines = [
        "",
        f"{head} ({exactly(str(project))}).",
        "It can start programs, grant tools permissions and choose where prompts and API "
        "keys go. Read it before you trust it:",
    ]
    for path, text in files:
        lines.append(f"  {exactly(str(path.relative_to(project)))}")
        rows = text.removesuffix("\n").split("\n")
        for row in rows[:SHOWN_LINES]:
            shown = exactly(row.removesuffix("\r")) or " "  # a Windows line end moves nothing
            lines += [f"  | {shown[i : i + _WIDTH]}" for i in range(0, len(shown), _WIDTH)]
        if len(rows) > SHOWN_LINES:
            lines.append(f"  [... {len(rows) - SHOWN_LINES} more lines not shown: read the file]")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def _named(path: Path) -> str:
    """A path as text that JSON can carry: a name that is not UTF-8 is shown escaped."""
    from amplifier.persistence import holds_utf8

    name = str(path)
    return name if holds_utf8(name) else exactly(name)


def exactly(text: str) -> str:
    """``text`` as one line of what it holds: every character that does not print as itself
    (line breaks, tabs, escape sequences, bidirectional and zero-width marks) escaped."""
    return "".join(
        c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
        for c in text
    )


async def _yes() -> bool:
    drop_typed_ahead()
    while True:
        sys.stderr.write(
            "Trust these files as shown? Only if you trust whoever wrote them. [y]es, [n]o: "
        )
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
        names = [_named(path.relative_to(cwd)) for path in files]
        if json_flag:
            write_json({"project": _named(cwd), "trusted": not revoke, "files": names})
        elif revoke:
            print(
                f"No longer trusted: {exactly(str(cwd))}"
                if had
                else f"Was not trusted: {exactly(str(cwd))}"
            )
        elif files:
            print(f"Trusted, as they are now, in {exactly(str(cwd))}:")
            for name in names:
                print(f"    {exactly(name)}")
        else:
            print(
                f"Trusted {exactly(str(cwd))}; it has no .amplifier/mcp.json or profiles yet "
                "(files added later are trusted once this is run again)."
            )

    execute(main, as_json=json_flag)
