"""Building providers from configuration (the SDK-backed ones are imported on first use)."""

from __future__ import annotations

from ._exceptions import ConfigError
from ._offline import OfflineProvider
from ._provider import Provider
from ._provider_config import ProviderConfig


def make_provider(config: ProviderConfig) -> Provider:
    """A provider for ``config``. Importing an SDK costs time, so only the one used is."""
    match config.kind:
        case "offline":
            return OfflineProvider()
        case "scripted":
            if config.script is None:
                raise ConfigError(
                    "the scripted provider needs 'script': the file of turns to replay"
                )
            from . import ScriptedProvider  # through the package: it names itself public

            return ScriptedProvider.from_file(config.script, model=config.model or "scripted")
        case "openai":
            from ._openai import OpenAIProvider

            return OpenAIProvider(config)
        case "anthropic":
            from ._anthropic import AnthropicProvider

            return AnthropicProvider(config)
