"""Interactive mode: one session at a time, a prompt line, streamed answers, live delegations.

At a terminal (stdin and stdout), prompts are read by ``LineEditor``
(prompt_toolkit: line editing, history, multi-line input, completion, a
bottom line); otherwise line by line, each line one prompt (scripts, ``-i``
with a pipe). Slash commands (``_slash``) work in both; ``@path`` attaches a
file of the project (``_mentions``).

Keys: Ctrl-C cancels the running turn (what it wrote is kept, the session
goes on); at the prompt, a second Ctrl-C in a row, or Ctrl-D, leaves.
SIGTERM or SIGHUP cancels the running turn and leaves at once: the session
ends ``cancelled``, and the program exits 128 + the signal's number.
Piped lines are read by a daemon thread of our own (a blocked ``input()``
must not keep the process alive after the user left); Ctrl-C arrives as a
signal on the event loop, whichever thread is reading, except while the
line editor holds the terminal in raw mode: there it is a key, which the
editor reports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from amplifier import (
    AmplifierError,
    EventRecord,
    Runtime,
    Session,
    TranscriptRecord,
    TurnCancelled,
    TurnFailed,
    UsageError,
)
from amplifier.agents import read_event
from amplifier.runtime import DelegateEnded, DelegateStarted

from . import _slash
from ._continuing import forget_if_empty
from ._input import read_line
from ._render import cut_off_notice, safe, transcript_lines

if TYPE_CHECKING:
    from amplifier import Tokens

History = Literal["none", "recent", "full"]
RECENT = 10
"""Messages of history shown when an interactive session is continued."""

Line = tuple[Literal["line"], str] | tuple[Literal["eof"], None]


class LineReader:
    """Reads stdin a line at a time in a daemon thread, on request."""

    def __init__(self, send: MemoryObjectSendStream[Line]) -> None:
        self._send = send
        self._wanted = threading.Semaphore(0)
        self._token = anyio.lowlevel.current_token()
        self._thread = threading.Thread(target=self._run, name="amplifier-input", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for the next line (delivered to the stream)."""
        self._wanted.release()

    def _deliver(self, item: Line) -> None:
        # The loop may be gone or have stopped listening: then nobody wants the line.
        with contextlib.suppress(
            RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError
        ):
            anyio.from_thread.run_sync(self._send.send_nowait, item, token=self._token)

    def _run(self) -> None:
        while True:
            self._wanted.acquire()
            try:
                text = read_line()
            except (OSError, ValueError):
                text = ""
            if not text:
                self._deliver(("eof", None))
                return
            self._deliver(("line", text.rstrip("\n")))


Read = (
    tuple[Literal["line"], str]
    | tuple[Literal["eof"], None]
    | tuple[Literal["interrupt"], str | None]
)
"""What a prompt gives: a line, the end of input (Ctrl-D), or Ctrl-C at the prompt (with
the text it dropped, "" if none, where the input can tell)."""


class Input(Protocol):
    """Where prompts come from: the line editor, or plain lines."""

    async def read(self, prompt: str = "> ") -> Read: ...

    async def ask(self, question: str) -> Read: ...


class PlainInput:
    """One line a prompt, read by ``LineReader`` (stdin is no terminal, or stdout is not)."""

    def __init__(self, reader: LineReader, lines: MemoryObjectReceiveStream[Line]) -> None:
        self._reader = reader
        self._lines = lines

    async def read(self, prompt: str = "> ") -> Read:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        self._reader.request()
        try:
            kind, text = await self._lines.receive()
        except anyio.EndOfStream:
            return ("eof", None)
        return ("line", text) if kind == "line" and text is not None else ("eof", None)

    async def ask(self, question: str) -> Read:
        return await self.read(question)


@dataclass
class Names:
    """What completion offers, gathered on the event loop for the editor's thread."""

    sessions: list[tuple[str, str]] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


_T = TypeVar("_T")


