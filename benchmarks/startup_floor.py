"""The least a command on Amplifier's stack can do, for ``startup.py`` to measure.

Two programs, chosen with an argument:

- ``echo PROMPT``: a typer command that takes the prompt and prints it. Any
  command of the stack that takes an argument pays this: typer parses the
  value through a pydantic adapter, which loads pydantic's validation
  machinery.
- ``store PROMPT``: the same command, which then runs an anyio event loop
  that appends the prompt to a file as one JSON line, fsyncs it, and prints
  the answer. The least a durable ``amplifier run`` must do: parse, run the
  event loop, make one record durable.

Both print ``You asked: PROMPT``. ``store`` writes under ``$AMPLIFIER_HOME``.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import anyio
import orjson
import typer


class Mode(StrEnum):
    echo = "echo"
    store = "store"


def floor(
    mode: Mode,
    prompt: str,
    model: Annotated[str | None, typer.Option(help="Unused: one option, as a command has.")] = None,
) -> None:
    if mode is Mode.store:
        anyio.run(store, prompt)
    print(f"You asked: {prompt}")


async def store(prompt: str) -> None:
    home = os.environ["AMPLIFIER_HOME"]
    os.makedirs(home, exist_ok=True)
    fd = os.open(os.path.join(home, "floor.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, orjson.dumps({"prompt": prompt}) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


if __name__ == "__main__":
    typer.run(floor)
