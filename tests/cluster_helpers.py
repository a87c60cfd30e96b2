"""Reading what a cluster runtime left on disk, for the cluster tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def stored_events(home: Path) -> dict[str, list[dict[str, Any]]]:
    """Every session's ``events.jsonl`` under ``home``, by session id."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in home.glob("projects/*/sessions/*/events.jsonl"):
        found[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines()]
    return found


def assert_one_total_order(home: Path) -> None:
    """Seqs grow within each file, no seq is used twice, and children follow causality:
    a child's records after its parent's ``delegate:start``, the parent's ``delegate:end``
    after the child's ``session:end`` (or saying that the child never started)."""
    events = stored_events(home)
    seen: list[int] = []
    for records in events.values():
        seqs = [record["seq"] for record in records]
        assert seqs == sorted(set(seqs))
        seen.extend(seqs)
    assert len(seen) == len(set(seen)), "a seq was used twice"
    for session_id, records in events.items():
        parent_id = records[0]["parent_id"]
        if parent_id is not None:  # every child on disk is referred to first by its parent
            delegated = [
                r["seq"]
                for r in events.get(parent_id, [])
                if r["event"] == "delegate:start" and r["data"]["child_id"] == session_id
            ]
            assert delegated, f"{session_id} has no delegate:start in {parent_id}"
            assert min(delegated) < records[0]["seq"], f"{session_id} started before"
        for record in records:
            if record["event"] == "delegate:end":  # only after the child's end
                child_id = record["data"]["child_id"]
                if child_id not in events:  # never created: the parent's record says so
                    assert "never started" in record["data"]["error"], record
                    continue
                ends = [r["seq"] for r in events.get(child_id, []) if r["event"] == "session:end"]
                assert any(seq < record["seq"] for seq in ends), (
                    f"{session_id} ended its delegation to {child_id} before the child ended"
                )
