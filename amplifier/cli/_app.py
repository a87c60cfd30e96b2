"""The typer application. Presentation only: every behaviour lives in the Python API."""

from __future__ import annotations

import sys
from typing import Annotated

import anyio
import typer

from amplifier import AmplifierError, UsageError, open_runtime
from amplifier.persistence import Durability

app = typer.Typer(
    name="amplifier",
    help="Run and manage AI-agent sessions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Run and manage AI-agent sessions."""


@app.command()
def run(
    prompt: Annotated[str | None, typer.Argument(help="The prompt (default: stdin).")] = None,
    durability: Annotated[
        str, typer.Option(help="fsync (default), flush or none.", metavar="MODE")
    ] = "fsync",
) -> None:
    """Run one turn in a new session and print the answer and the session id."""
    text = prompt if prompt is not None else sys.stdin.read()
    if not text.strip():
        _fail("no prompt given (pass it as an argument or on stdin)", code=2)
    if durability not in ("fsync", "flush", "none"):
        _fail(f"unknown durability {durability!r}; use fsync, flush or none", code=2)
    mode: Durability = durability  # type: ignore[assignment]

    async def one_turn() -> None:
        async with open_runtime(durability=mode) as rt, rt.open_session() as session:
            reply = await session.ask(text)
            typer.echo(reply.text)
            typer.echo(f"session: {session.id}", err=True)

    try:
        anyio.run(one_turn)
    except (AmplifierError, UsageError) as exc:
        _fail(str(exc), code=2 if isinstance(exc, UsageError) else 1)


def _fail(message: str, *, code: int) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    app()
