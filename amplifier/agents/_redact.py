"""Redaction: API keys and things that look like credentials never reach the files.

Applied to every event and to metadata by the runtime (the ``scrub`` of the
session's ``SessionSetup``: one redactor per profile, knowing that profile's
key and patterns), and by the agent loop to tool output before it is
stored in a transcript: a ``read_file`` of a ``.env`` must not copy its
secrets into ``~/.amplifier``. What the user typed and what the model said
are stored as they are in the transcript (they are the conversation); their
copies in events and metadata are scrubbed.

Matched: the keys the providers were configured with (exactly), and common
key formats. A profile turns it off (``redact: false``) or adds patterns
(``redact_patterns``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

MARK = "[REDACTED]"

_COMMON: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Each pattern with the text (lower-cased) that any match of it holds: an ASCII text
    # holding none of them holds no match, which a few ``in`` tests tell at once.
    (r"sk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_\-]{20,}", ("sk-",)),  # OpenAI, Anthropic
    (r"AKIA[0-9A-Z]{16}", ("akia",)),  # AWS access key id
    (r"gh[pousr]_[A-Za-z0-9]{36,}", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),  # GitHub
    (r"github_pat_[A-Za-z0-9_]{40,}", ("github_pat_",)),
    (r"xox[abposr]-[A-Za-z0-9\-]{10,}", ("xox",)),  # Slack
    (r"AIza[0-9A-Za-z_\-]{35}", ("aiza",)),  # Google API key
    (
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        ("-----begin ",),
    ),
    (r"((?i:\bbearer)\s+)[A-Za-z0-9._~+/\-]{20,}=*", ("bearer",)),
    # name = value assignments of secrets (.env files, configs): the name stays
    (
        r"((?i:\b(?:api[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|password)\b)"
        r"\s*[:=]\s*['\"]?)[^\s'\"]{8,}",
        (
            *(
                f"{name}{joint}{part}"
                for name in ("api", "secret", "access", "auth")
                for part in (("key",) if name in ("api", "secret") else ("token",))
                for joint in ("", "_", "-")
            ),
            "password",
        ),
    ),
)
COMMON_PATTERNS: tuple[str, ...] = tuple(pattern for pattern, _ in _COMMON)


class Redactor:
    """Replaces secrets in text with ``[REDACTED]``."""

    def __init__(self, *, secrets: Iterable[str] = (), patterns: Iterable[str] = COMMON_PATTERNS):
        literal = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
        chosen = list(dict.fromkeys(patterns))
        parts = [re.escape(s) for s in literal] + chosen
        self._pattern = re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None
        self._in_text: re.Pattern[bytes] | None = None
        """What ``__call__`` looks for in ASCII text before it runs the pattern: the fixed
        text every key pattern's matches hold, and the secrets, all lower-cased (None: a
        profile's own patterns, which may hold no fixed text, run on every text)."""
        self._in_json: re.Pattern[bytes] | None = None
        """The same for ``screen``, with the secrets as they stand inside a JSON string
        (JSON escapes character by character; no needle holds a character it escapes)."""
        if set(chosen) <= set(COMMON_PATTERNS):
            needles = [
                needle.encode()
                for pattern, needles in _COMMON
                if pattern in chosen
                for needle in needles
            ]
            raw = [secret.encode().lower() for secret in literal]
            escaped = [orjson.dumps(secret)[1:-1].lower() for secret in literal]
            self._in_text = re.compile(_alternation([*needles, *raw]))
            self._in_json = re.compile(_alternation([*needles, *escaped]))

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        if text.isascii() and not _may_hold(text.encode(), self._in_text):
            return text  # the usual text: one quick look instead of the whole pattern
        return self._pattern.sub(_replace, text)

    def screen(self, data: bytes) -> bool:
        """True if a secret may be in a string of ``data`` (JSON); False only if none of
        them would change, told much more cheaply than by the pattern."""
        if self._pattern is None:
            return False
        if self._in_json is None:
            return True
        return not data.isascii() or _may_hold(data, self._in_json)


def _may_hold(text: bytes, needles: re.Pattern[bytes] | None) -> bool:
    """False only if no match can be in ASCII ``text``: it holds none of ``needles``.

    Lower-cased, a text holds every needle it held (the secrets too), and
    lower() is exactly what the patterns' (?i) ignore in ASCII text.
    """
    return needles is None or needles.search(text.lower()) is not None


def _alternation(words: Iterable[bytes]) -> bytes:
    """A pattern matching any of ``words``, written as the tree of their beginnings:
    the regex engine tries a few branches at each position, not one per word."""
    tree: dict[bytes, Any] = {}
    for word in words:
        node = tree
        for byte in word:
            node = node.setdefault(bytes([byte]), {})
        node[b""] = {}  # a word ends here

    def pattern(node: dict[bytes, Any]) -> bytes:
        branches = [re.escape(key) + pattern(rest) for key, rest in sorted(node.items()) if key]
        if not branches:
            return b""
        if b"" in node:  # a word ends here: what longer ones add need not match
            return b"(?:" + b"|".join(branches) + b")?"
        return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"

    return pattern(tree)


def _replace(match: re.Match[str]) -> str:
    kept = "".join(group for group in match.groups() if group)  # a key's name, "Bearer "
    return f"{kept}{MARK}"
