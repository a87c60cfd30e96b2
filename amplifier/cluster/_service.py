"""The persistence service: the one writer of a cluster runtime's session files.

It is the in-process persistence actor (``open_store``), unchanged, run by a
Ray actor on the node that holds ``$AMPLIFIER_HOME``; session hosts send it
batches of many sessions' requests (``commit``) and the driver its own
(listing, deleting, flushing).

Rule 1: a batch's requests enter the actor's mailbox together, in order,
        so the actor's rules (seq in mailbox order, causality by order, a
        group all or nothing) hold across hosts as they do across sessions.
Rule 2: each writer's batches are numbered; a number already committed is
        answered from memory, never applied twice (the forwarder's Rule 2).
Rule 3: a fenced writer (its host died) has nothing applied any more, and
        its sessions are ended (``session:end`` and metadata ``failed``,
        unless they had ended already) and closed, so they can be resumed
        elsewhere, and a parent's ``delegate:end`` written after the fence
        follows its child's end. The fence waits for the writer's batch in
        flight, if any; a second fence of the same writer waits for the first.
Rule 4: restarted by Ray after a crash, it replays its predecessor's
        journal (every acknowledged record reaches the session files) and
        stamps above the highest seq found there: seq never goes back.
        Sessions opened before the restart are unknown to it; their writes
        are refused with a clear error, and they can be resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import orjson

from amplifier.persistence import (
    Durability,
    PersistenceError,
    Receipt,
    RecoveryReport,
    SessionLocation,
    Store,
    open_store,
    read_metadata,
)
from amplifier.persistence.lowlevel import AppendEvent, CloseSession, Request, WriteMetadata

from ._exceptions import HostLost, PersistenceRestarted
from ._wire import Answer, Item, from_item, portable

FENCE_EPOCH = -2
"""The epoch of the fence's own records: never one the store has seen fail."""
HOST_DIED = "its session host died; what was stored is intact: resume the session to go on"


@dataclass(slots=True)
class _Writer:
    """One host (or the driver) as this service knows it."""

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    number: int = 0
    answers: list[Answer] = field(default_factory=list)
    handles: dict[int, int] = field(default_factory=dict)
    """The writer's session handles -> this service's."""
    locations: dict[int, SessionLocation] = field(default_factory=dict)
    """This service's handles of the writer's open sessions -> where they are (Rule 3)."""
    fence: anyio.Event | None = None
    """Set once the writer is fenced (Rule 3); None: not fenced."""


