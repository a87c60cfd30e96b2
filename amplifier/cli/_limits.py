"""Whether a turn's answer stopped at the output-token limit, for the notice after it.

The agent loop records a ``provider:limit`` event when a model's response
stops at ``max_output_tokens``; ``answer_cut`` says it was the answer itself
(not a tool call, which the model is asked to retry). The caller subscribes
to the session before asking; once the turn is over its events are already
in the subscription's buffer, up to this turn's ``prompt:complete``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amplifier import EventRecord


async def answer_limit(feed: AsyncIterator[EventRecord]) -> int | None:
    """``max_output_tokens`` if the answer of the turn just over stopped at it, else None."""
    from amplifier import AmplifierError  # loaded by then: asking the session did

    limit: int | None = None
    try:
        async for event in feed:
            if event.event == "provider:limit" and event.data.get("answer_cut"):
                tokens = event.data.get("max_output_tokens")
                limit = tokens if isinstance(tokens, int) else 0
            elif event.event == "prompt:complete":
                break
    except AmplifierError:
        return None  # the subscription fell behind: no notice, nothing else lost
    return limit


def limit_notice(limit: int) -> str:
    return f"(the answer stopped at the output limit: max_output_tokens {limit})"
