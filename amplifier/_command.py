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

import signal
from types import FrameType

interrupted = False
"""Ctrl-C came while the command line was loading."""


def _note(signum: int, frame: FrameType | None) -> None:
    global interrupted
    interrupted = True


def main() -> None:
    signal.signal(signal.SIGINT, _note)
    from amplifier.cli import main as command

    command()
