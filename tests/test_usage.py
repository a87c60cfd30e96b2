"""Usage: tokens per turn, session and tree, and the prices a profile gives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from amplifier import ConfigError, EventRecord
from amplifier.agents import Price, ProfileCatalog, usage_of

from .trusted import trusted


def _event(seq: int, session_id: str, event: str, **data: object) -> EventRecord:
    return EventRecord(
        seq=seq, ts=datetime(2026, 1, 1, tzinfo=UTC), session_id=session_id, event=event, data=data
    )


def _response(seq: int, session_id: str, tokens_in: int, tokens_out: int) -> EventRecord:
    usage = {"input_tokens": tokens_in, "output_tokens": tokens_out}
    return _event(seq, session_id, "provider:response", model="m", usage=usage)


def test_a_grandchild_counts_towards_every_ancestor_and_the_turn_it_ran_in() -> None:
    """Tokens of a sub-sub-session add to its parent's and the root's tree, in the right turn."""
    events = [
        _event(1, "root", "prompt:submit", turn=1),
        _response(2, "root", 10, 1),
        _event(3, "child", "prompt:submit", turn=1),
        _event(4, "grandchild", "prompt:submit", turn=1),
        _response(5, "grandchild", 100, 10),
        _response(6, "child", 1000, 100),
        _event(7, "root", "prompt:submit", turn=2),
        _response(8, "root", 5, 5),
    ]
    parents = {"root": None, "child": "root", "grandchild": "child"}
    report = usage_of(
        ["root", "child", "grandchild"], parents, events, {"m": Price(input=1.0, output=2.0)}
    )
    root, child, grandchild = report.sessions
    assert (root.own.input, root.tree.input) == (15, 1115)
    assert (child.own.input, child.tree.input) == (1000, 1100)
    assert grandchild.tree.input == 100
    assert [(t.turn, t.own.input, t.tree.input) for t in root.turns] == [(1, 10, 1110), (2, 5, 5)]
    assert root.tree.cost == pytest.approx((1115 * 1.0 + 116 * 2.0) / 1e6)
    assert root.tree.priced


@pytest.mark.parametrize("price", ["-1", ".inf", ".nan", "1e308"])
def test_a_price_below_zero_or_not_a_number_is_a_config_error_naming_the_profile(
    tmp_path: Path, price: str
) -> None:
    """A profile whose price is negative, infinite or not a number (which would print
    'cost $inf') is refused with its file named."""
    folder = tmp_path / "project" / ".amplifier" / "profiles"
    folder.mkdir(parents=True)
    (folder / "cheap.yaml").write_text(f"prices:\n  gpt: {{input: {price}, output: 2}}\n")
    trusted(tmp_path / "project", tmp_path / "home")
    catalog = ProfileCatalog.load(home=tmp_path / "home", project=tmp_path / "project")
    with pytest.raises(ConfigError, match=r"cheap\.yaml.*prices\.gpt\.input"):
        catalog.get("cheap")
