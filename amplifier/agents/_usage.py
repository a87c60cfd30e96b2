"""Tokens and cost of a session: per turn, per session, and for its whole tree.

Read from the persisted events: each ``provider:response`` carries the
model and its ``usage`` (input and output tokens); so does each
``llm:response`` the Amplifier CLI logged, whose ``usage`` may be a mapping
or its text (``input_tokens=10 output_tokens=20``). A turn of a session runs
from its ``prompt:submit`` to the next one; the sub-sessions it delegated
to run inside it, so their calls count towards that turn of the tree.
Cost comes from the ``prices`` of the session's profile (USD per million
tokens, by model); calls to a model with no price are counted, not priced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio

from amplifier.persistence import CorruptSession, EventRecord, SessionNotFound
from amplifier.runtime import PromptSubmitted, Runtime

from ._events import ForeignEvent, ProviderResponded, read_event
from ._exceptions import ConfigError, UnknownProfile
from ._profiles import Price, ProfileCatalog


@dataclass(slots=True)
class Tokens:
    """Tokens of some model calls, and what the priced ones cost."""

    input: int = 0
    output: int = 0
    calls: int = 0
    cost: float = 0.0
    """USD, for the calls whose model has a price."""
    unpriced: int = 0
    """Calls whose model has no price in the profile."""

    def add(self, other: Tokens) -> None:
        self.input += other.input
        self.output += other.output
        self.calls += other.calls
        self.cost += other.cost
        self.unpriced += other.unpriced

    @property
    def priced(self) -> bool:
        """Every call has a price (so ``cost`` is the whole cost)."""
        return self.calls > 0 and self.unpriced == 0

    def as_json(self) -> dict[str, object]:
        return {
            "input_tokens": self.input,
            "output_tokens": self.output,
            "calls": self.calls,
            "cost_usd": round(self.cost, 6) if self.calls > self.unpriced else None,
            "unpriced_calls": self.unpriced,
        }


@dataclass(slots=True)
class TurnUsage:
    turn: int
    own: Tokens = field(default_factory=Tokens)
    """The session's own model calls in this turn."""
    tree: Tokens = field(default_factory=Tokens)
    """Its calls and those of the sub-sessions it ran during this turn."""


@dataclass(slots=True)
class SessionUsage:
    """The usage of one session of a tree."""

    session_id: str
    own: Tokens = field(default_factory=Tokens)
    tree: Tokens = field(default_factory=Tokens)
    """With every descendant's."""
    turns: list[TurnUsage] = field(default_factory=list)
    model: str | None = None
    """The model its latest model call named (None: no call named one)."""


@dataclass(slots=True)
class UsageReport:
    """Usage of a session (the first of ``sessions``) and of each session of its tree."""

    profile: str | None
    """The profile whose prices were used (the session's own)."""
    sessions: list[SessionUsage]

    @property
    def head(self) -> SessionUsage:
        return self.sessions[0]

    def as_json(self) -> dict[str, object]:
        head = self.head
        return {
            "profile": self.profile,
            "session": head.own.as_json(),
            "tree": head.tree.as_json(),
            "turns": [
                {"turn": t.turn, "session": t.own.as_json(), "tree": t.tree.as_json()}
                for t in head.turns
            ],
            "by_session": {s.session_id: s.tree.as_json() for s in self.sessions},
        }


def tokens_of(model: object, usage: object, prices: Mapping[str, Price]) -> Tokens:
    """The tokens (and cost) of one model call (``model_call``)."""
    used = usage_counts(usage)
    tokens = Tokens(
        input=_count(used.get("input_tokens")), output=_count(used.get("output_tokens")), calls=1
    )
    price = prices.get(str(model))
    if price is None:
        tokens.unpriced = 1
    else:
        tokens.cost = (tokens.input * price.input + tokens.output * price.output) / 1_000_000
    return tokens


def model_call(event: EventRecord) -> tuple[object, object] | None:
    """A model call's answer, as its model and usage: our ``provider:response``, or the
    Amplifier CLI's ``llm:response`` (its lines have no ``seq``); None for other events."""
    match read_event(event):
        case ProviderResponded(model=model, usage=usage):
            return model, usage
        case ForeignEvent(name="llm:response", data=data) if event.seq is None:
            return data.get("model"), data.get("usage")
        case _:
            return None


_COUNT = re.compile(r"""['"]?(\w+)['"]?\s*[:=]\s*(\d+)""")


def usage_counts(usage: object) -> Mapping[str, object]:
    """A call's ``usage`` as a mapping: as recorded, or read from its text."""
    if isinstance(usage, dict):
        return usage
    if isinstance(usage, str):
        return {key: int(value) for key, value in _COUNT.findall(usage)}
    return {}


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


async def session_usage(rt: Runtime, session_id: str) -> UsageReport:
    """Tokens and cost of a stored session and its sub-sessions (by id, prefix or name).

    Prices come from the session's own profile as configured now; a
    profile that no longer exists or has no ``prices`` gives tokens only.
    """
    summaries = await rt.tree(session_id)
    head = summaries[0]
    profile = head.metadata.profile if head.metadata is not None else None
    prices = await anyio.to_thread.run_sync(lambda: _prices(rt, profile))
    events = [event async for event in rt.events(head.session_id, tree=True)]
    return usage_of(
        [row.session_id for row in summaries],
        {
            row.session_id: row.metadata.parent_id
            for row in summaries
            if row.metadata is not None
        },
        events,
        prices,
        profile=profile,
    )


def usage_of(
    session_ids: list[str],
    parents: Mapping[str, str | None],
    events: list[EventRecord],
    prices: Mapping[str, Price],
    *,
    profile: str | None = None,
) -> UsageReport:
    """The report for a tree (``session_ids[0]`` its head) from its events in seq order."""
    usage = {session_id: SessionUsage(session_id) for session_id in session_ids}
    head = usage[session_ids[0]]
    for event in events:
        session = usage.get(event.session_id)
        if session is None:
            continue
        if event.event == PromptSubmitted.name:
            submitted = read_event(event)
            number = (
                submitted.turn
                if isinstance(submitted, PromptSubmitted) and submitted.turn is not None
                else len(session.turns) + 1
            )
            session.turns.append(TurnUsage(number))
            continue
        call = model_call(event)
        if call is None:
            continue
        model = call[0]
        tokens = tokens_of(*call, prices)
        if isinstance(model, str) and model:
            session.model = model
        session.own.add(tokens)
        session.tree.add(tokens)
        if session.turns:
            session.turns[-1].own.add(tokens)
            session.turns[-1].tree.add(tokens)
        ancestor = parents.get(event.session_id) if session is not head else None
        for _ in range(64):  # a bound against a cyclic lineage
            if ancestor is None or ancestor not in usage:
                break
            above = usage[ancestor]
            above.tree.add(tokens)
            if above.turns:  # the turn of the ancestor that this sub-session runs in
                above.turns[-1].tree.add(tokens)
            if above is head:
                break
            ancestor = parents.get(ancestor)
    return UsageReport(profile=profile, sessions=[usage[s] for s in session_ids])


def _prices(rt: Runtime, profile: str | None) -> Mapping[str, Price]:
    try:
        catalog = ProfileCatalog.load(home=rt.home, project=rt.cwd)
        return catalog.get(profile or "base").prices
    except (UnknownProfile, ConfigError, CorruptSession, SessionNotFound):
        return {}
