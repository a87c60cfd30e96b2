"""The ``amplifier`` command's entry point: Ctrl-C while the command line loads.

Python's own Ctrl-C raises ``KeyboardInterrupt`` wherever the main thread
is, and one raised inside a C extension's module initialisation (orjson's,
say) can crash the interpreter (a segmentation fault) instead of unwinding.
So until the command is ready to take Ctrl-C itself (``cli._running``
opens its signal receiver), a Ctrl-C is only noted; the command looks at
the note before it starts any work and then ends as Ctrl-C ends it, with
exit status 130 and nothing done.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

interrupted = False
"""Ctrl-C came while the command line was loading."""


def _note(signum: int, frame: FrameType | None) -> None:
    global interrupted
    interrupted = True


def main() -> None:
    signal.signal(signal.SIGINT, _note)
    _standard_streams()
    from amplifier.cli import main as command

    command()


def _standard_streams() -> None:
    """A standard stream the command was started without (``amplifier run hi <&-``) is
    ``/dev/null``: read, it is empty; written, the text goes nowhere, as it would to a
    reader that went away; and the command runs as it otherwise would."""
    for descriptor, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is not None:
            continue
        opened = os.open(os.devnull, os.O_RDONLY if descriptor == 0 else os.O_WRONLY)
        if opened != descriptor:
            os.dup2(opened, descriptor)
            os.close(opened)
        stream = open(  # noqa: SIM115  (the process's own, for as long as it runs)
            descriptor, "r" if descriptor == 0 else "w", encoding="utf-8", closefd=False
        )
        setattr(sys, name, stream)
