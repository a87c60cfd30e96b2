"""Listing: the first page of ``amplifier session list`` as the store grows.

Measured in-process through the public API (``Runtime.sessions(limit=50,
roots_only=True)``, what ``session list`` calls), on asyncio and on trio,
with a project of 10,000 sessions among 0, 10,000 and 100,000 sessions of
other projects. Baseline: the naive listing every tool starts with, a scan
of every session folder of the project reading each ``metadata.json``.

Targets: the first page in <= 100 ms, and flat as the total grows (the
largest store within 2x the smallest).

The sessions are written straight into the documented layout (one folder
and one ``metadata.json`` each) and indexed once with ``Runtime.reindex``;
building them is not timed.

Reproduce::

    .venv/bin/python benchmarks/listing.py            # 10,000 here, up to 100,000 elsewhere
    .venv/bin/python benchmarks/listing.py --quick    # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import orjson

from amplifier.runtime.lowlevel import open_local_runtime

REPO = Path(__file__).resolve().parent.parent
PAGE = 50


def write_sessions(
    home: Path, project: str, count: int, start: datetime, store_no: int, cwd: str | None = None
) -> None:
    """``count`` sessions of ``project`` (recorded in ``cwd``) in the on-disk layout,
    one second apart.

    Session IDs are unique across the whole store, as real ones are: ``store_no``
    (distinct per call) fills the high bits of the random part.
    """
    folder = home / "projects" / project / "sessions"
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        created = start + timedelta(seconds=n)
        session_id = f"{created:%Y%m%dT%H%M%SZ}-{(store_no << 40) | n:016x}"
        directory = folder / session_id
        directory.mkdir()
        document = {
            "version": 1,
            "session_id": session_id,
            "created": created.isoformat(),
            "updated": created.isoformat(),
            "cwd": cwd or "/" + project.strip("-").replace("-", "/"),
            "project": project,
            "agent": "default",
            "profile": "base",
            "status": "completed",
            "root_id": session_id,
            "message_count": 4,
            "turns": 2,
            "last_prompt": f"prompt number {n}",
            "seq": n + 1,
        }
        (directory / "metadata.json").write_bytes(orjson.dumps(document))


def naive_listing(home: Path, project: str) -> list[tuple[str, str]]:
    """Scan every folder, read every metadata file, sort newest first, take a page."""
    folder = home / "projects" / project / "sessions"
    rows = []
    for name in os.listdir(folder):
        try:
            document = orjson.loads((folder / name / "metadata.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        rows.append((document.get("created", ""), name))
    rows.sort(reverse=True)
    return rows[:PAGE]


async def measure_ours(home: Path, cwd: Path, repeat: int) -> tuple[list[float], list[str]]:
    times = []
    ids: list[str] = []
    async with open_local_runtime(home=home, cwd=cwd, durability="none") as rt:
        await rt.sessions(
            limit=PAGE, roots_only=True
        )  # warm the page cache, as a real CLI finds it
        for _ in range(repeat):
            started = time.perf_counter()
            page = await rt.sessions(limit=PAGE, roots_only=True)
            times.append(time.perf_counter() - started)
            ids = [row.session_id for row in page]
    return times, ids


async def reindex(home: Path, cwd: Path) -> int:
    async with open_local_runtime(home=home, cwd=cwd, durability="none") as rt:
        return await rt.reindex()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--here", type=int, default=None, help="sessions in the project (10000)")
    parser.add_argument(
        "--elsewhere", type=int, nargs="*", default=None, help="sessions in other projects"
    )
    parser.add_argument("--repeat", type=int, default=None, help="timed listings per size (7)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the stores")
    args = parser.parse_args(argv)
    here = args.here or (300 if args.quick else 10_000)
    others = (
        args.elsewhere
        if args.elsewhere is not None
        else ([0, 1000] if args.quick else [0, 10_000, 100_000])
    )
    repeat = args.repeat or (2 if args.quick else 7)
    root = Path(tempfile.mkdtemp(prefix="amplifier-listing-", dir=args.dir or REPO.parent))
    project_dir = root / "work" / "app"
    project_dir.mkdir(parents=True)
    project = str(project_dir).replace("/", "-")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    results: list[tuple[int, str, float, float]] = []
    ok = True
    try:
        home = root / "home"
        write_sessions(home, project, here, start, 0, str(project_dir))
        written_elsewhere = 0
        for total_elsewhere in sorted(others):
            for k in range(written_elsewhere, total_elsewhere, 10_000):
                chunk = min(10_000, total_elsewhere - k)
                write_sessions(home, f"-other-project-{k // 10_000}", chunk, start, 1 + k // 10_000)
            written_elsewhere = total_elsewhere
            indexed = anyio.run(reindex, home, project_dir)
            if indexed != here + total_elsewhere:
                print(f"index holds {indexed} sessions, expected {here + total_elsewhere}")
                ok = False
            naive_times = []
            for _ in range(repeat):
                started = time.perf_counter()
                naive = naive_listing(home, project)
                naive_times.append(time.perf_counter() - started)
            for backend in ("asyncio", "trio"):
                times, ids = anyio.run(measure_ours, home, project_dir, repeat, backend=backend)
                expected = [name for _, name in naive]
                if ids != expected:
                    print(f"{backend}: the page differs from the naive listing's")
                    ok = False
                results.append(
                    (
                        total_elsewhere,
                        backend,
                        statistics.median(times),
                        statistics.median(naive_times),
                    )
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nsession list, first page of {PAGE}, with {here} sessions in the project\n")
    print("| sessions elsewhere | backend | ours ms | naive scan ms | naive / ours |")
    print("|-------------------:|---------|--------:|--------------:|-------------:|")
    for elsewhere, backend, ours, naive_time in results:
        print(
            f"| {elsewhere:>18} | {backend:<7} | {ours * 1000:7.1f} | {naive_time * 1000:13.1f} "
            f"| {naive_time / ours:11.1f}x |"
        )
    print()
    for backend in ("asyncio", "trio"):
        rows = [r for r in results if r[1] == backend]
        worst = max(r[2] for r in rows)
        smallest, largest = rows[0][2], rows[-1][2]
        verdict = "met" if worst <= 0.1 else "NOT met"
        print(
            f"{backend:<8} first page <= 100 ms             {verdict}: worst {worst * 1000:.1f} ms"
        )
        flat = largest <= 2 * smallest
        print(
            f"{backend:<8} flat as the store grows (<= 2x)  {'met' if flat else 'NOT met'}: "
            f"{smallest * 1000:.1f} ms -> {largest * 1000:.1f} ms"
        )
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    print(f"\nmachine: {machine}")
    print(f"reproduce: .venv/bin/python benchmarks/listing.py{' --quick' if args.quick else ''}")
    if not ok:
        print("CHECK FAILED: see above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
