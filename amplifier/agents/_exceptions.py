"""Errors of the agent layer: specs, profiles, providers, tools.

AmplifierError
└── AgentError                  the agent layer could not do what was asked
    ├── ProviderError           a model call failed (after its retries)
    │   ├── ProviderTimeout     no answer within the timeout
    │   ├── ProviderRejected    the endpoint refused the request (4xx: auth, bad request)
    │   ├── ProviderUnavailable the endpoint kept failing (429/5xx, connection) past the retries
    │   └── ProviderMalformed   the endpoint answered something that is not a valid response
    └── ToolFailed              a tool could not do its job (reported to the model, not raised)
UsageError
└── ConfigError                 an agent spec, profile or tool call is invalid
    ├── UnknownAgent            no agent of that name (lists the available ones)
    └── UnknownProfile          no profile of that name (lists the available ones)
UserWarning
├── AgentWarning                a session runs another agent than it was made with (said why)
└── ConfigWarning               an agent spec or profile file is unusable, and left out
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from amplifier._errors import AmplifierError, UsageError


class AgentError(AmplifierError):
    """The agent layer could not carry out a request."""


class ProviderError(AgentError):
    """A call to a model provider failed; the turn fails, the session stays resumable."""

    def __init__(self, provider: str, reason: str) -> None:
        self.provider = provider
        self.reason = reason
        super().__init__(f"{provider}: {reason}")


class ProviderTimeout(ProviderError):
    """The provider did not answer within the configured timeout."""


class ProviderRejected(ProviderError):
    """The provider refused the request (authentication, permission, a bad request)."""


class ProviderUnavailable(ProviderError):
    """The provider kept failing (rate limits, server errors, no connection) past the retries."""


class ProviderMalformed(ProviderError):
    """The provider's answer could not be understood (not the wire format it should be)."""


class ToolFailed(AgentError):
    """A tool could not do its job; the model receives the message as an error result."""


class ConfigError(UsageError):
    """An agent spec, profile or tool call is invalid; the message names the file and line."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class UnknownAgent(ConfigError):
    """No agent of that name exists; the available ones are listed."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        self.name = name
        self.available = tuple(available)
        super().__init__(
            f"unknown agent {name!r}; available: {', '.join(self.available) or 'none'}"
        )


class UnknownProfile(ConfigError):
    """No profile of that name exists; the available ones are listed."""

    def __init__(
        self, name: str, available: Sequence[str], *, untrusted: str | None = None
    ) -> None:
        self.name = name
        self.available = tuple(available)
        hint = (
            f" ({untrusted} is the project's, not trusted: 'amplifier trust' uses it)"
            if untrusted
            else ""
        )
        super().__init__(
            f"unknown profile {name!r}; available: {', '.join(self.available) or 'none'}{hint}"
        )


class AgentWarning(UserWarning):
    """A session goes on with another agent than the one it names, and this says which."""


class ConfigWarning(UserWarning):
    """An agent spec or profile file cannot be used: it is left out, and this says why.

    Only what needs that agent or profile fails (with the same message, as a
    ``ConfigError``); everything else goes on.
    """
