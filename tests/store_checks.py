"""Checks of a session store after a crash, shared by the crash tests.

Each check reads the store as ``raw_store.read_raw`` found it (independently
of the package's own readers) and returns what is wrong, one line a
problem, each tagged with its kind (``problem``) so that a summary can
count the failures of each kind. The journal layout is decoded here
independently too (``decode_journal``).
"""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .raw_store import StoredSession

Sessions = dict[str, StoredSession]

# The journal layout (amplifier/persistence/_journal.py), decoded here independently.
JOURNAL_MAGIC = b"AMPLIFIER-JOURNAL 3\n"
JOURNAL_CHECKPOINT = struct.Struct("<Q")
JOURNAL_BATCH = struct.Struct("<IIQ")
JOURNAL_ENTRY = struct.Struct("<QBHI")
FRAME_FILES = {1: "events.jsonl", 2: "transcript.jsonl", 3: "metadata.json", 4: "metadata.json"}
"""Record kinds: an event, a message, a metadata document, a new session's first metadata."""

# Kinds of failure, so that a summary can count the trials of each.
UNPARSABLE = "unparsable line"
TORN_LEFT = "torn tail left"
SEQ = "seq not increasing"
FAMILY = "parent and child disagree"
PHANTOM = "parent lists a child that does not exist"
UNLISTED = "session not listed"
SHOW = "show failed"
RESUME = "resume failed"
NOT_ENDED = "not ended cleanly after resume"
SIDE_FILES = "torn tail not set aside"
LOST = "journal record lost"
ACKNOWLEDGED = "acknowledged turn incomplete"
READERS = "readers disagree with the files"
JOURNAL_LEFT = "journal left"
CLI = "amplifier session failed"
RUN_FAILED = "amplifier run failed"
STRAY = "temporary file left after recovery"
HARNESS = "harness error"
_KIND = re.compile(r"^\[([^\]]+)\]")


def problem(kind: str, text: str) -> str:
    return f"[{kind}] {text}"


def kinds_of(problems: Iterable[str]) -> set[str]:
    """The kinds of failure among ``problems``."""
    return {m[1] for p in problems if (m := _KIND.match(p))}


@dataclass(frozen=True)
class Frame:
    """One record of a dead journal: acknowledged (or about to be), so it must survive."""

    seq: int
    kind: int
    folder: str
    payload: bytes
    checkpointed: bool = False
    """At or below the journal's checkpoint: synced in its file before the crash."""


Frames = dict[tuple[str, int, int], Frame]


def decode_journal(data: bytes) -> Iterator[Frame]:
    """Every record of every intact batch; the first batch that is not intact ends it."""
    if not data.startswith(JOURNAL_MAGIC):
        return
    (checkpoint,) = JOURNAL_CHECKPOINT.unpack_from(data, len(JOURNAL_MAGIC))
    offset, last = len(JOURNAL_MAGIC) + JOURNAL_CHECKPOINT.size, 0
    while offset + JOURNAL_BATCH.size <= len(data):
        length, checksum, first = JOURNAL_BATCH.unpack_from(data, offset)
        body = data[offset + JOURNAL_BATCH.size : offset + JOURNAL_BATCH.size + length]
        if length == 0 or len(body) < length or first <= last or zlib.crc32(body) != checksum:
            return
        position, frames = 0, []
        while position < len(body):
            seq, kind, folder_length, payload_length = JOURNAL_ENTRY.unpack_from(body, position)
            position += JOURNAL_ENTRY.size
            folder = body[position : position + folder_length].decode()
            position += folder_length
            payload = body[position : position + payload_length]
            frames.append(Frame(seq, kind, folder, payload, checkpointed=seq <= checkpoint))
            position += payload_length
        yield from frames
        last = frames[-1].seq
        offset += JOURNAL_BATCH.size + length


def data_of(record: dict[str, Any]) -> dict[str, Any]:
    data = record.get("data")
    return data if isinstance(data, dict) else {}


# -- the checks (each returns what is wrong) -----------------------------------------------