class PersistenceService:
    """Runs ``open_store`` for ``home`` on its own event loop; see the module's Rules."""

    # Ray awaits an async __init__ on the actor's loop: the actor is up once the store is.
    async def __init__(self, home: str, durability: Durability) -> None:  # type: ignore[misc]
        self._home = Path(home)
        self._durability: Durability = durability
        self._store: Store | None = None
        self._failure: BaseException | None = None
        self._writers: dict[str, _Writer] = {}
        self._handles = itertools.count(1)
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        # Kept: the loop holds tasks weakly.
        self._main = asyncio.get_running_loop().create_task(self._serve())
        await self._ready.wait()
        if self._failure is not None:
            raise self._failure

    async def _serve(self) -> None:
        try:
            async with open_store(
                self._home, durability=self._durability, continue_seq=True
            ) as store:
                self._store = store
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._store = None
            self._ready.set()

    async def describe(self) -> tuple[int, RecoveryReport]:
        """This process's id and what start-up recovery restored."""
        store = self._require()
        return os.getpid(), store.recovered

    async def recovered(self) -> RecoveryReport:
        """What start-up recovery restored."""
        return self._require().recovered

    async def commit(self, writer: str, number: int, items: list[Item]) -> list[Answer]:
        """Commit batch ``number`` of ``writer``: one answer per item, in order."""
        store = self._require()
        state = self._writers.setdefault(writer, _Writer())
        async with state.lock:
            if state.fence is not None:
                return [Answer(error=HostLost(writer))] * len(items)
            if number == state.number:
                return state.answers  # delivered twice: applied once (Rule 2)
            if number < state.number:
                stale = PersistenceError(f"batch {number} of {writer} arrived after a newer one")
                return [Answer(error=stale)] * len(items)
            requests, forward = self._requests(state, items)
            for request, sent in zip(requests, forward, strict=True):
                if sent:
                    await store.forward(request)
            answers = []
            for request in requests:
                try:
                    answers.append(Answer(value=await store.wait(request)))
                except Exception as exc:
                    answers.append(Answer(error=portable(exc)))
            state.number, state.answers = number, answers
            return answers

    def _requests(self, state: _Writer, items: list[Item]) -> tuple[list[Request], list[bool]]:
        """The batch's requests, on this service's handles; False: answered here already."""
        requests: list[Request] = []
        forward: list[bool] = []
        receipts: list[Receipt] = []
        for item in items:
            fields = dict(item.fields)
            known = True
            handle = item.handle
            if handle is not None:
                if item.kind in ("create", "open"):
                    state.handles[handle] = next(self._handles)
                    state.locations[state.handles[handle]] = fields["location"]
                mapped = state.handles.get(handle)
                if item.kind == "close":
                    state.handles.pop(handle, None)
                    state.locations.pop(mapped or 0, None)
                known = mapped is not None
                fields["handle"] = mapped or 0
            request = from_item(item, fields, receipts)
            if not known:  # opened before a restart (Rule 4)
                request.error, request.done = PersistenceRestarted(), True
            requests.append(request)
            forward.append(known)
            receipts.append(request)
        return requests, forward

    async def fence(self, writer: str) -> int:
        """Apply nothing more of ``writer``, end and close its sessions (Rule 3); how many
        were open."""
        store = self._require()
        state = self._writers.setdefault(writer, _Writer())
        if state.fence is not None:  # the driver and a parent's host may both fence it
            await state.fence.wait()
            return 0
        state.fence = anyio.Event()
        try:
            async with state.lock:  # its batch in flight, if any, lands first
                held, state.handles, state.locations = state.locations, {}, {}
            await store.flush()  # what it wrote is in the files: which sessions ended
            requests: list[Request] = []
            for handle, location in held.items():
                requests += await self._ending(handle, location)
                # Any epoch but a failed one: the close goes through and releases the claim.
                requests.append(CloseSession(handle=handle, epoch=FENCE_EPOCH))
            for request in requests:
                await store.forward(request)
            for request in requests:
                # A close that reports an earlier failure still released the session.
                with contextlib.suppress(Exception):
                    await store.wait(request)
        finally:
            state.fence.set()
        return len(held)

    async def _ending(self, handle: int, location: SessionLocation) -> list[Request]:
        """The records that end a fenced writer's session, unless it ended (or never began)."""
        try:
            meta = await anyio.to_thread.run_sync(read_metadata, location)
        except (PersistenceError, OSError):
            return []  # not on disk: it never got going
        if meta.status != "active":
            return []
        meta.status, meta.error = "failed", HOST_DIED
        data = {"status": meta.status, "error": HOST_DIED}
        record = {
            "session_id": meta.session_id,
            "parent_id": meta.parent_id,
            "event": "session:end",
            "data": data,
        }
        document = meta.document()
        return [
            AppendEvent(
                handle=handle,
                epoch=FENCE_EPOCH,
                body=orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE),
                session_id=meta.session_id,
                parent_id=meta.parent_id,
                event="session:end",
            ),
            WriteMetadata(
                handle=handle,
                epoch=FENCE_EPOCH,
                document=orjson.dumps(document, option=orjson.OPT_INDENT_2),
            ),
        ]

    async def exists(self, location: SessionLocation) -> bool:
        """Whether the session at ``location`` was ever created (its files are written first)."""
        await self._require().flush()
        return await anyio.to_thread.run_sync(location.metadata.is_file)

    async def shutdown(self) -> None:
        """Write everything, release every claim, remove the journal (a clean exit)."""
        self._stop.set()
        await asyncio.wait([self._main])

    def _require(self) -> Store:
        if self._store is None:
            raise PersistenceError("the persistence service has stopped")
        return self._store
