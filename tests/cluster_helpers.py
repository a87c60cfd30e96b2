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
    """Seqs grow within each file, no seq is used twice, and children follow causality."""
    events = stored_events(home)
    seen: list[int] = []
    for records in events.values():
        seqs = [record["seq"] for record in records]
        assert seqs == sorted(set(seqs))
        seen.extend(seqs)
    assert len(seen) == len(set(seen)), "a seq was used twice"
    for session_id, records in events.items():
        for record in records:
            data = record["data"]
            if record["event"] == "delegate:start" and data["child_id"] in events:
                child = events[data["child_id"]]
                assert record["seq"] < child[0]["seq"]  # the parent refers first
            if record["event"] == "delegate:end" and data["child_id"] in events:
                ends = [r for r in events[data["child_id"]] if r["event"] == "session:end"]
                assert ends, f"{session_id} ended a delegation whose child has no end"
                assert ends[-1]["seq"] < record["seq"]