def check_lines(sessions: Sessions, *, torn_allowed: bool) -> list[str]:
    """Every complete line parses; metadata parses; a torn last line only if allowed."""
    problems = []
    for stored in sessions.values():
        for name, content in stored.files.items():
            where = f"{stored.session_id}/{name}"
            if content.bad_lines:
                problems.append(problem(UNPARSABLE, f"{where}: lines {content.bad_lines}"))
            if content.torn_tail and not torn_allowed:
                problems.append(problem(TORN_LEFT, f"{where}: {content.torn_tail[:60]!r}"))
        if stored.metadata_problem:
            problems.append(problem(UNPARSABLE, f"{stored.session_id}: {stored.metadata_problem}"))
    return problems


def check_seq(sessions: Sessions) -> list[str]:
    problems = []
    for stored in sessions.values():
        for name, content in stored.files.items():
            seqs = [record.get("seq") for record in content.records]
            if not all(isinstance(s, int) for s in seqs) or any(
                b <= a for a, b in itertools.pairwise(seqs)
            ):
                problems.append(problem(SEQ, f"{stored.session_id}/{name}: {seqs}"))
    return problems


def check_family(sessions: Sessions, *, phantoms_allowed: bool = False) -> list[str]:
    """Children and parents name each other, in causal ``seq`` order.

    A parent lists a child before creating it, so a crash can leave a listed
    child with no folder (``phantoms_allowed``); resuming the parent drops it.
    """
    problems = []
    for stored in sessions.values():
        child = stored.session_id
        parent = sessions.get(stored.parent_id) if stored.parent_id else None
        if stored.parent_id is None:
            continue
        if parent is None:
            problems.append(problem(FAMILY, f"child {child}: parent {stored.parent_id} not here"))
            continue
        if child not in parent.children:
            problems.append(problem(FAMILY, f"{child} not in {parent.session_id}'s children"))
        starts = [e["seq"] for e in stored.named("session:start")]
        delegated = [
            e["seq"] for e in parent.named("delegate:start") if data_of(e).get("child_id") == child
        ]
        if not delegated:
            problems.append(problem(FAMILY, f"{child}: no delegate:start in {parent.session_id}"))
        elif starts and min(delegated) >= min(starts):
            problems.append(
                problem(
                    FAMILY,
                    f"{child}: session:start (seq {min(starts)}) not after the delegate:start "
                    f"(seq {min(delegated)}) of {parent.session_id}",
                )
            )
    for stored in sessions.values():
        for child_id in stored.children:
            listed = sessions.get(child_id)
            if listed is None and not phantoms_allowed:
                problems.append(
                    problem(PHANTOM, f"{stored.session_id} lists {child_id}, not on disk")
                )
            elif listed is not None and listed.parent_id != stored.session_id:
                problems.append(
                    problem(FAMILY, f"{stored.session_id} lists {child_id}, whose parent differs")
                )
        for event in stored.named("delegate:end"):
            child_id = data_of(event).get("child_id")
            ended = sessions.get(child_id) if isinstance(child_id, str) else None
            ends = [e["seq"] for e in ended.named("session:end")] if ended else []
            if not any(seq < event["seq"] for seq in ends):
                problems.append(
                    problem(
                        FAMILY,
                        f"{stored.session_id} delegate:end (seq {event['seq']}) for {child_id} "
                        f"without an earlier session:end of the child (found {ends})",
                    )
                )
    return problems


def check_frames(home: Path, frames: Frames, sessions: Sessions) -> list[str]:
    """Every record of the journals is in its session file, byte for byte."""
    problems = []
    by_folder = {s.folder.relative_to(home).as_posix(): s for s in sessions.values()}
    for (folder, kind, seq), frame in sorted(frames.items()):
        stored = by_folder.get(folder)
        if stored is None:
            problems.append(problem(LOST, f"seq {seq} of {folder}: the session is not on disk"))
        elif kind in (3, 4):
            have = (stored.metadata or {}).get("seq")
            if not isinstance(have, int) or have < seq:
                problems.append(
                    problem(LOST, f"{stored.session_id}: metadata seq {have}, journal {seq}")
                )
        elif frame.payload not in stored.files[FRAME_FILES[kind]].lines:
            problems.append(
                problem(LOST, f"{stored.session_id}/{FRAME_FILES[kind]}: seq {seq} is missing")
            )
    return problems


