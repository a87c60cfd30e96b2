"""The ``amplifier`` command line: a thin typer + rich face over the Python API."""

from . import (  # noqa: F401  (they register their commands on the app)
    _export,
    _file_history,
    _labels,
    _mcp,
    _search,
    _trust,
)
from ._app import app, main

__all__ = ["app", "main"]
