"""A project whose own configuration the person trusts, as ``amplifier trust`` records it."""

from __future__ import annotations

import os
from pathlib import Path

from amplifier.agents._trust import trust_project


def trusted(project: Path, home: Path | None = None) -> Path:
    """Trust ``project``'s ``.amplifier/mcp.json`` and profiles as they are now, in ``home``
    (default: ``$AMPLIFIER_HOME``, the test's own). Call it after writing them: a file
    changed since is left out again. Returns ``project``."""
    trust_project(Path(project), home=Path(home or os.environ["AMPLIFIER_HOME"]))
    return project
