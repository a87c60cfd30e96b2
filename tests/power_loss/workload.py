"""The workload whose file operations the power-loss test records (``tests/test_power_loss.py``).

Usage: python workload.py BASE ACKS BACKEND

Everything it stores is under ``BASE/store/home`` (``$AMPLIFIER_HOME``, made
by the first Runtime); its projects are ``BASE/alpha`` and ``BASE/beta``,
which the test makes first. Through the public API, with durability
``fsync`` and the offline provider, it runs Runtimes one after the other:

1. ``alpha``: a session that delegates to two children at once, one of which
   delegates again, then a turn with a large prompt (19 KB), then closes;
2. ``alpha``: resumes that session for a turn that delegates, opens a second
   session (named and tagged) that delegates, lists the sessions (the index
   refreshes), and closes both;
3. ``beta`` (a second project): a session of one turn;
4. ``beta``: a session whose files the Runtime's writer process writes: the
   Runtime starts it at once, and the session's turn waits until it has
   written (so its system calls are in the trace, in a process of their own);
5. ``alpha``: renames and tags the first session (metadata through the journal).

After every call that acknowledges something it appends one JSON line to
ACKS, with ``os.write`` (one system call, so the trace shows where in the
sequence of file operations the acknowledgement came):

    {"ack": "open", "session": ID}                    resume returned (open_session
                                                      acknowledges nothing: a new
                                                      session is durable with its
                                                      first answer)
    {"ack": "ask", "session": ID, "turn": N, "prompt": P, "response": R}
    {"ack": "close", "session": ID}
    {"ack": "label", "session": ID, "name": NAME, "tags": [...]}

Each prompt carries a word found nowhere else (``WORDS``), so that a search
after a crash can be checked against the transcripts on disk.

To extend it (tool calls that write files, file history), add a step to
``STEPS``: a coroutine taking the ``Workload``, acknowledging what it was
told is durable. Whatever it writes under BASE is recorded and appears in
the crash states like the rest: the store's files under ``HOME``, a tool's
files in the projects (``model.apply(...).tree()`` holds both, so a check
can hold what a tool wrote against the file history the store kept; the
test writes only ``HOME`` into each state's folder today).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import orjson

import amplifier
from amplifier.persistence import _actor, _writer

WORDS = ("quokka", "narwhal", "axolotl", "pangolin", "okapi", "tapir", "dugong")
"""One unusual word per prompt: each must be found by search exactly where it is stored."""

LARGE_PROMPT_BYTES = 19 * 1024
HOME = "store/home"
"""Where the workload's ``$AMPLIFIER_HOME`` is, relative to BASE."""


class Workload:
    """Where the workload writes, and the channel its acknowledgements go out on."""

    def __init__(self, base: Path, acks: Path) -> None:
        self.base = base
        self.home = base / HOME
        self.alpha = base / "alpha"
        self.beta = base / "beta"
        self._acks = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.first = ""
        """The session of step 1, resumed and relabelled later."""

    def ack(self, kind: str, **fields: Any) -> None:
        os.write(self._acks, orjson.dumps({"ack": kind, **fields}) + b"\n")

    def runtime(self, project: Path) -> Any:
        return amplifier.open_runtime(home=self.home, cwd=project, durability="fsync")

    async def ask(self, session: amplifier.Session, prompt: str) -> None:
        reply = await session.ask(prompt)
        self.ack("ask", session=session.id, turn=reply.turn, prompt=prompt, response=reply.text)


async def first_session(work: Workload) -> None:
    async with work.runtime(work.alpha) as rt:
        session = await rt.open_session()
        work.first = session.id
        await work.ask(
            session,
            f"/delegate explorer: /tool list_dir {{}} {WORDS[0]}\n"
            f"/delegate default: /delegate explorer: look for {WORDS[1]}",
        )
        filler = "".join(f"line {n}: the {WORDS[2]} keeps its notes\n" for n in range(1000))
        await work.ask(session, filler[:LARGE_PROMPT_BYTES])
        await session.close()
        work.ack("close", session=session.id)


async def resume_and_second_session(work: Workload) -> None:
    async with work.runtime(work.alpha) as rt:
        resumed = await rt.resume(work.first)
        work.ack("open", session=resumed.id)
        await work.ask(resumed, f"/delegate reviewer: check the {WORDS[3]}")
        second = await rt.open_session(name="second", tags=["draft"])
        await work.ask(
            second, f'/delegate explorer: /tool read_file {{"path": "notes.txt"}} {WORDS[4]}'
        )
        await rt.sessions()
        await second.close()
        work.ack("close", session=second.id)
        await resumed.close()
        work.ack("close", session=resumed.id)


async def second_project(work: Workload) -> None:
    async with work.runtime(work.beta) as rt:
        session = await rt.open_session()
        await work.ask(session, f"a question about the {WORDS[5]}")
        await session.close()
        work.ack("close", session=session.id)


async def rounds_cut_short(work: Workload) -> None:
    """Rounds of writing behind that stop at their first barrier (their time is up at once,
    as beside a loop that never idles): the rest of each goes first in the next, none of
    them moves the journal's checkpoint, and the writer they start takes over."""
    saved = _actor.WRITE_ROUND_SECONDS
    _actor.WRITE_ROUND_SECONDS = 0.0
    try:
        async with work.runtime(work.beta) as rt:
            session = await rt.open_session(name="cut short")
            await work.ask(session, "/delegate explorer: one\n/delegate reviewer: two")
            await work.ask(session, "/delegate explorer: three")
            await session.close()
            work.ack("close", session=session.id)
    finally:
        _actor.WRITE_ROUND_SECONDS = saved


def _writer_has_written() -> bool:
    """A writer process of this one holds the session index open: it has written a round."""
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if any(
                    os.readlink(fd).endswith("index.sqlite3")
                    for fd in Path(f"/proc/{child}/fd").iterdir()
                ):
                    return True
    return False


async def through_the_writer(work: Workload) -> None:
    """A Runtime whose session files its writer process writes (``persistence/_writer.py``):
    it starts one after a few rounds of writing behind; here from the first, and the turn
    that is recorded waits until the writer has written."""
    _writer.START_AFTER = 1
    async with work.runtime(work.beta) as rt:
        session = await rt.open_session(name="written behind")
        with anyio.fail_after(60):
            while not _writer_has_written():
                await rt.tag(session.id, add=["waiting"])  # a record: a round to write
                await anyio.sleep(0.05)
        await work.ask(session, "/delegate explorer: look again")
        await session.close()
        work.ack("close", session=session.id)


async def relabel(work: Workload) -> None:
    async with work.runtime(work.alpha) as rt:
        meta = await rt.rename(work.first, f"the {WORDS[6]} session")
        meta = await rt.tag(work.first, add=["kept"])
        work.ack("label", session=work.first, name=meta.name, tags=list(meta.tags))


STEPS: tuple[Callable[[Workload], Awaitable[None]], ...] = (
    first_session,
    resume_and_second_session,
    second_project,
    rounds_cut_short,
    through_the_writer,
    relabel,
)


async def main(work: Workload) -> None:
    for step in STEPS:
        await step(work)


if __name__ == "__main__":
    base, acks, backend = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    anyio.run(main, Workload(base, acks), backend=backend)
