"""A session tree as one self-contained HTML page.

Rule 1: every piece of text from a session passes through ``html.escape``
        before it reaches the page: a transcript cannot inject markup.
Rule 2: one file, nothing fetched: the style sheet is inline, and there are
        no scripts, fonts or images; it reads the same offline, years later.

Tool calls are folded (``<details>``); a sub-session sits inside the
``delegate`` call that ran it, folded with it, its summary saying which
agent did what and how it ended.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime

from ._export_tree import Call, Node, facts, short, text_of

STYLE = """
:root { color-scheme: light dark; --fg: #1f2328; --muted: #656d76; --bg: #ffffff;
  --card: #f6f8fa; --line: #d0d7de; --user: #ddf4ff; --accent: #0969da;
  --ok: #1a7f37; --bad: #cf222e; --child: #8250df; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #8d96a0;
  --bg: #0d1117; --card: #161b22; --line: #30363d; --user: #0c2d48; --accent: #4493f8;
  --ok: #3fb950; --bad: #f85149; --child: #a371f7; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; word-break: break-all; }
h1 .name { color: var(--accent); word-break: normal; }
.facts { color: var(--muted); font-size: 13px; margin: 0 0 20px; padding: 0; list-style: none; }
.facts li { margin: 2px 0; }
.msg { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 12px 0;
  background: var(--card); }
.msg.user { background: var(--user); }
.who { font-weight: 600; font-size: 13px; margin-bottom: 4px; }
.who .when { color: var(--muted); font-weight: 400; margin-left: 6px; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
details { border: 1px solid var(--line); border-radius: 8px; margin: 8px 0 8px 18px;
  background: var(--bg); }
details > summary { cursor: pointer; padding: 6px 12px; font-size: 13px;
  list-style-position: inside; overflow-wrap: anywhere; }
details[open] > summary { border-bottom: 1px solid var(--line); }
details .body { padding: 8px 12px; }
.tool { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-weight: 600; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px;
  margin-left: 6px; border: 1px solid currentColor; }
.badge.ok { color: var(--ok); } .badge.bad { color: var(--bad); }
pre { margin: 6px 0; padding: 8px 10px; background: var(--card); border-radius: 6px;
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12.5px;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.label { color: var(--muted); font-size: 12px; margin-top: 6px; }
.session.child { border-left: 3px solid var(--child); padding-left: 14px; margin: 8px 0; }
.session.child > h2 { font-size: 15px; margin: 6px 0 2px; color: var(--child); }
footer { color: var(--muted); font-size: 12px; margin-top: 32px; }
"""


def tree_html(node: Node) -> str:
    """The whole page (Rule 1, Rule 2)."""
    meta = node.summary.metadata
    title = f"Session {node.session_id}" + (f" — {meta.name}" if meta and meta.name else "")
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        f'<h1>Session {_e(node.session_id)}{_name(node)}</h1>',
        *_facts(node),
        *_session(node),
        f"<footer>Exported by amplifier on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</footer>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _name(node: Node) -> str:
    meta = node.summary.metadata
    return f' <span class="name">{_e(meta.name)}</span>' if meta and meta.name else ""


def _facts(node: Node) -> Iterable[str]:
    yield '<ul class="facts">'
    for fact in facts(node.summary):
        yield f"<li>{_e(fact.replace('`', ''))}</li>"
    yield "</ul>"


def _session(node: Node) -> Iterable[str]:
    for step in node.steps:
        if step.child is not None:
            yield from _child(step.child)
            continue
        said = step.said()
        role, text, message = said.role, said.text, said.message
        when = f'<span class="when">#{step.seq} · {_e(said.time)}</span>'
        if role == "tool":  # a result whose call is not in the transcript
            yield '<div class="msg tool">'
            yield f'<div class="who">Tool result: {_e(str(message.get("name")))}{when}</div>'
            yield f"<pre>{_e(text)}</pre></div>"
        elif text or not step.calls:
            who = {"user": "User", "assistant": "Assistant"}.get(role, role.title())
            yield f'<div class="msg {_e(role)}">'
            yield f'<div class="who">{_e(who)}{when}</div>'
            yield f'<div class="text">{_e(text)}</div></div>'
        for call in step.calls:
            yield from _call(call)


def _call(call: Call) -> Iterable[str]:
    status = "no result" if call.result is None else "error" if call.failed else "ok"
    badge = f'<span class="badge {"bad" if call.failed else "ok"}">{status}</span>'
    arguments = call.call.get("arguments")
    if call.name == "delegate" and isinstance(arguments, dict):
        agent = str(arguments.get("agent", "?"))
        instruction = short(str(arguments.get("instruction", "")), 80)
        title = f'<span class="tool">sub-session {_e(agent)}</span> {_e(instruction)}'
    else:
        title = f'<span class="tool">{_e(call.name)}</span> {_e(short(call.arguments, 80))}'
    yield f'<details class="call"><summary>{title}{badge}</summary><div class="body">'
    yield '<div class="label">Arguments</div>'
    yield f"<pre>{_e(call.arguments)}</pre>"
    if call.child is not None:
        yield from _child(call.child)
    if call.child_shown_before is not None:
        yield f'<div class="label">Continues sub-session {_e(call.child_shown_before)}.</div>'
    if call.result is not None:
        yield '<div class="label">Result</div>'
        yield f"<pre>{_e(text_of(call.result.message().get('content')))}</pre>"
    yield "</div></details>"


def _child(node: Node) -> Iterable[str]:
    meta = node.summary.metadata
    agent = meta.agent if meta is not None else "?"
    yield f'<section class="session child" id="{_e(node.session_id)}">'
    yield f"<h2>Sub-session {_e(node.session_id)} ({_e(agent)}){_name(node)}</h2>"
    yield from _facts(node)
    yield from _session(node)
    yield "</section>"
