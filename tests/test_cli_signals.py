"""`amplifier run` interrupted in real processes: Ctrl-C (SIGINT), SIGTERM and SIGHUP.

Each test starts the installed console script with stdout piped, as a script
or a pipeline would, on asyncio and on trio. A ``FakeLLMServer`` answers
through the project's ``slow`` profile: it streams the first piece of its
answer and then goes silent, so the signal lands while the turn is running
and after some text has arrived.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .fake_llm_server import FakeLLMServer, Text
from .helpers import events, hangups_at_default, metadata, session_dirs, transcript
from .test_cli_process import importing
from .trusted import trusted

AMPLIFIER = Path(sys.executable).parent / "amplifier"
GRACE = 0.5
"""Seconds for the command to take in the piece the server flushed before the signal."""
ATTEMPTS = 4


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The event loop the CLI runs on."""
    return str(request.param)


@pytest.fixture
def llm(project: Path) -> Iterator[FakeLLMServer]:
    """A local model server that the project's ``slow`` profile answers through."""
    with FakeLLMServer() as server:
        profiles = project / ".amplifier" / "profiles"
        profiles.mkdir(parents=True)
        (profiles / "slow.yaml").write_text(
            f"provider: {{kind: openai, base_url: '{server.openai_base_url}', model: m, "
            "timeout: 60, max_retries: 0}\n"
        )
        trusted(project)
        yield server


def start(
    *args: str, cwd: Path, home: Path, backend: str, nohup: bool = False
) -> subprocess.Popen[str]:
    """``amplifier ARGS``; with ``nohup``, started ignoring SIGHUP as ``nohup`` starts it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(AMPLIFIER_HOME=str(home), NO_COLOR="1", AMPLIFIER_ASYNC_BACKEND=backend)
    return subprocess.Popen(
        [str(AMPLIFIER), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignoring_hangups if nohup else hangups_at_default,
    )


def _ignoring_hangups() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def interrupt_mid_answer(
    llm: FakeLLMServer, process: subprocess.Popen[str], signum: int
) -> tuple[int, str, str]:
    """Send ``signum`` once the answer's first piece is out; (exit code, stdout, stderr)."""
    assert llm.stalled.wait(20), "the model was never asked"
    time.sleep(GRACE)
    process.send_signal(signum)
    try:
        stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"still running 20 s after the signal:\n{stderr}") from None
    assert "Traceback" not in stderr, stderr
    return process.returncode, stdout, stderr


@dataclass(frozen=True)
class Interrupted:
    code: int
    stdout: str
    stderr: str
    home: Path
    session_id: str


def interrupted_run(
    llm: FakeLLMServer, *args: str, signum: int, cwd: Path, homes: Path, backend: str
) -> Interrupted:
    """`amplifier run --profile slow ARGS question`, sent ``signum`` mid-answer.

    With stdout piped, nothing outside the command shows whether it had taken
    in the answer's first piece when the signal came. An attempt where it had
    not (no partial answer in the transcript) says nothing about what is kept,
    so it is made again, in a fresh home.
    """
    for attempt in range(ATTEMPTS):
        llm.stalled.clear()
        llm.plan(Text(pieces=("Partial ", "answer"), stall=30))
        home = homes / f"home-{attempt}"
        trusted(cwd, home)  # a fresh home: the project is trusted in it too
        process = start(
            "run", "--profile", "slow", *args, "question", cwd=cwd, home=home, backend=backend
        )
        code, stdout, stderr = interrupt_mid_answer(llm, process, signum)
        (session_id,) = session_dirs(home)
        if any(m["role"] == "assistant" for m in transcript(home, session_id)):
            return Interrupted(code, stdout, stderr, home, session_id)
    pytest.fail(f"in {ATTEMPTS} attempts the signal always came before the first piece")


