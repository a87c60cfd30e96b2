"""The Runtime: a persistence actor and a task group of session actors.

    Runtime  (async context manager)
     ├─ PersistenceActor        the only writer of session files
     └─ session task group
         ├─ SessionActor root A
         │    └─ (inside A's delegation calls) SessionActor children
         └─ SessionActor root B

Shutdown order: sessions end (each writes ``session:end``), then the
persistence actor drains its mailbox, makes everything durable and closes
its files. Cancellation (Ctrl-C, a timeout, a cancel scope) still gets the
final records written and leaves every session resumable.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import (
    AsyncIterator,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from amplifier._errors import unwrap_single_error
from amplifier.persistence import (
    Clock,
    Durability,
    EventRecord,
    PersistenceError,
    RecoveryReport,
    SearchHit,
    SessionLocation,
    SessionLocked,
    SessionMetadata,
    SessionSort,
    SessionSummary,
    SessionWriter,
    Store,
    TranscriptRecord,
    directory_names,
    find_session,
    id_spans,
    iter_events,
    last_write,
    list_sessions,
    load_transcript,
    merge_events,
    open_store,
    project_slug,
    project_slugs,
    read_metadata,
    resolve_home_and_cwd,
    search_sessions,
    session_tree,
    summarize,
    utc_now,
)

from ._actor import FINAL_RECORDS_TIMEOUT, Services, SessionActor
from ._approval import Approver
from ._bus import EventBus, Subscription
from ._children import ChildLauncher, ChildOutcome, ChildRun
from ._exceptions import RuntimeClosed
from ._handle import LocalSession
from ._ids import is_child_id, new_root_id
from ._labels import clean_attributes, clean_name, clean_tag, retag
from ._protocols import Runtime, Session, SessionOpening
from ._supervision import drive_child
from ._turns import EchoTurnHandler, TurnHandler

EVENTS_PER_READ = 256
"""Events ``Runtime.events`` reads per trip to the worker thread."""


class LocalRuntime(Runtime):
    """A ``Runtime`` whose sessions run in this process, in its task group."""

    def __init__(
        self, services: Services, tg: TaskGroup, *, cwd: Path, profile: str | None
    ) -> None:
        self._services = services
        self._tg = tg
        self._roots: set[SessionActor] = set()
        self._closed = False
        self._cwd = cwd
        self._project = project_slug(cwd)
        self._profile = profile

    @property
    def cwd(self) -> Path:
        return self._cwd

    @property
    def project(self) -> str:
        return self._project

    @property
    def profile(self) -> str | None:
        return self._profile

    @property
    def home(self) -> Path:
        return self._store.home

    @property
    def _store(self) -> Store:
        return self._services.store

    @property
    def durability(self) -> Durability:
        return self._store.durability

    @property
    def recovered(self) -> RecoveryReport:
        return self._store.recovered

    def open_session(
        self,
        agent: str | None = None,
        *,
        profile: str | None = None,
        attributes: Mapping[str, str] | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
    ) -> SessionOpening:
        label = clean_name(name) if name is not None else None
        labels = retag([], add=tags, remove=())
        given = clean_attributes(attributes or {})

        chosen = profile if profile is not None else self.profile

        async def open_() -> Session:
            setup = self._services.handler.prepare_session(agent, profile=chosen)
            now = self._services.clock()
            session_id = new_root_id(now)
            metadata = SessionMetadata(
                session_id=session_id,
                created=now,
                updated=now,
                cwd=str(self.cwd),
                project=self.project,
                agent=setup.agent,
                profile=chosen,
                root_id=session_id,
                attributes={**setup.attributes, **given},
                name=label,
                tags=labels,
            )
            location = SessionLocation(self.home, self.project, session_id)
            actor = SessionActor(self._services, location, create=metadata, setup=setup)
            return await self._start(actor)

        return SessionOpening(open_)

    def resume(self, session_id: str, *, profile: str | None = None) -> SessionOpening:

        async def open_() -> Session:
            location = await self.find(session_id)
            actor = SessionActor(self._services, location, create=None, profile=profile)
            return await self._start(actor)

        return SessionOpening(open_)

    async def _start(self, actor: SessionActor) -> LocalSession:
        if self._closed:
            raise RuntimeClosed(actor.id, "the runtime is closed")
        session: LocalSession = await self._tg.start(self._run_root, actor)
        return session

    async def _run_root(
        self,
        actor: SessionActor,
        *,
        task_status: TaskStatus[LocalSession] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self._roots.add(actor)
        try:
            await actor.run(task_status=task_status)
        finally:
            self._roots.discard(actor)

    async def find(self, id_or_prefix: str) -> SessionLocation:

        def look() -> SessionLocation:
            return find_session(self.home, id_or_prefix, project=self.project, cwd=str(self.cwd))

        # What this runtime created or closed a moment ago may not be in the files
        # yet: a reader in this runtime sees it all the same (a prefix too).
        await self._store.flush()
        return await self._store.read(look)

    async def flush(self) -> None:
        await self._store.flush(release=True)

    async def sessions(
        self,
        *,
        all_projects: bool = False,
        limit: int | None = None,
        roots_only: bool = False,
        sort: SessionSort = "created",
        tag: str | None = None,
    ) -> list[SessionSummary]:
        return await self._listing(
            None if all_projects else self.cwd,
            limit=limit,
            roots_only=roots_only,
            sort=sort,
            tag=tag,
        )

    async def _listing(
        self,
        directory: str | os.PathLike[str] | None,
        *,
        limit: int | None = None,
        roots_only: bool = False,
        sort: SessionSort = "created",
        tag: str | None = None,
    ) -> list[SessionSummary]:
        """The sessions of ``directory`` (None: of every project); see ``sessions``.

        A directory's sessions may lie in two project folders: ours, and the
        Amplifier CLI's when its name differs (``project_slugs``).
        """
        wanted = clean_tag(tag) if tag is not None else None

        def listing() -> list[SessionSummary]:
            return list_sessions(
                self.home,
                project_slugs(directory) if directory is not None else None,
                cwd=directory_names(directory) if directory is not None else None,
                limit=limit,
                roots_only=roots_only,
                sort=sort,
                tag=wanted,
            )

        await self._store.flush()
        return await self._store.read(listing)

    async def search(
        self, text: str, *, all_projects: bool = False, limit: int = 20
    ) -> list[SearchHit]:
        project = None if all_projects else self.project
        await self._store.flush()
        try:
            return await self._store.read(
                lambda: search_sessions(self.home, text, project=project, limit=limit)
            )
        except PersistenceError:
            await anyio.lowlevel.checkpoint_if_cancelled()  # interrupted by its cancellation
            raise

    async def rename(self, session_id: str, name: str | None) -> SessionMetadata:
        label = clean_name(name) if name is not None else None

        def change(meta: SessionMetadata) -> None:
            meta.name = label

        return await self._relabel(session_id, change)

    async def tag(
        self, session_id: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> SessionMetadata:
        retag([], add=add, remove=remove)  # refuse a bad tag before opening anything

        def change(meta: SessionMetadata) -> None:
            meta.tags = retag(meta.tags, add=add, remove=remove)

        return await self._relabel(session_id, change)

    async def _relabel(
        self, session_id: str, change: Callable[[SessionMetadata], None]
    ) -> SessionMetadata:
        """Rewrite a session's metadata under its lock; ``updated`` stays (not a use).

        A root session open in this Runtime changes through its actor, between turns.
        """
        location = await self.find(session_id)
        for actor in self._roots:
            if actor.id == location.session_id:
                return await actor.relabel(change)
        writer, _ = await self._store.open(location)
        try:
            meta = await self._store.read(read_metadata, location)
            change(meta)
            await writer.write_metadata(meta)
        finally:
            with anyio.CancelScope(shield=True):
                await writer.close()
        return meta

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[HeldSession]:
        location = await self.find(session_id)
        tree = await self._store.read(session_tree, location)
        writers: list[SessionWriter] = []
        try:
            for node in tree:
                writer, _ = await self._store.open(node)
                writers.append(writer)
            meta = await self._store.read(read_metadata, location)
            yield HeldSession(self._store, writers[0], meta)
        finally:
            with anyio.CancelScope(shield=True):
                for writer in writers:
                    with contextlib.suppress(PersistenceError):
                        await writer.close()

    async def reindex(self) -> int:
        return await self._store.reindex()

    async def events(self, session_id: str, *, tree: bool = False) -> AsyncIterator[EventRecord]:
        location = await self.find(session_id)
        await self._store.flush()
        records: Iterator[EventRecord] | None = None

        def read() -> list[EventRecord]:
            nonlocal records
            if records is None:  # opened in the thread too: even a stat may block
                records = merge_events(session_tree(location)) if tree else iter_events(location)
            return list(islice(records, EVENTS_PER_READ))

        while batch := await self._store.read(read):
            for record in batch:
                yield record
            del batch  # not kept while the next one is read

    async def latest(self, *, cwd: str | os.PathLike[str] | None = None) -> SessionSummary | None:
        directory = cwd if cwd is not None else self.cwd
        rows = await self._listing(directory, limit=_LATEST_PAGE, roots_only=True, sort="used")
        healthy = next(
            (
                row
                for row in rows
                if row.metadata is not None
                and (row.metadata.turns > 0 or row.metadata.message_count > 0)
            ),
            None,
        )

        def damaged_roots() -> list[tuple[datetime, SessionSummary]]:
            return [
                (when, row)
                for row in rows
                if row.metadata is None
                and not is_child_id(row.session_id)
                and (when := last_write(row.location)) is not None
            ]

        damaged = await self._store.read(damaged_roots)
        if damaged:
            when, row = max(damaged, key=lambda pair: pair[0])
            if healthy is None or healthy.metadata is None or when > healthy.metadata.updated:
                return row
        return healthy

    async def transcript(self, session_id: str) -> list[TranscriptRecord]:
        location = await self.find(session_id)
        await self._store.flush()
        return await self._store.read(load_transcript, location)

    async def tree(self, session_id: str) -> list[SessionSummary]:
        location = await self.find(session_id)
        await self._store.flush()
        return await self._store.read(
            lambda: [summarize(node) for node in session_tree(location)]
        )

    async def delete(self, session_id: str) -> list[str]:
        location = await self.find(session_id)
        tree = await self._store.read(session_tree, location)
        return await self._store.delete(tree)

    async def cleanup(
        self, *, days: float, dry_run: bool = False, all_projects: bool = False
    ) -> Cleanup:
        now = self._services.clock()
        try:
            cutoff = now - timedelta(days=days)
        except (OverflowError, ValueError):  # further back than any date: nothing is that old
            cutoff = datetime.min.replace(tzinfo=now.tzinfo)
        rows = await self.sessions(all_projects=all_projects)
        # A session with damaged metadata is dated by its folder: a stat, so in the thread.
        plan = await self._store.read(plan_cleanup, rows, cutoff)
        if dry_run:
            return plan
        removed: list[SessionSummary] = []
        in_use = list(plan.in_use)
        for tree in plan.trees:
            try:
                # Checked again under the locks: a session used since the plan stays.
                gone = await self._store.delete(
                    [row.location for row in tree], untouched_since=cutoff
                )
            except SessionLocked:
                in_use.extend(tree)  # opened since the plan was made: left alone
            else:
                removed.extend(row for row in tree if row.session_id in gone)
        return Cleanup(trees=[], removed=removed, in_use=in_use)

    def subscribe(
        self, session_id: str | None = None, *, tree: bool = True, buffer: int = 1024
    ) -> Subscription:
        return self._services.bus.subscribe(session_id, tree=tree, buffer=buffer)

    def _close(self) -> None:
        """Ask every root session to end; never blocks (it may run while cancelled)."""
        self._closed = True
        for actor in self._roots:
            actor.close_mailbox()


async def run_child(
    runtime: LocalRuntime, run: ChildRun, *, scope: anyio.CancelScope
) -> ChildOutcome:
    """Run a child that a parent in another Runtime placed here; how it ended.

    The child runs in ``runtime``'s task group (the runtime's exit waits for
    it), with the same code as a child run in its parent's task group.
    Returns once the child's final records are durable (``_children``'s
    Rule 1). Cancelling ``scope`` cancels the child: its outcome is then
    ``cancelled``. Cancelling the call cancels the child too. Raises
    ``RuntimeClosed`` if the runtime is closing, or the handler's error for
    a profile or agent it does not know (nothing is written then).
    """
    child_id = run.location.session_id
    if runtime._closed:
        raise RuntimeClosed(child_id, "the runtime is closed")
    # A new child asks this runtime's handler for its setup (limits, scrub) under
    # the profile it records: its parent's setup stayed in the parent's runtime.
    setup = None
    if run.create is not None:
        setup = runtime._services.handler.prepare_session(
            run.create.agent, profile=run.create.profile
        )
    child = SessionActor(runtime._services, run.location, create=run.create, setup=setup)
    outcome = ChildOutcome("cancelled")
    ended = anyio.Event()

    async def host() -> None:
        nonlocal outcome
        try:
            with scope:
                outcome = await drive_child(child, run.request)
            final = child.final
            if final is not None:
                with anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True):
                    try:
                        await runtime._store.wait(final)
                    except PersistenceError as exc:
                        outcome = replace(outcome, final_error=exc)
        finally:
            ended.set()

    runtime._tg.start_soon(host, name=f"sub-session {child_id}")
    try:
        await ended.wait()
    except anyio.get_cancelled_exc_class():
        scope.cancel()
        raise
    return outcome


class HeldSession:
    """A stored session claimed by ``Runtime.hold``: write its events, keep file contents."""

    def __init__(self, store: Store, writer: SessionWriter, metadata: SessionMetadata) -> None:
        self._store = store
        self._writer = writer
        self.metadata = metadata
        self.location = writer.location

    @property
    def id(self) -> str:
        return self.location.session_id

    async def emit(self, event: str, data: Mapping[str, Any]) -> int:
        """Append an event to the session's log; its ``seq`` once durable."""
        stamp = await self._writer.append_event(event, data, parent_id=self.metadata.parent_id)
        return stamp.seq

    async def keep_file(self, content: bytes) -> str:
        """Keep a file's content in the session's file history; its digest, once durable."""
        return await self._store.keep(self.location, content)


