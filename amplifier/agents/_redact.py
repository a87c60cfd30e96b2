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

MARK = "[REDACTED]"

COMMON_PATTERNS: tuple[str, ...] = (
    r"sk-(?:ant-|proj-|svcacct-)?[A-Za-z0-9_\-]{20,}",  # OpenAI, Anthropic
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{36,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{40,}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API key
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"((?i:\bbearer)\s+)[A-Za-z0-9._~+/\-]{20,}=*",
    # name = value assignments of secrets (.env files, configs): the name stays
    r"((?i:\b(?:api[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|password)\b)"
    r"\s*[:=]\s*['\"]?)[^\s'\"]{8,}",
)


class Redactor:
    """Replaces secrets in text with ``[REDACTED]``."""

    def __init__(self, *, secrets: Iterable[str] = (), patterns: Iterable[str] = COMMON_PATTERNS):
        literal = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)
        parts = [re.escape(s) for s in literal] + list(dict.fromkeys(patterns))
        self._pattern = re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(_replace, text)


def _replace(match: re.Match[str]) -> str:
    kept = "".join(group for group in match.groups() if group)  # a key's name, "Bearer "
    return f"{kept}{MARK}"
