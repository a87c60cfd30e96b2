"""SIGKILL the real ``amplifier`` command at random instants: nothing acknowledged is lost.

Each trial runs the console script, ``amplifier run --json PROMPT``, in a
fresh ``$AMPLIFIER_HOME`` (offline provider; durability ``fsync``, from the
``base`` profile) with a prompt whose sessions delegate concurrently and
nested and call tools, and SIGKILLs it at a random instant of its work. One
trial in four runs the command twice in the same home: the second run finds
the first one's dead journal and replays it itself (and may be killed while
it does), then either starts a new session or continues the first one
(``run --resume``). Backends alternate (``AMPLIFIER_ASYNC_BACKEND``).

When to kill: a normal run's timing is measured under the test's own load:
a calibration runs the command to completion a few times, and then one trial
in ten lets its first run finish too; the median of the recent ones says
when a run's Runtime starts (its journal appears) and how long the work
after that takes. A run is killed a random 0..1.2x of that work time after
its own journal appears, so some finish first. Some runs are killed before
their journal appears instead: in start-up, or while replaying a dead one.

Acknowledged is what the command reported: a ``--json`` document with
status ``completed`` acknowledges its turn (the turn's records and every
sub-session it ran, complete, each with ``session:end``); exit status 0
acknowledges the whole run (the session ended too). For a killed run, each
batch in its dead journal was made durable before it was acknowledged, so
every record in it must be in the session files once the journal is
replayed; the test decodes the journal itself (the layout documented in
``amplifier/persistence/_journal.py``) before anything replays it.

A SIGKILL lands inside a write(2) too rarely to rely on, so in one trial in
two that leaves a journal, the last line of a session file that the
journal also holds is cut off mid-line, as a kill mid-write would leave it:
recovery must set the fragment aside and restore the record.

Checked, for every trial:

- raw files before recovery: every complete line parses (at most a torn
  last line per file), ``seq`` strictly increases in each file, parents and
  children name each other, in causal ``seq`` order;
- every ``CLI_SAMPLE_EVERY``-th seed, on the home as the crash left it:
  ``amplifier session list --tree``, ``session show ROOT`` and ``session
  resume ROOT "again"`` (``--json``) exit 0 and show every session;
- with a Runtime open on the home (which replays any dead journal): every
  session lists, shows (tree, events and transcript read back exactly the
  complete lines on disk) and resumes;
- after that: no torn tail is left (each is in a side file, with a
  RecoveryWarning), every line parses, ``seq`` increases, parents and
  children agree, no journal is left, every journal record is in its file,
  every session ended ``completed`` with no tool call left without a
  result, the package's readers return exactly the lines on disk, every
  acknowledged turn and run is complete, and nothing is left behind: no
  folder in a project's ``.staging``, no temporary file in a session folder.

Trials run ``WORKERS`` at a time. ``--trials N`` runs N (default
``CI_TRIALS``). Failure messages name each failing trial's seed and sort the
failures by kind; rerun one trial with
``AMPLIFIER_KILL_SEED=<seed> pytest tests/test_kill_cli.py --trials 1`` (the
seed fixes the backend, the prompts, the plan of runs, where in the work the
kill lands as a fraction of it, and the cut line; the instant itself still
varies from run to run).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
import pytest

import amplifier
from amplifier.persistence import (
    SessionLocation,
    iter_events,
    list_sessions,
    load_transcript,
    project_slug,
    read_metadata,
)

from .raw_store import read_raw
from .store_checks import (
    ACKNOWLEDGED,
    CLI,
    FRAME_FILES,
    HARNESS,
    JOURNAL_LEFT,
    PHANTOM,
    READERS,
    RESUME,
    RUN_FAILED,
    SHOW,
    SIDE_FILES,
    UNLISTED,
    Frames,
    Sessions,
    check_children_complete,
    check_ended,
    check_family,
    check_frames,
    check_leftovers,
    check_lines,
    check_seq,
    check_side_files,
    data_of,
    decode_journal,
    kinds_of,
    problem,
)

CI_TRIALS = 60
"""Trials when ``--trials`` is not given (what CI runs)."""
WORKERS = 4
"""Trials at a time (on 2 cores: a command spends much of its life starting up or waiting)."""
CLI_SAMPLE_EVERY = 20
"""Every N-th seed also checks the crashed home with ``amplifier session ...``."""
REUSE_FRACTION = 1 / 2
"""Trials that run the command a second time in the same home (half, so that the 60 trials of
CI resume a session a few times: at a quarter, one run in fifty had none)."""
RESUME_FRACTION = 1 / 2
"""Second runs that continue the first run's session (``run --resume``) rather than start one."""
TEAR_FRACTION = 1 / 2
"""Trials leaving a journal that also get a line cut off (see the module docstring)."""
STARTUP_KILL_FRACTION = 0.05
"""Runs killed before their journal appears; ``RECOVERY_KILL_FRACTION`` if a dead one waits."""
RECOVERY_KILL_FRACTION = 0.3
MAX_KILL_FRACTION = 1.2
"""Kill at most this many times the calibrated work time after the journal appears."""
CALIBRATION_RUNS = 4
COMPLETE_FRACTION = 0.1
"""First runs let finish: they measure the work under load (see ``Timing``)."""
TIMING_WINDOW = 15
RUN_TIMEOUT = 60.0
"""Seconds any one command may take (a hung command fails its trial)."""
VERIFY_TIMEOUT = 60.0
POLL = 0.001
FIRST_SEED = int(os.environ.get("AMPLIFIER_KILL_SEED", "0")) or None
BACKENDS = ("asyncio", "trio")
SHOWN_FAILURES = 5

