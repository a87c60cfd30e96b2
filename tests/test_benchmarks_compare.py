"""``benchmarks/compare.py``: what it reads from a benchmark's output, what it reports, and
that both sides it compares run compiled code."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare", BENCHMARKS / "compare.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OUTPUT = """\
Durable events, 100 sessions x 100 events

| backend | mode  | events/s | p99 ms | ratio vs none |
|---------|-------|---------:|-------:|--------------:|
| asyncio | fsync |   23,312 |  10.32 |         0.53x |
| trio    | none  |    39122 |   7.71 |         1.00x |

| workload   | backend | ours (durability) |
|------------|---------|-------------------|
| echo child | asyncio | 566/s (fsync)     |

asyncio  fsync >= 0.7x none  NOT met: 0.53x
"""


def test_every_number_of_every_table_is_found_by_its_table_row_and_column(
    compare: ModuleType,
) -> None:
    # A cell of words and figures ("566/s (fsync)") labels its row; lines outside tables
    # (the title, the verdict) are not read.
    found = dict(compare.numbers(OUTPUT))
    title = "backend mode events/s p99 ms ratio vs none"
    assert found == {
        (title, "asyncio / fsync", "events/s"): 23312.0,
        (title, "asyncio / fsync", "p99 ms"): 10.32,
        (title, "asyncio / fsync", "ratio vs none"): 0.53,
        (title, "trio / none", "events/s"): 39122.0,
        (title, "trio / none", "p99 ms"): 7.71,
        (title, "trio / none", "ratio vs none"): 1.0,
    }


def test_the_report_gives_each_number_the_median_of_each_side_and_their_ratio(
    compare: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ("t", "asyncio / fsync", "events/s")
    only_before = ("t", "asyncio / flush", "events/s")
    compare.report(
        "persistence",
        "9558365",
        {
            "9558365": {key: [100.0, 300.0, 200.0], only_before: [1.0]},
            "working tree": {key: [150.0, 350.0, 250.0]},
        },
    )
    out = capsys.readouterr().out
    assert "| asyncio / fsync | events/s | 200 | 250 | 1.25x |" in out
    assert "flush" not in out  # a number only one side printed is not compared


def test_both_sides_run_compiled_code(
    compare: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tree's modules get their bytecode written even where the environment says not to
    (``PYTHONDONTWRITEBYTECODE``): otherwise the side whose tree is fresh recompiles in every
    process it starts, the session files' writer among them."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    package = tmp_path / "amplifier"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    compare.compiled(tmp_path)
    assert list((package / "__pycache__").glob("__init__.*.pyc"))
