"""Running a command: on the event loop, under signals, every failure one line and an exit code.

Every command's work is an async ``main`` handed to ``execute``, which runs
it, turns each failure into one line on stderr (or one JSON document) and
an exit code (see ``_app`` for the codes), and holds the signals it is
given for ``main`` to read: a signal never lands in Python's default
handler in the middle of writing a session's final records.
``until_opened`` lets a signal stop a command at once while its session is
still opening.

Rule: loading this module imports typer and little else (``_app``'s Rule):
the API is imported when a command runs.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import traceback
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, NoReturn

import anyio
import typer

from ._output import tolerant_stdout
from ._render import safe, write_json


class Leave(Exception):
    """Leave with this code after the message was already shown."""

    def __init__(self, code: int) -> None:
        self.code = code


def _backend() -> str:
    return os.environ.get("AMPLIFIER_ASYNC_BACKEND", "asyncio")


class Debug:
    """Whether failures show their tracebacks: ``--debug`` or ``AMPLIFIER_DEBUG=1``."""

    flag = False

    @classmethod
    def on(cls) -> bool:
        return cls.flag or os.environ.get("AMPLIFIER_DEBUG", "") not in ("", "0")


@contextmanager
def debug_log() -> Iterator[None]:
    """With debugging on, the ``amplifier`` logger's records (tracebacks) go to stderr."""
    if not Debug.on():
        yield
        return
    import logging  # only here: it costs start-up time

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("amplifier")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Collector:
    """Whether ``pause_collector`` turned the cyclic garbage collector off for start-up."""

    paused = False


def pause_collector() -> None:
    """No cyclic garbage collection while the command starts, until ``load_api``.

    Loading the command line and the API builds objects (modules, classes,
    pydantic validators) that live as long as the process; each collection on
    the way walks all of them again and frees none: about a twentieth of an
    offline ``run``. Only for a process that the command owns (``main``): a
    program that runs the application in-process keeps its collector as it is.
    """
    if gc.isenabled():
        gc.disable()
        Collector.paused = True


def load_api() -> None:
    """Import the API that every command's runtime needs; then collect again.

    What start-up built is frozen first: later collections leave it out (it
    is still freed by reference counting), so they walk only what the
    command allocates from then on.
    """
    import amplifier._open  # noqa: F401  (persistence, runtime, agents)

    if Collector.paused:
        Collector.paused = False
        gc.freeze()
        gc.enable()


def say(message: str) -> None:
    """A status line for the person at the terminal (stderr, never mixed into --json)."""
    sys.stderr.write(safe(message) + "\n")
    sys.stderr.flush()


def fail(message: str, *, code: int, as_json: bool = False) -> NoReturn:
    if as_json:
        with suppress(OSError):  # what failed may be standard output itself
            write_json({"error": message, "exit_code": code})
    sys.stderr.write(f"Error: {safe(message)}\n")
    raise typer.Exit(code)


