"""Interactive mode: one session, a prompt line, streamed answers, live delegations.

Keys: Ctrl-C cancels the running turn (what it wrote is kept, the session
goes on); at the prompt, a second Ctrl-C in a row, or Ctrl-D, leaves.
SIGTERM or SIGHUP cancels the running turn and leaves at once: the session
ends ``cancelled``, and the program exits 128 + the signal's number.
Lines are read by a daemon thread of our own (a blocked ``input()`` must
not keep the process alive after the user left); Ctrl-C arrives as a signal
on the event loop, whichever thread is reading.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

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

from ._input import read_line
from ._limits import answer_limit, limit_notice
from ._render import safe, transcript_lines

History = Literal["none", "recent", "full"]
RECENT = 10
"""Messages of history shown when an interactive session is continued."""

HELP = """\
Type a prompt and press Enter. Commands:
  /help          this help
  /exit, /quit   leave (also Ctrl-D, or Ctrl-C twice at the prompt)
Ctrl-C while an answer is coming cancels that turn; the session goes on.
Lines starting with /tool, /delegate or /fail go to the model (the offline
provider acts on them)."""

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


async def run_interactive(
    rt: Runtime,
    session: Session,
    *,
    history: History,
    interrupts: AsyncIterator[int],
    say: Callable[[str], None],
) -> int | None:
    """Serve one session until the user leaves. ``say`` prints status lines (stderr).

    ``interrupts`` delivers Ctrl-C (and SIGTERM, SIGHUP); the caller opens
    it before anything else and keeps it open until the runtime has closed,
    so no signal ever meets Python's default handler (which would kill the
    process mid-write). Returns the exit code a signal calls for, if one
    ended the session.
    """
    meta = session.metadata
    say(
        f"Amplifier: session {session.id} (agent {meta.agent}, profile {meta.profile or '-'}, "
        f"{meta.attributes.get('provider', '?')}/{meta.attributes.get('model', '?')})."
    )
    say("Type /help for help; Ctrl-D to leave.")
    if history != "none":
        await _show_history(rt, session.id, full=history == "full")

    send, lines = anyio.create_memory_object_stream[Line](4)
    state = _State()
    async with anyio.create_task_group() as tg, lines:
        reader = LineReader(send)
        tg.start_soon(_watch_interrupts, session, state, interrupts, say)
        await tg.start(_live_delegations, session, say)
        while True:
            _prompt()
            reader.request()
            state.waiting = True
            item = await _next_line(lines, state)
            state.waiting = False
            if item is None or item[0] == "eof":
                sys.stdout.write("\n")
                break
            text = item[1].strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                break
            if text == "/help":
                print(HELP)
                continue
            await _turn(session, text, state, say)
        tg.cancel_scope.cancel()
    if state.stopped_by is None:
        return None
    await session.close(status="cancelled")
    return 128 + state.stopped_by


class _State:
    def __init__(self) -> None:
        self.waiting = False
        self.interrupts = 0
        self.leave = anyio.Event()
        self.in_turn = False
        self.stopped_by: int | None = None
        """The signal (SIGTERM, SIGHUP) that ends the session, if one did."""


async def _next_line(lines: anyio.abc.ObjectReceiveStream[Line], state: _State) -> Line | None:
    """The next line, or None if the user asked to leave with Ctrl-C twice."""
    result: list[Line] = []
    async with anyio.create_task_group() as tg:

        async def read() -> None:
            try:
                result.append(await lines.receive())
            except anyio.EndOfStream:
                result.append(("eof", None))
            tg.cancel_scope.cancel()

        async def leave() -> None:
            await state.leave.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(read)
        tg.start_soon(leave)
    state.interrupts = 0
    return result[0] if result else None


async def _turn(session: Session, text: str, state: _State, say: Callable[[str], None]) -> None:
    async def show(piece: str) -> None:
        sys.stdout.write(safe(piece))
        sys.stdout.flush()

    state.in_turn = True
    try:
        async with session.subscribe(tree=False, buffer=4096) as feed:
            await session.ask(text, on_text=show)
            limit = await answer_limit(feed)
        sys.stdout.write("\n")
        if limit is not None:
            sys.stdout.flush()
            say(limit_notice(limit))
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


async def _watch_interrupts(
    session: Session, state: _State, interrupts: AsyncIterator[int], say: Callable[[str], None]
) -> None:
    async for signum in interrupts:
        if signum != signal.SIGINT:
            state.stopped_by = signum
            session.cancel()  # the running turn, if any
            state.leave.set()
            return
        if state.in_turn:
            session.cancel()
            continue
        state.interrupts += 1
        if state.interrupts >= 2:
            state.leave.set()
            return
        sys.stdout.write("\n")
        say("(Ctrl-C again, or Ctrl-D, to leave)")
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
    data = event.data
    if event.event == "delegate:start":
        return f"  [sub-session] {data.get('agent')} running: {data.get('child_id')}"
    if event.event == "delegate:end":
        status = data.get("status")
        error = f" ({safe(str(data['error']))[:120]})" if data.get("error") else ""
        return f"  [sub-session] {data.get('agent')} {status}: {data.get('child_id')}{error}"
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
