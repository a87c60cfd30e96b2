"""How a provider is configured (from a profile), and the factory that builds one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from amplifier._exports import describe

from ._exceptions import ConfigError

ProviderKind = Literal["offline", "scripted", "openai", "anthropic"]
describe(
    ProviderKind,
    "The providers a profile can name: ``offline`` (no network), ``scripted`` (replays a "
    "file), ``openai`` (any OpenAI-compatible endpoint), ``anthropic``.",
)


class ProviderConfig(BaseModel):
    """A profile's ``provider`` section.

    The API key comes from ``api_key`` (kept as a secret, never printed or
    stored in session files) or, preferably, from the environment variable
    named by ``api_key_env`` (default: ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ProviderKind = "offline"
    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    timeout: float = Field(default=120.0, gt=0)
    """Seconds for one request (each attempt)."""
    max_retries: int = Field(default=3, ge=0, le=10)
    """Extra attempts on 429, 5xx and connection errors, with backoff."""
    script: Path | None = None
    """For ``scripted``: the JSON or YAML file of turns to replay."""

    def key(self) -> str | None:
        """The API key, from the profile or the environment."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        variable = self.api_key_env or {
            "openai": "OPENAI_API_KEY",
            "anthropic": "ANTHROPIC_API_KEY",
        }.get(self.kind)
        return os.environ.get(variable) if variable else None

    def require_key(self) -> str:
        key = self.key()
        if not key:
            variable = self.api_key_env or f"{self.kind.upper()}_API_KEY"
            raise ConfigError(f"the {self.kind} provider needs an API key: set {variable}")
        return key