AMPLIFIER = Path(sys.executable).with_name("amplifier")

LEFT_RUNNING = "sleep 37.5"
"""A command a trial's bash call leaves running: no such process may outlive its run."""

PROMPTS = (
    "\n".join(
        [
            '/delegate explorer: /tool list_dir {"path": "."}',
            '/delegate default: /delegate explorer: /tool read_file {"path": "README.md"}',
            '/delegate reviewer: /tool grep {"pattern": "x"}',
            '/tool glob {"pattern": "**/*.py"}',
            '/tool write_file {"file_path": "out/report.txt", "content": "report\\n"}',
        ]
    ),
    "\n".join(
        [
            "/delegate default: /delegate default: /delegate reviewer: "
            '/tool read_file {"path": "src/app.py"}',
            '/delegate explorer: /tool grep {"pattern": "def"}',
            '/tool read_file {"path": "notes.txt"}',
            f'/delegate default: /tool bash {{"command": "{LEFT_RUNNING} & echo started"}}',
        ]
    ),
    "\n".join(
        [
            '/delegate reviewer: /tool glob {"pattern": "src/*.py"}',
            '/delegate explorer: /tool read_file {"path": "docs/guide.md"}',
            '/delegate default: /delegate explorer: /tool list_dir {"path": "src"}',
            '/delegate default: /delegate reviewer: /tool grep {"pattern": "return"}',
            '/tool read_file {"path": "../outside.txt"}',
            '/tool edit_file {"file_path": "notes.txt", "old_string": "remember", '
            '"new_string": "note"}',
            '/tool bash {"command": "ls src"}',
            f'/tool bash {{"command": "set -m; {LEFT_RUNNING} & echo started"}}',
        ]
    ),
)
"""Offline-provider prompts: concurrent delegations, nested ones, tool calls (one refused),
files written and edited, commands run (two leave a process running, to be stopped: one in
the command's process group, one in a group of its own)."""

PROJECT_FILES = {
    "README.md": "# Demo\n\nx marks the spot.\n",
    "notes.txt": "remember: x is not y\n",
    "src/app.py": "def main():\n    return 1 + 1\n",
    "src/util.py": "def helper(x):\n    return x * 2\n",
    "docs/guide.md": "# Guide\n\nRun `python -m app`.\n",
}

# -- plans and results ------------------------------------------------------------------


class Timing:
    """How long a normal run takes under the test's load: the median of recent runs let finish.

    Calibration runs first; then one trial in ten lets its first run finish, which keeps
    the figures true to the load of the trials themselves.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._startup: list[float] = []
        self._work: list[float] = []

    def add(self, run: Run) -> None:
        if run.finished and run.anchor is not None:
            with self._lock:
                self._startup.append(run.anchor)
                self._work.append(run.elapsed - run.anchor)

    @property
    def startup(self) -> float:
        """Seconds from the command's start until its journal appears."""
        with self._lock:
            return statistics.median(self._startup[-TIMING_WINDOW:])

    @property
    def work(self) -> float:
        """Seconds from the journal's appearance until the command exits."""
        with self._lock:
            return statistics.median(self._work[-TIMING_WINDOW:])

    @property
    def samples(self) -> int:
        return len(self._work)


