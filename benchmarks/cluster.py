"""Sessions on a Ray cluster against the same sessions in-process.

Workload (the targets of the cluster backend):
- throughput: N sessions at once, T turns each, every turn delegating one
  child (the offline provider, durability fsync); events/s (every event
  stored, children's too) and sessions/s, in-process and on Ray with 1, 2
  and 4 session hosts, and with 2 and 4 hosts spreading the children
  (``spread_children``: each host places its children on the hosts in turn);
- memory: M idle sessions spread over the hosts; the resident-set growth per
  session of every process that holds a share of them (the hosts, the
  driver, the persistence actor) and their sum, against the same sessions
  in a fresh in-process runtime (its own process, which holds all of it).

Target: Ray with 2 hosts reaches at least 0.5x in-process events/s; an idle
session costs the cluster (hosts + driver + persistence actor) at most 2x
what it costs in-process.

The cluster is a local one (started here, once; its start-up is reported
apart); every figure is one run on this machine, which also runs the
driver, the hosts and the persistence actor: read them with the machine's
load (printed) in mind.

Reproduce::

    .venv/bin/pip install -e '.[dev,ray]'
    .venv/bin/python benchmarks/cluster.py                 # 1,000 x 5, 10,000 idle
    .venv/bin/python benchmarks/cluster.py --quick         # 50 x 2, 500 idle
    .venv/bin/python benchmarks/cluster.py --modes 0,2,2s,4,4s --no-idle   # spreading only
    .venv/bin/python benchmarks/cluster.py --modes none                    # memory only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import anyio

import amplifier


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stored_events(home: Path) -> int:
    return sum(
        sum(1 for _ in path.open("rb"))
        for path in home.glob("projects/*/sessions/*/events.jsonl")
    )


async def throughput(
    home: Path, cwd: Path, sessions: int, turns: int, hosts: int, spread: bool = False
) -> dict[str, Any]:
    """Run the workload; hosts=0: in-process; ``spread``: children spread over the hosts."""
    options: dict[str, Any] = (
        {"cluster": "auto", "hosts": hosts, "spread_children": spread} if hosts else {}
    )
    started = time.perf_counter()
    async with amplifier.open_runtime(home=home, cwd=cwd, **options) as rt:
        ready = time.perf_counter()

        async def one() -> None:
            async with rt.open_session() as session:
                for turn in range(turns):
                    await session.ask(f"turn {turn}\n/delegate explorer: step {turn}")

        async with anyio.create_task_group() as tg:
            for _ in range(sessions):
                tg.start_soon(one)
        done = time.perf_counter()
    events = stored_events(home)
    wall = done - ready
    return {
        "mode": (f"ray, {hosts} host(s)" + (", spread" if spread else "")) if hosts
        else "in-process",
        "start_s": round(ready - started, 2),
        "wall_s": round(wall, 2),
        "events": events,
        "events_per_s": round(events / wall),
        "sessions_per_s": round(sessions / wall, 1),
    }


async def idle_hosts(home: Path, cwd: Path, count: int, hosts: int) -> list[dict[str, Any]]:
    """The idle sessions' memory, per process that holds a share of them, and in all."""
    async with amplifier.open_runtime(home=home, cwd=cwd, cluster="auto", hosts=hosts) as rt:
        processes = {
            f"ray, {hosts} host(s): the hosts": [host.pid for host in rt.hosts],  # type: ignore[attr-defined]
            "the driver (this process)": [os.getpid()],
            "the persistence actor": [rt.persistence_pid],  # type: ignore[attr-defined]
        }
        await anyio.sleep(1)
        before = {where: sum(rss_kib(pid) for pid in pids) for where, pids in processes.items()}
        opened = []
        limit = anyio.CapacityLimiter(500)

        async def open_one() -> None:
            async with limit:
                opened.append(await rt.open_session())

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(open_one)
        took = time.perf_counter() - started
        await anyio.sleep(1)
        after = {where: sum(rss_kib(pid) for pid in pids) for where, pids in processes.items()}
        answer = await opened[-1].ask("still there?")
        assert answer.turn == 1
    rows = [
        {"mode": where, "sessions": count, "open_s": round(took, 1),
         "kib_per_session": round((after[where] - before[where]) / count, 1)}
        for where in processes
    ]
    total = sum(after.values()) - sum(before.values())
    rows.append({"mode": f"ray, {hosts} host(s): all three", "sessions": count,
                 "open_s": round(took, 1), "kib_per_session": round(total / count, 1)})
    return rows


