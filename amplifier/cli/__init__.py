"""The ``amplifier`` command line: a thin typer + rich face over the Python API."""

from . import _export, _labels, _search  # noqa: F401  (they register their commands on the app)
from ._app import app, main

__all__ = ["app", "main"]
