"""A session tree laid out for export: timelines, tool calls paired, sub-sessions placed.

The tree is read through the Python API (``Runtime.tree``, ``transcript``,
``events``) and laid out as a timeline per session: its messages in
``seq`` order, each tool call paired with its result, and each sub-session
nested where it was delegated: under the ``delegate`` call that started
it (the call's result names the child; failing that, the call's agent and
instruction match the child's ``delegate:start``), or, for a child no call
names (a turn handler that delegates directly), at its ``delegate:start``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from amplifier.agents import read_event
from amplifier.runtime import DelegateStarted

if TYPE_CHECKING:
    from amplifier import Runtime, SessionSummary, TranscriptRecord


@dataclass(slots=True)
class Call:
    """A tool call, its result (None: it never came) and the sub-session it ran, if any."""

    call: dict[str, Any]
    result: TranscriptRecord | None = None
    child: Node | None = None
    child_shown_before: str | None = None
    """The id of a sub-session this call continued, shown under an earlier call."""

    @property
    def name(self) -> str:
        return str(self.call.get("name", "?"))

    @property
    def arguments(self) -> str:
        value = self.call.get("arguments", {})
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    @property
    def failed(self) -> bool:
        return self.result is None or bool(self.result.message().get("is_error"))


@dataclass(slots=True)
class Step:
    """One entry of a session's timeline: a message (with its calls) or a sub-session."""

    seq: int
    record: TranscriptRecord | None = None
    calls: list[Call] = field(default_factory=list)
    child: Node | None = None

    def said(self) -> Said:
        """What a message step says (a step of a sub-session has no message)."""
        assert self.record is not None
        message = self.record.message()
        return Said(
            role=str(message.get("role")),
            text=text_of(message.get("content")),
            message=message,
            time=clock_time(self.record),
        )


@dataclass(frozen=True, slots=True)
class Said:
    """A message of a timeline, as both renderings show it."""

    role: str
    text: str
    message: dict[str, Any]
    time: str
    """When it was recorded, as ``clock_time`` gives it."""


@dataclass(frozen=True, slots=True)
class Start:
    """A sub-session's ``delegate:start``, and where it stands in its parent's log."""

    seq: int | None
    event: DelegateStarted


@dataclass(slots=True)
class Node:
    """A session of the exported tree, with its timeline."""

    summary: SessionSummary
    steps: list[Step] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.summary.session_id


async def load_tree(rt: Runtime, session_id: str) -> Node:
    """The session and its sub-sessions, each with its timeline laid out."""
    summaries = await rt.tree(session_id)
    head = summaries[0]
    records = {row.session_id: await rt.transcript(row.session_id) for row in summaries}
    events = [event async for event in rt.events(head.session_id, tree=True)]
    nodes = {row.session_id: Node(row) for row in summaries}
    starts: dict[str, list[Start]] = {}
    for event in events:
        match read_event(event):
            case DelegateStarted() as started:
                starts.setdefault(event.session_id, []).append(Start(event.seq, started))
            case _:
                pass
    for row in summaries:
        children = {
            child.session_id: child
            for child in nodes.values()
            if child.summary.metadata is not None
            and child.summary.metadata.parent_id == row.session_id
        }
        own = starts.get(row.session_id, [])
        _lay_out(nodes[row.session_id], records[row.session_id], children, own)
    return nodes[head.session_id]


def _lay_out(
    node: Node,
    records: list[TranscriptRecord],
    children: dict[str, Node],
    starts: list[Start],
) -> None:
    results: dict[str, TranscriptRecord] = {}
    for record in records:
        message = record.message()
        if message.get("role") == "tool" and message.get("tool_call_id"):
            results.setdefault(str(message["tool_call_id"]), record)
    placed: set[str] = set()
    paired: set[int] = set()
    """The results already shown under their call (by ``id``)."""
    last = 0
    for record in records:
        message = record.message()
        role = message.get("role")
        # A line another tool wrote has no seq: it stays after the line before it.
        last = record.seq if record.seq is not None else last
        if role == "tool" and id(record) in paired:
            continue
        step = Step(seq=last, record=record)
        for raw in message.get("tool_calls") or ():
            if not isinstance(raw, dict):
                continue
            call = Call(call=raw, result=results.get(str(raw.get("id"))))
            if call.result is not None:
                paired.add(id(call.result))
            if call.name == "delegate":
                child_id = _delegated_child(call, starts, placed)
                if child_id in placed:
                    call.child_shown_before = child_id
                elif child_id in children:
                    call.child = children[child_id]
                    placed.add(child_id)
            step.calls.append(call)
        node.steps.append(step)
    for start in starts:
        child_id = start.event.child_id
        if child_id in children and child_id not in placed:
            node.steps.append(Step(seq=start.seq or last, child=children[child_id]))
            placed.add(child_id)
    for child_id, child in children.items():  # no delegate:start left (a crash, say)
        if child_id not in placed:
            node.steps.append(Step(seq=1 << 62, child=child))
    node.steps.sort(key=lambda step: step.seq)  # stable: lines without seq keep their place


def _delegated_child(call: Call, starts: list[Start], placed: set[str]) -> str | None:
    """The sub-session a ``delegate`` call ran: named by its result, else by its start event."""
    if call.result is not None:
        content = call.result.message().get("content")
        try:
            document = orjson.loads(content) if isinstance(content, str) else None
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("session_id"), str):
            return str(document["session_id"]) or None
    arguments = call.call.get("arguments")
    if isinstance(arguments, dict):
        if isinstance(arguments.get("session_id"), str):
            return str(arguments["session_id"])
        for start in starts:
            if (
                start.event.child_id not in placed
                and start.event.agent == arguments.get("agent")
                and start.event.instruction == arguments.get("instruction")
            ):
                return start.event.child_id
    return None


# -- text helpers shared by the formats --------------------------------------------


def call_title(call: Call) -> str:
    if call.name == "delegate" and isinstance(args := call.call.get("arguments"), dict):
        return f"delegate → {args.get('agent', '?')}: {short(str(args.get('instruction', '')))}"
    return f"{call.name} {short(call.arguments)}"


def facts(summary: SessionSummary) -> list[str]:
    meta = summary.metadata
    if meta is None:
        return [f"Status: damaged ({summary.problem or 'unreadable metadata'})"]
    facts = [
        f"Agent: {inline(meta.agent)} · Profile: {meta.profile or '-'} · Status: {summary.status}",
        f"Created: {meta.created:%Y-%m-%d %H:%M:%S} UTC"
        f" · Updated: {meta.updated:%Y-%m-%d %H:%M:%S} UTC",
        f"Project: `{meta.cwd}`",
    ]
    if meta.tags:
        facts.append("Tags: " + ", ".join(meta.tags))
    if meta.error:
        facts.append(f"Error: {inline(meta.error)}")
    return facts


def fenced(text: str) -> Iterable[str]:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    yield fence
    yield text
    yield fence
    yield ""


def inline(text: str) -> str:
    return " ".join(text.split())


def short(text: str, width: int = 90) -> str:
    flat = inline(text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p["text"]) for p in content if isinstance(p, dict) and "text" in p)
    return "" if content is None else str(content)


def clock_time(record: TranscriptRecord) -> str:
    return record.ts.astimezone().strftime("%H:%M:%S") if record.ts is not None else "--:--:--"
