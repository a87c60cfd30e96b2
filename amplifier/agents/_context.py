"""What a model is shown: a valid history that fits its context window.

Two steps, applied to the stored history before every model call (the
transcript itself is never rewritten):

1. ``normalize``: every assistant tool call is followed directly by its
   result. A call without a result (a turn cut off by a crash or a
   cancellation) gets an explicit "interrupted; outcome unknown" result; a
   result whose call is missing is dropped. Any provider accepts the output.
2. ``fit``: if the history is larger than the budget, compact it. Keep the
   first prompt and the whole current turn; keep tool calls and their
   results together; first shorten old tool output, then leave out the
   oldest turns (saying how many messages were left out).

Sizes are estimated at four characters a token: close enough to keep well
inside a window, cheap enough for histories of many thousands of messages.

``Prepared`` keeps what a session's last call normalized: a history only
grows between calls, and ``normalize`` of pieces cut before prompts is the
normalized whole (a prompt ends every call's pairing), so each call
normalizes and measures only what was added since, whatever the length of
the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._messages import AssistantMessage, Message, ToolResultMessage, UserMessage

INTERRUPTED = "interrupted; outcome unknown"
OLD_TOOL_OUTPUT = 400
"""Characters kept of a tool result outside the current turn, once compaction starts."""
CHARS_PER_TOKEN = 4
MARKER_TOKENS = 32
"""Room kept for a "messages left out" note."""


def estimate_tokens(message: Message) -> int:
    return message.size // CHARS_PER_TOKEN + 1


def missing_results(history: Sequence[Message]) -> list[tuple[str, str]]:
    """``(call id, tool name)`` of every tool call with no result after it."""
    missing: list[tuple[str, str]] = []
    answered_later: set[str] = set()
    for message in reversed(history):
        if isinstance(message, ToolResultMessage):
            answered_later.add(message.tool_call_id)
        elif isinstance(message, AssistantMessage):
            missing.extend(
                (call.id, call.name)
                for call in reversed(message.tool_calls)
                if call.id not in answered_later
            )
    missing.reverse()
    return missing


def normalize(history: Sequence[Message]) -> list[Message]:
    """The history with every tool call directly followed by its result (see module doc).

    Each assistant message is paired with the results that directly follow
    it: ids need only be unique within one response (some providers reuse
    them from turn to turn).
    """
    out: list[Message] = []
    index, end = 0, len(history)
    while index < end:
        message = history[index]
        index += 1
        if isinstance(message, ToolResultMessage):
            continue  # answers no call of the response before it: dropped
        out.append(message)
        if not isinstance(message, AssistantMessage) or not message.tool_calls:
            continue
        results: dict[str, ToolResultMessage] = {}
        while index < end and isinstance(following := history[index], ToolResultMessage):
            results.setdefault(following.tool_call_id, following)
            index += 1
        out.extend(
            results.get(call.id)
            or ToolResultMessage(
                tool_call_id=call.id, name=call.name, content=INTERRUPTED, is_error=True
            )
            for call in message.tool_calls
        )
    return out


class Prepared:
    """One session's history as its last model call saw it, normalized and measured."""

    __slots__ = ("_history", "_normalized", "_tokens")

    def __init__(self) -> None:
        self._history: list[Message] = []
        """A prefix of the last history, ending before a prompt."""
        self._normalized: list[Message] = []
        """``normalize(self._history)``."""
        self._tokens = 0
        """Its estimated tokens."""

    def normalized(self, history: list[Message]) -> tuple[list[Message], int]:
        """``normalize(history)`` and its estimated tokens, doing only what ``history``
        adds to the one before (all of it if it is not that one continued)."""
        done = len(self._history)
        if not done or history[:done] != self._history:  # equal items: identical, mostly
            done, self._history, self._normalized, self._tokens = 0, [], [], 0
        cut = next(
            (i for i in range(len(history) - 1, done, -1) if isinstance(history[i], UserMessage)),
            done,
        )
        if cut > done:
            piece = normalize(history[done:cut])
            self._history = history[:cut]
            self._normalized = self._normalized + piece
            self._tokens += sum(estimate_tokens(m) for m in piece)
        rest = normalize(history[cut:])
        return self._normalized + rest, self._tokens + sum(estimate_tokens(m) for m in rest)