TURN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What stops a command that runs turns as Ctrl-C does: a turn cancelled, the
session's final records written, then exit 128 + N. SIGTERM is how ``kill``,
``timeout`` and service managers ask a program to end; SIGHUP comes when its
terminal goes away."""


def execute(
    main: Callable[[AsyncIterator[int]], Awaitable[int | None]],
    *,
    as_json: bool = False,
    signals: tuple[signal.Signals, ...] = (signal.SIGINT,),
) -> None:
    """Run ``main`` on the event loop; turn every failure into one line and an exit code.

    ``main`` gets ``signals`` (Ctrl-C; ``TURN_SIGNALS`` for commands that run
    turns). The receiver is open before ``main`` starts and until it has
    returned (runtime closed): such a signal is never handled by Python's
    default, which would interrupt shutdown mid-write. A signal the process
    was started with ignored (``nohup`` ignores SIGHUP) stays ignored.
    """
    warnings.showwarning = _show_warning
    signals = tuple(
        s for s in signals if s == signal.SIGINT or signal.getsignal(s) is not signal.SIG_IGN
    )
    # Given back when the command is done: a process that runs several commands
    # (tests do) must not pass ignored signals on to the programs it starts.
    # Ctrl-C stays ignored: after the work, it has nothing left to stop.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with debug_log(), tolerant_stdout():
            _run_guarded(main, as_json=as_json, signals=signals)
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)


def _run_guarded(
    main: Callable[[AsyncIterator[int]], Awaitable[int | None]],
    *,
    as_json: bool,
    signals: tuple[signal.Signals, ...],
) -> None:
    load_api()
    from amplifier._command import interrupted

    if interrupted:  # Ctrl-C while the command line loaded: nothing was done yet
        raise typer.Exit(128 + signal.SIGINT)

    async def guarded() -> int | None:
        # Ignored underneath the receiver: a receiver that closes re-delivers
        # the signals it did not consume to the handler it replaced (trio
        # does), and after the work is done there is nothing left to stop.
        for signum in signals:
            signal.signal(signum, signal.SIG_IGN)
        try:
            with anyio.open_signal_receiver(*signals) as interrupts:
                return await main(interrupts)
        finally:
            for signum in signals:
                signal.signal(signum, signal.SIG_IGN)

    try:
        code = anyio.run(guarded, backend=_backend())
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except BaseException as exc:
        _report(_unwrapped(exc), as_json=as_json)
    if code:
        raise typer.Exit(code)


def _unwrapped(exc: BaseException) -> BaseException:
    """What ended the command, out of the groups task groups wrap it in: an interruption
    if there is one among them (trio wraps even a lone ``KeyboardInterrupt``; what else
    failed then followed from it), else the lone error inside; a group of several errors
    stays one."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = _leaves(exc)
    interrupted = [leaf for leaf in leaves if isinstance(leaf, KeyboardInterrupt)]
    if interrupted:
        return interrupted[0]
    return leaves[0] if len(leaves) == 1 else exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions in ``group`` and the groups inside it, in order (never empty)."""
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


def _report(exc: BaseException, *, as_json: bool) -> NoReturn:
    """End the command for ``exc``: its exit, or one line saying what went wrong."""
    from amplifier import AmbiguousSessionId, AmplifierError, UsageError

    if isinstance(exc, Leave):
        raise typer.Exit(exc.code) from None
    if isinstance(exc, typer.Exit):
        raise exc  # a command already said what went wrong
    if isinstance(exc, UsageError | AmbiguousSessionId):
        fail(str(exc), code=2, as_json=as_json)
    if isinstance(exc, AmplifierError):
        fail(str(exc), code=1, as_json=as_json)
    if isinstance(exc, KeyboardInterrupt):
        fail("interrupted", code=130, as_json=as_json)
    if isinstance(exc, OSError):
        fail(
            f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}",
            code=1,
            as_json=as_json,
        )
    if not isinstance(exc, Exception):
        raise exc  # SystemExit and the like: not an error of the command
    if Debug.on():
        traceback.print_exception(exc)
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        what = f"{len(leaves)} errors at once, the first {type(leaves[0]).__name__}: {leaves[0]}"
    fail(f"internal error: {what} (--debug shows where)", code=1, as_json=as_json)


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    sys.stderr.write(f"Warning: {safe(str(message))}\n")


class Opening:
    """Until the session is open, a signal stops the command at once (see ``until_opened``)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.watch = anyio.CancelScope()
        self.watched = anyio.Event()

    async def opened(self) -> None:
        """From now on the signals are the turn's: it cancels on them. Returns once this
        has stopped reading them (one reader at a time: trio insists)."""
        self.watch.cancel()
        await self.watched.wait()

    def exit_code(self, as_json: bool) -> int:
        """Say the command stopped before it ran anything; 128 + the signal's number."""
        assert self.signum is not None
        code = 128 + self.signum
        message = "interrupted before the session opened; nothing ran"
        if as_json:
            write_json({"error": message, "exit_code": code})
        sys.stderr.write(f"Error: {message}\n")
        return code


async def unless_interrupted(
    interrupts: AsyncIterator[int], work: Callable[[], Awaitable[None]]
) -> int | None:
    """Run ``work`` until it returns or a signal comes (Ctrl-C, SIGTERM, SIGHUP; ``work`` is
    then cancelled); the signal's number, if one came."""
    signum: int | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal signum
            async for received in interrupts:
                signum = received
                tg.cancel_scope.cancel()
                return

        tg.start_soon(watch)
        await work()
        tg.cancel_scope.cancel()
    return signum


@asynccontextmanager
async def until_opened(interrupts: AsyncIterator[int]) -> AsyncIterator[Opening]:
    """A block in which a signal (Ctrl-C, SIGTERM, SIGHUP) cancels everything at once,
    until ``opened()``; then ``signum`` says which one, if any.

    Opening can take long: joining a Ray cluster, or starting one, waits up to
    ``--cluster-timeout``. A signal then must not wait in the queue for a turn
    that has not started.
    """
    from amplifier._errors import unwrap_single_error

    opening = Opening()
    with unwrap_single_error():
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                try:
                    with opening.watch:
                        async for signum in interrupts:
                            opening.signum = signum
                            tg.cancel_scope.cancel()
                            return
                finally:
                    opening.watched.set()

            tg.start_soon(watch)
            try:
                yield opening
            finally:
                opening.watch.cancel()
