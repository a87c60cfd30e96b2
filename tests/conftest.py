"""Test configuration: every async test runs on asyncio AND trio."""

from __future__ import annotations

import compileall
import inspect
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .fake_llm_server import FakeLLMServer, Kind
from .virtual_time import on_virtual_time

BACKENDS = ("asyncio", "trio")

# Before anything imports ray (some are read at import), and before a cluster
# starts (its processes keep the environment of that moment): no usage
# statistics, no token written to ~/.ray, every server on 127.0.0.1 only.
os.environ.update(
    {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; byte-compile the package once, before any test starts the
    ``amplifier`` command.

    The suite starts it hundreds of times, and pytest-xdist starts its workers.
    Where ``PYTHONDONTWRITEBYTECODE`` is set (CI machines often set it) an
    editable install never gets its bytecode cached, and every one of those
    processes would compile each module from source again: about 130 ms of
    each start on a 2-core VM. Compiling writes nothing but ``__pycache__``.
    """
    config.addinivalue_line(
        "markers",
        "virtual_time: run on a virtual clock that jumps to the next deadline when every "
        "task waits (tests/virtual_time.py)",
    )
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it
        return
    package = Path(__file__).resolve().parent.parent / "amplifier"
    compileall.compile_dir(package, quiet=1)


@pytest.fixture(params=[pytest.param(name, id=name) for name in BACKENDS])
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, Any]]:
    """The backend; with its virtual clock for a test marked ``virtual_time``."""
    name = str(request.param)
    if request.node.get_closest_marker("virtual_time") is not None:
        return on_virtual_time(name)
    return name


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse a run in which some async test would not run on both backends."""
    seen: dict[str, set[str]] = defaultdict(set)
    for item in session.items:
        function = getattr(item, "function", None)
        if function is None or not inspect.iscoroutinefunction(function):
            continue
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("anyio_backend") if callspec else None
        base = item.nodeid.split("[")[0]
        seen[base].add(str(backend))
    missing = {name: BACKENDS_SET - found for name, found in seen.items() if found != BACKENDS_SET}
    # A selection (-k, a single node id) may legitimately pick one backend.
    if missing and not session.config.option.keyword and not _selected_by_id(session):
        raise pytest.UsageError(f"async tests not run on both backends: {sorted(missing)}")


BACKENDS_SET = set(BACKENDS)


def _selected_by_id(session: pytest.Session) -> bool:
    return any("[" in arg for arg in session.config.args)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$AMPLIFIER_HOME`` for every test: no test touches the user's sessions."""
    path = tmp_path / "home"
    monkeypatch.setenv("AMPLIFIER_HOME", str(path))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory (the runtime's working directory)."""
    path = tmp_path / "project"
    path.mkdir()
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--trials",
        type=int,
        default=None,
        help="trials of the heavy reliability tests (SIGKILL, load); default: the CI size",
    )


@pytest.fixture
def trials(request: pytest.FixtureRequest) -> int | None:
    """--trials N from the command line, or None for the test's own CI default."""
    value = request.config.getoption("--trials")
    return int(value) if value is not None else None


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    """A local OpenAI/Anthropic stand-in (tests/fake_llm_server.py), scripted by the test."""
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(params=["openai", "anthropic"])
def kind(request: pytest.FixtureRequest) -> Kind:
    """Each provider kind, one after the other."""
    value: Kind = request.param
    return value


RAY_GROUP = "ray_cluster"
"""The xdist group of every test that uses ``ray_cluster``: one worker runs them all, in turn."""


class RayNodes:
    """A local three-node Ray cluster (``ray.cluster_utils.Cluster``): a head, two workers.

    Each node is its own raylet, as on three machines (all on 127.0.0.1). The
    test process is connected to it, through the head. Everything Ray writes,
    its ``ray start`` record too, stays in a short temp dir (socket paths
    must fit in 107 bytes): ``RAY_TMPDIR`` points there while it runs, so a
    command started by a test finds this cluster as ``auto``. Never ``ray
    stop``: it would end every Ray process of the user.
    """

    WORKERS = 2

    def __init__(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.scratch = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        self._previous = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self.scratch
        self.cluster = Cluster(initialize_head=True, head_node_args=self._node_args())
        self.restore()
        ray.init(
            address=self.cluster.address,
            namespace="amplifier-tests",
            log_to_driver=False,
            configure_logging=False,
        )
        self.address = str(self.cluster.address)

    @staticmethod
    def _node_args() -> dict[str, object]:
        return {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}

    def restore(self) -> None:
        """Bring the workers back to ``WORKERS`` (a test may have removed one)."""
        while len(self.cluster.worker_nodes) < self.WORKERS:
            self.cluster.add_node(**self._node_args())

    def stop(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()
        if self._previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = self._previous
        shutil.rmtree(self.scratch, ignore_errors=True)


_ray_nodes: RayNodes | None = None


@pytest.fixture
def ray_nodes() -> RayNodes:
    """The shared three-node cluster (started on first use, its workers restored before
    each test); tests using it belong to the ``ray_cluster`` xdist group."""
    global _ray_nodes
    pytest.importorskip("ray", reason="the cluster tests need the ray extra")
    if _ray_nodes is None:
        _ray_nodes = RayNodes()
    _ray_nodes.restore()
    return _ray_nodes


@pytest.fixture
def ray_cluster(ray_nodes: RayNodes) -> str:
    """The shared cluster's address (for ``--cluster``); this process is connected to it."""
    return ray_nodes.address


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared cluster after the last test of its group: the tests that follow
    on this worker do not pay for its processes."""
    global _ray_nodes
    if _ray_nodes is not None and (nextitem is None or not _in_ray_group(nextitem)):
        _ray_nodes.stop()
        _ray_nodes = None


def _in_ray_group(item: pytest.Item) -> bool:
    return any(mark.args[:1] == (RAY_GROUP,) for mark in item.iter_markers("xdist_group"))