@dataclass(frozen=True, slots=True)
class Cleanup:
    """What ``Runtime.cleanup`` found: trees to remove (dry run), removed, or in use."""

    trees: list[list[SessionSummary]]
    """Planned removals, a root with its sub-sessions each (what a dry run reports)."""
    removed: list[SessionSummary] = field(default_factory=list)
    in_use: list[SessionSummary] = field(default_factory=list)
    """Old enough, but open in some process: left alone."""


_LATEST_PAGE = 32
"""Sessions ``latest`` looks at, the most recently used first (empty ones are passed over)."""


def _last_touched(row: SessionSummary) -> datetime:
    if row.metadata is not None:
        return row.metadata.updated
    try:  # damaged metadata: the folder's own time is the best we know
        return datetime.fromtimestamp(row.location.directory.stat().st_mtime, UTC)
    except OSError:
        return datetime.min.replace(tzinfo=UTC)


def plan_cleanup(rows: list[SessionSummary], cutoff: datetime) -> Cleanup:
    """Trees (a root and all whose parent chain leads to it) untouched since ``cutoff``.

    A session whose metadata is damaged belongs to the parent its id names.
    """
    by_id = {row.session_id: row for row in rows}
    by_span = {span: row.session_id for row in rows if (span := id_spans(row.session_id)[1])}
    children: dict[str, list[SessionSummary]] = {}
    roots = []
    for row in rows:
        parent = (
            row.metadata.parent_id
            if row.metadata is not None
            else by_span.get(id_spans(row.session_id)[0] or "")
        )
        if parent is not None and parent in by_id:
            children.setdefault(parent, []).append(row)
        else:
            roots.append(row)
    trees: list[list[SessionSummary]] = []
    in_use: list[SessionSummary] = []
    for root in roots:
        tree = [root]
        for row in tree:  # grows while it is walked: breadth first, parents first
            tree.extend(children.get(row.session_id, []))
        if any(_last_touched(row) >= cutoff for row in tree):
            continue
        live = [row for row in tree if row.live]
        if live:
            in_use.extend(live)
        else:
            trees.append(tree)
    return Cleanup(trees=trees, in_use=in_use)


