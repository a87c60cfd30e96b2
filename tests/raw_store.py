"""A store read straight from disk, line by line, without the package's readers.

The crash tests judge what a killed process left with this independent
reading, so a bug in the package's own readers cannot hide one in its
writers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from amplifier.persistence import SessionLocation

STREAMS = ("events.jsonl", "transcript.jsonl")


@dataclass
class StoredFile:
    """A JSONL file as found: its records, their exact lines, a torn tail, bad line numbers."""

    records: list[dict[str, Any]]
    lines: list[bytes]
    torn_tail: bytes
    bad_lines: list[int]


@dataclass
class StoredSession:
    """A session folder as found on disk."""

    location: SessionLocation
    files: dict[str, StoredFile] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    metadata_problem: str | None = None
    side_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return self.location.session_id

    @property
    def folder(self) -> Path:
        return self.location.directory

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.files["events.jsonl"].records

    @property
    def transcript(self) -> list[dict[str, Any]]:
        return self.files["transcript.jsonl"].records

    @property
    def parent_id(self) -> str | None:
        parent = (self.metadata or {}).get("parent_id")
        return str(parent) if parent else None

    @property
    def children(self) -> list[str]:
        return [str(c) for c in (self.metadata or {}).get("children", [])]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


def read_raw(home: Path) -> dict[str, StoredSession]:
    """Every session folder under ``home``, by id, each file parsed line by line."""
    found: dict[str, StoredSession] = {}
    for folder in sorted(home.glob("projects/*/sessions/*")):
        if not folder.is_dir():
            continue
        stored = StoredSession(SessionLocation(home, folder.parent.parent.name, folder.name))
        for name in STREAMS:
            stored.files[name] = parse_raw(folder / name)
        for side in folder.iterdir():
            if ".torn-" in side.name:
                stored.side_files[side.name] = side.read_bytes()
        try:
            stored.metadata = orjson.loads((folder / "metadata.json").read_bytes())
        except FileNotFoundError:
            stored.metadata_problem = "metadata.json is missing"
        except orjson.JSONDecodeError as exc:
            stored.metadata_problem = f"metadata.json does not parse: {exc}"
        found[folder.name] = stored
    return found


def parse_raw(path: Path) -> StoredFile:
    """The complete lines of ``path`` that parse as objects, the rest as bad or torn."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    end = data.rfind(b"\n") + 1
    stored = StoredFile(records=[], lines=[], torn_tail=data[end:], bad_lines=[])
    for number, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            stored.records.append(record)
            stored.lines.append(line + b"\n")
        else:
            stored.bad_lines.append(number)
    return stored
