"""SIGKILL at random instants: the store keeps every acknowledged record, consistently.

A worker process (``crash_worker.py``) writes root sessions that delegate to
children concurrently, some nested, and reports every record once its
write was acknowledged. The test kills it with SIGKILL at a random instant,
then checks the files it left: before recovery (raw lines), and after a new
Runtime replayed the dead journal and every session was resumed (then
nothing may be left in a project's ``.staging`` or as a temporary file).

A SIGKILL lands inside a write(2) too rarely to rely on (the records are
small: none in 200 measured trials), so one trial in three also appends a
record cut off mid-line to one of the files, as a kill mid-write would leave
it: that is the torn last line that recovery must set aside.

Each trial prints its seed in failure messages; rerun one with
``AMPLIFIER_CRASH_SEED=<seed> AMPLIFIER_CRASH_TRIALS=1`` (the seed fixes the
kill delay, the workload and the torn append; the instant the kill lands in
the worker's progress still varies from run to run). More trials:
``--trials N`` (per backend), or ``AMPLIFIER_CRASH_TRIALS=N``.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import anyio
import orjson
import pytest

import amplifier
from amplifier.persistence import (
    iter_events,
    list_sessions,
    load_transcript,
    project_slug,
    read_metadata,
)
from amplifier.persistence._ownership import JOURNAL_SUFFIX, runtime_alive

from .helpers import until
from .raw_store import StoredSession, read_raw
from .store_checks import check_leftovers

WORKER = Path(__file__).with_name("crash_worker.py")
TRIALS = int(os.environ.get("AMPLIFIER_CRASH_TRIALS", "15"))
"""Trials per backend in CI (both backends together: 30); ``--trials N`` runs more."""
FIRST_SEED = int(os.environ.get("AMPLIFIER_CRASH_SEED", "0")) or None
MAX_KILL_DELAY = 0.3
"""Seconds after ``ready`` within which the worker is killed."""
TEAR_FRACTION = 1 / 3
"""Trials that also get a torn append (see the module docstring)."""
READY_TIMEOUT = 20.0
TRIAL_TIMEOUT = 60.0
"""Seconds for one trial: run, kill, recover and check."""


@dataclass
class Trial:
    """One worker run, killed: where it wrote and what it reported as acknowledged."""

    seed: int
    backend: str
    home: Path
    project: Path
    delay: float
    torn: Path | None
    lines: list[str]
    returncode: int | None
    stderr: str

    def reported(self, kind: str) -> list[list[str]]:
        return [line.split()[1:] for line in self.lines if line.split()[:1] == [kind]]

    def describe(self) -> str:
        return (
            f"backend={self.backend} seed={self.seed} kill after {self.delay * 1000:.0f} ms, "
            f"torn append to {self.torn}, home={self.home}"
        )


# -- running the worker ------------------------------------------------------------------


async def run_trial(root: Path, backend: str, seed: int) -> Trial:
    """Start the worker, kill it with SIGKILL a random instant after ``ready``."""
    rng = random.Random(seed)
    delay = rng.uniform(0.0, MAX_KILL_DELAY)
    tear = rng.random() < TEAR_FRACTION
    home = root / f"trial-{seed}" / "home"
    project = root / f"trial-{seed}" / "project"
    project.mkdir(parents=True)
    stderr_path = root / f"trial-{seed}" / "stderr.txt"
    output = bytearray()
    ready = anyio.Event()
    command = [
        sys.executable,
        "-u",
        str(WORKER),
        str(home),
        str(project),
        backend,
        "fsync",
        str(seed),
    ]
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(command, stdout=subprocess.PIPE, stderr=stderr)
    async with process:
        assert process.stdout is not None
        stdout = process.stdout

        async def drain() -> None:
            # Read all the time: a full pipe would stall the worker.
            async for chunk in stdout:
                output.extend(chunk)
                if b"ready\n" in output:
                    ready.set()
            ready.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain)
                with anyio.fail_after(READY_TIMEOUT):
                    await ready.wait()
                await anyio.sleep(delay)
                if process.returncode is None:
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        finally:
            if process.returncode is None:
                os.kill(process.pid, signal.SIGKILL)
                with anyio.CancelScope(shield=True):
                    await process.wait()
    # A writer process of the worker finishes the round it holds after the worker died,
    # and keeps the journal locked meanwhile: the files are what the crash left once it
    # is done (read before, they may be caught mid-round, one file older than another),
    # and a line cut off mid-write is the last one written.
    await until_nothing_writes(home)
    torn = await anyio.to_thread.run_sync(tear_a_file, home, rng) if tear else None
    text = output.decode()
    # Only complete lines were reported; a line cut off by the kill says nothing.
    complete = text[: text.rfind("\n") + 1].splitlines()
    return Trial(
        seed=seed,
        backend=backend,
        home=home,
        project=project,
        delay=delay,
        torn=torn,
        lines=complete,
        returncode=process.returncode,
        stderr=stderr_path.read_text(errors="replace"),
    )


async def until_nothing_writes(home: Path) -> None:
    """Wait until no process holds the lock of any journal in ``home`` (10 s at most)."""
    names = [path.name.removesuffix(JOURNAL_SUFFIX) for path in home.glob("journal/*.journal")]
    await until(lambda: not any(runtime_alive(home, name) for name in names))


def tear_a_file(home: Path, rng: random.Random) -> Path | None:
    """Append the first part of a record, without its newline, to one of the JSONL files."""
    candidates = sorted(home.glob("projects/*/sessions/*/*.jsonl"))
    if not candidates:
        return None
    path = rng.choice(candidates)
    record = orjson.dumps(
        {
            "version": 1,
            "seq": 10**9,
            "ts": "2026-11-24T10:30:00.123456Z",
            "role": "assistant",
            "content": "cut off " * 20,
        }
    )
    with path.open("ab") as file:
        file.write(record[: rng.randrange(1, len(record))])
    return path


# -- reading what is on disk ---------------------------------------------------------------


# -- the checks (each returns what is wrong, empty if nothing) --------------------------------


def check_lines_parse(sessions: dict[str, StoredSession]) -> list[str]:
    """Every complete line parses as a JSON object; metadata.json parses when present."""
    problems = []
    for stored in sessions.values():
        for name, content in stored.files.items():
            if content.bad_lines:
                problems.append(f"{stored.session_id}/{name}: lines {content.bad_lines} unparsable")
        if stored.metadata_problem and "missing" not in stored.metadata_problem:
            problems.append(f"{stored.session_id}: {stored.metadata_problem}")
    return problems


def check_seq_increasing(sessions: dict[str, StoredSession]) -> list[str]:
    problems = []
    for stored in sessions.values():
        for name, content in stored.files.items():
            seqs = [record.get("seq") for record in content.records]
            if not all(isinstance(s, int) for s in seqs):
                problems.append(f"{stored.session_id}/{name}: a record without an integer seq")
            elif any(b <= a for a, b in itertools.pairwise(seqs)):
                problems.append(f"{stored.session_id}/{name}: seq not increasing: {seqs}")
    return problems


def parent_of(stored: StoredSession, sessions: dict[str, StoredSession]) -> str | None:
    """The parent's id: from metadata, else from the id's parent span (metadata not written)."""
    if stored.metadata is not None:
        parent = stored.metadata.get("parent_id")
        return str(parent) if parent else None
    if "_" not in stored.session_id:
        return None
    span = stored.session_id.split("-")[0]
    return next((other for other in sessions if other.endswith(span)), None)


def check_causality(sessions: dict[str, StoredSession]) -> list[str]:
    """Parent and child records are ordered, and every child on disk is listed by its parent."""
    problems = []
    for stored in sessions.values():
        parent_id = parent_of(stored, sessions)
        if parent_id is None:
            continue
        parent = sessions.get(parent_id)
        if parent is None:
            problems.append(f"child {stored.session_id}: parent {parent_id} not on disk")
            continue
        listed = (parent.metadata or {}).get("children", [])
        if stored.session_id not in listed:
            problems.append(f"child {stored.session_id} is not listed in {parent_id}'s metadata")
        delegated = [
            e["seq"]
            for e in parent.events
            if e.get("event") == "delegate:start"
            and e.get("data", {}).get("child_id") == stored.session_id
        ]
        if not delegated:
            problems.append(f"child {stored.session_id} has no delegate:start in {parent_id}")
        starts = [e["seq"] for e in stored.events if e.get("event") == "session:start"]
        if starts and (not delegated or min(delegated) >= min(starts)):
            problems.append(
                f"child {stored.session_id} session:start seq {min(starts)} without an "
                f"earlier delegate:start in {parent_id} (found {delegated})"
            )
    for stored in sessions.values():
        for event in stored.events:
            if event.get("event") != "delegate:end":
                continue
            child_id = event.get("data", {}).get("child_id")
            child = sessions.get(child_id) if isinstance(child_id, str) else None
            ends = [
                e["seq"] for e in (child.events if child else []) if e.get("event") == "session:end"
            ]
            if not any(seq < event["seq"] for seq in ends):
                problems.append(
                    f"{stored.session_id} delegate:end (seq {event['seq']}) for {child_id} "
                    f"without an earlier session:end of the child (found {ends})"
                )
    return problems


def check_acknowledged(trial: Trial, sessions: dict[str, StoredSession]) -> list[str]:
    """Everything the worker reported as acknowledged is on disk."""
    problems = []
    for (session_id,) in trial.reported("session"):
        stored = sessions.get(session_id)
        if stored is None or stored.metadata is None:
            problems.append(f"acknowledged session {session_id} has no metadata on disk")
        elif not any(e.get("event") == "session:start" for e in stored.events):
            problems.append(f"acknowledged session {session_id} has no session:start")
    for session_id, seq in trial.reported("ack"):
        stored = sessions.get(session_id)
        seqs = (
            {r["seq"] for content in stored.files.values() for r in content.records}
            if stored
            else set()
        )
        if int(seq) not in seqs:
            problems.append(f"acknowledged record {session_id} seq {seq} is missing")
    for parent_id, child_id in trial.reported("delegated"):
        stored = sessions.get(parent_id)
        ends = [
            e
            for e in (stored.events if stored else [])
            if e.get("event") == "delegate:end" and e.get("data", {}).get("child_id") == child_id
        ]
        if not ends:
            problems.append(f"acknowledged delegate:end {parent_id} -> {child_id} is missing")
    return problems


def check_torn_tails_set_aside(
    before: dict[str, StoredSession], after: dict[str, StoredSession]
) -> list[str]:
    """After resume no file has a torn tail, and a side file holds exactly each old tail."""
    problems = []
    for session_id, stored in after.items():
        old = before.get(session_id)
        expected = sorted(
            content.torn_tail
            for content in (old.files.values() if old else [])
            if content.torn_tail
        )
        for name, content in stored.files.items():
            if content.torn_tail:
                problems.append(f"{session_id}/{name}: still has a torn tail after resume")
        side = sorted(stored.side_files.values())
        if side != expected:
            problems.append(
                f"{session_id}: torn tails {expected!r} but side files {stored.side_files!r}"
            )
    return problems


def check_public_readers(home: Path, project: str) -> list[str]:
    """The package's readers list every session and read it back without complaint."""
    problems = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for summary in list_sessions(home, project):
            location = summary.location
            try:
                metadata = read_metadata(location)
                events = list(iter_events(location))
                transcript = load_transcript(location)
            except Exception as exc:
                problems.append(f"{location.session_id}: {type(exc).__name__}: {exc}")
                continue
            if metadata.status != "completed":
                problems.append(f"{location.session_id}: status {metadata.status} after resume")
            if not events or events[-1].event != "session:end":
                problems.append(f"{location.session_id}: resume did not end with session:end")
            if metadata.message_count > len(transcript):
                problems.append(
                    f"{location.session_id}: metadata counts {metadata.message_count} "
                    f"messages, transcript has {len(transcript)}"
                )
    return problems


