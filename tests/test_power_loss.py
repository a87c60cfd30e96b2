"""Power loss at any instant, under two file-system models: nothing acknowledged is lost.

In the style of ALICE (Pillai et al., OSDI 2014). A workload with
delegations (several Runtimes in turn, a resume, a second project, a
19 KB prompt; ``power_loss/workload.py``) runs once under ``strace``, which
records every file operation it makes under its folder, SQLite's included
(``power_loss/trace.py``). From that trace the test builds the states a
power cut could leave (``power_loss/model.py``): under ext4
``data=ordered`` and under ALICE's stricter POSIX model; for a crash point,
every operation before it, only what syncs forced, a random legal choice
of the rest, or all but one. Each state is written to a fresh home and
recovered through the API (and, for a sample, first through the command
line), then checked (``power_loss/checks.py``): every record the run had
made durable and every acknowledgement it had received is there; files
parse, ``seq`` increases, parents and children name each other in causal
order; listing shows exactly the folders on disk, search exactly what they
hold; every session shows and resumes; nothing is left behind.

CI checks ``CI_STATES`` distinct states per model (half on each backend,
one state through the command line); ``--trials N`` checks N per model
(every prefix once a quarter of N reaches the number of crash points). The
seed is printed with any failure; ``AMPLIFIER_POWER_SEED=<seed>`` chooses
the same crash points again (the trace itself varies a little with timing).
A failing state's folder keeps the home as recovered (``home``), as the
crash left it (``crashed``), and the trace and state (``state.pickle``).
To extend the workload (tools that write files, file history), see
``power_loss/workload.py``.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import BACKENDS
from .power_loss.checks import Durable, recover_and_check
from .power_loss.model import (
    KINDS,
    MODELS,
    CrashState,
    ModelName,
    Persistence,
    apply,
    fingerprint,
    materialise,
)
from .power_loss.ops import Link, Rename, Sync, Trace
from .power_loss.trace import record, strace_available
from .power_loss.workload import HOME
from .store_checks import kinds_of

pytestmark = pytest.mark.xdist_group("power_loss")

CI_STATES = 16
"""Distinct crash states per model in CI (both backends together)."""
CLI_EVERY = 50
"""Every N-th state is first recovered through the command line (see ``through_cli``)."""
SEED = int(os.environ.get("AMPLIFIER_POWER_SEED", "0")) or random.Random().randrange(1, 10**9)
"""Fixes the crash points chosen (the trace itself varies a little with timing from run to run)."""
WORKLOAD = Path(__file__).with_name("power_loss") / "workload.py"
SHOWN = 5


@dataclass
class Recorded:
    trace: Trace
    base: Path
    projects: list[Path]
    durable: Durable


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """The workload, run once under strace."""
    why = strace_available()
    if why is not None:
        pytest.skip(why)
    root = Path(os.path.realpath(tmp_path_factory.mktemp("power-loss")))
    base = root / "base"
    projects = [base / "alpha", base / "beta"]
    for project in projects:
        project.mkdir(parents=True)
    (projects[0] / "notes.txt").write_text("the okapi was here\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("AMPLIFIER_HOME", None)
    trace = record(
        [sys.executable, str(WORKLOAD), str(base), str(root / "acks.jsonl"), "asyncio"],
        base=base,
        acks=root / "acks.jsonl",
        log=root / "strace.log",
        env=env,
    )
    (root / "strace.log").unlink()
    shutil.rmtree(base / HOME)
    return Recorded(trace, base, projects, Durable(trace))


def plan(persistence: Persistence, count: int, seed: int) -> list[CrashState]:
    """``count`` distinct crash states, a quarter of each kind, in pairs of one kind.

    ``prefix`` takes every crash point once ``count`` allows, else random
    ones; ``lost`` first the points just after an acknowledgement (what the
    workload was told is durable, with nothing else synced); the others
    random points, half of them just after something became durable or
    visible (a sync, a rename, a new entry). States that leave the same
    files as an earlier one are skipped.
    """
    trace = persistence.trace
    rng = random.Random(f"{seed}-{persistence.model}")
    points = len(trace.ops) + 1
    edges = [i + 1 for i, op in enumerate(trace.ops) if isinstance(op, Sync | Rename | Link)]
    acks = sorted({ack.after for ack in trace.acks}, key=lambda _: rng.random())
    quota = -(-count // len(KINDS))
    prefixes = list(range(points)) if quota >= points else rng.sample(range(points), quota)
    seen: set[str] = set()
    by_kind: dict[str, list[CrashState]] = {}

    def point() -> int:
        return rng.choice(edges) if rng.random() < 0.5 else rng.randrange(points)

    def make(kind: str) -> CrashState | None:
        if kind == "prefix":
            return persistence.prefix(prefixes.pop()) if prefixes else None
        if kind == "lost":
            return persistence.lost(acks.pop() if acks else point())
        if kind == "reorder":
            return persistence.reorder(point(), rng)
        at = point()
        candidates = persistence.candidates(at)
        return persistence.omit(at, rng.choice(candidates)) if candidates else None

    for kind in KINDS:
        found = by_kind[kind] = []
        misses = 0
        while len(found) < quota and misses < 10 * quota:
            state = make(kind)
            key = fingerprint(apply(trace, state).tree()) if state is not None else None
            if state is None or key is None or key in seen:
                misses += 1
                continue
            seen.add(key)
            found.append(state)
    # Interleaved in pairs of one kind, so that each backend gets every kind.
    states: list[CrashState] = []
    for start in range(0, quota, 2):
        for kind in KINDS:
            states += by_kind[kind][start : start + 2]
    return states[:count]


@pytest.mark.timeout(0)  # thousands of states take as long as they take; each is bounded below
@pytest.mark.parametrize("model", MODELS)
async def test_power_loss_in_any_crash_state_keeps_every_acknowledged_record(
    recorded: Recorded, model: ModelName, anyio_backend: str, tmp_path: Path, trials: int | None
) -> None:
    """A power cut at any instant, on ext4 or any POSIX file system, loses nothing acknowledged;
    every session then lists, shows, searches and resumes, and nothing is left behind."""
    count = trials if trials is not None else CI_STATES
    persistence = Persistence(recorded.trace, model)
    states = plan(persistence, count, SEED)
    share = 0 if anyio_backend == "asyncio" else 1
    started = time.monotonic()
    failures: list[tuple[int, CrashState, list[str]]] = []
    checked: Counter[str] = Counter()
    for number, state in enumerate(states):
        if number % 2 != share:
            continue
        home = tmp_path / f"state-{number}" / "home"
        tree = apply(recorded.trace, state).tree()
        materialise(tree, home, under=HOME)
        expected = recorded.durable.at(state.point)
        # A sample through the command line: in CI one state, of each model in turn.
        through_cli = number % CLI_EVERY == (MODELS.index(model) + SEED) % 2 * CLI_EVERY // 2
        problems = await recover_and_check(
            home,
            recorded.projects,
            expected,
            backend=BACKENDS[MODELS.index(model)],  # the command line's: one each
            through_cli=through_cli,
        )
        checked[state.kind] += 1
        checked["cli"] += through_cli
        if problems:
            failures.append((number, state, problems))
            # Kept to look at: the state as the crash left it, and how it was made.
            materialise(tree, home.parent / "crashed", under=HOME)
            (home.parent / "state.pickle").write_bytes(pickle.dumps((recorded.trace, state)))
        else:
            shutil.rmtree(home.parent)
    kinds = Counter(kind for _, _, problems in failures for kind in kinds_of(problems))
    summary = (
        f"{model}, {anyio_backend}: {sum(checked[k] for k in KINDS)} of {len(states)} distinct "
        f"states ({', '.join(f'{checked[k]} {k}' for k in KINDS)}; {checked['cli']} through the "
        f"command line first) from {len(recorded.trace.ops)} operations, seed {SEED}, "
        f"{time.monotonic() - started:.1f} s; failed: {len(failures)}"
        + "".join(f"\n  {n:4d} {kind}" for kind, n in kinds.most_common())
    )
    print(f"\n{summary}")
    # The states must have exercised what they claim to test.
    assert len(recorded.trace.acks) >= 10, summary
    assert recorded.durable.since, summary
    assert all(checked[kind] for kind in KINDS), summary
    assert any(len(state.persisted) < state.point for state in states), summary
    assert not failures, f"{summary}\n\n" + "\n\n".join(
        f"state {number}: {state.describe()}, in {tmp_path / f'state-{number}'}\n"
        + "\n".join(f"  - {p}" for p in problems[:12])
        for number, state, problems in failures[:SHOWN]
    )
