"""Permission rules: whether a tool call is allowed, asked or denied.

A rule is a tool name, or a tool name with a glob over the call's main
argument (the tool's ``subject``): ``bash``, ``bash(git status*)``,
``write_file(tests/**)``, ``mcp_*``. The name may be a glob too.

Rule 1: deny beats ask, and ask beats allow, whichever layer a rule comes
        from (the profile's ``permissions``, the Runtime's ``allow``/``deny``,
        the command line's ``--allow``/``--deny``).
Rule 2: when no configured rule matches, the built-in default decides: a
        tool with side effects (``write_file``, ``edit_file``, ``bash``, MCP
        tools) asks, every other tool (the read-only ones, ``delegate``) is
        allowed.
Rule 3: a call that would ask is allowed without asking by a rule granted
        to the session ("always for this session") or by ``assume_yes``
        (``--yes``); a deny still wins.
Rule 4: a bash rule with a wildcard pattern matches a compound command part
        by part. It allows one only if every part (split at ``;``, ``&&``,
        ``||``, ``|``, ``&`` and line ends) matches and nothing is
        substituted (``$(...)``, backquotes); it denies or asks if any part
        matches, as it stands or without what wraps its command (a subshell's
        parentheses, ``!``, ``then``, ``do``, ``time``, assignments, a leading
        backslash). So ``bash(git status*)`` never allows ``git status; rm -rf
        ~``, and ``bash(rm -rf*)`` denies ``(rm -rf x)``. A pattern without
        wildcards allows exactly that command. A shell can say a command in
        more ways than any pattern foresees (``eval``, variables, scripts):
        a deny rule is a guard rail, not a sandbox.
Rule 5: a path is matched relative to the project, normalised
        (``./src/../a.py`` is ``a.py``); an absolute path inside the
        project is made relative first.
Rule 6: a tool with no subject (an MCP tool, a Python tool without one)
        gives a pattern nothing to look at: a rule with a pattern then
        denies or asks for every call of it, and allows none.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from ._exceptions import ConfigError

Outcome = Literal["allow", "ask", "deny"]

_RULE = re.compile(r"(?P<name>[A-Za-z0-9_.*?\[\]-]+)(?:\((?P<pattern>.*)\))?", re.DOTALL)
_CONTROL = re.compile(r"&&|\|\||[;|&\n]")
_SUBSTITUTION = re.compile(r"\$\(|`|<\(|>\(")
_WRAPPING = re.compile(
    r"^(?:[({!]\s*|\\(?=\w)"
    r"|(?:if|then|else|elif|do|while|until|time|exec|command|builtin|nohup)\s+"
    r"|[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|\"[^\"]*\"|\S*)\s+)+"
)
"""What may stand before a command in a part without being the command: a subshell's or a
group's opening, ``!``, a keyword of the shell's, an assignment, a backslash."""
DEFAULT_RULE = "default"


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule: a tool-name glob and, optionally, a glob over the call's subject."""

    text: str
    name: str
    pattern: str | None

    @classmethod
    def parse(cls, text: str) -> Rule:
        """The rule ``text`` means; ``ValueError`` saying what is wrong otherwise."""
        stripped = text.strip()
        match = _RULE.fullmatch(stripped)
        if match is None:
            raise ValueError(
                f"{text!r} is not a permission rule: write a tool name, or a tool name "
                "with a pattern in parentheses, e.g. bash(git status*) or write_file(tests/**)"
            )
        pattern = match["pattern"]
        if pattern is not None and not pattern.strip():
            raise ValueError(f"{text!r}: the pattern in parentheses is empty")
        return cls(stripped, match["name"], pattern.strip() if pattern is not None else None)

    def names(self, tool: str) -> bool:
        return fnmatchcase(tool, self.name)

    def matches(self, tool: str, subject: str | None, *, granting: bool) -> bool:
        """Whether the rule covers a call of ``tool`` on ``subject``.

        ``granting``: the rule would let the call run (allow), so a compound
        command must match part by part (Rule 4).
        """
        if not self.names(tool):
            return False
        if self.pattern is None:
            return True
        if subject is None:
            return not granting  # Rule 6
        if tool != "bash":
            return fnmatchcase(subject, self.pattern)
        parts = [part.strip() for part in _CONTROL.split(subject) if part.strip()]
        if granting:
            if _literal(self.pattern):  # one exact command: nothing more can ride along
                return fnmatchcase(subject.strip(), self.pattern)
            if _SUBSTITUTION.search(subject):
                return False
            return bool(parts) and all(fnmatchcase(part, self.pattern) for part in parts)
        return fnmatchcase(subject.strip(), self.pattern) or any(
            fnmatchcase(part, self.pattern) or fnmatchcase(_bare(part), self.pattern)
            for part in parts
        )


def _bare(part: str) -> str:
    """A part of a command line without what wraps its command: ``(rm -rf x)``,
    ``then rm -rf x``, ``! rm -rf x``, ``FOO=1 rm -rf x`` and ``\\rm -rf x`` are ``rm -rf
    x`` to a rule that denies or asks (Rule 4)."""
    return _WRAPPING.sub("", part).rstrip(" )}")


