"""Metadata documents read as plain JSON: what the index needs of them, without the models.

The index (and the writer process that keeps it, ``_writer``) reads every
document it stores through these; ``_records`` validates them as models.
A document the Amplifier CLI wrote has no ``version`` and names things its
own way (``parent_id``, ``created`` with ``+00:00``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def format_ts(moment: datetime) -> str:
    """``2026-11-24T10:30:00.123456Z``: UTC, microseconds, a ``Z`` suffix."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def is_cli_document(document: object) -> bool:
    """True for a ``metadata.json`` the Amplifier CLI wrote: an object without our ``version``."""
    return isinstance(document, dict) and "version" not in document


def cli_parent(document: dict[str, Any]) -> str | None:
    """The parent of a session the Amplifier CLI wrote, if it is a sub-session.

    A fork (``forked_from_turn``) names the session it was copied from in
    ``parent_id`` too, but it is a conversation of its own: a root for us.
    """
    parent = document.get("parent_id")
    if not isinstance(parent, str) or not parent or "forked_from_turn" in document:
        return None
    return parent


def lineage_parent(document: dict[str, Any]) -> str | None:
    """The parent a ``metadata.json`` names in our sense (a session of its tree), if any.

    A fork of the Amplifier CLI's keeps that tool's ``parent_id`` (the session
    it was copied from) when we write it, beside ``forked_from_turn``: it is a
    root for us, whoever wrote the file last.
    """
    if is_cli_document(document):
        return cli_parent(document)
    if "forked_from_turn" in document:
        return None
    parent = document.get("parent_id")
    return parent if isinstance(parent, str) and parent else None


def cli_created(document: dict[str, Any]) -> str:
    """``created`` in our format (the index orders by its text), or "" if unreadable."""
    moment = when(document.get("created"))
    return format_ts(moment) if moment is not None else ""


def when(value: object) -> datetime | None:
    """An ISO 8601 time as that tool writes it (``+00:00``); naive means UTC."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
