"""The ``amplifier`` command line: a thin typer + rich face over the Python API."""

from ._app import app, main

__all__ = ["app", "main"]
