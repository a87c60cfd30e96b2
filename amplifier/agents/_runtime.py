"""``open_runtime`` with agents: the profiles, the agent catalog and the agent loop.

A session runs under its own profile (``_loop`` Rule 7): its provider, its
delegation limits and its redaction. The Runtime's profile is the one new
sessions get, and it sets what the sessions share: the durability of the
one store they write through.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path

import anyio

from amplifier.persistence import Clock, Durability, Store, resolve_home_and_cwd, utc_now
from amplifier.runtime import Approver, TurnHandler
from amplifier.runtime.lowlevel import ChildLauncher, LocalRuntime, open_local_runtime

from ._exceptions import ConfigError
from ._loop import AgentTurnHandler
from ._mcp_servers import McpServers
from ._names import (
    check_given_agents,
    check_given_rules,
    check_given_tools,
    check_profile,
    check_specs,
    warn_unusable,
)
from ._options import check_options
from ._permissions import Permissions
from ._profiles import DEFAULT_PROFILE, Profile, ProfileCatalog
from ._provider import Provider
from ._provider_config import ProviderKind
from ._specs import AgentCatalog, AgentSpec
from ._tools import Tool, spec_of
from ._trust import ProjectTrust, settled


def load_profile(
    name: str | None,
    *,
    home: Path,
    cwd: Path,
    provider: ProviderKind | None = None,
    model: str | None = None,
    trust: ProjectTrust | None = None,
) -> Profile:
    """The profile ``name`` (default ``base``), with ``provider``/``model`` overrides applied;
    the project's profiles as ``trust`` admits them (default: the home's record)."""
    catalog = ProfileCatalog.load(home=home, project=cwd, trust=trust)
    profile = catalog.get(name or DEFAULT_PROFILE)
    return _overridden(profile, provider=provider, model=model)


def _overridden(profile: Profile, *, provider: ProviderKind | None, model: str | None) -> Profile:
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


@asynccontextmanager
async def open_agent_runtime(
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
    children: ChildLauncher | None = None,
    approve: Approver | None = None,
    permissions: Permissions | None = None,
    assume_yes: bool = False,
    tools: Sequence[Tool] = (),
    agents: Sequence[AgentSpec] = (),
    trust_project: bool | None = None,
) -> AsyncIterator[LocalRuntime]:
    """A Runtime whose new sessions run agents under ``profile`` (default ``base``).

    A resumed session runs under its own profile (``rt.resume(id,
    profile=...)`` says another). ``provider`` and ``model`` override every
    session's profile (a provider kind such as ``"openai"``, or a ready
    ``Provider`` object); ``durability`` overrides the Runtime's profile.
    ``handler`` replaces the agent loop altogether (tests, other runtimes).
    ``store``: write through this open store instead of starting one (the
    session hosts of the Ray backend); ``children``: place some delegated
    children on other session hosts.

    Tool calls with side effects (``write_file``, ``edit_file``, ``bash``)
    ask first unless a rule allows them: ``permissions`` adds rules to every
    profile's own (deny beats ask beats allow); ``approve`` answers the
    calls that ask (an ``ApprovalRequest`` in, ``True``/``False`` or an
    ``ApprovalDecision`` out; sync or async); without it they are denied.
    ``assume_yes`` allows every call that would ask.

    ``tools`` are the program's own (``@amplifier.tool`` functions, or any
    ``Tool``), for the agents that name them; ``agents`` are ``AgentSpec``
    objects. Each replaces a file's (or a built-in) of its name, with a
    warning.

    The MCP servers of ``$AMPLIFIER_HOME/mcp.json``, ``<cwd>/.amplifier/mcp.json``
    and the profile's ``mcp_servers`` start when a turn first needs their
    tools, are shared by the Runtime's sessions, and stop with it.

    The project's own ``mcp.json`` and profiles are used only if trusted
    (``_trust``): ``trust_project`` True vouches for them, False leaves them
    out, and None (the default) follows the home's record of what a person
    trusted (``amplifier trust``), with a ``ConfigWarning`` naming the files
    it leaves out.
    Raises ``UnknownProfile`` or ``ConfigError`` (an unknown provider kind
    or durability, naming the valid ones; a profile that cannot be read or
    names a tool or agent that does not exist; a tool whose signature
    cannot be described, naming its function) before anything is opened.
    Any other agent spec or profile file that cannot be used is left out,
    with a ``ConfigWarning`` naming it: only what needs it fails.
    """
    check_options(provider=provider, durability=durability)
    root, directory = resolve_home_and_cwd(home, cwd)
    kind = provider if isinstance(provider, str) else None
    trust = await settled(directory, home=root, trust=trust_project)
    profiles = await anyio.to_thread.run_sync(
        lambda: ProfileCatalog.load(home=root, project=directory, trust=trust)
    )

    def configured(name: str) -> Profile:
        loaded = _overridden(profiles.get(name), provider=kind, model=model)
        if loop is not None:  # the names it uses, once the tools and agents are known
            check_profile(loaded, profiles, tools=loop.tool_names, agents=loop.catalog)
        return loaded

    loop: AgentTurnHandler | None = None
    settings = configured(profile or DEFAULT_PROFILE)
    check_given_tools(tools)
    for given in tools:
        check = getattr(given, "check", None)
        if callable(check):
            check()  # a signature that cannot be described: ConfigError naming the function
        try:
            spec_of(given)  # what a model is shown of it: found now, not at every turn
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"tool {given.name}: it cannot be described to a model: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    servers: AbstractAsyncContextManager[object] = nullcontext()
    if handler is None:
        catalog = await anyio.to_thread.run_sync(
            lambda: AgentCatalog.load(home=root, project=directory)
        )
        if agents:
            catalog = catalog.with_specs(agents)
        fixed = provider if provider is not None and not isinstance(provider, str) else None
        servers = mcp = McpServers(home=root, project=directory, trust=trust)
        loop = AgentTurnHandler(
            catalog=catalog,
            profile=settings,
            root=directory,
            provider=fixed,
            profiles=configured,
            permissions=permissions,
            assume_yes=assume_yes,
            tools=tools,
            mcp=mcp,
        )
        loop.toolbox(settings)  # the profile's Python tools load now, or fail naming it
        check_given_agents(agents, catalog, loop.tool_names)
        if permissions is not None:
            check_given_rules(permissions, loop.tool_names)
        check_specs(catalog, loop.tool_names)
        check_profile(settings, profiles, tools=loop.tool_names, agents=catalog)
    warn_unusable(profiles, loop.catalog if loop else None, configured, in_use=settings.name)
    try:
        async with (
            servers,
            open_local_runtime(
                handler=handler or loop,
                home=root,
                cwd=directory,
                durability=durability or settings.durability,
                profile=settings.name,
                clock=clock,
                max_depth=settings.max_depth,
                max_children=settings.max_children,
                store=store,
                children=children,
                approve=approve,
            ) as runtime,
        ):
            yield runtime
    finally:
        if loop is not None:
            with anyio.CancelScope(shield=True):
                await loop.aclose()
