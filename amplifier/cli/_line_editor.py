"""The prompt line of interactive mode at a terminal, on prompt_toolkit.

Keys are Emacs's (Ctrl-A, Ctrl-E, Ctrl-K, Alt-B, ...); Up and Down walk
the history, Ctrl-R searches it; Enter sends, Esc-Enter (Alt-Enter)
starts a new line, and a bracketed paste is inserted whole, newlines and
all, to be sent with Enter; Tab completes.

Rule 1: prompt_toolkit runs on an asyncio loop of its own, in a thread of
        its own, whatever loop the command runs on (asyncio or trio): one
        code path on both. The terminal is in raw mode only while a prompt
        is read, so between prompts (while a turn runs) Ctrl-C is a signal
        on the command's loop again, and a tool's question is read there.
Rule 2: a prompt that must end early (SIGTERM, SIGHUP) is told to exit,
        and waited for, so the terminal leaves raw mode before the program
        does.
Rule 3: history is kept per project in ``$AMPLIFIER_HOME/history/``,
        owner-only, with secrets redacted before they are written (or kept
        in memory): what looks like a key is never stored.

This module imports prompt_toolkit: it is imported only in interactive
mode at a terminal.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import is_searching
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from amplifier.agents._redact import COMMON_PATTERNS, Redactor
from amplifier.persistence.lowlevel import ensure_private_dir

from ._input import lenient
from ._interactive import Read

_EXIT_WAIT = 2.0
"""Seconds a prompt told to exit may take to give the terminal back (Rule 2)."""


class RedactedHistory(FileHistory):
    """A history file that never holds a secret, readable by its owner only (Rule 3).

    A file that cannot be read or written (a folder in its place, a full disk, another
    user's file) leaves the history in memory for the rest of the run, and ``trouble``
    says why, once: the prompt goes on either way."""

    def __init__(self, path: Path) -> None:
        self._redact = Redactor(patterns=COMMON_PATTERNS)
        self.trouble: str | None = None
        self._kept = True
        self._path = path
        super().__init__(str(path))
        try:
            ensure_private_dir(path.parent, below=path.parent.parent)  # $AMPLIFIER_HOME/history
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        except OSError as exc:
            self._lost(exc)

    def load_history_strings(self) -> Iterable[str]:
        if not self._kept:
            return []
        try:
            return list(super().load_history_strings())
        except OSError as exc:
            self._lost(exc)
            return []

    def append_string(self, string: str) -> None:
        super().append_string(self._redact(string))

    def store_string(self, string: str) -> None:
        if not self._kept:
            return
        try:
            super().store_string(string)
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        self._kept = False
        self.trouble = (
            f"the prompt history cannot be kept in {self._path}: "
            f"{exc.strerror or exc}; this run's prompts are remembered until it ends"
        )


def history_path(home: Path, project: str) -> Path:
    """Where the prompts typed in ``project`` (its slug) are kept."""
    return home / "history" / f"{project}.txt"


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    # Not while searching the history (Ctrl-R): there Enter takes what was found.
    @bindings.add("enter", filter=~is_searching)
    def _send(event: KeyPressEvent) -> None:
        event.current_buffer.validate_and_handle()

    @bindings.add("escape", "enter", filter=~is_searching)
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    # Suspending is off (the terminal belongs to the prompt): Ctrl-Z does nothing, rather
    # than put a control character in the prompt.
    @bindings.add("c-z")
    def _no_suspend(event: KeyPressEvent) -> None:
        pass

    # As prompt_toolkit's own, and saying what it dropped: Ctrl-C on a draft is a first.
    @bindings.add("c-c", filter=~is_searching)
    def _interrupt(event: KeyPressEvent) -> None:
        dropped = event.current_buffer.text
        event.app.exit(exception=KeyboardInterrupt(dropped), style="class:aborting")

    return bindings


class _Completions(Completer):
    """Hands completion to ``complete`` (text before the cursor -> replacements)."""

    def __init__(self, complete: Callable[[str], Iterable[tuple[str, int, str]]]) -> None:
        self._complete = complete

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        for text, start, meta in self._complete(document.text_before_cursor):
            yield Completion(text, start_position=start, display_meta=meta or None)


class LineEditor:
    """Reads prompts at the terminal with line editing, history and completion."""

    def __init__(
        self,
        *,
        history: Path,
        complete: Callable[[str], Iterable[tuple[str, int, str]]],
        status: Callable[[], str],
        warn: Callable[[str], None],
    ) -> None:
        """``complete``: the completions of the text before the cursor, each as (text,
        start relative to the cursor, description); ``status``: the bottom line;
        ``warn``: tells the person something went wrong (between prompts)."""
        self._history = RedactedHistory(history)
        self._warn = warn
        self._warned = False
        self._session: PromptSession[str] = PromptSession(
            history=self._history,
            multiline=True,
            key_bindings=_key_bindings(),
            completer=_Completions(complete),
            complete_while_typing=False,
            bottom_toolbar=lambda: status() or None,
            prompt_continuation=lambda width, line, wrapped: "." * (width - 1) + " ",
            enable_suspend=False,
        )
        self._questions: PromptSession[str] = PromptSession(enable_suspend=False)
        self._running: PromptSession[str] | None = None
        self._done = threading.Event()
        self._done.set()

    async def read(self, prompt: str = "> ") -> Read:
        """The next prompt, edited at the terminal. Cancelling this ends the prompt (Rule 2)."""
        return await self._read(self._session, prompt)

    async def ask(self, question: str) -> Read:
        """One answer to ``question``; not kept in the history."""
        return await self._read(self._questions, question)

    async def _read(self, session: PromptSession[str], prompt: str) -> Read:
        self._tell_trouble()
        self._done.clear()
        self._running = session

        def read() -> Read:
            try:
                # The terminal's bytes that are not UTF-8 come as surrogates: U+FFFD.
                return ("line", lenient(session.prompt(prompt)))
            except KeyboardInterrupt as interrupt:
                dropped = interrupt.args[0] if interrupt.args else None
                return ("interrupt", dropped if isinstance(dropped, str) else None)
            except (EOFError, OSError):
                return ("eof", None)
            finally:
                self._done.set()

        try:
            return await anyio.to_thread.run_sync(read, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._stop()
            raise
        finally:
            self._running = None
            self._tell_trouble()

    def _tell_trouble(self) -> None:
        """The history's trouble, once, on the loop's side of the prompt."""
        if self._history.trouble is not None and not self._warned:
            self._warned = True
            self._warn(f"Warning: {self._history.trouble}")

    async def _stop(self) -> None:
        """Make the running prompt exit, and wait until it gave the terminal back (Rule 2)."""
        session = self._running
        app = session.app if session is not None else None
        loop = app.loop if app is not None else None
        if app is not None and loop is not None and app.is_running:
            with contextlib.suppress(RuntimeError):  # its loop closed: the prompt is over
                loop.call_soon_threadsafe(lambda: app.exit(exception=EOFError()))
        await anyio.to_thread.run_sync(self._done.wait, _EXIT_WAIT)
