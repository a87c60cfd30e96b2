"""The ``amplifier`` logger, and failures with their tracebacks (STYLE rule 16).

A failure that ends a turn, a session or a tool call is logged here with
its traceback, at ERROR, and the formatted traceback is recorded in the
event that reports it. Nothing is printed unless the program says so: the
logger has a ``NullHandler``, so an application without logging set up sees
nothing, and one with logging set up gets the records through its own
handlers. The command line shows them with ``--debug`` or
``AMPLIFIER_DEBUG=1``.
"""

from __future__ import annotations

import logging
import traceback

logger = logging.getLogger("amplifier")
logger.addHandler(logging.NullHandler())


def formatted_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and of the exceptions it was raised from, as Python prints it."""
    return "".join(traceback.format_exception(exc))


def log_failure(message: str, exc: BaseException) -> str:
    """Log ``message`` with the traceback of ``exc``; that traceback, formatted."""
    logger.error(message, exc_info=exc)
    return formatted_traceback(exc)
