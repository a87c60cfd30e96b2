"""The ``amplifier`` command line: a thin typer + rich face over the Python API."""

from . import _search  # noqa: F401  (registers its commands on the app)
from ._app import app, main

__all__ = ["app", "main"]
