"""Reading a configuration file a project or the home holds (profiles, agent specs, MCP
servers): text, whatever the file system holds at its path.

A FIFO there would hold the command for ever (past Ctrl-C: the read blocks a thread),
and a link to ``/dev/zero`` would fill its memory; neither is a configuration. Links to
regular files are followed (a home's dotfiles are often links).
"""

from __future__ import annotations

import os
from pathlib import Path

from amplifier.persistence.lowlevel import NotAFile, open_to_read

MAX_CONFIG_BYTES = 1 << 20
"""The largest configuration file read (a profile or a spec is a few kilobytes)."""


def read_config_text(path: Path) -> str:
    """The UTF-8 text of the file at ``path``. Raises ``FileNotFoundError`` if there is none,
    ``OSError`` if it cannot be read or is no regular file or is larger than
    ``MAX_CONFIG_BYTES``, ``UnicodeDecodeError`` if it is not text."""
    try:
        fd, _ = open_to_read(path, follow_links=True)
    except NotAFile:
        raise OSError("not a regular file") from None
    with os.fdopen(fd, "rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise OSError(f"larger than {MAX_CONFIG_BYTES:,} bytes")
    return data.decode("utf-8")