def check_children_complete(
    sessions: Sessions, parent: StoredSession, low: int, high: int, where: str
) -> list[str]:
    """Every child ``parent`` started between seq ``low`` and ``high`` ran to completion."""
    problems = []
    answers = {}
    for message in parent.transcript:
        if message.get("role") == "tool" and message.get("name") == "delegate":
            try:
                result = orjson.loads(str(message.get("content")))
            except orjson.JSONDecodeError:
                continue
            if isinstance(result, dict):
                answers[result.get("session_id")] = result.get("response")
    for start in parent.named("delegate:start"):
        if not low < start["seq"] < high:
            continue
        child_id = data_of(start).get("child_id")
        label = f"{where}: child {child_id}"
        if not any(
            data_of(e).get("child_id") == child_id and data_of(e).get("status") == "completed"
            for e in parent.named("delegate:end")
        ):
            problems.append(problem(ACKNOWLEDGED, f"{label}: no delegate:end completed"))
        child = sessions.get(str(child_id))
        if child is None:
            problems.append(problem(ACKNOWLEDGED, f"{label}: not on disk"))
            continue
        ends = [e for e in child.named("session:end") if data_of(e).get("status") == "completed"]
        if not child.named("session:start") or not ends:
            problems.append(problem(ACKNOWLEDGED, f"{label}: no session:start / end completed"))
            continue
        instruction = data_of(start).get("instruction")
        if not any(
            m.get("role") == "user" and m.get("content") == instruction for m in child.transcript
        ):
            problems.append(problem(ACKNOWLEDGED, f"{label}: its instruction is not recorded"))
        answer = answers.get(child_id)
        if answer is None or not any(
            m.get("role") == "assistant" and m.get("content") == answer for m in child.transcript
        ):
            problems.append(problem(ACKNOWLEDGED, f"{label}: the answer its parent got is lost"))
        first = child.named("session:start")[0]["seq"]
        problems += check_children_complete(sessions, child, first, ends[0]["seq"], where)
    return problems


def check_ended(sessions: Sessions) -> list[str]:
    """After the resumes: every session ended completed; no tool call is left without a result."""
    problems = []
    for stored in sessions.values():
        status = (stored.metadata or {}).get("status")
        last = stored.events[-1].get("event") if stored.events else None
        if status != "completed" or last != "session:end":
            problems.append(
                problem(NOT_ENDED, f"{stored.session_id}: status {status}, last event {last}")
            )
        called, answered = set(), set()
        for message in stored.transcript:
            called.update(call.get("id") for call in message.get("tool_calls") or ())
            if message.get("role") == "tool":
                answered.add(message.get("tool_call_id"))
        if called - answered:
            problems.append(
                problem(NOT_ENDED, f"{stored.session_id}: calls without a result: {called}")
            )
    return problems


def check_side_files(before: Sessions, after: Sessions) -> list[str]:
    """Each torn tail found before recovery is in a side file now, byte for byte (no others)."""
    problems = []
    for session_id, stored in after.items():
        old = before.get(session_id)
        expected = sorted(
            [c.torn_tail for c in old.files.values() if c.torn_tail] + [*old.side_files.values()]
            if old
            else []
        )
        if sorted(stored.side_files.values()) != expected:
            problems.append(
                problem(
                    SIDE_FILES,
                    f"{session_id}: tails {expected!r}, side files {stored.side_files!r}",
                )
            )
    return problems


def leftovers(home: Path) -> list[Path]:
    """What a crash left that recovery should have cleared: half-built or half-deleted
    session folders in a project's ``.staging``, temporary files in session folders, the
    list of sessions a dead runtime was handing over."""
    found = sorted(home.glob("projects/*/.staging/*"))
    found += sorted(home.glob("projects/*/sessions/*/.*.tmp"))
    found += sorted(home.glob("journal/*.handover"))
    return found


def check_leftovers(home: Path) -> list[str]:
    """Nothing is left in ``.staging`` or as a temporary file (see ``leftovers``)."""
    return [problem(STRAY, f"after recovery: {path.relative_to(home)}") for path in leftovers(home)]