def check_journal_removed(home: Path) -> list[str]:
    folder = home / "journal"
    left = (
        sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        if folder.is_dir()
        else []
    )
    return [f"journal files left after recovery: {left}"] if left else []


# -- recovery ---------------------------------------------------------------------------------


async def recover_and_resume(trial: Trial) -> tuple[list[str], list[str]]:
    """Open a Runtime on the dead worker's home (replays its journal), resume every session.

    Returns the problems and the RecoveryWarning messages.
    """
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", amplifier.RecoveryWarning)
        async with amplifier.open_runtime(
            home=trial.home, cwd=trial.project, durability="flush"
        ) as runtime:
            rows = await runtime.sessions()
            for session_id in sorted(row.session_id for row in rows):
                try:
                    async with runtime.resume(session_id):
                        pass
                except amplifier.AmplifierError as exc:
                    problems.append(f"resume {session_id}: {type(exc).__name__}: {exc}")
    messages = [str(w.message) for w in caught if issubclass(w.category, amplifier.RecoveryWarning)]
    other = [w for w in caught if not issubclass(w.category, amplifier.RecoveryWarning)]
    problems.extend(f"unexpected warning: {w.category.__name__}: {w.message}" for w in other)
    return problems, messages


async def verify(trial: Trial) -> tuple[list[str], dict[str, StoredSession]]:
    """Every check of one killed trial; returns the problems and the sessions as recovered."""
    problems: list[str] = []
    if trial.returncode != -signal.SIGKILL:
        problems.append(f"worker was not killed but ended ({trial.returncode}): {trial.stderr}")
    before = await anyio.to_thread.run_sync(read_raw, trial.home)
    problems += check_lines_parse(before)
    problems += check_seq_increasing(before)
    problems += check_causality(before)

    resumed, recovery_messages = await recover_and_resume(trial)
    problems += resumed
    torn_before = any(c.torn_tail for s in before.values() for c in s.files.values())
    torn_warned = any("cut off by a crash" in m for m in recovery_messages)
    if torn_before != torn_warned:
        problems.append(f"torn tails {torn_before} but warnings said {recovery_messages}")

    after = await anyio.to_thread.run_sync(read_raw, trial.home)
    # Recovery may build sessions whose creation reached the journal but not the disk.
    if set(before) - set(after):
        problems.append(f"sessions lost by recovery: {sorted(set(before) - set(after))}")
    problems += check_lines_parse(after)
    problems += [
        f"{s.session_id}: {s.metadata_problem}" for s in after.values() if s.metadata_problem
    ]
    problems += check_torn_tails_set_aside(before, after)
    problems += check_seq_increasing(after)
    problems += check_acknowledged(trial, after)
    problems += check_causality(after)
    problems += check_journal_removed(trial.home)
    problems += check_leftovers(trial.home)
    slug = project_slug(trial.project)
    problems += await anyio.to_thread.run_sync(check_public_readers, trial.home, slug)
    return problems, after


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.timeout(0)  # each trial has its own limit, TRIAL_TIMEOUT
async def test_sigkill_keeps_every_acknowledged_record_consistent(
    tmp_path: Path, anyio_backend: str, trials: int | None
) -> None:
    """A process killed at any instant loses no acknowledged record and every session resumes."""
    first = FIRST_SEED or random.Random(anyio_backend).randrange(1, 10**9)
    coverage: Counter[str] = Counter()
    count = trials if trials is not None else TRIALS
    for number in range(count):
        seed = first + number
        with anyio.fail_after(TRIAL_TIMEOUT):
            trial = await run_trial(tmp_path, anyio_backend, seed)
            problems, after = await verify(trial)
        assert not problems, f"{trial.describe()}\n" + "\n".join(problems[:40])
        coverage["torn"] += trial.torn is not None
        coverage["acks"] += len(trial.reported("ack"))
        coverage["sessions"] += len(after)
        coverage["nested"] += sum(
            1 for s in after.values() if s.metadata and s.metadata.get("depth") == 2
        )
    # The trials must have exercised what they claim to test.
    assert coverage["acks"] > 0, coverage
    assert coverage["nested"] > 0, coverage
    if count >= 10:
        assert coverage["torn"] > 0, coverage
