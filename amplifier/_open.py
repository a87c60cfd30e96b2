"""``open_runtime``, the one way a program opens a runtime: in-process, or on a Ray
cluster when ``cluster`` is given (``amplifier.cluster``, imported only then)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from amplifier._errors import UsageError
from amplifier._exports import name_as_public as _name_as_public
from amplifier.agents import (
    AgentSpec,
    Permissions,
    Provider,
    ProviderKind,
    Tool,
    check_options,
)
from amplifier.agents._runtime import open_agent_runtime
from amplifier.persistence import Clock, Durability, utc_now
from amplifier.runtime import Approver, Runtime, TurnHandler


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
    cluster: str | None = None,
    hosts: int = 2,
    spread_children: bool = False,
    cluster_timeout: float = 30.0,
    approve: Approver | None = None,
    permissions: Permissions | None = None,
    assume_yes: bool = False,
    tools: Sequence[Tool] = (),
    agents: Sequence[AgentSpec] = (),
    trust_project: bool | None = None,
) -> AsyncIterator[Runtime]:
    """A Runtime whose sessions run agents under ``profile`` (default ``base``).

    ``provider`` and ``model`` override the profile's (a provider kind such
    as ``"openai"``, or a ready ``Provider`` object); ``durability`` too.
    ``handler`` replaces the agent loop altogether (tests, other runtimes).
    Raises ``UnknownProfile`` or ``ConfigError`` before anything is opened.

    Tool calls with side effects (``write_file``, ``edit_file``, ``bash``)
    pass a permission check first: ``permissions`` adds rules to every
    profile's (``Permissions(allow=[...], ask=[...], deny=[...])``; deny
    beats ask beats allow); a call that asks goes to ``approve`` (sync or
    async: an ``ApprovalRequest`` in, ``True``, ``False`` or an
    ``ApprovalDecision`` out), and without it is denied, with a result the
    model can read; ``assume_yes`` allows every call that would ask.

    ``tools`` adds the program's own tools (``@amplifier.tool`` functions),
    for the agents that name them, and ``agents`` its own ``AgentSpec``s
    (built in Python or ``AgentSpec.from_markdown``); each replaces one of
    its name from the files, with a warning. A tool whose signature cannot
    be described is one ``ConfigError`` here, naming its function.

    The project's own ``.amplifier/mcp.json`` and profiles can start
    programs and grant permissions, so they are used only if trusted:
    ``trust_project=True`` vouches for the project (``cwd``), ``False``
    leaves them out, and ``None`` follows what a person trusted
    (``amplifier trust``), with a ``ConfigWarning`` naming what it leaves out.

    ``cluster`` runs the sessions on a Ray cluster (``pip install
    'amplifier[ray]'``): ``"auto"`` joins the running one or starts a local
    one, otherwise it is the cluster's address. ``hosts`` session hosts
    (Ray actors) share the sessions; the persistence actor runs on this
    machine, which must hold the home. A provider is then given by kind,
    and ``handler`` and ``clock`` cannot be replaced (each host builds its
    own). Permission rules (``permissions``, ``assume_yes``) go to every
    host; ``approve`` does not reach a host, so there a call that would ask
    is denied unless a rule allows it. A delegated child runs on its
    parent's host; with
    ``spread_children``, each host places its sessions' children on the
    hosts in turn (the next host first), with the same results, records
    and causal order. Joining the cluster (or starting a local one) and
    starting the hosts each take at most ``cluster_timeout`` seconds
    (``ClusterError`` past it, naming the address). Without ``cluster``, Ray
    is never imported.
    """
    check_options(provider=provider, durability=durability)
    if cluster is None:
        if spread_children:
            raise UsageError("spreading children across hosts needs a cluster (cluster=...)")
        async with open_agent_runtime(
            profile=profile,
            home=home,
            cwd=cwd,
            durability=durability,
            provider=provider,
            model=model,
            handler=handler,
            clock=clock,
            approve=approve,
            permissions=permissions,
            assume_yes=assume_yes,
            tools=tools,
            agents=agents,
            trust_project=trust_project,
        ) as runtime:
            yield runtime
        return
    from amplifier.cluster._exceptions import ClusterUnavailable  # no Ray: plain errors

    if tools or agents:
        raise ClusterUnavailable(
            "a cluster's hosts load tools and agents from files and profiles, not from this program"
        )
    if handler is not None or clock is not utc_now:
        raise ClusterUnavailable("a cluster runtime runs the agent loop of each host's own")
    if provider is not None and not isinstance(provider, str):
        raise ClusterUnavailable("on a cluster, give the provider by kind: each host builds it")
    if hosts < 1:
        raise ClusterUnavailable(f"a cluster runtime needs at least one host, not {hosts}")
    if not cluster_timeout > 0:
        raise UsageError(f"cluster_timeout must be above 0 seconds, not {cluster_timeout}")
    # Read when ray is imported: a cluster started here sends no usage statistics.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        from amplifier.cluster._driver import open_cluster_runtime
    except ImportError as exc:
        if exc.name != "ray" and not (exc.name or "").startswith("ray."):
            raise
        raise ClusterUnavailable(
            "running on a cluster needs Ray: pip install 'amplifier[ray]'"
        ) from None
    async with open_cluster_runtime(
        cluster,
        hosts=hosts,
        spread_children=spread_children,
        timeout=cluster_timeout,
        profile=profile,
        home=home,
        cwd=cwd,
        durability=durability,
        provider=provider,
        model=model,
        permissions=permissions,
        assume_yes=assume_yes,
        trust_project=trust_project,
    ) as runtime:
        yield runtime


_name_as_public(globals(), ["open_runtime"], "amplifier._open")
