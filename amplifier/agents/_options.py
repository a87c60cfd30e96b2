"""The settings ``open_runtime`` takes, checked before anything is opened.

A typo in a setting (``provider="gpt"``, ``durability="fsnyc"``) is the
caller's mistake: it is refused at once with a ``ConfigError`` naming the
valid values, never carried into a session where it would fail later and
further from its cause.
"""

from __future__ import annotations

from typing import get_args

from amplifier.persistence import Durability

from ._exceptions import ConfigError
from ._provider_config import ProviderKind

PROVIDER_KINDS: tuple[str, ...] = get_args(ProviderKind)
DURABILITIES: tuple[str, ...] = get_args(Durability)


def check_options(*, provider: object = None, durability: object = None) -> None:
    """Raise ``ConfigError`` for a provider or durability that cannot be used.

    ``provider`` is a kind (``"openai"``, ...) or a ready ``Provider`` object
    (anything with a ``complete`` method); None leaves the profile's.
    """
    if provider is not None:
        if isinstance(provider, str):
            if provider not in PROVIDER_KINDS:
                raise ConfigError(
                    f"provider {provider!r} is not a provider kind; "
                    f"valid: {', '.join(PROVIDER_KINDS)} (or a Provider object)"
                )
        elif not callable(getattr(provider, "complete", None)):
            raise ConfigError(
                f"provider must be a provider kind ({', '.join(PROVIDER_KINDS)}) "
                f"or a Provider object, not {type(provider).__name__}"
            )
    if durability is not None and (
        not isinstance(durability, str) or durability not in DURABILITIES
    ):
        raise ConfigError(
            f"durability {durability!r} is not a durability; valid: {', '.join(DURABILITIES)}"
        )
