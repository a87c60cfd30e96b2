"""Finding and joining a Ray cluster: what ``auto`` means, and addresses that do not answer.

None of these starts a cluster: they run beside the other tests, not in the
``ray_cluster`` group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

pytest.importorskip("ray", reason="the cluster tests need the ray extra")

import amplifier
from amplifier.cluster import _connect, _ray

AMPLIFIER = Path(sys.executable).parent / "amplifier"


@pytest.fixture
def silent_port() -> Iterator[socket.socket]:
    """A port that accepts connections and never says a word (not a Ray cluster)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ray_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ray's temp dir for this test, where ``ray start`` leaves its record; no RAY_ADDRESS."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "ray").mkdir()
    return tmp_path


def _port(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])


def _amp(*args: str, project: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "AMPLIFIER_ASYNC_BACKEND": "asyncio"}
    return subprocess.Popen(
        [str(AMPLIFIER), *args],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_cluster_address_nobody_listens_on_fails_at_once(
    home: Path, project: Path, closed_port: int
) -> None:
    """A cluster address where nothing listens fails at once, naming the address."""
    address = f"127.0.0.1:{closed_port}"
    with anyio.fail_after(5), pytest.raises(amplifier.ClusterError) as caught:
        async with amplifier.open_runtime(home=home, cwd=project, cluster=address):
            pass
    assert str(caught.value).startswith(f"no Ray cluster answers at {address}: ")


async def test_cluster_address_that_never_answers_fails_within_the_timeout(
    home: Path, project: Path, silent_port: socket.socket
) -> None:
    """An address that takes the connection and never answers fails after cluster_timeout."""
    address = f"127.0.0.1:{_port(silent_port)}"
    started = anyio.current_time()
    with pytest.raises(amplifier.ClusterError) as caught:
        async with amplifier.open_runtime(
            home=home, cwd=project, cluster=address, cluster_timeout=0.5
        ):
            pass
    assert str(caught.value) == f"could not join the Ray cluster at {address} within 0.5 s"
    assert 0.5 <= anyio.current_time() - started < 5


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cluster_join_stops_at_once_on_a_signal(
    project: Path, silent_port: socket.socket, signum: signal.Signals
) -> None:
    """Ctrl-C or SIGTERM while joining a cluster that does not answer ends the command at once,
    with one line (nothing of Ray's)."""
    address = f"127.0.0.1:{_port(silent_port)}"
    command = _amp("run", "--cluster", address, "--cluster-timeout", "20", "hi", project=project)
    try:
        silent_port.settimeout(60)
        connection, _ = silent_port.accept()  # it is waiting for the cluster's answer
        with connection:  # held open: the answer never comes
            command.send_signal(signum)
            sent = time.monotonic()
            _, err = command.communicate(timeout=30)
            took = time.monotonic() - sent
    finally:
        command.kill()
        command.wait()
    assert command.returncode == 128 + signum, err
    assert err.splitlines() == ["Error: interrupted before the session opened; nothing ran"]
    assert took < 10  # at once: far below the 20 s it would wait for the cluster


def test_cluster_auto_joins_the_cluster_ray_address_names(
    ray_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``auto`` with RAY_ADDRESS set joins that cluster, as Ray's own ``auto`` does."""
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text("10.0.0.9:6379")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert _ray.find("auto") == _ray.Target("10.0.0.5:6379", "RAY_ADDRESS")


def test_cluster_auto_joins_the_cluster_ray_start_recorded(ray_tmpdir: Path) -> None:
    """``auto`` after ``ray start`` on this machine joins that cluster."""
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text("10.0.0.9:6379")
    assert _ray.find("auto") == _ray.Target("10.0.0.9:6379", "ray start")


def test_cluster_auto_starts_a_local_cluster_when_none_is_named(ray_tmpdir: Path) -> None:
    """``auto`` with no cluster named anywhere starts a local one."""
    assert _ray.find("auto") == _ray.Target(None, "started")


async def test_cluster_auto_starts_a_local_cluster_when_the_recorded_one_is_gone(
    ray_tmpdir: Path, closed_port: int
) -> None:
    """A ``ray start`` record whose cluster has stopped: ``auto`` starts a local one (says why)."""
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{closed_port}")
    target, note = await _connect.reachable("auto")
    assert target == _ray.Target(None, "started")
    assert f"the one `ray start` recorded at 127.0.0.1:{closed_port} does not answer" in note


def test_cluster_hosts_spread_evenly_over_the_nodes() -> None:
    """Six hosts on three nodes: two on each; a node to avoid gets one only when others are full."""
    nodes = ["a", "b", "c"]
    placed: list[str] = []
    for _ in range(6):
        placed.append(_ray.pick_node(nodes, placed, ()))
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c"]
    assert _ray.pick_node(nodes, ["b", "c"], avoid={"a"}) == "b"
    assert _ray.pick_node(["a"], [], avoid={"a"}) == "a"  # the only node: used all the same


def test_cluster_timeout_without_a_cluster_is_a_usage_error(home: Path) -> None:
    """``--cluster-timeout`` without ``--cluster``: one line saying so, exit 2, nothing run."""
    from typer.testing import CliRunner

    from amplifier.cli import app

    result = CliRunner().invoke(app, ["run", "--cluster-timeout", "5", "hello"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["Error: --cluster-timeout applies with --cluster"]
    assert not (home / "projects").exists()