@dataclass
class Run:
    """One ``amplifier run`` of a trial: how it was planned and what happened."""

    number: int
    backend: str
    prompt: str
    mode: str
    """``work`` (killed after its journal appeared), ``startup`` (before), or ``complete``."""
    fraction: float
    resume: str | None = None
    delay: float = 0.0
    anchor: float | None = None
    elapsed: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    output: dict[str, Any] | None = None
    stderr: str = ""

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL and not self.timed_out

    @property
    def finished(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        what = f"--resume {self.resume}" if self.resume else "new session"
        if self.mode == "complete":
            plan = "not killed"
        elif self.mode == "startup":
            plan = f"kill {self.delay * 1000:.0f} ms after start"
        else:
            plan = f"kill {self.delay * 1000:.0f} ms ({self.fraction:.2f}x work) after its journal"
        anchor = f"{self.anchor * 1000:.0f} ms" if self.anchor is not None else "never"
        return (
            f"run {self.number} ({self.backend}, {what}): {plan}; journal appeared after "
            f"{anchor}; ended after {self.elapsed * 1000:.0f} ms with {self.returncode}"
        )


@dataclass
class Trial:
    seed: int
    number: int
    backend: str
    home: Path
    project: Path
    runs: list[Run] = field(default_factory=list)
    frames: Frames = field(default_factory=dict)
    cut: Path | None = None
    fragment: bytes = b""
    torn: list[Path] = field(default_factory=list)
    """Files with a torn tail before recovery."""
    cli_stderr: str = ""
    problems: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def kinds(self) -> set[str]:
        return kinds_of(self.problems)

    def describe(self) -> str:
        lines = [
            f"trial {self.number} seed={self.seed} backend={self.backend} home={self.home}",
            *(f"  {run.describe()}" for run in self.runs),
        ]
        if self.cut is not None:
            lines.append(f"  cut the last line of {self.cut} to {len(self.fragment)} bytes")
        return "\n".join(lines)


# -- running the command ----------------------------------------------------------------


def make_project(path: Path) -> None:
    for name, text in PROJECT_FILES.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def processes_running(command: str, *, grace: float = 5.0) -> list[int]:
    """Processes whose command line is ``command``, after waiting ``grace`` for them to go."""
    deadline = time.monotonic() + grace
    while True:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as file:
                    line = file.read().replace(b"\0", b" ").decode(errors="replace").strip()
                with open(f"/proc/{entry}/stat") as file:
                    zombie = file.read().split(") ")[1][0] == "Z"
            except OSError:
                continue
            if line == command and not zombie:
                found.append(int(entry))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def command_env(home: Path, backend: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AMPLIFIER_DEBUG", None)
    env.update(AMPLIFIER_HOME=str(home), AMPLIFIER_ASYNC_BACKEND=backend, NO_COLOR="1")
    return env


def journal_names(home: Path) -> set[str]:
    try:
        return {n for n in os.listdir(home / "journal") if n.endswith((".journal", ".creating"))}
    except FileNotFoundError:
        return set()


def execute(run: Run, home: Path, project: Path, timing: Timing, log: Path) -> None:
    """Run the command; SIGKILL it as ``run`` plans (``complete``: let it finish)."""
    args = ["run", "--json", "--yes", run.prompt]
    if run.resume is not None:
        args[1:1] = ["--resume", run.resume]
    before = journal_names(home)
    out_path, err_path = log.with_suffix(".out"), log.with_suffix(".err")
    kill_at: float | None = None
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.monotonic()
        process = subprocess.Popen(
            [str(AMPLIFIER), *args],
            cwd=project,
            env=command_env(home, run.backend),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        if run.mode == "startup":
            run.delay = run.fraction * timing.startup
            kill_at = start + run.delay
        while process.poll() is None:
            now = time.monotonic()
            if run.anchor is None and journal_names(home) - before:
                run.anchor = now - start
                if run.mode == "work":
                    run.delay = run.fraction * timing.work
                    kill_at = now + run.delay
            if kill_at is not None and now >= kill_at:
                break
            if now - start > RUN_TIMEOUT:
                run.timed_out = True
                break
            time.sleep(POLL)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        run.elapsed = time.monotonic() - start
    run.returncode = process.returncode
    if run.mode == "complete":
        timing.add(run)
    run.stderr = err_path.read_text(errors="replace")
    try:
        document = orjson.loads(out_path.read_bytes())
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and document.get("status") == "completed":
        run.output = document


def calibrate(root: Path) -> Timing:
    """Run the command to completion ``CALIBRATION_RUNS`` times, all at once."""
    timing = Timing()
    runs = [
        Run(0, BACKENDS[n % 2], PROMPTS[n % len(PROMPTS)], "complete", 0.0)
        for n in range(CALIBRATION_RUNS)
    ]

    def one(number: int) -> Run:
        folder = root / f"calibration-{number}"
        (folder / "project").mkdir(parents=True)
        make_project(folder / "project")
        run = runs[number]
        execute(run, folder / "home", folder / "project", timing, folder / "run")
        return run

    done = in_parallel(
        [lambda n=n: one(n) for n in range(CALIBRATION_RUNS)], CALIBRATION_RUNS, 2 * RUN_TIMEOUT
    )
    bad = [r for r in done if not r.finished or r.output is None or r.anchor is None]
    assert not bad, "calibration runs failed:\n" + "\n".join(
        f"{r.describe()}\n{r.stderr}" for r in bad
    )
    return timing


# -- one trial ----------------------------------------------------------------------------


def run_trial(root: Path, number: int, seed: int, timing: Timing) -> Trial:
    rng = random.Random(seed)
    base = root / f"trial-{number}-{seed}"
    trial = Trial(seed, number, BACKENDS[seed % 2], base / "home", base / "project")
    # Every random choice is drawn up front, so the seed fixes the plan whatever happens.
    prompts = [rng.choice(PROMPTS), rng.choice(PROMPTS)]
    reuse = rng.random() < REUSE_FRACTION
    resume = rng.random() < RESUME_FRACTION
    modes = [rng.random(), rng.random()]
    work_fractions = [rng.uniform(0.0, MAX_KILL_FRACTION) for _ in range(2)]
    startup_fractions = [rng.uniform(0.3, 1.0) for _ in range(2)]
    cut, cut_pick, cut_length = rng.random() < TEAR_FRACTION, rng.random(), rng.random()
    try:
        trial.project.mkdir(parents=True)
        make_project(trial.project)
        for index in range(2 if reuse else 1):
            roots = [s for s in read_raw(trial.home) if "_" not in s]  # child ids have _agent
            # A root the first run created and was killed before writing its folder is in
            # its dead journal: resumable too (the second run replays the journal first).
            created = created_in(read_journals(trial.home))
            roots += sorted(r for r in created - set(roots) if "_" not in r)
            waiting = bool(journal_names(trial.home))
            startup = RECOVERY_KILL_FRACTION if waiting else STARTUP_KILL_FRACTION
            complete = COMPLETE_FRACTION if index == 0 else 0.0
            mode = (
                "startup"
                if modes[index] < startup
                else "complete"
                if modes[index] > 1 - complete
                else "work"
            )
            run = Run(
                number=index + 1,
                backend=BACKENDS[(seed + index) % 2],
                prompt=prompts[index],
                mode=mode,
                fraction=startup_fractions[index] if mode == "startup" else work_fractions[index],
                resume=roots[0] if index and resume and roots else None,
            )
            trial.runs.append(run)
            execute(run, trial.home, trial.project, timing, base / f"run-{index + 1}")
            trial.problems += check_run_ended(run)
            trial.frames.update(read_journals(trial.home))
        if cut and trial.runs[-1].killed:
            cut_a_line(trial, cut_pick, cut_length)
        verify(trial, sample_cli=seed % CLI_SAMPLE_EVERY == 0)
    except Exception:
        trial.problems.append(problem(HARNESS, traceback.format_exc()))
    return trial


def check_run_ended(run: Run) -> list[str]:
    """A run ends killed, or with exit 0 and its JSON document; never hung or failed."""
    if run.timed_out:
        return [problem(RUN_FAILED, f"run {run.number} hung for {RUN_TIMEOUT:g} s: {run.stderr}")]
    if not run.killed and not run.finished:
        return [problem(RUN_FAILED, f"run {run.number} exit {run.returncode}: {run.stderr}")]
    if run.finished and run.output is None:
        return [problem(RUN_FAILED, f"run {run.number} exit 0 without a completed document")]
    if run.finished and ("Traceback" in run.stderr or "internal error" in run.stderr):
        return [problem(RUN_FAILED, f"run {run.number} exit 0 but said: {run.stderr}")]
    return []


def created_in(frames: Frames) -> set[str]:
    """The sessions these journal records create (their ``CREATE``)."""
    return {f.folder.rsplit("/", 1)[-1] for f in frames.values() if f.kind == 4}


def read_journals(home: Path) -> Frames:
    """The records of every journal in ``home`` (a dead Runtime's), decoded by the layout."""
    frames: Frames = {}
    folder = home / "journal"
    for name in sorted(journal_names(home)):
        if name.endswith(".journal"):
            for frame in decode_journal((folder / name).read_bytes()):
                frames[(frame.folder, frame.kind, frame.seq)] = frame
    return frames


def cut_a_line(trial: Trial, pick: float, length: float) -> None:
    """Cut the last line of a session file mid-line, where the dead journal also holds it."""
    candidates = []
    for (folder, kind, _), frame in sorted(read_journals(trial.home).items()):
        if kind not in (1, 2) or frame.checkpointed:
            continue  # a record synced before the crash cannot be torn by it
        path = trial.home / folder / FRAME_FILES[kind]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        if data.endswith(frame.payload):
            candidates.append((path, len(data) - len(frame.payload), frame.payload))
    if not candidates:
        return
    path, start, line = candidates[int(pick * len(candidates))]
    keep = 1 + int(length * (len(line) - 1))  # 1 .. len(line) - 1 bytes: never the newline
    with path.open("r+b") as file:
        file.truncate(start + keep)
    trial.cut, trial.fragment = path, line[:keep]


# -- reading what is on disk ----------------------------------------------------------------


# -- the checks (each returns what is wrong) -----------------------------------------------


def check_acknowledged(trial: Trial, sessions: Sessions) -> list[str]:
    """Every turn a run reported is complete, children and all; a run that exited 0 ended."""
    problems: list[str] = []
    for run in trial.runs:
        if run.output is None:
            continue
        session_id = str(run.output.get("session_id"))
        turn = run.output.get("turn")
        where = f"run {run.number}: {session_id} turn {turn}"
        stored = sessions.get(session_id)
        if stored is None:
            problems.append(problem(ACKNOWLEDGED, f"{where}: the session is not on disk"))
            continue
        submit = [e for e in stored.named("prompt:submit") if data_of(e).get("turn") == turn]
        complete = [
            e
            for e in stored.named("prompt:complete")
            if data_of(e).get("turn") == turn and data_of(e).get("status") == "completed"
        ]
        if not submit or not complete:
            problems.append(problem(ACKNOWLEDGED, f"{where}: no prompt:submit / complete"))
            continue
        low, high = submit[0]["seq"], complete[0]["seq"]
        said = [m for m in stored.transcript if low < m["seq"] < high]
        if not any(m.get("role") == "user" and m.get("content") == run.prompt for m in said):
            problems.append(problem(ACKNOWLEDGED, f"{where}: the prompt is not in the transcript"))
        if not any(
            m.get("role") == "assistant" and m.get("content") == run.output.get("response")
            for m in said
        ):
            problems.append(problem(ACKNOWLEDGED, f"{where}: the answer is not in the transcript"))
        problems += check_children_complete(sessions, stored, low, high, where)
        if run.finished and not any(
            e["seq"] > high and data_of(e).get("status") == "completed"
            for e in stored.named("session:end")
        ):
            problems.append(problem(ACKNOWLEDGED, f"{where}: exit 0 but no session:end completed"))
    return problems


def check_readers(home: Path, slug: str, sessions: Sessions) -> list[str]:
    """The package's own readers list every session and return exactly the lines on disk."""
    problems = []
    listed = {row.session_id for row in list_sessions(home, slug)}
    if listed != set(sessions):
        problems.append(problem(UNLISTED, f"list_sessions misses {sorted(set(sessions) - listed)}"))
    for session_id, stored in sessions.items():
        location = SessionLocation(home, slug, session_id)
        try:
            read_metadata(location)
            events = [e.seq for e in iter_events(location)]
            transcript = [m.seq for m in load_transcript(location)]
        except Exception as exc:
            problems.append(problem(READERS, f"{session_id}: {type(exc).__name__}: {exc}"))
            continue
        if events != [e["seq"] for e in stored.events]:
            problems.append(problem(READERS, f"{session_id}: iter_events gives {events}"))
        if transcript != [m["seq"] for m in stored.transcript]:
            problems.append(problem(READERS, f"{session_id}: load_transcript gives {transcript}"))
    return problems


def check_journal_gone(home: Path) -> list[str]:
    left = sorted(journal_names(home))
    if not left:
        return []
    holders = [lock_holders(home / "journal" / name) for name in left]
    return [problem(JOURNAL_LEFT, f"after recovery: {left}, locked by {holders}")]


def lock_holders(path: Path) -> list[str]:
    """Who holds a lock on ``path`` now, from ``/proc/locks``: pid and command line."""
    try:
        inode = path.stat().st_ino
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    holders = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = fields[4]
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                command = b"(gone)"
            holders.append(f"{fields[1]} {fields[3]} pid {pid}: {command[:160].decode()}")
    for entry in Path("/proc").glob("[0-9]*/fd/*"):  # who has it open (a lock may be inherited)
        try:
            if entry.readlink() == path:
                holders.append(f"open in pid {entry.parts[2]}")
        except OSError:
            continue
    return holders


# -- recovery and the command line ------------------------------------------------------------


async def recover_show_resume(trial: Trial) -> list[str]:
    """Open a Runtime on the home (replays a dead journal); list, show, resume every session."""
    problems: list[str] = []
    with anyio.fail_after(VERIFY_TIMEOUT):
        async with amplifier.open_runtime(
            home=trial.home, cwd=trial.project, durability="flush"
        ) as rt:
            on_disk = await anyio.to_thread.run_sync(read_raw, trial.home)
            trial.stats["sessions"] += len(on_disk)
            listed = {row.session_id for row in await rt.sessions()}
            if listed != set(on_disk):
                missing = sorted(set(on_disk) - listed)
                problems.append(
                    problem(UNLISTED, f"after recovery, rt.sessions() misses {missing}")
                )
            for session_id, stored in on_disk.items():
                try:
                    tree = await rt.tree(session_id)
                    transcript = await rt.transcript(session_id)
                    events = [e async for e in rt.events(session_id)]
                except amplifier.AmplifierError as exc:
                    problems.append(problem(SHOW, f"{session_id}: {type(exc).__name__}: {exc}"))
                    continue
                for row in tree:
                    if row.metadata is None:
                        kind = PHANTOM if row.session_id not in on_disk else SHOW
                        problems.append(problem(kind, f"show {session_id}: {row.problem}"))
                if [m.seq for m in transcript] != [m["seq"] for m in stored.transcript]:
                    problems.append(problem(SHOW, f"{session_id}: transcript != complete lines"))
                if [e.seq for e in events] != [e["seq"] for e in stored.events]:
                    problems.append(problem(SHOW, f"{session_id}: events != complete lines"))
            for session_id in sorted(on_disk):
                try:
                    async with rt.resume(session_id):
                        pass
                except amplifier.AmplifierError as exc:
                    problems.append(problem(RESUME, f"{session_id}: {type(exc).__name__}: {exc}"))
    return problems


def cli(trial: Trial, *args: str) -> tuple[int, Any]:
    """Run ``amplifier ARGS --json`` on the trial's home; its exit code and document."""
    result = subprocess.run(
        [str(AMPLIFIER), *args, "--json"],
        cwd=trial.project,
        env=command_env(trial.home, trial.backend),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    trial.cli_stderr += result.stderr.decode(errors="replace")
    try:
        document = orjson.loads(result.stdout)
    except orjson.JSONDecodeError:
        document = None
    return result.returncode, document


def check_cli(trial: Trial, sessions: Sessions) -> list[str]:
    """``amplifier session list / show / resume`` on the crashed home: exit 0, every session."""
    problems = []
    code, listing = cli(trial, "session", "list", "--tree", "--limit", "0")
    rows = listing if isinstance(listing, list) else []
    for row in rows:
        if row.get("status") == "damaged":
            kind = PHANTOM if row.get("session_id") not in sessions else CLI
            problems.append(problem(kind, f"session list --tree: {row}"))
    missing = sorted(set(sessions) - {row.get("session_id") for row in rows})
    if code != 0 or missing:
        problems.append(problem(CLI, f"session list --tree: exit {code}, misses {missing}"))
    roots = sorted(s for s, stored in sessions.items() if stored.parent_id is None)
    for root in roots[:1]:
        code, document = cli(trial, "session", "show", root, "--events")
        tree = document.get("tree", []) if isinstance(document, dict) else []
        if code != 0 or not tree:
            problems.append(problem(CLI, f"session show {root}: exit {code}"))
        for row in tree:
            if row.get("status") == "damaged":
                kind = PHANTOM if row.get("session_id") not in sessions else CLI
                problems.append(problem(kind, f"session show {root}: {row}"))
        code, document = cli(trial, "session", "resume", root, "again")
        status = document.get("status") if isinstance(document, dict) else None
        if code != 0 or status != "completed":
            problems.append(problem(CLI, f"session resume {root}: exit {code}, status {status}"))
    trial.stats["cli checked"] += 1
    return problems


def verify(trial: Trial, *, sample_cli: bool) -> None:
    before = read_raw(trial.home)
    trial.torn = [
        s.folder / name for s in before.values() for name, c in s.files.items() if c.torn_tail
    ]
    trial.problems += check_lines(before, torn_allowed=True)
    trial.problems += check_seq(before)
    if trial.cut is None:
        # The files as the crash left them keep causal order; a line the test
        # cut off is back only once recovery replays it from the journal.
        trial.problems += check_family(before, phantoms_allowed=True)
    if sample_cli:
        trial.problems += check_cli(trial, before)

    trial.problems += anyio.run(recover_show_resume, trial, backend=trial.backend)

    after = read_raw(trial.home)
    # A session whose folder the crash kept from being built comes back from its CREATE.
    created = created_in(trial.frames)
    if set(before) - set(after) or set(after) - set(before) - created:
        trial.problems.append(
            problem(HARNESS, f"sessions changed: {sorted(before)} -> {sorted(after)}")
        )
    trial.problems += check_lines(after, torn_allowed=False)
    trial.problems += check_side_files(before, after)
    trial.problems += check_seq(after)
    trial.problems += check_family(after)
    trial.problems += check_frames(trial.home, trial.frames, after)
    trial.problems += check_acknowledged(trial, after)
    trial.problems += check_ended(after)
    trial.problems += check_journal_gone(trial.home)
    trial.problems += check_readers(trial.home, project_slug(trial.project), after)

    trial.stats["sessions nested"] += sum(
        1 for s in after.values() if (s.metadata or {}).get("depth", 0) >= 2
    )
    trial.stats["journal records"] += len(trial.frames)
    strays = check_leftovers(trial.home)
    trial.problems += strays
    trial.stats["stray files"] += len(strays)


def check_warned(trial: Trial, messages: list[str]) -> list[str]:
    """Every torn tail was reported with a RecoveryWarning naming its file."""
    said = "\n".join([*messages, trial.cli_stderr])
    return [
        problem(SIDE_FILES, f"{path}: torn tail set aside without a RecoveryWarning")
        for path in trial.torn
        if f"{path}: a record cut off by a crash" not in said
    ]


# -- running trials in parallel --------------------------------------------------------------

T = TypeVar("T")


def in_parallel(jobs: list[Callable[[], T]], workers: int, deadline: float) -> list[T]:
    """Run ``jobs`` on ``workers`` daemon threads; fail if they take longer than ``deadline``."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(jobs)):
        todo.put(index)
    done: queue.Queue[tuple[int, T | BaseException]] = queue.Queue()

    def work() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((index, jobs[index]()))
            except BaseException as exc:
                done.put((index, exc))

    for _ in range(workers):
        threading.Thread(target=work, daemon=True).start()
    results: dict[int, T] = {}
    end = time.monotonic() + deadline
    while len(results) < len(jobs):
        try:
            index, value = done.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"{len(jobs) - len(results)} of {len(jobs)} jobs still running")
        if isinstance(value, BaseException):
            raise value
        results[index] = value
    return [results[index] for index in range(len(jobs))]


def summarize(count: int, first: int, elapsed: float, timing: Timing, done: list[Trial]) -> str:
    runs = [run for trial in done for run in trial.runs]
    totals: Counter[str] = Counter()
    for trial in done:
        totals.update(trial.stats)
    failures = Counter(kind for trial in done for kind in trial.kinds())
    return (
        f"{count} trials, first seed {first}, {elapsed:.1f} s: {len(runs)} runs of "
        f"`amplifier run` ({sum(r.resume is not None for r in runs)} with --resume), "
        f"{sum(r.mode == 'complete' for r in runs)} let finish, "
        f"{sum(r.killed for r in runs)} killed mid-run "
        f"({sum(r.killed and r.mode == 'startup' for r in runs)} before their journal appeared), "
        f"{sum(r.finished for r in runs)} finished in all; "
        f"{sum(bool(t.frames) for t in done)} trials left a journal "
        f"({totals['journal records']} records), {sum(bool(t.torn) for t in done)} a torn line "
        f"({sum(t.cut is not None for t in done)} cut by the test); "
        f"{totals['sessions']} sessions ({totals['sessions nested']} at depth >= 2) listed, "
        f"shown and resumed; {totals['cli checked']} homes checked with `amplifier session`; "
        f"normal run: journal after {timing.startup * 1000:.0f} ms, then "
        f"{timing.work * 1000:.0f} ms of work (median of the last {TIMING_WINDOW} of "
        f"{timing.samples} let finish); "
        f"{totals['stray files']} stray files (temporary, in .staging, or handover lists).\n"
        f"Trials failed: {sum(bool(t.problems) for t in done)}"
        + "".join(f"\n  {n:4d} {kind}" for kind, n in failures.most_common())
    )


# -- the test ------------------------------------------------------------------------------------


@pytest.mark.timeout(0)  # every command and recovery has its own limit; see in_parallel too
def test_killed_cli_loses_nothing_acknowledged_and_every_session_resumes(
    tmp_path: Path, trials: int | None
) -> None:
    """An ``amplifier run`` killed at any instant loses no reported turn; every session resumes."""
    assert AMPLIFIER.exists(), f"no console script at {AMPLIFIER}"
    count = trials if trials is not None else CI_TRIALS
    first = FIRST_SEED or random.Random().randrange(1, 10**9)
    started = time.monotonic()
    timing = calibrate(tmp_path / "calibration")
    with warnings.catch_warnings(record=True) as caught:
        # Warnings are process-wide: one filter, one record, for every worker thread.
        warnings.simplefilter("always")
        done = in_parallel(
            [
                lambda number=number: run_trial(tmp_path, number, first + number, timing)
                for number in range(count)
            ],
            WORKERS,
            deadline=120.0 + 5.0 * count,
        )
    messages = [str(w.message) for w in caught]
    for trial in done:
        trial.problems += check_warned(trial, messages)
    unexpected = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, amplifier.RecoveryWarning)
    ]
    summary = summarize(count, first, time.monotonic() - started, timing, done)
    print(f"\n{summary}")
    failed = [trial for trial in done if trial.problems]
    assert not unexpected, f"{summary}\nunexpected warnings: {unexpected[:10]}"
    assert not failed, f"{summary}\n\n" + "\n\n".join(
        f"{trial.describe()}\n" + "\n".join(f"  - {p}" for p in trial.problems[:20])
        for trial in failed[:SHOWN_FAILURES]
    )
    left = processes_running(LEFT_RUNNING)
    assert not left, f"{summary}\nprocesses that outlived their run: {left}"
    # The trials must have exercised what they claim to test.
    runs = [run for trial in done for run in trial.runs]
    assert any(run.killed for run in runs), summary
    if count >= 50:
        assert any(run.finished for run in runs), summary
        assert any(trial.cut for trial in done), summary
        assert any(trial.frames for trial in done), summary
        assert any(run.resume for run in runs), summary
