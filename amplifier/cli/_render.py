"""How the CLI shows things: tables, transcripts, trees, JSON, and safe text.

Rule 1: text that came from a session (prompts, answers, tool output) is
        printed through ``safe()``: terminal control sequences in it are
        shown, not executed, so a transcript cannot rewrite the screen.
Rule 2: off a terminal, or with ``NO_COLOR``, output is plain text: no
        colour, no box drawing, so it pipes and greps well.
Rule 3: rich is imported by the functions that draw, not with this module:
        ``amplifier --help`` and ``run`` draw nothing and should not pay for it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from rich.console import Console

    from amplifier import (
        EventRecord,
        SessionMetadata,
        SessionSummary,
        TranscriptRecord,
        UsageReport,
    )
    from amplifier.agents import Tokens

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
PROMPT_WIDTH = 48


def plain(stream: IO[str] | None = None) -> bool:
    """True when output should carry no colour or drawing (Rule 2)."""
    target = stream or sys.stdout
    return bool(os.environ.get("NO_COLOR")) or not target.isatty()


def console(*, stderr: bool = False) -> Console:
    from rich.console import Console  # Rule 3

    stream = sys.stderr if stderr else sys.stdout
    bare = plain(stream)
    return Console(
        file=stream,
        no_color=bare,
        color_system=None if bare else "auto",
        highlight=False,
        emoji=False,
        soft_wrap=bare,
        width=200 if bare else None,
    )


def safe(text: str) -> str:
    """``text`` with control characters (escape sequences, bells, ...) made visible."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def one_line(text: str | None, width: int = PROMPT_WIDTH) -> str:
    flat = " ".join(safe(text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def write_json(document: Any) -> None:
    """The one JSON document a ``--json`` command prints on stdout."""
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def summary_json(row: SessionSummary) -> dict[str, Any]:
    data: dict[str, Any] = {
        "session_id": row.session_id,
        "project": row.location.project,
        "status": row.status,
        "path": str(row.location.directory),
    }
    if row.metadata is not None:
        data["metadata"] = row.metadata.document(with_seq=True)
    else:
        data["problem"] = row.problem
    return data


def sessions_table(
    rows: Sequence[tuple[SessionSummary, int]],
    *,
    show_project: bool,
    out: Console,
    show_used: bool = False,
    usage: Mapping[str, Tokens] | None = None,
) -> None:
    """The ``session list`` table; each row with its depth (sub-sessions are indented).

    A Name column appears when some session has a name or tags; Used (the
    last use) when the list is sorted by it.
    """
    from rich import box  # Rule 3
    from rich.table import Table
    from rich.text import Text

    bare = plain(out.file)
    table = Table(box=None if bare else box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    labelled = any(row.metadata and (row.metadata.name or row.metadata.tags) for row, _ in rows)
    columns = ["ID", *(["Name"] if labelled else []), "Created", *(["Used"] if show_used else [])]
    columns += ["Agent", "Profile", "Messages", *(["Tokens", "Cost"] if usage is not None else [])]
    columns += ["Last Prompt", "Status"]
    for column in columns:
        table.add_column(column, no_wrap=column not in ("Last Prompt", "Name"), overflow="fold")
    if show_project:
        table.add_column("Project", no_wrap=True)
    for row, depth in rows:
        indent = "  " * depth + ("└─ " if depth else "")
        meta = row.metadata
        cells = [indent + row.session_id]
        if labelled:
            cells.append(label(meta))
        cells.append(when(meta.created) if meta else "?")
        if show_used:
            cells.append(when(meta.updated) if meta else "?")
        cells += [
            safe(meta.agent) if meta else "?",
            (meta.profile or "-") if meta else "?",
            str(meta.message_count) if meta else "?",
        ]
        if usage is not None:
            tokens = usage.get(row.session_id)
            cells += [token_counts(tokens), cost(tokens)] if tokens else ["?", "?"]
        cells += [
            f'"{one_line(meta.last_prompt)}"' if meta and meta.last_prompt else "",
            row.status if meta else f"damaged: {one_line(row.problem, 40)}",
        ]
        if show_project:
            cells.append(meta.cwd if meta and meta.cwd else row.location.project)
        table.add_row(*(Text(cell) for cell in cells))
    out.print(table)


def token_counts(tokens: Tokens) -> str:
    """``1,234 in / 567 out``."""
    return f"{tokens.input:,} in / {tokens.output:,} out"


def cost(tokens: Tokens) -> str:
    """``$0.0123``; ``-`` with no price for any call; ``$0.01 + unpriced`` for some."""
    if tokens.calls == 0:
        return "$0"
    if tokens.unpriced == tokens.calls:
        return "-"
    shown = f"${tokens.cost:.4f}" if tokens.cost < 1 else f"${tokens.cost:,.2f}"
    return shown if tokens.priced else f"{shown} + unpriced"


def usage_lines(report: UsageReport, rows: Sequence[SessionSummary]) -> list[str]:
    """Tokens and cost: the session's, its tree's, per turn, and per sub-session."""
    head = report.head
    lines = [
        f"Usage:     {token_counts(head.own)} tokens, {head.own.calls} model call(s), "
        f"cost {cost(head.own)}"
    ]
    if head.tree.calls != head.own.calls:
        lines.append(
            f"  with sub-sessions: {token_counts(head.tree)}, {head.tree.calls} call(s), "
            f"cost {cost(head.tree)}"
        )
    for turn in head.turns:
        line = f"  turn {turn.turn}: {token_counts(turn.own)}"
        if turn.tree.calls != turn.own.calls:
            line += f" (with sub-sessions: {token_counts(turn.tree)})"
        lines.append(line)
    agents = {row.session_id: row.metadata.agent for row in rows if row.metadata is not None}
    for session in report.sessions[1:]:
        lines.append(
            f"  {session.session_id} [{safe(agents.get(session.session_id, '?'))}]: "
            f"{token_counts(session.tree)}, cost {cost(session.tree)}"
        )
    if head.tree.calls and head.tree.unpriced == head.tree.calls:
        lines.append(f"  (no cost: the profile {report.profile or 'base'!r} gives no prices)")
    elif head.tree.unpriced:
        lines.append(f"  ({head.tree.unpriced} call(s) to models the profile gives no price for)")
    return lines


def label(meta: SessionMetadata | None) -> str:
    """A session's name and tags on one line: ``auth fix #security #draft``."""
    if meta is None:
        return ""
    parts = [one_line(meta.name, 40)] if meta.name else []
    parts += [f"#{safe(tag)}" for tag in meta.tags]
    return " ".join(parts)


def metadata_lines(
    meta: SessionMetadata,
    status: str,
    records: Sequence[TranscriptRecord],
    *,
    model: str | None = None,
) -> list[str]:
    """The head of ``session show``; ``model``: the one its latest model call named."""
    lines = [
        f"Session:   {meta.session_id}",
        *([f"Name:      {one_line(meta.name, 200)}"] if meta.name else []),
        *([f"Tags:      {', '.join(safe(tag) for tag in meta.tags)}"] if meta.tags else []),
        f"Status:    {status}",
        f"Created:   {when(meta.created)}    Updated: {when(meta.updated)}",
        f"Project:   {safe(meta.cwd)}"
        + (f" ({safe(meta.cwd_source)}: it recorded none)" if meta.cwd_source else ""),
        f"Agent:     {safe(meta.agent)}    Profile: {meta.profile or '-'}",
    ]
    attributes = {**meta.attributes, **({"model": model} if model else {})}
    if attributes:
        lines.append(
            "Provider:  " + ", ".join(f"{k}={safe(v)}" for k, v in sorted(attributes.items()))
        )
    lines.append(f"Messages:  {message_count(records)}    Turns: {meta.turns}")
    if meta.parent_id:
        lines.append(f"Parent:    {meta.parent_id}    Root: {meta.root_id}    Depth: {meta.depth}")
    if meta.error:
        lines.append(f"Error:     {one_line(meta.error, 200)}")
    return lines


def message_count(records: Sequence[TranscriptRecord]) -> str:
    """Prompts and answers (what ``list`` counts), and all messages if tool results add some."""
    spoken = sum(1 for record in records if record.role in ("user", "assistant"))
    if spoken == len(records):
        return f"{spoken} (prompts and answers)"
    return f"{spoken} (prompts and answers; {len(records)} with tool results)"


def tree_lines(rows: Sequence[SessionSummary], root_id: str) -> list[str]:
    """The sub-session tree under ``root_id``, one line a session."""
    depth = {root_id: 0}
    lines = []
    for row in rows:
        meta = row.metadata
        parent = meta.parent_id if meta else None
        level = depth.get(parent, 0) + 1 if parent in depth and row.session_id != root_id else 0
        depth[row.session_id] = level
        agent = safe(meta.agent) if meta else "?"
        lines.append(
            f"{'  ' * level}{'└─ ' if level else ''}{row.session_id}  [{agent}] {row.status}"
        )
    return lines


def transcript_lines(records: Sequence[TranscriptRecord]) -> list[str]:
    """The conversation as a person reads it: who said what, what tools did.

    Lines the Amplifier CLI wrote read the same (content blocks, ``tool``).
    """
    from amplifier.agents import AssistantMessage, ToolResultMessage, UserMessage, read_messages

    lines: list[str] = []
    raw = [record.message() for record in records]
    for message, typed in zip(raw, read_messages(raw), strict=True):
        match typed:
            case UserMessage():
                lines.append(f"> {safe(typed.content)}")
            case AssistantMessage():
                if typed.content:
                    lines.append(safe(typed.content))
                for call in typed.tool_calls:
                    arguments = orjson.dumps(call.arguments).decode()
                    lines.append(f"  -> {safe(call.name)} {one_line(arguments, 120)}")
            case ToolResultMessage():
                mark = "error" if typed.is_error else "ok"
                lines.append(f"  <- {safe(typed.name)} ({mark}): {one_line(typed.content, 160)}")
            case _:
                content = message.get("content")
                text = content if isinstance(content, str) else ""
                lines.append(f"[{safe(str(message.get('role')))}] {one_line(text, 160)}")
        lines.append("")
    return lines


CLI_EVENTS = {
    "llm:request": "provider:request",
    "llm:response": "provider:response",
    "tool:error": "tool:post",
    "delegate:agent_spawned": "delegate:start",
    "delegate:agent_resumed": "delegate:start",
    "delegate:agent_completed": "delegate:end",
    "delegate:error": "delegate:end",
    "session:fork": "session:start",
    "context:compaction": "context:compact",
    "orchestrator:complete": "prompt:complete",
}
"""Events the Amplifier CLI logs under another name than ours, with ours."""


def known_as(event: EventRecord) -> str | None:
    """Our name for an event of the Amplifier CLI's (its lines have no ``seq``), if it differs."""
    from amplifier.agents import ForeignEvent, read_event  # the models: not at start-up

    match read_event(event):
        case ForeignEvent(name=name) if event.seq is None:
            return CLI_EVENTS.get(name)
        case _:
            return None


def event_json(event: EventRecord) -> dict[str, Any]:
    document = event.model_dump(mode="json")
    ours = known_as(event)
    if ours is not None:
        document["known_as"] = ours
    return document


def event_lines(records: Sequence[EventRecord]) -> list[str]:
    """One line an event, ids never cut; the Amplifier CLI's show ``-`` for seq and our name
    beside theirs."""
    width = max((len(e.session_id) for e in records), default=0)
    lines = []
    for e in records:
        ours = known_as(e)
        name = f"{e.event} ({ours})" if ours else e.event
        seq = "-" if e.seq is None else str(e.seq)
        lines.append(
            f"{seq:>8}  {e.ts.astimezone().strftime('%H:%M:%S.%f')[:-3]}  "
            f"{e.session_id:<{width}}  {name:<18} "
            f"{one_line(orjson.dumps(e.data).decode(), 140)}"
        )
    return lines


def cut_off_notice(cut_off: str | None) -> str | None:
    """What a person is told after an answer that stops short (``Reply.cut_off``)."""
    if cut_off is None:
        return None
    if cut_off == "output_limit":
        return (
            "(the answer stopped at the output limit: the profile's max_output_tokens; "
            "raise it for longer answers)"
        )
    return f"(the answer stopped short: {cut_off})"
