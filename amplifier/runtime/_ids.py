"""Session identifiers (DESIGN.md, "Identifiers").

Root session:  ``{timestamp}-{span}``       e.g. ``20261124T103000Z-9f3a1c2e4b5d6a70``
Sub-session:   ``{parent-span}-{child-span}_{agent}``
               e.g. ``9f3a1c2e4b5d6a70-d4e5f6a7b8c9d0e1_explorer``

A span is 16 random lowercase hex digits. A root id sorts by creation time
and is safe as a file name; a sub-session id stays bounded at any depth
(the full chain is in metadata: ``parent_id``, ``root_id``, ``depth``).
"""

from __future__ import annotations

import os
import random
import re
from datetime import UTC, datetime

from amplifier.persistence import validate_session_id

SPAN_LENGTH = 16
MAX_AGENT_SLUG = 48

ROOT_ID = re.compile(r"(?P<ts>\d{8}T\d{6}Z)-(?P<span>[0-9a-f]{16})")
CHILD_ID = re.compile(
    r"(?P<parent>[0-9a-f]{16})-(?P<span>[0-9a-f]{16})_(?P<agent>[a-z0-9][a-z0-9-]*)"
)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


_spans = random.Random()
"""Seeded from the OS once (and again in a forked child), apart from the ``random``
module's own generator, which a program may seed: its ids stay its own."""
os.register_at_fork(after_in_child=_spans.seed)


def new_span() -> str:
    # Random, not secret: an id names a session and guards nothing. ``secrets`` would
    # make a system call for each, which hands the interpreter to the write-behind
    # thread and leaves the event loop waiting to get it back.
    return f"{_spans.getrandbits(SPAN_LENGTH * 4):0{SPAN_LENGTH}x}"


def new_root_id(now: datetime) -> str:
    """A root session id for a session created at ``now``."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return validate_session_id(f"{stamp}-{new_span()}")


def agent_slug(name: str) -> str:
    """The agent name as it appears in ids: lower-cased, other characters as ``-``."""
    slug = _NOT_SLUG.sub("-", name.lower()).strip("-")[:MAX_AGENT_SLUG].rstrip("-")
    return slug or "agent"


def span_of(session_id: str) -> str:
    """The span a session's children are named after."""
    if match := ROOT_ID.fullmatch(session_id) or CHILD_ID.fullmatch(session_id):
        return match["span"]
    # Sessions named by other tools still get well-formed children.
    return new_span()


def new_child_id(parent_id: str, agent: str) -> str:
    """A sub-session id for a child of ``parent_id`` running ``agent``."""
    return validate_session_id(f"{span_of(parent_id)}-{new_span()}_{agent_slug(agent)}")


def is_root_id(session_id: str) -> bool:
    return ROOT_ID.fullmatch(session_id) is not None


def is_child_id(session_id: str) -> bool:
    return CHILD_ID.fullmatch(session_id) is not None