def test_run_started_by_nohup_keeps_ignoring_sighup(
    tmp_path: Path, project: Path, llm: FakeLLMServer, backend: str
) -> None:
    """`nohup amplifier run`: a hang-up mid-answer does not end it (it was started with
    SIGHUP ignored); a SIGTERM after it ends it as SIGTERM does, exit 143."""
    llm.stalled.clear()
    llm.plan(Text(pieces=("Partial ", "answer"), stall=30))
    home = tmp_path / "home"
    trusted(project, home)
    process = start(
        "run", "--profile", "slow", "question", cwd=project, home=home, backend=backend, nohup=True
    )
    assert llm.stalled.wait(20), "the model was never asked"
    process.send_signal(signal.SIGHUP)
    code, _, stderr = interrupt_mid_answer(llm, process, signal.SIGTERM)
    assert code == 143, stderr
    (session_id,) = session_dirs(home)
    assert metadata(home, session_id)["status"] == "cancelled"


def ends(home: Path, session_id: str) -> list[tuple[str, Any]]:
    return [
        (e["event"], e["data"]["status"])
        for e in events(home, session_id)
        if e["event"] in ("prompt:complete", "session:end")
    ]


def test_ctrl_c_in_run_ends_the_session_cancelled_and_keeps_the_partial_answer(
    tmp_path: Path, project: Path, llm: FakeLLMServer, backend: str
) -> None:
    """Ctrl-C during `run` (stdout piped): exit 130, the session cancelled, and what the
    model had written printed and kept in the transcript, marked cut off."""
    run = interrupted_run(llm, signum=signal.SIGINT, cwd=project, homes=tmp_path, backend=backend)
    assert run.code == 130, run.stderr
    assert run.stdout == "Partial \n"
    assert "Cancelled." in run.stderr
    assert metadata(run.home, run.session_id)["status"] == "cancelled"
    assert ends(run.home, run.session_id) == [
        ("prompt:complete", "cancelled"),
        ("session:end", "cancelled"),
    ]
    (answer,) = [m for m in transcript(run.home, run.session_id) if m["role"] == "assistant"]
    assert (answer["content"], answer["cut_off"]) == ("Partial ", "cancelled")


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_sigterm_and_sighup_in_run_end_the_session_like_ctrl_c(
    tmp_path: Path, project: Path, llm: FakeLLMServer, backend: str, signum: int, code: int
) -> None:
    """SIGTERM or SIGHUP during `run`: the final records are written (turn and session
    cancelled, the partial answer kept), then exit 128 + the signal's number."""
    run = interrupted_run(llm, signum=signum, cwd=project, homes=tmp_path, backend=backend)
    assert run.code == code, run.stderr
    assert run.stdout == "Partial \n"
    assert "Cancelled." in run.stderr
    assert metadata(run.home, run.session_id)["status"] == "cancelled"
    assert ends(run.home, run.session_id) == [
        ("prompt:complete", "cancelled"),
        ("session:end", "cancelled"),
    ]


def test_ctrl_c_in_run_json_reports_cancelled_with_the_partial_answer(
    tmp_path: Path, project: Path, llm: FakeLLMServer, backend: str
) -> None:
    """With --json, Ctrl-C prints one document: status cancelled and the text so far."""
    run = interrupted_run(
        llm, "--json", signum=signal.SIGINT, cwd=project, homes=tmp_path, backend=backend
    )
    assert run.code == 130
    document = json.loads(run.stdout)
    assert (document["status"], document["response"]) == ("cancelled", "Partial ")
    assert metadata(run.home, document["session_id"])["status"] == "cancelled"


LOADING_THEN_CTRL_C = """
import os, signal, sys, threading, time
sys.argv = ["amplifier", "run", "hi"]

def ctrl_c_soon():
    time.sleep(0.02)  # the command line takes far longer than this to load
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=ctrl_c_soon).start()
from amplifier._command import main
main()
"""


def test_ctrl_c_while_the_command_line_loads_ends_it_quietly(home: Path, project: Path) -> None:
    """Ctrl-C before `amplifier run` has loaded: exit 130, nothing said, nothing stored (a
    KeyboardInterrupt raised in a C extension's import could crash the interpreter)."""
    done = importing("-c", LOADING_THEN_CTRL_C, cwd=project, home=home)
    loaded_after = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert len(loaded_after) > 100  # the signal did come while the command line loaded
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert (done.returncode, said, done.stdout) == (130, [], "")
    assert not session_dirs(home)
