"""Names and tags that users give sessions: what is allowed, and in which form it is kept.

A name is free text (``auth fix``) that finds the session in place of its id;
several sessions may share one, and looking it up then lists them. A tag is
one lower-case word (``security``, ``needs-review``) to filter listings by.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import get_args

from amplifier._errors import UsageError
from amplifier.persistence import EndStatus, holds_utf8, id_spans

MAX_NAME = 120
MAX_TAG = 40
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TAG = re.compile(r"[a-z0-9][a-z0-9._:/-]*")
_HIDING = re.compile("[\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
"""Marks that reorder or hide what a name shows; an emoji's joiner (U+200D) is text."""


def text(value: object, what: str) -> str:
    """``value`` if it is text that UTF-8 can hold (what a record can store); else
    ``UsageError`` naming ``what`` (a lone surrogate, as ``os.listdir`` makes of a file
    name that is not UTF-8, cannot be stored)."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text, not {type(value).__name__}")
    if not holds_utf8(value):
        raise UsageError(f"{what} holds text that UTF-8 cannot hold: {value!r}")
    return value


def check_end(status: object, error: object) -> None:
    """``UsageError`` unless ``status`` is an end a session can record (``completed``,
    ``cancelled``, ``failed``) and ``error`` is None or text UTF-8 can hold: checked before
    a close, which is not taken back once asked."""
    if status not in get_args(EndStatus):
        raise UsageError(
            f"status {status!r} is not one of {', '.join(map(repr, get_args(EndStatus)))}"
        )
    if error is not None:
        text(error, "a session's error")


def clean_attributes(values: Mapping[str, object]) -> dict[str, str]:
    """A session's attributes as given, checked: text keys and text values; ``UsageError``
    before anything changes."""
    return {
        text(key, "an attribute's name"): text(value, f"attribute {key!r}")
        for key, value in values.items()
    }


def attribute_changes(values: Mapping[str, object]) -> dict[str, str | None]:
    """Changes to a session's attributes, checked as ``clean_attributes`` does, except
    that a None value (which removes its attribute) is allowed."""
    return {
        text(key, "an attribute's name"): None
        if value is None
        else text(value, f"attribute {key!r}")
        for key, value in values.items()
    }


def clean_name(name: str) -> str:
    """``name`` with its spaces tidied; ``UsageError`` if empty, too long or unprintable."""
    cleaned = " ".join(text(name, "a session name").split())
    if not cleaned:
        raise UsageError("a session name cannot be empty")
    if len(cleaned) > MAX_NAME:
        raise UsageError(f"a session name is at most {MAX_NAME} characters")
    if _CONTROL.search(cleaned):
        raise UsageError("a session name cannot hold control characters")
    if _HIDING.search(cleaned):
        raise UsageError(
            "a session name cannot hold bidirectional controls or zero-width spaces (they make "
            "it read as another)"
        )
    if any(id_spans(cleaned)):
        raise UsageError(
            f"{cleaned!r} has the form of a session id: as a name it would stand in for "
            "another session's id"
        )
    return cleaned


def clean_tag(tag: str) -> str:
    """``tag`` lower-cased; ``UsageError`` unless it is one word of letters, digits, ``-_.:/``."""
    cleaned = tag.strip().lower()
    if not _TAG.fullmatch(cleaned) or len(cleaned) > MAX_TAG:
        raise UsageError(
            f"invalid tag {tag!r}: one word of letters, digits, '-', '_', '.', ':' or '/', "
            f"at most {MAX_TAG} characters"
        )
    return cleaned


def retag(tags: Iterable[str], *, add: Iterable[str], remove: Iterable[str]) -> list[str]:
    """``tags`` with ``remove`` taken out and ``add`` put in (each once, in order of arrival)."""
    gone = {clean_tag(tag) for tag in remove}
    result = [tag for tag in tags if tag not in gone]
    for tag in add:
        cleaned = clean_tag(tag)
        if cleaned not in result and cleaned not in gone:
            result.append(cleaned)
    return result