def parse_rules(rules: Iterable[str]) -> tuple[Rule, ...]:
    """Every rule parsed; ``ValueError`` naming the first that is not one."""
    return tuple(Rule.parse(rule) for rule in rules)


class Permissions(BaseModel):
    """Rules for tool calls: a profile's ``permissions`` section, or ``open_runtime``'s.

    ``allow`` lets calls run, ``ask`` asks whoever opened the session
    first, ``deny`` refuses them; deny beats ask beats allow.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: tuple[str, ...] = ()
    ask: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @field_validator("allow", "ask", "deny")
    @classmethod
    def _rules_parse(cls, rules: tuple[str, ...]) -> tuple[str, ...]:
        parse_rules(rules)
        return tuple(rule.strip() for rule in rules)

    @classmethod
    def of(
        cls,
        *,
        allow: Iterable[str] = (),
        ask: Iterable[str] = (),
        deny: Iterable[str] = (),
    ) -> Permissions:
        """Rules given by a person (``--allow``, ``--deny``): ``ConfigError`` names a bad one."""
        allow, ask, deny = tuple(allow), tuple(ask), tuple(deny)
        try:
            parse_rules((*allow, *ask, *deny))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(allow=allow, ask=ask, deny=deny)

    def merged(self, other: Permissions) -> Permissions:
        """Both sets of rules (Rule 1 makes their order irrelevant)."""
        return Permissions(
            allow=(*self.allow, *other.allow),
            ask=(*self.ask, *other.ask),
            deny=(*self.deny, *other.deny),
        )

    @property
    def names(self) -> list[str]:
        """The tool-name part of every rule (for checking that the tools exist)."""
        return [rule.name for rule in parse_rules((*self.allow, *self.ask, *self.deny))]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules say of one call, and which rule said it."""

    outcome: Outcome
    rule: str
    """The rule that decided (``default`` when none matched: Rule 2)."""
    granted_by: Literal["rule", "granted", "assume_yes"] = "rule"
    """Why an ask became an allow (Rule 3), or ``rule``."""


@dataclass(frozen=True, slots=True)
class Judge:
    """Judges calls by a set of rules (parsed once); see the module's rules."""

    deny: tuple[Rule, ...]
    ask: tuple[Rule, ...]
    allow: tuple[Rule, ...]
    assume_yes: bool = False

    @classmethod
    def of(cls, permissions: Permissions, *, assume_yes: bool = False) -> Judge:
        return cls(
            deny=parse_rules(permissions.deny),
            ask=parse_rules(permissions.ask),
            allow=parse_rules(permissions.allow),
            assume_yes=assume_yes,
        )

    def __call__(
        self,
        tool: str,
        subject: str | None,
        *,
        side_effects: bool,
        granted: Sequence[str] = (),
    ) -> Verdict:
        for rule in self.deny:
            if rule.matches(tool, subject, granting=False):
                return Verdict("deny", rule.text)
        asking = next((r for r in self.ask if r.matches(tool, subject, granting=False)), None)
        if asking is None:
            for rule in self.allow:
                if rule.matches(tool, subject, granting=True):
                    return Verdict("allow", rule.text)
            if not side_effects:
                return Verdict("allow", DEFAULT_RULE)
        verdict = Verdict("ask", asking.text if asking is not None else DEFAULT_RULE)
        for text in granted:
            try:
                rule = Rule.parse(text)
            except ValueError:
                continue  # a grant that no longer parses grants nothing
            if rule.matches(tool, subject, granting=True):
                return Verdict("allow", rule.text, granted_by="granted")
        if self.assume_yes:
            return Verdict("allow", verdict.rule, granted_by="assume_yes")
        return verdict


def subject_of(
    argument: str | None, arguments: Mapping[str, Any], root: Path
) -> str | None:
    """The call's main argument, as rules match it (Rule 5 for paths)."""
    if argument is None:
        return None
    value = arguments.get(argument)
    if not isinstance(value, str):
        return None
    if argument in ("file_path", "path"):
        return project_relative(value, root)
    return value


def project_relative(path: str, root: Path) -> str:
    """``path`` relative to the project (``root``, resolved), as the file it leads to: links
    followed, as the file tools follow them (``/proc/self/cwd/.env``, or a link to
    ``.env``, is ``.env``); a path outside the project stays absolute."""
    resolved = os.path.realpath(os.path.join(root, path))  # an absolute path stays as given
    base = str(root).rstrip("/")
    if resolved == base:
        return "."
    if resolved.startswith(base + "/"):
        return resolved[len(base) + 1 :]
    return resolved


def always_rule(tool: str, subject: str | None) -> str:
    """The rule "always for this session" grants for a call: the command itself for ``bash``
    (glob characters escaped), the whole tool otherwise."""
    if tool == "bash" and subject:
        return f"bash({_escape(subject.strip())})"
    return tool


def _literal(pattern: str) -> bool:
    """Whether a glob matches exactly one text (every special character escaped)."""
    return not re.search(r"[*?\[]", re.sub(r"\[[*?\[]\]", "", pattern))


def _escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
