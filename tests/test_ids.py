"""Session identifiers: formats, ordering, bounded length, and what a user may type."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amplifier import InvalidSessionId
from amplifier.persistence import SessionLocation, validate_session_id
from amplifier.persistence.lowlevel import MAX_ID_LENGTH
from amplifier.runtime.lowlevel import (
    agent_slug,
    is_child_id,
    is_root_id,
    new_child_id,
    new_root_id,
)

T0 = datetime(2026, 11, 24, 10, 30, 0, tzinfo=UTC)


def test_root_id_has_timestamp_and_span() -> None:
    """A root id reads as its creation time (UTC) followed by 16 hex digits."""
    session_id = new_root_id(T0)
    assert session_id.startswith("20261124T103000Z-")
    assert len(session_id.split("-")[1]) == 16
    assert is_root_id(session_id)


def test_root_ids_sort_by_creation_time() -> None:
    """Listing ids alphabetically lists sessions oldest first."""
    ids = [new_root_id(T0 + timedelta(seconds=s)) for s in (0, 1, 59, 3600, 86400 * 40)]
    assert sorted(ids) == ids


def test_child_id_names_parent_span_and_agent() -> None:
    """A sub-session id starts with its parent's span and ends with the agent name."""
    parent = new_root_id(T0)
    child = new_child_id(parent, "Explorer")
    parent_span = parent.split("-")[1]
    assert child.startswith(parent_span + "-")
    assert child.endswith("_explorer")
    assert is_child_id(child)


def test_child_id_length_stays_bounded_at_any_depth() -> None:
    """Deep delegation chains do not produce ever longer folder names."""
    session_id = new_root_id(T0)
    for _ in range(20):
        session_id = new_child_id(session_id, "a-very-long-agent-name " * 10)
        assert len(session_id) <= 16 + 1 + 16 + 1 + 48
        validate_session_id(session_id)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Explorer", "explorer"),
        ("Code Reviewer!", "code-reviewer"),
        ("__x__", "x"),
        ("***", "agent"),
    ],
)
def test_agent_slug_lowercases_and_collapses_other_characters(name: str, slug: str) -> None:
    """Agent names become safe, readable id suffixes."""
    assert agent_slug(name) == slug


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        "../x",
        "a/../b",
        "a/b",
        "/etc",
        "a\\b",
        ".hidden",
        "-rf",
        "a..b",
        "x\x00y",
        "é",
        "x" * (MAX_ID_LENGTH + 1),
    ],
)
def test_unsafe_ids_are_rejected_before_touching_files(bad: str) -> None:
    """Empty, over-long and path-like ids get a clear error instead of a file operation."""
    with pytest.raises(InvalidSessionId, match="invalid session id"):
        validate_session_id(bad)


def test_longest_allowed_id_is_accepted() -> None:
    """An id of exactly the maximum length is fine."""
    assert validate_session_id("a" * MAX_ID_LENGTH)


@given(st.text(min_size=0, max_size=200))
def test_any_accepted_id_stays_inside_the_sessions_folder(text: str) -> None:
    """Whatever a user types, an accepted id names a folder directly under sessions/."""
    try:
        validate_session_id(text)
    except InvalidSessionId:
        return
    location = SessionLocation(__import__("pathlib").Path("/home/u/.amplifier"), "-p", text)
    resolved = os.path.normpath(location.directory)
    assert os.path.dirname(resolved) == "/home/u/.amplifier/projects/-p/sessions"


def test_root_ids_differ_when_a_program_seeds_random() -> None:
    """A program that seeds ``random`` the same way twice still gets two sessions, not one id."""
    random.seed(7)
    first = new_root_id(T0)
    random.seed(7)
    assert new_root_id(T0) != first
