"""Joining a Ray cluster within a bound, and giving up at once when cancelled.

Rule 1: the whole join (finding the cluster, probing it, Ray's own
        connection or a local cluster's start) takes at most ``timeout``
        seconds; past it, ``ClusterError`` says which address did not
        answer. Ray's connection blocks, so it runs in a thread that the
        caller may abandon: cancelling (Ctrl-C, SIGTERM, a cancel
        scope) returns at once, and an attempt that gets in afterwards
        leaves the cluster again (``_ray.Connection``). That thread is a
        daemon (not anyio's worker, which the process waits for at exit):
        a command that gives up exits at once.
Rule 2: before Ray dials an address, the address is probed: a GCS is a
        gRPC server, so it answers the HTTP/2 connection preface with its
        SETTINGS frame. Nothing listening fails at once; something that
        listens and does not answer, at the deadline. Ray's own connection,
        which retries for many minutes and prints warnings meanwhile, is
        only asked to join what answered.
Rule 3: a cluster this process was already connected to is used as it is,
        and left connected at the end; one this runtime joined or started
        is left (and a started one stops) when the runtime closes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import ray

from . import _ray
from ._exceptions import ClusterError
from ._info import ClusterInfo

T = TypeVar("T")


@asynccontextmanager
async def joined(address: str, timeout: float) -> AsyncIterator[ClusterInfo]:  # noqa: ASYNC109
    """Connected to the cluster ``address`` means ("auto": ``_ray``'s Rule 1) for the block."""
    if ray.is_initialized():  # Rule 3
        current = await anyio.to_thread.run_sync(_ray.connected_address)
        yield ClusterInfo(current, "this process")
        return
    connection: _ray.Connection | None = None
    doing = f"join the Ray cluster at {address}"
    try:
        with anyio.fail_after(timeout):
            target, note = await reachable(address)
            if target.address is None:
                doing = "start a local Ray cluster"
            else:
                doing = f"join the Ray cluster at {target.address}"
            connection = _ray.Connection(target)
            where = await in_daemon_thread(connection.run)
    except BaseException as exc:
        if connection is not None and connection.abandon():  # it got in as we gave up
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_ray.disconnect)
        if isinstance(exc, TimeoutError):
            raise ClusterError(f"could not {doing} within {timeout:g} s") from None
        raise
    try:
        yield ClusterInfo(where, target.joined, note)
    finally:
        if connection.owned:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_ray.disconnect)


async def reachable(address: str) -> tuple[_ray.Target, str]:
    """Where ``address`` means to go, probed (Rule 2); a note if a local cluster is to be
    started instead. The caller bounds the wait."""
    target = await anyio.to_thread.run_sync(_ray.find, address)
    if target.address is None:
        return target, ""
    try:
        await probe(target.address)
    except ClusterError as exc:
        if target.joined != "ray start":
            raise
        # A record left by a cluster that has stopped: there is none running (Rule 1).
        note = f"the one `ray start` recorded at {target.address} does not answer: {exc}"
        return _ray.Target(None, "started"), note
    return target, ""


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
"""HTTP/2's client connection preface, then an empty SETTINGS frame."""
SETTINGS = 4
"""The frame type a server's first frame must have."""


async def probe(address: str) -> None:
    """Raise ``ClusterError`` unless a gRPC server answers at ``address`` (Rule 2).

    Waits until it answers; the caller bounds the wait.
    """
    host, port = await anyio.to_thread.run_sync(_ray.dialled, address)
    if f"{host}:{port}" != address:
        address = f"{address} (dialled as {host}:{port})"
    try:
        stream = await anyio.connect_tcp(host, port)
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address}: {exc.strerror or exc}") from None
    async with stream:
        try:
            await stream.send(PREFACE)
            header = b""
            while len(header) < 9:  # a frame header: length (3), type, flags, stream (4)
                header += await stream.receive(9 - len(header))
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError) as exc:
            raise ClusterError(f"{address} is not a Ray cluster: it hung up ({exc!r})") from None
    if header[3] != SETTINGS:
        raise ClusterError(f"{address} is not a Ray cluster: it does not speak gRPC")


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """``work()`` in a daemon thread of its own (Rule 1). Checkpoint: cancelling returns
    at once, and the thread runs on; the process does not wait for it at exit."""
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: list[tuple[T | None, BaseException | None]] = []

    def run() -> None:
        try:
            outcome.append((work(), None))
        except BaseException as exc:
            outcome.append((None, exc))
        with contextlib.suppress(Exception):  # the caller's event loop may have ended
            anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=run, name="amplifier: joining a Ray cluster", daemon=True).start()
    await done.wait()
    value, error = outcome[0]
    if error is not None:
        raise error
    return value  # type: ignore[return-value]  # None only with an error