@dataclass(frozen=True, slots=True)
class Compaction:
    """What ``fit`` did, for the ``context:compact`` event."""

    messages_before: int
    messages_after: int
    tokens_before: int
    tokens_after: int
    omitted: int
    """Messages left out entirely."""
    shortened: int
    """Tool results cut to ``OLD_TOOL_OUTPUT`` characters."""

    def as_event(self) -> dict[str, int]:
        return {
            "messages_before": self.messages_before,
            "messages_after": self.messages_after,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "omitted_messages": self.omitted,
            "shortened_tool_results": self.shortened,
        }


def fit(
    history: Sequence[Message], budget: int, *, tokens: int | None = None
) -> tuple[list[Message], Compaction | None]:
    """``history`` (already normalized) within ``budget`` tokens, and what was done to it.

    ``tokens``: the history's estimate, if the caller has it (``Prepared``)."""
    before = tokens if tokens is not None else sum(estimate_tokens(m) for m in history)
    if before <= budget:
        return list(history), None
    turns = _turns(history)
    current = turns[-1]
    earlier = turns[:-1]
    shortened = 0

    def shorten(turn: list[Message]) -> list[Message]:
        nonlocal shortened
        out: list[Message] = []
        for message in turn:
            if isinstance(message, ToolResultMessage) and len(message.content) > OLD_TOOL_OUTPUT:
                cut = len(message.content) - OLD_TOOL_OUTPUT
                note = f"\n[... {cut} characters of old tool output left out to fit the window]"
                message = message.model_copy(
                    update={"content": message.content[:OLD_TOOL_OUTPUT] + note}
                )
                shortened += 1
            out.append(message)
        return out

    earlier = [shorten(turn) for turn in earlier]
    cost = [sum(estimate_tokens(m) for m in turn) for turn in earlier]
    whole_current = len(current)
    if sum(estimate_tokens(m) for m in current) > budget:
        current = _trim_current(shorten(current), budget - MARKER_TOKENS)
    dropped_current = whole_current - len(current)
    current_cost = sum(estimate_tokens(m) for m in current) + (
        MARKER_TOKENS if dropped_current else 0
    )

    first: list[Message] = []
    if earlier:
        first = [earlier[0][0]]  # the first prompt, which says what the session is about
    room = budget - current_cost - sum(estimate_tokens(m) for m in first) - MARKER_TOKENS
    kept: list[list[Message]] = []
    for index in range(len(earlier) - 1, 0 if first else -1, -1):
        if cost[index] > room:
            break
        kept.insert(0, earlier[index])
        room -= cost[index]
    dropped_earlier = sum(map(len, earlier)) - len(first) - sum(map(len, kept))
    out: list[Message] = list(first)
    if dropped_earlier > 0:
        out.append(_left_out(dropped_earlier, "earlier messages"))
    for turn in kept:
        out.extend(turn)
    out.extend(current[:1])
    if dropped_current > 0:
        out.append(_left_out(dropped_current, "messages of this turn"))
    out.extend(current[1:])
    after = sum(estimate_tokens(m) for m in out)
    omitted = dropped_earlier + dropped_current
    return out, Compaction(len(history), len(out), before, after, omitted, shortened)


def _left_out(count: int, what: str) -> UserMessage:
    return UserMessage(content=f"[{count} {what} left out to fit the context window]")


def _turns(history: Sequence[Message]) -> list[list[Message]]:
    """The history cut before each prompt; the first piece may start without one."""
    turns: list[list[Message]] = []
    for message in history:
        if isinstance(message, UserMessage) or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def _trim_current(turn: list[Message], budget: int) -> list[Message]:
    """The current turn alone is too large: keep its prompt and its latest tool rounds."""
    prompt, rounds = turn[:1], _rounds(turn[1:])
    kept: list[list[Message]] = []
    room = budget - sum(estimate_tokens(m) for m in prompt)
    for round_ in reversed(rounds):
        size = sum(estimate_tokens(m) for m in round_)
        if size > room and kept:
            break
        kept.insert(0, round_)
        room -= size
    return prompt + [m for round_ in kept for m in round_]


def _rounds(messages: Sequence[Message]) -> list[list[Message]]:
    """Each assistant message with the tool results that follow it."""
    rounds: list[list[Message]] = []
    for message in messages:
        if isinstance(message, AssistantMessage) or not rounds:
            rounds.append([])
        rounds[-1].append(message)
    return rounds
