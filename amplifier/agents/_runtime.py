"""``open_runtime`` with agents: a profile, the agent catalog and the agent loop."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from amplifier.persistence import (
    Clock,
    CorruptSession,
    Durability,
    Store,
    find_session,
    project_slug,
    read_metadata,
    resolve_home_and_cwd,
    utc_now,
)
from amplifier.runtime import Runtime, TurnHandler
from amplifier.runtime import open_runtime as open_core_runtime

from ._loop import AgentTurnHandler
from ._profiles import DEFAULT_PROFILE, Profile, ProfileCatalog
from ._provider import Provider
from ._provider_config import ProviderKind
from ._specs import AgentCatalog


def load_profile(
    name: str | None,
    *,
    home: Path,
    cwd: Path,
    provider: ProviderKind | None = None,
    model: str | None = None,
) -> Profile:
    """The profile ``name`` (default ``base``), with ``provider``/``model`` overrides applied."""
    profile = ProfileCatalog.load(home=home, project=cwd).get(name or DEFAULT_PROFILE)
    changes: dict[str, object] = {}
    if provider is not None and provider != profile.provider.kind:
        changes = {"kind": provider, "model": None, "base_url": None, "script": None}
    if model is not None:
        changes["model"] = model
    if changes:
        profile = profile.model_copy(
            update={"provider": profile.provider.model_copy(update=changes)}
        )
    return profile


def session_profile(
    session_id: str,
    *,
    home: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> str | None:
    """The profile a stored session runs under (id or unique prefix), for resuming it.

    Resuming takes this profile as it is configured now. None if the session
    recorded no profile or its metadata is damaged (resume rebuilds it).
    """
    root, directory = resolve_home_and_cwd(home, cwd)
    location = find_session(
        root, session_id, project=project_slug(directory), cwd=str(directory)
    )
    try:
        return read_metadata(location).profile
    except CorruptSession:
        return None


@asynccontextmanager
async def open_runtime(
    *,
    profile: str | None = None,
    home: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    durability: Durability | None = None,
    provider: ProviderKind | Provider | None = None,
    model: str | None = None,
    handler: TurnHandler | None = None,
    clock: Clock = utc_now,
    store: Store | None = None,
) -> AsyncIterator[Runtime]:
    """A Runtime whose sessions run agents under ``profile`` (default ``base``).

    ``provider`` and ``model`` override the profile's (a provider kind such
    as ``"openai"``, or a ready ``Provider`` object); ``durability`` too.
    ``handler`` replaces the agent loop altogether (tests, other runtimes).
    ``store``: write through this open store instead of starting one (the
    session hosts of the Ray backend).
    Raises ``UnknownProfile`` or ``ConfigError`` before anything is opened.
    """
    root, directory = resolve_home_and_cwd(home, cwd)
    kind = provider if isinstance(provider, str) else None
    settings = await anyio.to_thread.run_sync(
        lambda: load_profile(profile, home=root, cwd=directory, provider=kind, model=model)
    )
    agents: AgentTurnHandler | None = None
    if handler is None:
        catalog = await anyio.to_thread.run_sync(
            lambda: AgentCatalog.load(home=root, project=directory)
        )
        fixed = provider if provider is not None and not isinstance(provider, str) else None
        agents = AgentTurnHandler(catalog=catalog, profile=settings, root=directory, provider=fixed)
    try:
        async with open_core_runtime(
            handler=handler or agents,
            home=root,
            cwd=directory,
            durability=durability or settings.durability,
            profile=settings.name,
            clock=clock,
            max_depth=settings.max_depth,
            max_children=settings.max_children,
            scrub=agents.redact if agents is not None else None,
            store=store,
        ) as runtime:
            yield runtime
    finally:
        if agents is not None:
            with anyio.CancelScope(shield=True):
                await agents.aclose()
