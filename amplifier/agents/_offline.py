"""The ``offline`` provider: deterministic, no network, no key; says it is not a model.

It drives every path of the runtime from the prompt itself (DESIGN.md):

- a line ``/delegate AGENT: INSTRUCTION`` calls the delegate tool; several
  such lines make several calls in one response, which run concurrently;
- a line ``/tool NAME {JSON-ARGS}`` calls that tool;
- a line ``/fail MESSAGE`` makes the provider call fail with that message;
- a line ``/sleep SECONDS`` makes the provider call take that long first
  (a slow answer, to try Ctrl-C or a timeout on);
- anything else gets a plain answer restating the request and what the
  session has seen (turns, tool results, sub-session results).

Commands are read from the latest prompt only, and only in the first model
call of a turn; once the tools have answered, the next call summarises them.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence

import anyio
import orjson

from ._exceptions import ProviderError
from ._messages import AssistantMessage, Message, ToolCall, ToolResultMessage, Usage, UserMessage
from ._provider import ProviderRequest, ProviderResponse, TextSink

_DELEGATE = re.compile(r"/delegate\s+([^:\s]+)\s*:\s*(.*)")
_TOOL = re.compile(r"/tool\s+(\S+)\s*(.*)")
_FAIL = re.compile(r"/fail\b\s*(.*)")
_SLEEP = re.compile(r"/sleep\s+(\d+(?:\.\d*)?|\.\d+)")
MAX_SLEEP = 3600.0
"""The longest ``/sleep`` (an hour): a slow answer to interrupt, not a hang."""
NOTICE = "[offline provider: not a language model]"
_EXCERPT = 240
_WORDS_PER_PIECE = 4
_ids = random.Random()
"""Call ids: unique, not secret (no system call per id, as ``secrets`` makes)."""
os.register_at_fork(after_in_child=_ids.seed)


class OfflineProvider:
    """A provider that needs nothing and answers from the prompt's commands."""

    name = "offline"
    model = "offline"

    async def complete(
        self, request: ProviderRequest, *, on_text: TextSink | None = None
    ) -> ProviderResponse:
        messages = request.messages
        start = _last_prompt_index(messages)
        prompt = messages[start].content if start is not None else ""
        first_call = start is not None and not any(
            isinstance(m, AssistantMessage) for m in messages[start + 1 :]
        )
        if first_call:
            delay = _sleep(prompt)
            if delay:
                await anyio.sleep(delay)
            # Ids unique across turns, as real providers make them.
            calls = _commands(prompt, prefix=f"call_{_ids.getrandbits(32):08x}")
            if calls:
                return _respond(
                    AssistantMessage(content="", tool_calls=tuple(calls), **_me()), prompt
                )
        text = _answer(prompt, messages, start)
        if on_text is not None:
            # A few words a piece, as a model's stream comes: a piece a word cost each
            # turn dozens of calls through the loop and the session for nothing.
            words = text.split(" ")
            for first in range(0, len(words), _WORDS_PER_PIECE):
                end = first + _WORDS_PER_PIECE
                await on_text(" ".join(words[first:end]) + (" " if end < len(words) else ""))
        return _respond(AssistantMessage(content=text, **_me()), prompt)

    async def aclose(self) -> None:
        return None


def _me() -> dict[str, str]:
    return {"provider": "offline", "model": "offline"}


def _respond(message: AssistantMessage, prompt: str) -> ProviderResponse:
    usage = Usage(input_tokens=len(prompt) // 4 + 1, output_tokens=len(message.content) // 4 + 1)
    reason = "tool_use" if message.tool_calls else "end_turn"
    return ProviderResponse(message=message, usage=usage, stop_reason=reason)


def _last_prompt_index(messages: Sequence[Message]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], UserMessage):
            return index
    return None


def _sleep(prompt: str) -> float:
    """Seconds the ``/sleep`` lines of ``prompt`` ask for, together (at most ``MAX_SLEEP``)."""
    asked = sum(
        float(match[1])
        for raw in prompt.splitlines()
        if (match := _SLEEP.fullmatch(raw.strip())) is not None
    )
    return min(asked, MAX_SLEEP)


def _commands(prompt: str, *, prefix: str) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for raw in prompt.splitlines():
        line = raw.strip()
        if match := _FAIL.fullmatch(line):
            raise ProviderError("offline", match[1] or "failure requested with /fail")
        if match := _DELEGATE.fullmatch(line):
            arguments = {"agent": match[1], "instruction": match[2].strip()}
            calls.append(
                ToolCall(id=f"{prefix}_{len(calls) + 1}", name="delegate", arguments=arguments)
            )
        elif match := _TOOL.fullmatch(line):
            try:
                parsed = orjson.loads(match[2]) if match[2].strip() else {}
            except orjson.JSONDecodeError:
                parsed = {"_invalid_json": match[2]}
            if not isinstance(parsed, dict):
                parsed = {"_invalid_json": match[2]}
            calls.append(ToolCall(id=f"{prefix}_{len(calls) + 1}", name=match[1], arguments=parsed))
    return calls


def _answer(prompt: str, messages: Sequence[Message], start: int | None) -> str:
    prompts = sum(1 for m in messages if isinstance(m, UserMessage))
    results = [m for m in messages if isinstance(m, ToolResultMessage)]
    children = [m for m in results if m.name == "delegate"]
    lines = [
        NOTICE,
        f"You asked: {_excerpt(prompt)}",
        f"This session has seen {prompts} prompt(s), {len(results) - len(children)} tool "
        f"result(s) and {len(children)} sub-session result(s).",
    ]
    now = [m for m in messages[(start or 0) + 1 :] if isinstance(m, ToolResultMessage)]
    if now:
        lines.append("Results of this turn:")
        lines.extend(f"- {_describe(result)}" for result in now)
    return "\n".join(lines)


def _describe(result: ToolResultMessage) -> str:
    state = "failed" if result.is_error else "ok"
    if result.name == "delegate":
        try:
            child = orjson.loads(result.content)
        except orjson.JSONDecodeError:
            child = None
        if isinstance(child, dict):
            summary = child.get("response") or child.get("error") or ""
            return (
                f"delegate to {child.get('agent')} ({child.get('session_id')}): "
                f"{child.get('status')}: {_excerpt(str(summary))}"
            )
    return f"{result.name} ({state}): {_excerpt(result.content)}"


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 1] + "…"
