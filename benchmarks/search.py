"""Search: ``amplifier session search`` over 10,000 sessions and 1,000,000 messages.

Measured in-process through the public API (``Runtime.search``, what
``session search`` calls), on asyncio and on trio, for the kinds of query
people type: a word that occurs once, the most common word, a phrase, two
words, a prefix, a word that occurs nowhere; each in one project (a tenth
of the store) and across every project (``--all``). Baseline: the naive
search every tool starts with, reading every transcript and matching each
message's text.

Target: every query answers in <= 100 ms.

The store is written straight into the documented layout (a folder with
``metadata.json`` and ``transcript.jsonl`` per session; text drawn from a
seeded vocabulary with a Zipf distribution, like words in prose), then
indexed once through ``Runtime.reindex`` (timed and reported, not part of
the target).

Reproduce::

    .venv/bin/python benchmarks/search.py            # 10,000 sessions, 1,000,000 messages
    .venv/bin/python benchmarks/search.py --quick    # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import shutil
import statistics
import string
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
PAGE = 20
PROJECTS = 10
VOCABULARY = 20_000
PHRASE = "sql injection"
PHRASE_EVERY = 997
"""One message in this many mentions the phrase."""
ROLES = ("user", "assistant", "tool")


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))))
    return sorted(words, key=lambda w: rng.random())


def write_store(home: Path, sessions: int, messages: int, words: list[str]) -> list[str]:
    """``sessions`` sessions of ``messages`` messages, spread over ``PROJECTS`` projects.

    Returns the project slugs. Session n is created n minutes after the
    start; every eighth message carries a word found nowhere else (``ticket<number>``).
    """
    rng = random.Random(7)
    weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
    pool = [
        " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(4, 40)))
        for _ in range(20_000)
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slugs = [f"-bench-project-{p}" for p in range(PROJECTS)]
    number = 0
    for n in range(sessions):
        created = start + timedelta(minutes=n)
        session_id = f"{created:%Y%m%dT%H%M%SZ}-{n:016x}"
        slug = slugs[n % PROJECTS]
        folder = home / "projects" / slug / "sessions" / session_id
        folder.mkdir(parents=True)
        lines = []
        for k in range(messages):
            number += 1
            text = pool[rng.randrange(len(pool))]
            if number % 8 == 0:
                text += f" ticket{number}"
            if number % PHRASE_EVERY == 0:
                text = f"{text} possible {PHRASE} here"
            record: dict[str, object] = {
                "version": 1,
                "seq": k + 1,
                "ts": (created + timedelta(seconds=k)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "role": ROLES[k % 3],
                "content": text,
            }
            if k % 3 == 2:
                record["name"] = "read_file"
                record["tool_call_id"] = f"call-{k}"
            lines.append(orjson.dumps(record))
        (folder / "transcript.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        document = {
            "version": 1,
            "session_id": session_id,
            "created": created.isoformat(),
            "updated": created.isoformat(),
            "cwd": "/" + slug.strip("-").replace("-", "/"),
            "project": slug,
            "agent": "default",
            "status": "completed",
            "root_id": session_id,
            "message_count": messages,
            "seq": messages,
        }
        (folder / "metadata.json").write_bytes(orjson.dumps(document))
    return slugs


def naive_search(home: Path, phrase: str, project: str | None) -> list[tuple[str, int]]:
    """Read every transcript, keep the messages holding ``phrase``; the newest PAGE."""
    found = []
    projects = [project] if project else sorted(os.listdir(home / "projects"))
    for slug in projects:
        folder = home / "projects" / slug / "sessions"
        for session_id in os.listdir(folder):
            try:
                data = (folder / session_id / "transcript.jsonl").read_bytes()
            except OSError:
                continue
            for line in data.splitlines():
                record = orjson.loads(line)
                if phrase in str(record.get("content", "")).lower():
                    found.append((session_id, int(record["seq"])))
    found.sort(reverse=True)
    return found[:PAGE]


async def reindex(home: Path, cwd: Path) -> int:
    async with open_local_runtime(home=home, cwd=cwd, durability="none") as rt:
        return await rt.reindex()


async def measure(
    home: Path, cwd: Path, queries: Sequence[tuple[str, str, bool]], repeat: int
) -> dict[tuple[str, bool], tuple[float, list[tuple[str, int]]]]:
    """Median seconds and the hits of each (query, every project) pair."""
    results = {}
    async with open_local_runtime(home=home, cwd=cwd, durability="none") as rt:
        await rt.search(queries[0][1])  # the index is built; warm the page cache, as a CLI finds it
        for _, query, everywhere in queries:
            times = []
            hits = []
            for _ in range(repeat):
                started = time.perf_counter()
                hits = await rt.search(query, all_projects=everywhere, limit=PAGE)
                times.append(time.perf_counter() - started)
            results[(query, everywhere)] = (
                statistics.median(times),
                [(hit.session_id, hit.seq) for hit in hits],
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, two repetitions")
    parser.add_argument("--sessions", type=int, default=None, help="sessions (10000)")
    parser.add_argument("--messages", type=int, default=None, help="messages a session (100)")
    parser.add_argument("--repeat", type=int, default=None, help="timed searches per query (7)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the store")
    args = parser.parse_args(argv)
    sessions = args.sessions or (200 if args.quick else 10_000)
    messages = args.messages or (50 if args.quick else 100)
    repeat = args.repeat or (2 if args.quick else 7)
    root = Path(tempfile.mkdtemp(prefix="amplifier-search-", dir=args.dir or REPO.parent))
    home = root / "home"
    ok = True
    rng = random.Random(11)
    words = vocabulary(rng)
    try:
        started = time.perf_counter()
        slugs = write_store(home, sessions, messages, words)
        written = time.perf_counter() - started
        cwd = Path("/" + slugs[0].strip("-").replace("-", "/"))
        started = time.perf_counter()
        indexed = anyio.run(reindex, home, cwd)
        indexing = time.perf_counter() - started
        if indexed != sessions:
            print(f"index holds {indexed} sessions, expected {sessions}")
            ok = False
        size = sum(p.stat().st_size for p in home.glob("index.sqlite3*"))
        total = sessions * messages
        # In a session of the first project, half-way through the store.
        middle = (sessions // 2) // PROJECTS * PROJECTS * messages
        rare = f"ticket{(middle // 8 + 1) * 8}"
        queries = [
            ("a word found once", rare, False),
            ("a word found once", rare, True),
            ("the most common word", words[0], False),
            ("the most common word", words[0], True),
            ("a phrase", f'"{PHRASE}"', False),
            ("a phrase", f'"{PHRASE}"', True),
            ("two words", f"{words[20]} {words[30]}", False),
            ("two words", f"{words[20]} {words[30]}", True),
            ("a prefix (3 letters)", f"{words[50][:3]}*", False),
            ("a prefix (3 letters)", f"{words[50][:3]}*", True),
            ("a word found nowhere", "qqqqqqqqqq", False),
            ("a word found nowhere", "qqqqqqqqqq", True),
        ]
        started = time.perf_counter()
        naive = naive_search(home, PHRASE, None)
        naive_time = time.perf_counter() - started
        measured = {
            backend: anyio.run(measure, home, cwd, queries, repeat, backend=backend)
            for backend in ("asyncio", "trio")
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    for backend, results in measured.items():
        if results[(f'"{PHRASE}"', True)][1] != naive:
            print(f"{backend}: the phrase's newest {PAGE} hits differ from the naive search's")
            ok = False
        if len(results[(rare, True)][1]) != 1:
            print(f"{backend}: the word found once was not found exactly once")
            ok = False
    print(
        f"\nsession search, newest {PAGE} matches, {sessions} sessions in {PROJECTS} projects, "
        f"{total} messages\n"
    )
    print("| query                | scope        | backend | hits | ms     |")
    print("|----------------------|--------------|---------|-----:|-------:|")
    for backend, results in measured.items():
        for label, query, everywhere in queries:
            seconds, hits = results[(query, everywhere)]
            scope = "all projects" if everywhere else "one project"
            print(
                f"| {label:<20} | {scope:<12} | {backend:<7} | {len(hits):>4} "
                f"| {seconds * 1000:6.1f} |"
            )
    print(
        f"\nnaive search (read every transcript) for the phrase, all projects: "
        f"{naive_time * 1000:.0f} ms"
    )
    print(
        f"store written in {written:.1f} s; Runtime.reindex (metadata and {total} messages) "
        f"{indexing:.1f} s ({total / indexing:.0f} messages/s); index {size / 1e6:.0f} MB\n"
    )
    for backend, results in measured.items():
        worst_query, (worst, _) = max(results.items(), key=lambda item: item[1][0])
        verdict = "met" if worst <= 0.1 else "NOT met"
        print(
            f"{backend:<8} every search <= 100 ms   {verdict}: worst {worst * 1000:.1f} ms "
            f"({worst_query[0]!r}{', all projects' if worst_query[1] else ''}); "
            f"naive {naive_time * 1000:.0f} ms"
        )
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    print(f"\nmachine: {machine}")
    print(f"reproduce: .venv/bin/python benchmarks/search.py{' --quick' if args.quick else ''}")
    if not ok:
        print("CHECK FAILED: see above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
