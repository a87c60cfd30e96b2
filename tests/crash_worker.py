"""A process that writes sessions with delegations until it is killed (see test_crash_kill.py).

Usage: python -u crash_worker.py HOME PROJECT BACKEND [DURABILITY] [SEED]

It reports on stdout, one line each, flushed at once, and only AFTER the
awaited call that made the thing durable returned:

    ready                      the runtime is open
    session <id>               the session's metadata and session:start are durable
                               (a root: once opened; a child: with its first record)
    ack <id> <seq>             the record <seq> of session <id> is durable
    delegated <parent> <child> the parent's delegate:end for that child is durable
                               (with the parent's next awaited record)

Root prompts fan out to several children concurrently; some children
delegate again (depth 2). Several root sessions run at once, so the
persistence actor commits batches that mix parents and children.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import anyio

import amplifier

ROOT_LOOPS = 2
"""Root sessions running at once."""
TURNS_PER_SESSION = 2


def report(*fields: object) -> None:
    sys.stdout.write(" ".join(map(str, fields)) + "\n")
    sys.stdout.flush()


class CrashHandler:
    """Answers prompts by emitting notes, recording messages and delegating.

    The first word of the prompt says what to do: ``fan`` (a root turn:
    delegate to several children, some of which ``nest``), ``nest`` (delegate
    again to leaves), ``leaf`` (no delegation).
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def prepare_session(
        self, agent: str | None, *, profile: str | None = None
    ) -> amplifier.SessionSetup:
        return amplifier.SessionSetup(agent=agent or "default")

    async def on_resume(self, session: amplifier.SessionContext) -> None:
        return None

    async def run_turn(self, turn: amplifier.Turn) -> str:
        session_id = turn.session.id
        kind = turn.prompt.split(" ", 1)[0]
        seq = await turn.emit("note", {"phase": "begin", "kind": kind, "turn": turn.number})
        # A session's creation rides on the records that follow it: durable with this one.
        report("session", session_id)
        report("ack", session_id, seq)
        seq = await turn.record({"role": "assistant", "content": f"working on {turn.prompt}"})
        report("ack", session_id, seq)
        if kind in ("fan", "nest"):
            requests = self._children(kind)
            results = await turn.delegate_all(requests)
            seq = await turn.emit(
                "note", {"phase": "children", "statuses": [r.status for r in results]}
            )
            # The delegate:ends ride on the parent's next durable record: this one.
            for result in results:
                report("delegated", session_id, result.session_id)
            report("ack", session_id, seq)
        text = f"done: {turn.prompt}"
        seq = await turn.record({"role": "assistant", "content": text})
        report("ack", session_id, seq)
        seq = await turn.emit("note", {"phase": "end"})
        report("ack", session_id, seq)
        return text

    def _children(self, kind: str) -> list[amplifier.Delegation]:
        count = self._rng.randint(2, 3)
        requests = []
        for index in range(count):
            nested = kind == "fan" and self._rng.random() < 0.5
            instruction = f"{'nest' if nested else 'leaf'} part {index}"
            agent = self._rng.choice(("explorer", "reviewer"))
            requests.append(amplifier.Delegation(agent=agent, instruction=instruction))
        return requests


async def root_loop(runtime: amplifier.Runtime, name: int) -> None:
    number = 0
    while True:
        async with runtime.open_session(agent="default") as session:
            # Its creation rides on its first turn's records (reported there).
            for _ in range(TURNS_PER_SESSION):
                number += 1
                await session.ask(f"fan loop {name} prompt {number}")


async def main(home: Path, project: Path, durability: amplifier.Durability, seed: int) -> None:
    async with amplifier.open_runtime(
        home=home, cwd=project, durability=durability, handler=CrashHandler(seed)
    ) as runtime:
        report("ready")
        async with anyio.create_task_group() as tg:
            for name in range(ROOT_LOOPS):
                tg.start_soon(root_loop, runtime, name)


if __name__ == "__main__":
    home_arg, project_arg, backend_arg = sys.argv[1:4]
    durability_arg = sys.argv[4] if len(sys.argv) > 4 else "fsync"
    seed_arg = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    if durability_arg not in ("fsync", "flush", "none"):
        raise SystemExit(f"unknown durability {durability_arg!r}")
    anyio.run(
        main,
        Path(home_arg),
        Path(project_arg),
        durability_arg,
        seed_arg,
        backend=backend_arg,
    )
