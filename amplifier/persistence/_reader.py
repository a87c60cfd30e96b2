"""Reading one stored session's records: its metadata, transcript and events.

Listing sessions is ``_listing``'s job, looking one up ``_lookup``'s, and
walking a tree ``_tree``'s; all of them read records through here.

Readers never write session files. A torn last line (a crash mid-append, or
a live writer caught mid-line) is left where it is and not returned; only
the session's owner sets it aside (``_files.set_aside_torn_tail``). All
functions block.

Sessions the Amplifier CLI wrote are read too (``_records``, Rule 2): their
metadata is mapped to ours (``_cli_sessions``), and their unstamped lines
keep their place in the file.
"""

from __future__ import annotations

import heapq
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from ._cli_sessions import cli_backup, from_cli, json_object, note_cli_turns
from ._documents import is_cli_document
from ._exceptions import (
    CorruptSession,
    RecoveryWarning,
    SessionNotFound,
)
from ._files import first_line, iter_jsonl, lines_backwards, read_file
from ._paths import (
    SessionLocation,
    refuse_links_out,
)
from ._records import EventRecord, SessionMetadata, TranscriptRecord

_R = TypeVar("_R", EventRecord, TranscriptRecord)


def read_metadata(location: SessionLocation) -> SessionMetadata:
    """The session's ``metadata.json``; ``SessionNotFound`` or ``CorruptSession`` otherwise.

    A document the Amplifier CLI wrote is mapped to ours (``SessionMetadata.from_cli``);
    if it is missing or damaged, its ``metadata.json.backup`` stands in, as
    it does for that tool.
    """
    refuse_links_out(location)
    try:
        data = read_file(location.metadata)
    except FileNotFoundError:
        if not location.directory.is_dir():
            raise SessionNotFound(location.session_id) from None
        backup = cli_backup(location)
        if backup is not None:
            return backup
        raise CorruptSession(location.session_id, "metadata.json is missing") from None
    except OSError as exc:  # a folder or a FIFO where the file should be, say
        backup = cli_backup(location)
        if backup is not None:
            return backup
        reason = exc.strerror or str(exc)
        raise CorruptSession(
            location.session_id, f"metadata.json cannot be read ({reason})"
        ) from None
    document = json_object(data)
    if document is not None and is_cli_document(document):
        return from_cli(location, document, location.metadata)
    try:
        metadata = SessionMetadata.model_validate_json(data)
    except ValidationError as exc:
        backup = cli_backup(location)
        if backup is not None:
            return backup
        reason = exc.errors()[0]["msg"] if exc.errors() else "unreadable"
        raise CorruptSession(location.session_id, f"metadata.json is invalid ({reason})") from None
    if metadata.session_id != location.session_id:
        # The folder's name is the session's identity: a folder copied under another
        # name (or a hand edit) keeps its own id, and its root is itself if it was.
        if metadata.root_id == metadata.session_id:
            metadata.root_id = location.session_id
        metadata.session_id = location.session_id
    if document is not None:
        note_cli_turns(location, document, metadata)
    return metadata


def load_transcript(location: SessionLocation) -> list[TranscriptRecord]:
    """Every complete, valid message of the session, in order."""
    refuse_links_out(location)
    return list(_records(location.transcript, TranscriptRecord))


@dataclass(frozen=True, slots=True)
class TranscriptTail:
    """The end of a transcript, and its first message if that is not part of the end."""

    first: TranscriptRecord | None
    records: list[TranscriptRecord]
    """The last messages, oldest first."""
    complete: bool
    """``records`` is the whole transcript (``first`` is then None)."""


def load_transcript_tail(location: SessionLocation, *, max_bytes: int) -> TranscriptTail:
    """The first message and the last ``max_bytes`` or so of the transcript.

    Reads from the end, only as far as needed: resuming a session with a
    huge history costs what its context window needs, not the whole file.
    """
    refuse_links_out(location)
    path = location.transcript
    try:
        size = path.lstat().st_size
    except FileNotFoundError:
        return TranscriptTail(None, [], True)
    if size <= max_bytes:
        return TranscriptTail(None, load_transcript(location), True)
    lines, start = _last_lines(path, size, max_bytes)
    records = [r for r in (_parse_line(line) for line in lines) if r is not None]
    # By position, not seq: lines another tool wrote have none.
    first = _parse_line(first_line(path)) if start > 0 else None
    return TranscriptTail(first, records, False)


