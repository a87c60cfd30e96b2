"""A full disk, for real: a small tmpfs is filled up under a running store.

One clear error (or, where nothing acknowledged is at risk, one warning),
existing files intact, and the session resumable once space returns. The
injected-failure tests in test_persistence.py cover the same paths where
mounting a filesystem is not allowed; these skip there, saying so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from amplifier import PersistenceError, StoreWarning, TurnFailed
from amplifier.runtime.lowlevel import open_local_runtime as open_runtime

from .helpers import session_dirs

SIZE = "4m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs mounted for the test (skipped where mounting is not permitted)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def filled(disk: Path) -> Iterator[None]:
    """The disk full to the last byte while inside; the space comes back on leaving."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    try:
        yield
    finally:
        filler.unlink()


def _valid(home: Path) -> dict[str, list[dict[str, object]]]:
    """Every line of every session file, parsed (fails on a partial line)."""
    parsed = {}
    for folder in session_dirs(home).values():
        for name in ("events.jsonl", "transcript.jsonl"):
            data = (folder / name).read_bytes() if (folder / name).exists() else b""
            assert not data or data.endswith(b"\n"), f"{folder.name}/{name} ends mid-line"
            parsed[f"{folder.name}/{name}"] = [orjson.loads(line) for line in data.splitlines()]
    return parsed


async def test_full_disk_fails_the_turn_and_keeps_what_was_stored(
    small_disk: Path, project: Path
) -> None:
    """Durability flush: the turn fails saying the disk is full; earlier records stay intact."""
    home = small_disk / "home"
    async with open_runtime(home=home, cwd=project, durability="flush") as rt:
        session = await rt.open_session()
        await session.ask("before the disk filled")
        before = (session_dirs(home)[session.id] / "transcript.jsonl").read_bytes()
        with filled(small_disk):
            with pytest.raises(
                TurnFailed, match=r"could not write session files.*the disk is full"
            ):
                await session.ask("x" * 50_000)
            after = (session_dirs(home)[session.id] / "transcript.jsonl").read_bytes()
            assert after.startswith(before)
            _valid(home)
        reply = await session.ask("after the space came back")
        assert reply.text == "echo: after the space came back"
        await session.close()
    contents = [m.get("content") for m in _valid(home)[f"{session.id}/transcript.jsonl"]]
    assert "before the disk filled" in contents
    assert "after the space came back" in contents


async def test_full_disk_behind_the_journal_warns_and_loses_nothing(
    small_disk: Path, project: Path
) -> None:
    """Durability fsync: turns go into the journal, a warning says so, a later run writes them."""
    home = small_disk / "home"
    acknowledged = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with open_runtime(home=home, cwd=project) as rt:
            session = await rt.open_session()
            await session.ask("first")
            with filled(small_disk):
                for n in range(3):
                    reply = await session.ask(f"while full {n}")
                    acknowledged.append(reply.text)
                await session.close()
                # The files follow the close at once, behind; they cannot while it is full.
                with pytest.raises(PersistenceError, match="the disk is full"):
                    await rt.flush()
    told = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    assert any("the disk is full" in text for text in told)
    assert any("next runtime" in text or "safe in the journal" in text for text in told)
    async with open_runtime(home=home, cwd=project) as rt, rt.resume(session.id) as again:
        await again.ask("space is back")
    contents = [m.get("content") for m in _valid(home)[f"{session.id}/transcript.jsonl"]]
    for n in range(3):
        assert f"while full {n}" in contents
    assert acknowledged == [f"echo: while full {n}" for n in range(3)]
    assert not list((home / "journal").glob("*.journal"))


def test_cli_on_a_full_disk_says_so_in_one_line(small_disk: Path, project: Path) -> None:
    """`amplifier run` with no room for a new session: exit 1 and one line naming the cause."""
    home = small_disk / "home"
    env = {**os.environ, "AMPLIFIER_HOME": str(home)}
    amplifier = Path(sys.executable).parent / "amplifier"
    first = subprocess.run(
        [str(amplifier), "run", "hello"], cwd=project, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0
    with filled(small_disk):
        done = subprocess.run(
            [str(amplifier), "run", "hello again", "--json"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "the disk is full" in errors[0]
    assert "Traceback" not in done.stderr
    assert len(session_dirs(home)) == 1  # nothing half-made
    _valid(home)


def test_sessions_are_deleted_to_free_a_full_disk(small_disk: Path, project: Path) -> None:
    """With the disk full to the last byte, `session delete` and `session cleanup` still
    delete (the way to get space back needs none), and a run then works again."""
    home = small_disk / "home"
    env = {**os.environ, "AMPLIFIER_HOME": str(home)}
    amplifier = Path(sys.executable).parent / "amplifier"

    def amp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(amplifier), *args], cwd=project, env=env, capture_output=True, text=True
        )

    for prompt in ("one", "two", "three"):
        assert amp("run", prompt).returncode == 0
    first, *_ = sorted(session_dirs(home))
    filler = small_disk / "filler"
    with filled(small_disk):
        deleted = amp("session", "delete", first, "--yes")
        cleaned = amp("session", "cleanup", "--days", "0", "--yes")
        assert filler.stat().st_size > 0
    assert deleted.returncode == 0, deleted.stderr
    assert f"Deleted {first}" in deleted.stdout + deleted.stderr
    assert cleaned.returncode == 0, cleaned.stderr
    assert session_dirs(home) == {}
    assert not list((home / "journal").glob("*.journal"))
    assert amp("run", "after").returncode == 0
    assert len(session_dirs(home)) == 1


async def test_a_prompt_that_cannot_be_stored_never_reaches_the_model(
    small_disk: Path, project: Path
) -> None:
    """After a turn that could not be stored, the next prompt is stored before the model reads
    the history back: on a disk still full, that turn fails before the model is asked (it
    would have read a history without the prompt it answers)."""
    import amplifier

    home = small_disk / "home"
    streamed: list[str] = []

    async def shown(text: str) -> None:
        streamed.append(text)

    async with amplifier.open_runtime(home=home, cwd=project, durability="flush") as rt:
        async with rt.open_session() as session:
            await session.ask("before the disk filled")
            with filled(small_disk):
                with pytest.raises(TurnFailed, match="the disk is full"):
                    await session.ask("x" * 50_000)
                with pytest.raises(TurnFailed, match="the disk is full"):
                    await session.ask("y" * 50_000, on_text=shown)
            assert streamed == []
            reply = await session.ask("after the space came back", on_text=shown)
    assert "You asked: after the space came back" in reply.text
    assert "You asked: after the space came back" in "".join(streamed)
