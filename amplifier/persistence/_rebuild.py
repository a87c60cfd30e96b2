"""A session's metadata, rebuilt from its event log when ``metadata.json`` is damaged.

The log says who the session is (its ``session:start``: agent, profile,
lineage, project), its turns and last prompt (``prompt:submit``) and which
children it made (``delegate:start``); the transcript says how many messages
it holds. The log is read once.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._exceptions import CorruptSession
from ._paths import SessionLocation
from ._reader import iter_events, load_transcript, read_metadata
from ._records import EventRecord, SessionMetadata


def read_or_rebuild_metadata(location: SessionLocation) -> tuple[SessionMetadata, bool]:
    """The stored metadata, or metadata rebuilt from the event log if it is damaged
    (then True). ``CorruptSession`` if the log holds no ``session:start`` of ours."""
    try:
        return read_metadata(location), False
    except CorruptSession as damage:
        start: EventRecord | None = None
        children: list[str] = []
        prompts: list[EventRecord] = []
        for event in iter_events(location):
            # Ours only: another tool's log may hold a session:start of its own (no seq).
            if event.event == "session:start" and event.seq is not None and start is None:
                start = event
            elif _our_prompt(event):
                prompts.append(event)
            elif (
                event.event == "delegate:start"
                and event.data.get("child_id")
                and not event.data.get("resumed")
            ):
                children.append(str(event.data["child_id"]))
        if start is None:
            raise CorruptSession(
                location.session_id, f"{damage.reason}; no session:start to rebuild from"
            ) from None
        data = start.data
        turns, last_prompt = _prompted(prompts)
        messages = _messages(location)
        parent_id = data.get("parent_id")
        depth = data.get("depth")
        rebuilt = SessionMetadata(
            session_id=location.session_id,
            created=start.ts,
            updated=start.ts,
            cwd=str(data.get("cwd", "")),
            project=location.project,
            agent=str(data.get("agent", "default")),
            profile=str(data["profile"]) if data.get("profile") else None,
            parent_id=str(parent_id) if parent_id else None,
            root_id=str(data.get("root_id") or location.session_id),
            depth=depth if isinstance(depth, int) else 0,
            message_count=messages,
            turns=turns,
            last_prompt=last_prompt,
            children=list(dict.fromkeys(children)),
        )
        return rebuilt, True


def count_from_files(meta: SessionMetadata, location: SessionLocation) -> None:
    """Give ``meta`` the messages (the transcript's), turns and last prompt (its log's
    ``prompt:submit``) its files hold: a session cut off (a crash, a kill) said more after
    its metadata was last written than that says (a sub-session's is written at its
    close)."""
    turns, last_prompt = _prompted(e for e in iter_events(location) if _our_prompt(e))
    meta.message_count, meta.turns = _messages(location), max(meta.turns, turns)
    meta.last_prompt = last_prompt if last_prompt is not None else meta.last_prompt


def _our_prompt(event: EventRecord) -> bool:
    return event.event == "prompt:submit" and event.seq is not None  # ours: stamped


def _prompted(prompts: Iterable[EventRecord]) -> tuple[int, str | None]:
    """How many turns these ``prompt:submit`` events began, and the last one's prompt."""
    turns = 0
    last_prompt: str | None = None
    for event in prompts:
        turns += 1
        prompt = event.data.get("prompt")
        last_prompt = prompt if isinstance(prompt, str) else last_prompt
    return turns, last_prompt


def _messages(location: SessionLocation) -> int:
    return sum(1 for m in load_transcript(location) if m.role in ("user", "assistant"))