@dataclass(frozen=True, slots=True)
class MessageTail:
    """The end of a transcript as plain messages (the store's stamp left out)."""

    first: dict[str, Any] | None
    """The first message, when ``messages`` does not reach back to it."""
    messages: list[dict[str, Any]]
    sizes: list[int]
    """The bytes each message takes in the file (its line and newline)."""
    complete: bool


def load_message_tail(location: SessionLocation, *, max_bytes: int) -> MessageTail:
    """``load_transcript_tail`` as plain messages, for the turn that reads them.

    The same lines, read the same way (from the end, as far as needed),
    parsed with ``orjson`` alone: a long history is read on every resume,
    and building a model per line would cost more than reading it.
    """
    refuse_links_out(location)
    path = location.transcript
    try:
        size = path.lstat().st_size
    except FileNotFoundError:
        return MessageTail(None, [], [], True)
    messages: list[dict[str, Any]] = []
    sizes: list[int] = []
    if size <= max_bytes:
        data = read_file(path)
        damaged = []
        for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
            record = _loads(line)
            if not isinstance(record, dict):
                if line.strip():
                    damaged.append(number)
                continue
            message = _message(record)
            if message is not None:
                messages.append(message)
                sizes.append(len(line) + 1)
        if damaged:
            shown = ", ".join(map(str, damaged[:10]))
            warnings.warn(
                f"{path}: skipped {len(damaged)} damaged line(s) ({shown})",
                RecoveryWarning,
                stacklevel=2,
            )
        return MessageTail(None, messages, sizes, True)
    lines, start = _last_lines(path, size, max_bytes)
    for line in lines:
        message = _message(_loads(line))
        if message is not None:
            messages.append(message)
            sizes.append(len(line) + 1)
    # By position, not seq: lines another tool wrote have none.
    first = _message(_loads(first_line(path))) if start > 0 else None
    return MessageTail(first, messages, sizes, False)


_STAMP = ("version", "seq", "ts")


def _last_lines(path: Path, size: int, max_bytes: int) -> tuple[list[bytes], int]:
    """The last lines of ``path`` (``size`` bytes) that reach ``max_bytes``, in file order,
    and the offset of the first of them."""
    lines: list[bytes] = []
    taken = 0
    start = size
    for offset, line in lines_backwards(path):
        lines.append(line)
        start = offset
        taken += len(line) + 1
        if taken >= max_bytes:
            break
    lines.reverse()
    return lines, start


def _loads(line: bytes | None) -> Any:
    if not line:
        return None
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _message(record: Any) -> dict[str, Any] | None:
    """A record's message, or None if it is none (what ``TranscriptRecord`` checks)."""
    if not isinstance(record, dict) or not isinstance(record.get("role"), str):
        return None
    seq = record.get("seq")
    if seq is not None and (type(seq) is not int):
        return None
    for key in _STAMP:
        record.pop(key, None)
    return record


def _parse_line(line: bytes | None) -> TranscriptRecord | None:
    if not line:
        return None
    try:
        return TranscriptRecord.model_validate_json(line)
    except ValidationError:
        return None


def iter_events(location: SessionLocation) -> Iterator[EventRecord]:
    """The session's events in ``seq`` order (the order they were written)."""
    refuse_links_out(location)
    return _records(location.events, EventRecord)


def merge_events(locations: Iterable[SessionLocation]) -> Iterator[EventRecord]:
    """The events of several sessions (a parent and its children) in one ``seq`` order.

    A line without ``seq`` (the Amplifier CLI's) stays after the line it follows.
    """
    keyed = (_after_previous_seq(iter_events(loc)) for loc in locations)
    return (event for _, event in heapq.merge(*keyed, key=lambda pair: pair[0]))


def _after_previous_seq(events: Iterable[EventRecord]) -> Iterator[tuple[int, EventRecord]]:
    seq = 0
    for event in events:
        seq = event.seq if event.seq is not None else seq
        yield seq, event


def _records(path: Path, model: type[_R]) -> Iterator[_R]:
    """The valid records of ``path``, read as they are taken (``iter_jsonl``)."""
    skipped = 0
    for record in iter_jsonl(path):
        try:
            yield model.model_validate(record)
        except ValidationError:
            skipped += 1
    if skipped:
        warnings.warn(
            f"{path}: skipped {skipped} record(s) that do not have the expected fields",
            RecoveryWarning,
            stacklevel=2,
        )