@asynccontextmanager
async def open_local_runtime(
    *,
    handler: TurnHandler | None = None,
    home: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    durability: Durability = "fsync",
    profile: str | None = None,
    clock: Clock = utc_now,
    max_depth: int = 3,
    max_children: int = 4,
    mailbox_size: int = 16,
    scrub: Callable[[str], str] | None = None,
    store: Store | None = None,
    bus: EventBus | None = None,
    children: ChildLauncher | None = None,
    approve: Approver | None = None,
) -> AsyncIterator[LocalRuntime]:
    """Start a Runtime storing under ``home`` (default ``$AMPLIFIER_HOME`` or ``~/.amplifier``).

    ``cwd`` is the project directory (default: the current one); ``handler``
    answers every turn (default: ``EchoTurnHandler``). ``max_depth`` bounds
    delegation nesting, ``max_children`` the children a session runs at once.
    ``scrub`` (e.g. a redactor of secrets) is applied to every string of every
    event and to the last prompt kept in metadata. ``store``: an open store
    to write through (a forwarder to another process's persistence actor);
    by default the Runtime starts its own for ``home``. ``bus``: where the
    persisted events go to subscribers, when others deliver to it too (a
    cluster's hosts). ``children`` places
    some delegated children outside this Runtime (on other session hosts);
    by default every child runs in its parent's task group. ``approve``
    answers the tool calls that ask to run, for every session tree
    (``ApprovalRequest`` in, ``True``/``False`` or an ``ApprovalDecision``
    out, sync or async); without it such calls are denied.
    On exit, open sessions end with status ``completed`` (``cancelled`` if the
    exit is a cancellation) and everything is made durable.
    """
    root, directory = resolve_home_and_cwd(home, cwd)
    opening: AbstractAsyncContextManager[Store] = (
        nullcontext(store)
        if store is not None
        else open_store(root, durability=durability, clock=clock)
    )
    events = bus if bus is not None else EventBus()
    try:
        async with opening as store:
            store.add_listener(events.deliver)
            services = Services(
                profile=profile,
                store=store,
                handler=handler if handler is not None else EchoTurnHandler(),
                bus=events,
                clock=clock,
                mailbox_size=mailbox_size,
                max_depth=max_depth,
                max_children=max_children,
                scrub=scrub,
                children=children,
                approve=approve,
            )
            with unwrap_single_error():
                async with anyio.create_task_group() as tg:
                    runtime = LocalRuntime(services, tg, cwd=directory, profile=profile)
                    try:
                        yield runtime
                    finally:
                        runtime._close()
    finally:
        if bus is None:  # its own: nothing more comes once its store is closed
            events.close()