class Chat:
    """The open session of interactive mode, and what the slash commands act on."""

    def __init__(
        self,
        rt: Runtime,
        session: Session,
        *,
        say: Callable[[str], None],
        tg: TaskGroup,
        state: _State,
    ) -> None:
        self.rt = rt
        self._state = state
        self.session = session
        self.say = say
        self.input: Input
        self.names = Names()
        self.tokens: Tokens | None = None
        self.leaving = False
        self._tg = tg
        self._live: anyio.CancelScope | None = None
        self.root = Path(rt.cwd)
        """The session's project directory: where its tools run and ``@path`` looks."""
        self.status = ""
        """The bottom line (read by the line editor's thread: a plain string)."""
        self.fresh: set[str] = set()
        """The sessions this interactive run opened new: left without a prompt (nor a name
        or a tag), they are not kept, as ``amplifier`` then Ctrl-D keeps none."""

    async def turn(self, text: str, *, mentions: bool = True) -> bool:
        """One turn of the open session (Ctrl-C cancels it); True if it was answered."""
        answered = await _turn(self, text, self._state, mentions=mentions)
        await self.refresh()
        return answered

    async def start(self) -> None:
        """Start the live view of the session's delegations; gather what completion offers."""
        self.root = Path(self.session.metadata.cwd or self.rt.cwd)
        await self._tg.start(self._watch, self.session)
        await self.refresh(config=True)

    async def _watch(
        self, session: Session, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.CancelScope() as scope:
            self._live = scope
            await _live_delegations(session, self.say, task_status=task_status)

    async def ask(self, question: str) -> Read:
        """A slash command's question, answered at the prompt; end of input if a signal asks
        to leave meanwhile (the command then does nothing, and the program leaves)."""
        read = await _unless_left(self._state, lambda: self.input.ask(question))
        return read if read is not None else ("eof", None)

    async def switch(
        self, opening: Awaitable[Session], *, history: bool = False, fresh: bool = False
    ) -> bool:
        """Open another session (``fresh``: a new one), then close this one (``_slash``
        Rule 2); whether this one is kept (one opened new and never used is not)."""
        new = await opening
        if fresh:
            self.fresh.add(new.id)
        old = self.session
        if self._live is not None:
            self._live.cancel()
        self.session = new
        await old.close()
        kept = not (old.id in self.fresh and await forget_if_empty(self.rt, old))
        _banner(new, self.say)
        if history:
            await _show_history(self.rt, new.id, full=False)
        await self.start()
        return kept

    async def reopen_after(
        self, work: Callable[[], Awaitable[_T]], *, then: Callable[[_T], None]
    ) -> None:
        """Close the session, do ``work`` (which needs it closed), open the session again."""
        session_id = self.session.id
        if self._live is not None:
            self._live.cancel()
        await self.session.close()
        try:
            result = await work()
        finally:
            self.session = await self.rt.resume(session_id)
            await self.start()
        then(result)

    def relabelled(self) -> None:
        """Name, tags or model changed: the bottom line and completion show them at once."""
        self.names.tags = list(self.session.metadata.tags)
        self.status = _slash.status_line(self)

    async def refresh(self, *, config: bool = False) -> None:
        """What the bottom line and completion show, after a turn or a change."""
        from amplifier import session_usage

        with contextlib.suppress(AmplifierError, OSError):
            self.tokens = (await session_usage(self.rt, self.session.id)).head.tree
        with contextlib.suppress(AmplifierError, OSError):
            rows = await self.rt.sessions(limit=50, roots_only=True, sort="used")
            sessions = [
                (row.session_id, row.metadata.name or "" if row.metadata else "") for row in rows
            ]
            sessions += [(name, session_id) for session_id, name in sessions if name]
            self.names.sessions = [(value, meta) for value, meta in sessions if value]
        self.relabelled()
        if config:
            agents, models = await anyio.to_thread.run_sync(self._config)
            self.names.agents, self.names.models = agents, models

    def _config(self) -> tuple[list[str], list[str]]:
        from amplifier.agents import DEFAULT_PROFILE, AgentCatalog, ProfileCatalog

        agents: list[str] = []
        models: list[str] = []
        with contextlib.suppress(AmplifierError, OSError):
            agents = AgentCatalog.load(home=self.rt.home, project=self.rt.cwd).names
        with contextlib.suppress(AmplifierError, OSError):
            catalog = ProfileCatalog.load(home=self.rt.home, project=self.rt.cwd)
            profile = catalog.get(self.session.metadata.profile or DEFAULT_PROFILE)
            named = [profile.provider.model, *profile.prices]
            models = list(dict.fromkeys(m for m in named if m))
        return agents, models

    async def tools(self) -> list[tuple[str, str, bool]]:
        """The tools of the session's agent that its profile permits: name, what it does,
        and whether it asks before it runs."""
        meta = self.session.metadata

        def gather() -> list[tuple[str, str, bool]]:
            from amplifier.agents import (
                DEFAULT_PROFILE,
                AgentCatalog,
                Bash,
                ProfileCatalog,
                file_tools,
                write_tools,
            )

            spec = AgentCatalog.load(home=self.rt.home, project=self.rt.cwd)[meta.agent]
            profile = ProfileCatalog.load(home=self.rt.home, project=self.rt.cwd).get(
                meta.profile or DEFAULT_PROFILE
            )
            known = {t.name: t for t in (*file_tools(), *write_tools(), Bash())}
            names = [*known, "delegate", *profile.tools.python]
            chosen = [n for n in names if any(fnmatchcase(n, p) for p in spec.tools)]
            shown = []
            for name in dict.fromkeys(chosen):
                if not profile.tools.permits(name):
                    continue
                tool = known.get(name)
                if name == "delegate":
                    about = f"hand a task to a sub-agent ({', '.join(spec.agents) or 'none'})"
                else:
                    about = tool.description if tool is not None else ""
                shown.append((name, about, bool(tool is not None and tool.side_effects)))
            return shown

        return await anyio.to_thread.run_sync(gather)


async def run_interactive(
    rt: Runtime,
    session: Session,
    *,
    history: History,
    interrupts: AsyncIterator[int],
    say: Callable[[str], None],
    fresh: bool = False,
) -> tuple[int | None, str | None]:
    """Serve the session until the user leaves. ``say`` prints status lines (stderr).

    ``interrupts`` delivers Ctrl-C (and SIGTERM, SIGHUP); the caller opens
    it before anything else and keeps it open until the runtime has closed,
    so no signal ever meets Python's default handler (which would kill the
    process mid-write). ``fresh``: ``session`` was opened new for this run.
    Returns the exit code a signal calls for, if one ended the session, and
    the id of the session open last (``/clear`` and ``/resume`` open others),
    None if that one was opened by a command here and left unused (not kept).
    The caller closes ``session`` and decides whether it is kept.
    """
    _banner(session, say)
    say("Type /help for help; Ctrl-D to leave.")
    if history != "none":
        await _show_history(rt, session.id, full=history == "full")

    send, lines = anyio.create_memory_object_stream[Line](4)
    state = _State()
    async with anyio.create_task_group() as tg, lines:
        chat = Chat(rt, session, say=say, tg=tg, state=state)
        if fresh:
            chat.fresh.add(session.id)
        editor = _line_editor(chat)
        state.plain = editor is None
        chat.input = editor if editor is not None else PlainInput(LineReader(send), lines)
        tg.start_soon(_watch_interrupts, chat, state, interrupts)
        await chat.start()
        while not chat.leaving:
            item = await _next_line(chat, state)
            if item is None:
                break  # Ctrl-C twice, SIGTERM, SIGHUP
            kind, text = item
            if kind == "eof":
                sys.stdout.write("\n")
                break
            if kind == "interrupt":
                if _interrupted_at_prompt(state, chat.say, dropped=bool(text)):
                    break
                continue
            state.interrupts = 0
            text = (text or "").strip()
            if not text:
                continue
            parsed = _slash.parse(text)
            if parsed is not None:
                command, word, argument = parsed
                if command is None:
                    say(_slash.unknown(word))
                else:
                    await _slash.run(chat, command, argument)
                continue
            await chat.turn(text)
        tg.cancel_scope.cancel()
    code = None if state.stopped_by is None else 128 + state.stopped_by
    last = chat.session
    if code is not None:
        await last.close(status="cancelled")
    if last.id != session.id and last.id in chat.fresh:
        await last.close()
        if await forget_if_empty(rt, last):
            return code, None
    return code, last.id


def _banner(session: Session, say: Callable[[str], None]) -> None:
    meta = session.metadata
    say(
        f"Amplifier: session {session.id} (agent {meta.agent}, profile {meta.profile or '-'}, "
        f"{meta.attributes.get('provider', '?')}/{meta.attributes.get('model', '?')})."
    )


def at_a_terminal() -> bool:
    """Prompts are read by the line editor: stdin and stdout are a terminal that can edit."""
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def preload() -> None:
    """Import the line editor in the background while the runtime opens, at a terminal.

    prompt_toolkit takes a good part of a second to import; the runtime's
    start spends much of its time waiting on the disk meanwhile.
    """
    if at_a_terminal():
        threading.Thread(target=_import_editor, name="amplifier-preload", daemon=True).start()


def _import_editor() -> None:
    with contextlib.suppress(Exception):  # imported again, and failing loudly, when used
        from . import _line_editor  # noqa: F401


def _line_editor(chat: Chat) -> Input | None:
    """The line editor, at a terminal; None for plain lines (imports prompt_toolkit only here)."""
    if not at_a_terminal():
        return None
    from ._line_editor import LineEditor, history_path

    return LineEditor(
        history=history_path(chat.rt.home, chat.rt.project),
        complete=lambda text: _slash.completions(text, chat),
        status=lambda: chat.status,
        warn=chat.say,
    )


class _State:
    def __init__(self) -> None:
        self.plain = True
        self.waiting = False
        self.interrupts = 0
        self.leave = anyio.Event()
        self.in_turn = False
        self.stopped_by: int | None = None
        """The signal (SIGTERM, SIGHUP) that ends the session, if one did."""


def _interrupted_at_prompt(
    state: _State, say: Callable[[str], None], *, dropped: bool = False
) -> bool:
    """Ctrl-C at the prompt: True the second time in a row (leave), else a warning. One
    that ``dropped`` typed text is a first: a draft typed after a Ctrl-C and dropped by
    the next is not two in a row."""
    state.interrupts = 1 if dropped else state.interrupts + 1
    if state.interrupts >= 2:
        return True
    if state.plain:
        sys.stdout.write("\n")
    say("(Ctrl-C again, or Ctrl-D, to leave)")
    return False


async def _next_line(chat: Chat, state: _State) -> Read | None:
    """The next prompt, or None if a signal asked to leave."""
    state.waiting = True
    try:
        return await _unless_left(state, chat.input.read)
    finally:
        state.waiting = False


async def _unless_left(state: _State, reading: Callable[[], Awaitable[Read]]) -> Read | None:
    """What ``reading`` reads, or None if a signal (SIGTERM, SIGHUP, Ctrl-C twice) asks to
    leave first: the read is cancelled, which gives the terminal back."""
    result: list[Read] = []
    async with anyio.create_task_group() as tg:

        async def read() -> None:
            result.append(await reading())
            tg.cancel_scope.cancel()

        async def leave() -> None:
            await state.leave.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(read)
        tg.start_soon(leave)
    return result[0] if result else None


async def _turn(chat: Chat, text: str, state: _State, *, mentions: bool = True) -> bool:
    """Ask ``text`` (with the files it mentions), streaming the answer; True if answered."""
    from ._mentions import Mentions, attach

    say = chat.say
    found = await anyio.to_thread.run_sync(attach, text, chat.root) if mentions else None
    if found is not None:
        for note in found.notes:
            say(note)
        if found.attached:
            say(f"(attached: {', '.join(found.attached)})")
    prompt = (found or Mentions(prompt=text)).prompt
    session = chat.session

    async def show(piece: str) -> None:
        sys.stdout.write(safe(piece))
        sys.stdout.flush()

    state.in_turn = True
    try:
        reply = await session.ask(prompt, on_text=show)
        sys.stdout.write("\n")
        notice = cut_off_notice(reply.cut_off)
        if notice is not None:
            sys.stdout.flush()
            say(notice)
        return True
    except TurnCancelled:
        sys.stdout.write("\n")
        say("[cancelled: what the turn wrote is kept; the session goes on]")
    except TurnFailed as exc:
        sys.stdout.write("\n")
        say(f"Error: {exc.reason}")
    except (AmplifierError, UsageError) as exc:
        say(f"Error: {exc}")
    finally:
        state.in_turn = False
        sys.stdout.flush()
    return False


async def _watch_interrupts(chat: Chat, state: _State, interrupts: AsyncIterator[int]) -> None:
    async for signum in interrupts:
        if signum != signal.SIGINT:
            state.stopped_by = signum
            chat.session.cancel()  # the running turn, if any
            state.leave.set()
            return
        if state.in_turn:
            chat.session.cancel()
            continue
        # At a plain prompt, or between prompts (the editor reads Ctrl-C as a key).
        if _interrupted_at_prompt(state, chat.say):
            state.leave.set()
            return
        if state.plain and state.waiting:
            _prompt()


async def _live_delegations(
    session: Session,
    say: Callable[[str], None],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Which child is running, for which agent, and how it ended, as it happens."""
    async with session.subscribe(tree=True, buffer=4096) as events:
        task_status.started()  # subscribed before the first prompt: nothing is missed
        try:
            async for event in events:
                line = _describe(event)
                if line:
                    say(line)
        except AmplifierError:
            return  # fell behind: the live view stops, the session does not


def _describe(event: EventRecord) -> str | None:
    match read_event(event):
        case DelegateStarted(agent=agent, child_id=child_id):
            return f"  [sub-session] {safe(agent)} running: {child_id}"
        case DelegateEnded(agent=agent, child_id=child_id, status=status, error=error):
            said = f" ({safe(error)[:120]})" if error else ""
            return f"  [sub-session] {safe(agent)} {status}: {child_id}{said}"
        case _:
            return None


async def _show_history(rt: Runtime, session_id: str, *, full: bool) -> None:
    records: Sequence[TranscriptRecord] = await rt.transcript(session_id)
    shown = records if full else records[-RECENT:]
    if len(shown) < len(records):
        print(f"[... {len(records) - len(shown)} earlier messages; --full-history shows all]")
    for line in transcript_lines(shown):
        print(line)


def _prompt() -> None:
    sys.stdout.write("> ")
    sys.stdout.flush()