LOCAL_IDLE = """
import anyio, amplifier, sys, time
from pathlib import Path
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
async def main(count, home, cwd):
    async with amplifier.open_runtime(home=home, cwd=cwd) as rt:
        await rt.open_session(); await anyio.sleep(1)
        before = rss()
        async def one():
            await rt.open_session()
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
        await anyio.sleep(1)
        print((rss() - before) / count)
anyio.run(main, int(sys.argv[1]), sys.argv[2], sys.argv[3])
"""


def idle_local(home: Path, cwd: Path, count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_IDLE, str(count), str(home), str(cwd)],
        capture_output=True, text=True, check=True,
    )
    return {"mode": "in-process", "sessions": count, "open_s": None,
            "kib_per_session": round(float(done.stdout.split()[-1]), 1)}


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sessions", type=int)
    parser.add_argument("--turns", type=int)
    parser.add_argument("--idle", type=int)
    parser.add_argument("--modes", default="0,1,2,4,2s,4s",
                        help="throughput runs: host counts (0: in-process; 's': children "
                             "spread; 'none': the memory run only)")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-session memory run")
    args = parser.parse_args()
    chosen = [] if args.modes == "none" else args.modes.split(",")
    modes = [(int(m.rstrip("s")), m.endswith("s")) for m in chosen]
    sessions = args.sessions or (50 if args.quick else 1000)
    turns = args.turns or (2 if args.quick else 5)
    idle = args.idle or (500 if args.quick else 10_000)

    import ray

    scratch = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="amplifier-cluster-bench-"))
    began = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=80 * 1024 * 1024, _node_ip_address="127.0.0.1",
             _temp_dir=str(scratch), namespace="amplifier-bench")
    cluster_start = time.perf_counter() - began
    try:
        print(f"# cluster: {sessions} sessions x {turns} turns, one child per turn; "
              f"{idle} idle; load {os.getloadavg()[0]:.1f}; cpus {os.cpu_count()}; "
              f"local Ray cluster started in {cluster_start:.1f} s")
        rows = []
        for hosts, spread in modes:
            name = f"t{hosts}{'s' if spread else ''}"
            home, cwd = work / name / "home", work / name / "project"
            cwd.mkdir(parents=True)
            rows.append(anyio.run(throughput, home, cwd, sessions, turns, hosts, spread))
            print(json.dumps({**rows[-1], "load1": round(os.getloadavg()[0], 1)}), flush=True)
        print("\n===== targets")
        if rows:
            base = next(r["events_per_s"] for r in rows if r["mode"] == "in-process")
            for row in rows:
                row["vs_in_process"] = f"{row['events_per_s'] / base:.2f}x"
            print("\n## Throughput\n")
            print(table(rows))
            two = next(r for r in rows if r["mode"] == "ray, 2 host(s)")
            ratio = two["events_per_s"] / base
            print(f"(cluster: ray 2 hosts {ratio:.2f}x in-process events/s, target >= 0.5x: "
                  f"{'met' if ratio >= 0.5 else 'NOT met'})")
        if args.no_idle:
            return 0
        memory = [idle_local(work / "il" / "home", work, idle)]
        for hosts in (2,):
            home, cwd = work / f"i{hosts}" / "home", work / f"i{hosts}" / "project"
            cwd.mkdir(parents=True)
            memory += anyio.run(idle_hosts, home, cwd, idle, hosts)
        base = max(memory[0]["kib_per_session"], 0.1)
        for row in memory:
            row["vs_in_process"] = f"{row['kib_per_session'] / base:.2f}x"
        print("\n## Idle sessions\n")
        print(table(memory))
        kib = memory[-1]["kib_per_session"] / base
        print(f"(cluster: idle session, hosts + driver + persistence actor {kib:.2f}x "
              f"in-process, target <= 2x: {'met' if kib <= 2 else 'NOT met'})")
        print("reproduce: .venv/bin/python benchmarks/cluster.py")
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
