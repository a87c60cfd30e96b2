"""The benchmarks still run and check what they store (correctness only, no timing)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_persistence_benchmark_runs_and_verifies(tmp_path: Path) -> None:
    """benchmarks/persistence.py --quick completes and prints its table and verdicts."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "persistence.py"), "--quick", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "| asyncio | fsync |" in done.stdout
    assert "| trio    | fsync |" in done.stdout
    assert "reproduce:" in done.stdout


@pytest.mark.timeout(300)  # every benchmark at smoke size: 45 s on an idle 2-core VM
def test_every_benchmark_runs_and_checks_what_it_measured(tmp_path: Path) -> None:
    """run_all.py --quick runs each benchmark at smoke size; every check passes (no timing)."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.split("===== targets")[1]
    names = ("persistence", "delegation", "agent_task", "fanout", "memory", "resume", "listing")
    for name in (*names, "startup", "search"):
        assert f"({name}: " in done.stdout
        assert summary.count(name) >= 2, f"{name} printed no verdicts"
    # The peers are installed here (the bench extra): every target is measured.
    unmeasured = [line for line in summary.splitlines() if "not measured" in line.lower()]
    assert not unmeasured, unmeasured


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_are_counted_per_unit_on_the_loop_thread() -> None:
    """benchmarks/instructions.py counts the loop thread's instructions under callgrind: a run
    of more units counts more, and their difference per unit is the same for two sizes."""
    spec = importlib.util.spec_from_file_location("instructions", BENCHMARKS / "instructions.py")
    assert spec is not None
    assert spec.loader is not None
    instructions = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = instructions  # its dataclasses look their module up
    spec.loader.exec_module(instructions)
    counts = [instructions.loop_instructions("anyio", "asyncio", n) for n in (10, 60, 110)]
    assert counts[0] < counts[1] < counts[2]
    first, second = (counts[1] - counts[0]) / 50, (counts[2] - counts[1]) / 50
    assert 100_000 < first < 5_000_000  # a task and a stream's round trip, not a whole run
    assert abs(first - second) / first < 0.1, (first, second)
