"""Markdown and JSON renderings of an exported session tree (``session export``)."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from ._export_tree import (
    Call,
    Node,
    call_title,
    facts,
    fenced,
    inline,
    text_of,
)
from ._render import summary_json

# -- JSON ---------------------------------------------------------------------------------


def tree_json(node: Node) -> dict[str, Any]:
    """The tree as one document: each session's summary and timeline, children nested."""
    timeline: list[dict[str, Any]] = []
    for step in node.steps:
        if step.child is not None:
            timeline.append({"kind": "sub_session", "session": tree_json(step.child)})
            continue
        assert step.record is not None
        timeline.append({"kind": "message", **step.record.model_dump(mode="json")})
        for call in step.calls:
            item: dict[str, Any] = {
                "kind": "tool_call",
                "call": call.call,
                "result": call.result.model_dump(mode="json") if call.result else None,
            }
            if call.child is not None:
                item["sub_session"] = tree_json(call.child)
            if call.child_shown_before is not None:
                item["continues_sub_session"] = call.child_shown_before
            timeline.append(item)
    return {**summary_json(node.summary), "timeline": timeline}


# -- Markdown -----------------------------------------------------------------------------


def tree_markdown(node: Node, *, level: int = 1) -> str:
    """The tree as Markdown: headings per session, tool calls in ``<details>``."""
    return "\n".join(_markdown_lines(node, level)).rstrip() + "\n"


def _markdown_lines(node: Node, level: int) -> Iterable[str]:
    meta = node.summary.metadata
    hashes = "#" * min(level, 6)
    title = f"Session {node.session_id}"
    if meta is not None and meta.name:
        title += f" — {html.escape(inline(meta.name))}"
    if meta is not None and meta.parent_id:
        title = f"Sub-session {node.session_id} ({inline(meta.agent)})"
    yield f"{hashes} {title}"
    yield ""
    yield from (f"- {line}" for line in facts(node.summary))
    yield ""
    for step in node.steps:
        if step.child is not None:
            yield from _markdown_lines(step.child, level + 1)
            continue
        said = step.said()
        role, text, message = said.role, said.text, said.message
        stamp = f"#{step.seq}, {said.time}"
        if role == "user":
            yield f"**User** ({stamp})"
            yield ""
            yield from (f"> {line}" if line else ">" for line in text.splitlines() or [""])
            yield ""
        elif role == "assistant":
            if text or not step.calls:
                yield f"**Assistant** ({stamp})"
                yield ""
                yield text
                yield ""
        elif role == "tool":  # a result whose call is not in the transcript
            yield f"**Tool result** {inline(str(message.get('name')))} ({stamp})"
            yield ""
            yield from fenced(text)
        else:
            yield f"**{inline(role)}** ({stamp})"
            yield ""
            yield text
            yield ""
        for call in step.calls:
            yield from _markdown_call(call, level)


def _markdown_call(call: Call, level: int) -> Iterable[str]:
    status = "no result" if call.result is None else "error" if call.failed else "ok"
    yield "<details>"
    yield f"<summary>{html.escape(call_title(call))} — {status}</summary>"
    yield ""
    yield from fenced(call.arguments)
    if call.child is not None:
        yield from _markdown_lines(call.child, level + 1)
    if call.child_shown_before is not None:
        yield f"(continues sub-session {call.child_shown_before}, shown above)"
        yield ""
    if call.result is not None:
        yield "Result:"
        yield ""
        yield from fenced(text_of(call.result.message().get("content")))
    yield "</details>"
    yield ""


# -- the command ----------------------------------------------------------------------------
