"""The typer application. Presentation only: every behaviour lives in the Python API.

Exit codes: 0 done, 1 a failure (provider, disk, a session in use),
2 a usage error (bad id, unknown agent or profile, bad flag), 128 + N when
signal N stopped a command that runs turns (130 Ctrl-C, 143 SIGTERM, 129
SIGHUP), after the session's final records are written.
Errors are one line on stderr, never a traceback: ``--debug`` (or
``AMPLIFIER_DEBUG=1``) shows the tracebacks, those of failed turns and tools
through the ``amplifier`` logger. With ``--json`` stdout carries exactly one
JSON document.
How a command runs (the event loop, its signals, a failure as one line
and an exit code) is ``_running``'s; the commands are here.

Rule: loading this module imports typer and little else, so that
``amplifier --help`` starts fast: the API (``amplifier``, which builds
every pydantic model) is imported by the commands that use it, inside their
functions; ``open_runtime`` here does that on its first call.
"""

from __future__ import annotations

import atexit
import copy
import gc
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    nullcontext,
)
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import anyio
import typer
from typer.main import get_command_name
from typer.models import CommandInfo

from ._complete import complete_agent, complete_profile, complete_session
from ._continuing import confirm_cleanup, forget_if_empty, latest_here_or_above, resumed
from ._input import lenient, read_stdin, stdin_is_piped
from ._output import drop, tolerant_stdout
from ._render import (
    console,
    cut_off_notice,
    event_json,
    event_lines,
    metadata_lines,
    safe,
    sessions_table,
    summary_json,
    transcript_lines,
    tree_lines,
    usage_lines,
    write_json,
)
from ._running import (
    TURN_SIGNALS,
    Debug,
    Leave,
    execute,
    fail,
    pause_collector,
    say,
    until_opened,
)

if TYPE_CHECKING:
    from pathlib import Path

    from amplifier import Runtime, Session, SessionSummary
    from amplifier import open_runtime as open_runtime
    from amplifier.agents import ProviderKind

    from ._interactive import History
else:

    def open_runtime(**options: Any) -> Any:
        """``amplifier.open_runtime``, imported on first use (see the Rule above).

        The commands that manage sessions open it with ``trust_project=False``: they run
        no agent, so the project's own configuration, trusted or not, has nothing to do
        with them (and nothing to warn about)."""
        from amplifier import open_runtime as open_api_runtime

        return open_api_runtime(**options)


app = typer.Typer(
    name="amplifier",
    help="Run and manage AI-agent sessions. With no command: an interactive session.",
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
session_app = typer.Typer(
    help="List, show, resume, delete and clean up sessions.", no_args_is_help=True
)
app.add_typer(session_app, name="session")


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class SortOrder(StrEnum):
    created = "created"
    used = "used"


class Provider(StrEnum):
    offline = "offline"
    scripted = "scripted"
    openai = "openai"
    anthropic = "anthropic"


JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print one JSON document (same as --output-format json).")
]
FormatOption = Annotated[OutputFormat, typer.Option("--output-format", help="text or json.")]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        help="Profile to run under (default: base).",
        autocompletion=complete_profile,
    ),
]
ProviderOption = Annotated[
    Provider | None, typer.Option("--provider", help="Override the profile's provider.")
]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Override the profile's model.")
]
AgentOption = Annotated[
    str | None,
    typer.Option(
        "--agent",
        "-a",
        help="Agent of a new session (default: the profile's).",
        autocompletion=complete_agent,
    ),
]
ClusterOption = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        help="Run on a Ray cluster: 'auto' (the running one, or a new local one) or its "
        "address. Needs amplifier[ray].",
    ),
]
AllowOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow",
        metavar="RULE",
        help="Let matching tool calls run without asking: a tool, or tool(pattern), e.g. "
        "'bash(pytest*)', 'write_file(tests/**)'. Repeatable.",
    ),
]
DenyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--deny",
        metavar="RULE",
        help="Refuse matching tool calls (beats --allow and --yes). Repeatable.",
    ),
]
YesFlag = Annotated[
    bool,
    typer.Option(
        "--yes", "-y", help="Let every tool call that would ask run (a deny still refuses)."
    ),
]
ClusterTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--cluster-timeout",
        min=0.1,
        help="Seconds to wait for the Ray cluster (to join it, or start one) and its "
        "hosts, each (default 30). Only with --cluster.",
    ),
]
NoHistory = Annotated[
    bool, typer.Option("--no-history", help="Do not show the recent history first.")
]
FullHistory = Annotated[bool, typer.Option("--full-history", help="Show the whole history first.")]
InteractiveFlag = Annotated[
    bool,
    typer.Option(
        "--interactive",
        "-i",
        help="Interactive even when stdin is piped: each line is a prompt.",
    ),
]


# -- what the commands share ------------------------------------------------------


def _json_mode(json_flag: bool, output_format: OutputFormat) -> bool:
    return json_flag or output_format is OutputFormat.json


def _on(cluster: str | None, timeout: float | None) -> dict[str, Any]:
    """``open_runtime``'s options for ``--cluster`` (one session: one host is enough)."""
    if cluster is None:
        if timeout is not None:
            fail("--cluster-timeout applies with --cluster", code=2)
        return {}
    options: dict[str, Any] = {"cluster": cluster, "hosts": 1}
    if timeout is not None:
        options["cluster_timeout"] = timeout
    return options


def _cluster_note(rt: Runtime) -> None:
    """Which Ray cluster the runtime joined, or that it started one (stderr)."""
    from amplifier.cluster import ClusterInfo  # no Ray: plain data

    info = getattr(rt, "cluster", None)
    if isinstance(info, ClusterInfo):
        say(info.describe())


def _provider(provider: Provider | None) -> ProviderKind | None:
    return provider.value if provider is not None else None


async def _other_project_note(rt: Runtime, session: Session) -> None:
    cwd = session.metadata.cwd
    if session.metadata.cwd_source:
        say(f"(its project, {cwd}, is {session.metadata.cwd_source}: it recorded none)")
    if cwd and cwd != str(rt.cwd):
        say(f"(session of {cwd}, not this directory: its tools run there)")


# -- one turn ---------------------------------------------------------------------


async def _one_turn(
    session: Session,
    prompt: str,
    *,
    interrupts: AsyncIterator[int],
    as_json: bool,
    fresh: bool = False,
) -> int:
    """Ask once, streaming on a terminal; a signal cancels the turn (exit 128 + N).

    A cancelled turn ends the session ``cancelled``, a failed one ``failed``
    with its error; what the answer got to is printed (at once on a
    terminal, at the end when piped).
    """
    from amplifier import PersistenceError, TurnCancelled, TurnFailed

    stream = sys.stdout.isatty() and not as_json
    streamed: list[str] = []

    async def show(piece: str) -> None:
        streamed.append(piece)
        if stream:
            sys.stdout.write(safe(piece))
            sys.stdout.flush()

    async with anyio.create_task_group() as tg:
        stopped_by: int = signal.SIGINT

        async def cancel_on_interrupt() -> None:
            nonlocal stopped_by
            async for signum in interrupts:
                stopped_by = signum
                session.cancel()

        tg.start_soon(cancel_on_interrupt)
        # The live tree of tool calls and sub-sessions: for a person at a terminal only.
        progress: AbstractAsyncContextManager[object] = nullcontext()
        if sys.stderr.isatty() and not as_json:
            from ._progress import live_progress  # rich's live display: a terminal only

            progress = live_progress(session, console(stderr=True))
        try:
            async with progress:
                reply = await session.ask(prompt, on_text=show)
        except TurnCancelled:
            await session.close(status="cancelled")  # before the scope is cancelled
            tg.cancel_scope.cancel()
            partial = "".join(streamed)
            if as_json:
                write_json({"session_id": session.id, "status": "cancelled", "response": partial})
            elif partial:
                sys.stdout.write("\n" if stream else safe(partial) + "\n")
                sys.stdout.flush()
            if not as_json:
                say(f"Cancelled. Resume with: amplifier session resume {session.id}")
            return 128 + stopped_by
        except TurnFailed as exc:
            # A turn that could not be stored says nothing of the session:
            # a resumed one keeps the status it had.
            unstored = isinstance(exc.__cause__, PersistenceError)
            await session.close(status="failed", error=exc.reason, keep_previous=unstored)
            tg.cancel_scope.cancel()
            if as_json:
                write_json({"session_id": session.id, "status": "failed", "error": exc.reason})
            elif stream and streamed:
                sys.stdout.write("\n")  # the error starts a line of its own
                sys.stdout.flush()
            sys.stderr.write(f"Error: {safe(exc.reason)}\n")
            # The document names the session; a new one whose turn could not be
            # stored has nothing on disk to resume.
            if not as_json and not (fresh and unstored):
                say(f"Session: {session.id}")
                _resume_hint(session.id)
            return 1
        tg.cancel_scope.cancel()
    if as_json:
        document = {
            "session_id": session.id,
            "status": "completed",
            "response": reply.text,
            "turn": reply.turn,
        }
        cut = {"cut_off": reply.cut_off} if reply.cut_off is not None else {}
        write_json({**document, **cut})
        return 0
    if stream:
        sys.stdout.write("\n")
    else:
        sys.stdout.write(safe(reply.text) + "\n")
    sys.stdout.flush()
    notice = cut_off_notice(reply.cut_off)
    if notice is not None:
        say(notice)
    say(f"Session: {session.id}")
    _resume_hint(session.id)
    return 0


def _stored(home: Path, session_id: str) -> bool:
    """Whether the session is on disk (its runtime closed: every file written)."""
    from amplifier import AmplifierError
    from amplifier.persistence import find_session

    try:
        find_session(home, session_id, project=None)
    except (AmplifierError, OSError):
        return False
    return True


def _resume_hint(session_id: str) -> None:
    say(f"Resume with: amplifier session resume {session_id}")


def _read_prompt(prompt: str | None) -> str | None:
    if prompt is not None:
        return lenient(prompt)
    if sys.stdin.isatty():
        return None
    # `echo x |` ends the prompt with a line break that is not part of it.
    return read_stdin().rstrip("\r\n")


class _Before(NamedTuple):
    """The run flags given before the command: ``amplifier --profile dev run x``.

    They apply to the commands that run a turn (``run``, ``continue``,
    ``session resume``); the same flag after the command wins, as the later
    of two repeated options does. Any other command refuses them.
    """

    profile: str | None = None
    provider: Provider | None = None
    model: str | None = None
    agent: str | None = None
    cluster: str | None = None
    access: _Access | None = None
    cluster_timeout: float | None = None

    def given(self) -> list[str]:
        named = [
            f"--{name.replace('_', '-')}"
            for name in ("profile", "provider", "model", "agent", "cluster", "cluster_timeout")
            if getattr(self, name) is not None
        ]
        return named + (self.access.given() if self.access is not None else [])


class _Access(NamedTuple):
    """What ``--allow``, ``--deny`` and ``--yes`` say of the tool calls a command runs."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    yes: bool = False

    @classmethod
    def of(
        cls, ctx: typer.Context, allow: list[str] | None, deny: list[str] | None, yes: bool
    ) -> _Access:
        """The flags given to the command, with those given before it (``_Before``)."""
        before = _before(ctx).access or cls()
        return cls(
            allow=(*before.allow, *(allow or ())),
            deny=(*before.deny, *(deny or ())),
            yes=yes or before.yes,
        )

    def given(self) -> list[str]:
        flags = (("--allow", self.allow), ("--deny", self.deny), ("--yes", self.yes))
        return [flag for flag, present in flags if present]

    def options(self, *, as_json: bool) -> dict[str, Any]:
        """``open_runtime``'s options: the rules, and who answers the calls that ask.

        A rule that does not parse is a ``ConfigError`` (exit 2).
        """
        from amplifier import Permissions

        from ._approval import approver

        rules = Permissions.of(allow=self.allow, deny=self.deny)
        options: dict[str, Any] = {"approve": approver(as_json)}
        if self.allow or self.deny:
            options["permissions"] = rules
        if self.yes:
            options["assume_yes"] = True
        return options


_KEEPS_ITS_AGENT = "--agent applies to a new session; a resumed one keeps its agent"


def _before(ctx: typer.Context) -> _Before:
    return ctx.obj if isinstance(ctx.obj, _Before) else _Before()


def _refuse_before(ctx: typer.Context, command: str) -> None:
    """Exit 2 if run flags were given before ``command``, which takes none."""
    given = _before(ctx).given()
    if given:
        fail(
            f"{given[0]} does not apply to '{command}' (only to run, continue and session resume)",
            code=2,
        )


def _history(no_history: bool, full_history: bool) -> History:
    if no_history and full_history:
        fail("--no-history and --full-history cannot go together", code=2)
    return "none" if no_history else "full" if full_history else "recent"


# -- commands ---------------------------------------------------------------------


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version  # only here: it costs start-up time

        print(f"amplifier {version('amplifier')}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    profile: ProfileOption = None,
    provider: ProviderOption = None,
    model: ModelOption = None,
    agent: AgentOption = None,
    cluster: ClusterOption = None,
    cluster_timeout: ClusterTimeoutOption = None,
    allow: AllowOption = None,
    deny: DenyOption = None,
    yes: YesFlag = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show the tracebacks of failures on stderr (as AMPLIFIER_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """Run and manage AI-agent sessions. With no command: an interactive session."""
    Debug.flag = debug
    access = _Access(allow=tuple(allow or ()), deny=tuple(deny or ()), yes=yes)
    if ctx.invoked_subcommand is not None:
        ctx.obj = _Before(
            profile=profile,
            provider=provider,
            model=model,
            agent=agent,
            cluster=cluster,
            access=access if access.given() else None,
            cluster_timeout=cluster_timeout,
        )
        if ctx.invoked_subcommand not in ("run", "continue", "session"):
            _refuse_before(ctx, ctx.invoked_subcommand)
        if (cluster, cluster_timeout) != (None, None) and ctx.invoked_subcommand != "run":
            flag = "--cluster" if cluster is not None else "--cluster-timeout"
            fail(f"{flag} applies to run and to the interactive mode", code=2)
        return

    on_cluster = _on(cluster, cluster_timeout)

    async def main(interrupts: AsyncIterator[int]) -> int | None:
        from ._interactive import preload, run_interactive

        preload()
        from ._trust import settle_trust

        await settle_trust(interrupts, as_json=False)
        async with until_opened(interrupts) as opening:
            async with open_runtime(
                profile=profile,
                provider=_provider(provider),
                model=model,
                **on_cluster,
                **access.options(as_json=False),
            ) as rt:
                if cluster is not None:
                    _cluster_note(rt)
                home = rt.home
                async with rt.open_session(agent=agent) as session:
                    await opening.opened()
                    code, last = await run_interactive(
                        rt, session, history="none", interrupts=interrupts, say=say, fresh=True
                    )
                if last == session.id and await forget_if_empty(rt, session):
                    return code  # nothing to resume
            if last is None:
                return code
            if not _stored(home, last):  # a home that cannot be written: said at each turn
                say("Error: nothing of this session could be stored; there is nothing to resume")
                return code or 1
            _resume_hint(last)
            return code
        return opening.exit_code(as_json=False)

    execute(main, signals=TURN_SIGNALS)


@session_app.callback()
def session_group(ctx: typer.Context) -> None:
    # Run flags given before ``session`` reach only ``session resume``.
    if ctx.invoked_subcommand != "resume":
        _refuse_before(ctx, f"session {ctx.invoked_subcommand}")


@app.command()
def run(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt (default: read from stdin).")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            "-r",
            help="Continue this session (id or unique prefix).",
            autocompletion=complete_session,
        ),
    ] = None,
    profile: ProfileOption = None,
    provider: ProviderOption = None,
    model: ModelOption = None,
    agent: AgentOption = None,
    name: Annotated[
        str | None, typer.Option("--name", help='Name the new session (e.g. "auth fix").')
    ] = None,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
    cluster: ClusterOption = None,
    cluster_timeout: ClusterTimeoutOption = None,
    allow: AllowOption = None,
    deny: DenyOption = None,
    yes: YesFlag = False,
) -> None:
    """Run one turn in a new session (or --resume one), print the answer and the session id."""
    as_json = _json_mode(json_flag, output_format)
    access = _Access.of(ctx, allow, deny, yes)
    before = _before(ctx)
    cluster = cluster if cluster is not None else before.cluster
    if cluster_timeout is None:
        cluster_timeout = before.cluster_timeout
    profile = profile if profile is not None else before.profile
    provider = provider if provider is not None else before.provider
    model = model if model is not None else before.model
    agent = agent if agent is not None else before.agent
    text = _read_prompt(prompt)
    if not text or not text.strip():
        fail("no prompt: give it as an argument or on stdin", code=2, as_json=as_json)
    if resume is not None and agent is not None:
        fail(_KEEPS_ITS_AGENT, code=2, as_json=as_json)
    if resume is not None and name is not None:
        fail("--name applies to a new session; use 'session rename'", code=2, as_json=as_json)

    on_cluster = _on(cluster, cluster_timeout)

    async def main(interrupts: AsyncIterator[int]) -> int:
        from ._trust import settle_trust

        await settle_trust(interrupts, as_json=as_json)
        async with until_opened(interrupts) as opening:
            async with open_runtime(
                profile=profile,
                provider=_provider(provider),
                model=model,
                **on_cluster,
                **access.options(as_json=as_json),
            ) as rt:
                if cluster is not None:
                    _cluster_note(rt)
                session_opening = (
                    resumed(rt, (await rt.find(resume)).session_id, profile=profile)
                    if resume is not None
                    else rt.open_session(agent=agent, name=name)
                )
                async with session_opening as session:
                    await opening.opened()
                    if not as_json:
                        await _other_project_note(rt, session)
                    return await _one_turn(
                        session, text, interrupts=interrupts, as_json=as_json, fresh=resume is None
                    )
        return opening.exit_code(as_json)

    execute(main, as_json=as_json, signals=TURN_SIGNALS)


@app.command(name="continue")
def continue_(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Argument(help="One turn with this prompt; without it, interactive.")
    ] = None,
    no_history: NoHistory = False,
    full_history: FullHistory = False,
    interactive: InteractiveFlag = False,
    profile: ProfileOption = None,
    provider: ProviderOption = None,
    model: ModelOption = None,
    pick: Annotated[
        bool, typer.Option("--pick", help="Choose from the recent sessions (on a terminal).")
    ] = False,
    allow: AllowOption = None,
    deny: DenyOption = None,
    yes: YesFlag = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Resume the session of this project used last (--pick: choose one)."""
    as_json = _json_mode(json_flag, output_format)
    access = _Access.of(ctx, allow, deny, yes)
    profile, provider, model = _resume_flags(ctx, profile, provider, model, as_json=as_json)
    history = _history(no_history, full_history)

    async def latest(rt: Runtime, interrupts: AsyncIterator[int]) -> str:
        found = await latest_here_or_above(rt, say)
        if found is None:
            fail(
                "no session to continue in this project; start one with 'amplifier run'",
                code=1,
                as_json=as_json,
            )
        if found.metadata is None:
            say(
                f"Note: session {found.session_id} is damaged ({found.problem}); "
                "resuming it rebuilds its metadata from its event log"
            )
        return found.session_id

    async def picked(rt: Runtime, interrupts: AsyncIterator[int]) -> str:
        return await _picked(rt, interrupts, as_json)

    async def main(interrupts: AsyncIterator[int]) -> int | None:
        return await _resume(
            picked if pick else latest,
            prompt,
            access=access,
            profile=profile,
            provider=provider,
            model=model,
            history=history,
            interactive=interactive,
            interrupts=interrupts,
            as_json=as_json,
        )

    execute(main, as_json=as_json, signals=TURN_SIGNALS)


async def _picked(rt: Runtime, interrupts: AsyncIterator[int], as_json: bool) -> str:
    """The session the person picks at the terminal (``_picker``); leaves if there is none."""
    from ._picker import choose, on_a_terminal, recent_sessions

    if not on_a_terminal():
        fail(
            "no session ID: give one (an ID prefix or a name will do), "
            "or run this on a terminal to pick from the recent sessions",
            code=2,
            as_json=as_json,
        )
    rows = await recent_sessions(rt)
    if not rows:
        fail("no session to resume in this project", code=1, as_json=as_json)
    choice = await choose(rows, interrupts)
    if choice.interrupted:
        fail("interrupted", code=130, as_json=as_json)
    if choice.session_id is None:
        say("Nothing resumed.")
        raise Leave(0)
    return choice.session_id


def _resume_flags(
    ctx: typer.Context,
    profile: str | None,
    provider: Provider | None,
    model: str | None,
    *,
    as_json: bool,
) -> tuple[str | None, Provider | None, str | None]:
    """The flags of a resuming command, with those given before it (see ``_Before``)."""
    before = _before(ctx)
    if before.agent is not None:
        fail(_KEEPS_ITS_AGENT, code=2, as_json=as_json)
    return (
        profile if profile is not None else before.profile,
        provider if provider is not None else before.provider,
        model if model is not None else before.model,
    )


_Target = str | Callable[["Runtime", AsyncIterator[int]], Awaitable[str]]
"""The session to resume: its id (prefix, name), or how to find it once the runtime is open."""


async def _resume(
    target: _Target,
    prompt: str | None,
    *,
    access: _Access,
    profile: str | None,
    provider: Provider | None,
    model: str | None,
    history: History,
    interrupts: AsyncIterator[int],
    as_json: bool,
    interactive: bool = False,
) -> int | None:
    """Resume under the session's own profile as configured now (unless --profile says).

    The prompt comes from the argument, else from stdin when it is piped (a
    pipe or a file); with neither, or with ``interactive``, the session is
    interactive. The id is looked up first: a bad or unknown id is the error
    a user sees first.
    """
    from ._interactive import preload, run_interactive
    from ._trust import settle_trust

    if interactive and prompt is not None:
        fail("--interactive takes no prompt", code=2, as_json=as_json)
    piped = prompt is None and not interactive and stdin_is_piped()
    prompt = _read_prompt(prompt) if piped or prompt is not None else None
    if prompt is None and not as_json:
        preload()
    await settle_trust(interrupts, as_json=as_json)
    async with open_runtime(
        profile=profile,
        provider=_provider(provider),
        model=model,
        **access.options(as_json=as_json),
    ) as rt:
        session_id = target if isinstance(target, str) else await target(rt, interrupts)
        location = await rt.find(session_id)
        if piped and not (prompt and prompt.strip()):
            fail("no prompt: give it as an argument or on stdin", code=2, as_json=as_json)
        if prompt is None and as_json:
            fail(
                "--json needs a prompt (interactive mode prints for a person)", code=2, as_json=True
            )
        async with resumed(rt, location.session_id, profile=profile) as session:
            if not as_json:
                await _other_project_note(rt, session)
            if prompt is not None:
                return await _one_turn(session, prompt, interrupts=interrupts, as_json=as_json)
            code, last = await run_interactive(
                rt, session, history=history, interrupts=interrupts, say=say
            )
    if last is not None:
        _resume_hint(last)
    return code


@session_app.command("list")
def list_(
    all_projects: Annotated[
        bool, typer.Option("--all", help="Sessions of every project (adds Project).")
    ] = False,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=0, help="Show the newest N sessions (0: all)."),
    ] = 50,
    tree: Annotated[
        bool, typer.Option("--tree", help="Show sub-sessions under their parent.")
    ] = False,
    sort: Annotated[
        SortOrder,
        typer.Option("--sort", help="Newest first by: created, or used (last used)."),
    ] = SortOrder.created,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Only the sessions with this tag.")
    ] = None,
    usage: Annotated[
        bool, typer.Option("--usage", help="Add tokens and cost (with sub-sessions).")
    ] = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """This project's sessions, newest first."""
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> None:
        from amplifier.agents import Tokens, session_usage

        shown: list[tuple[SessionSummary, int]] = []
        tokens: dict[str, Tokens] = {}
        async with open_runtime(durability="none", trust_project=False) as rt:
            # One more than asked: says whether there is more than the page.
            page = await rt.sessions(
                all_projects=all_projects,
                limit=limit + 1 if limit else None,
                roots_only=True,
                sort=sort.value,
                tag=tag,
            )
            more = bool(limit) and len(page) > limit
            for root_row in page[:limit] if limit else page:
                if not tree:
                    shown.append((root_row, 0))
                    continue
                nodes = await rt.tree(root_row.session_id)
                base = root_row.metadata.depth if root_row.metadata else 0
                shown.extend(
                    (node, (node.metadata.depth - base) if node.metadata else 0) for node in nodes
                )
            for root_row in (page[:limit] if limit else page) if usage else []:
                report = await session_usage(rt, root_row.session_id)
                tokens.update((s.session_id, s.tree) for s in report.sessions)
        if as_json:
            write_json(
                [
                    {
                        **summary_json(row),
                        "depth": depth,
                        **(
                            {"usage": tokens[row.session_id].as_json()}
                            if row.session_id in tokens
                            else {}
                        ),
                    }
                    for row, depth in shown
                ]
            )
            return
        if not shown:
            scope = "any project" if all_projects else "this project"
            if tag is not None:
                say(f"No session of {scope} has the tag {tag!r} (`session tag` adds one).")
                return
            hint = "" if all_projects else " (--all shows every project's)"
            say(f"No sessions in this project{hint}.")
            return
        sessions_table(
            shown,
            show_project=all_projects,
            show_used=sort is SortOrder.used,
            usage=tokens if usage else None,
            out=console(),
        )
        if more:
            say(f"(the newest {limit} shown; --limit N shows more, --limit 0 all)")

    execute(main, as_json=as_json)


@session_app.command("show")
def show(
    session_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="Session id or unique prefix.", autocompletion=complete_session
        ),
    ],
    events: Annotated[bool, typer.Option("--events", help="Show the event log too.")] = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """A session's metadata, its sub-session tree and its transcript."""
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> None:
        from amplifier.agents import session_usage
        from amplifier.persistence import project_slugs

        async with open_runtime(durability="none", trust_project=False) as rt:
            tree = await rt.tree(session_id)
            head = tree[0]
            records = await rt.transcript(head.session_id)
            log = [e async for e in rt.events(head.session_id)] if events else []
            project_dir = rt.cwd
            report = await session_usage(rt, head.session_id)
        if as_json:
            document: dict[str, Any] = {
                **summary_json(head),
                "tree": [summary_json(row) for row in tree],
                "transcript": [record.model_dump(mode="json") for record in records],
                "usage": report.as_json(),
            }
            if events:
                document["events"] = [event_json(event) for event in log]
            write_json(document)
            return
        out = console()
        if head.location.project not in project_slugs(project_dir):
            where = head.metadata.cwd if head.metadata else head.location.project
            say(f"(session of another project: {where})")
        if head.metadata is None:
            out.print(
                f"Session:   {head.session_id}\nStatus:    damaged: {safe(head.problem or '')}",
                markup=False,
            )
        else:
            lines = metadata_lines(head.metadata, head.status, records, model=report.head.model)
            out.print("\n".join(lines), markup=False)
            out.print("\n".join(usage_lines(report, tree)), markup=False)
        if len(tree) > 1:
            out.print("\nSub-sessions:", markup=False)
            out.print("\n".join(tree_lines(tree, head.session_id)), markup=False)
        out.print(f"\nTranscript ({len(records)} messages):\n", markup=False)
        out.print("\n".join(transcript_lines(records)), markup=False)
        if events:
            out.print(f"Events ({len(log)}):", markup=False)
            out.print("\n".join(event_lines(log)), markup=False)

    execute(main, as_json=as_json)


@session_app.command("resume")
def resume_(
    ctx: typer.Context,
    session_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[ID]",
            help="Session id, prefix or name (none: pick one, on a terminal).",
            autocompletion=complete_session,
        ),
    ] = None,
    prompt: Annotated[
        str | None, typer.Argument(help="One turn with this prompt; without it, interactive.")
    ] = None,
    no_history: NoHistory = False,
    full_history: FullHistory = False,
    interactive: InteractiveFlag = False,
    profile: ProfileOption = None,
    provider: ProviderOption = None,
    model: ModelOption = None,
    allow: AllowOption = None,
    deny: DenyOption = None,
    yes: YesFlag = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Resume a session (sub-sessions too): with a prompt, one turn; without, interactive."""
    as_json = _json_mode(json_flag, output_format)
    access = _Access.of(ctx, allow, deny, yes)
    profile, provider, model = _resume_flags(ctx, profile, provider, model, as_json=as_json)
    history = _history(no_history, full_history)

    async def picked(rt: Runtime, interrupts: AsyncIterator[int]) -> str:
        return await _picked(rt, interrupts, as_json)

    async def main(interrupts: AsyncIterator[int]) -> int | None:
        return await _resume(
            session_id if session_id is not None else picked,
            prompt,
            access=access,
            profile=profile,
            provider=provider,
            model=model,
            history=history,
            interactive=interactive,
            interrupts=interrupts,
            as_json=as_json,
        )

    execute(main, as_json=as_json, signals=TURN_SIGNALS)


@session_app.command("delete")
def delete(
    session_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="Session id or unique prefix.", autocompletion=complete_session
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Delete a session and its sub-sessions (never one in use)."""
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> None:
        async with open_runtime(durability="none", trust_project=False) as rt:
            tree = await rt.tree(session_id)
            target = tree[0].session_id
            if not yes:
                if not sys.stdin.isatty():
                    fail("not deleting without confirmation: pass --yes", code=2, as_json=as_json)
                more = f" and its {len(tree) - 1} sub-session(s)" if len(tree) > 1 else ""
                confirmed = await anyio.to_thread.run_sync(
                    lambda: typer.confirm(
                        f"Delete session {target}{more}?", default=False, err=True
                    )
                )
                if not confirmed:
                    say("Nothing deleted.")
                    if as_json:
                        write_json({"deleted": []})
                    return  # the user's choice: not a failure
            removed = await rt.delete(target)
        if as_json:
            write_json({"deleted": removed})
        else:
            for removed_id in removed:
                print(f"Deleted {removed_id}")

    execute(main, as_json=as_json)


@session_app.command("reindex")
def reindex(
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Rebuild the session index (what list and id lookups read) from the session files."""
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> None:
        async with open_runtime(durability="none", trust_project=False) as rt:
            total = await rt.reindex()
        if as_json:
            write_json({"indexed": total})
        else:
            print(f"Indexed {total} sessions.")

    execute(main, as_json=as_json)


@session_app.command("cleanup")
def cleanup(
    days: Annotated[
        float, typer.Option("--days", min=0, help="Delete sessions not updated for this many days.")
    ] = 30,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be deleted.")
    ] = False,
    all_projects: Annotated[
        bool, typer.Option("--all", help="Every project's sessions, not only this one's.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (on a terminal).")
    ] = False,
    json_flag: JsonFlag = False,
    output_format: FormatOption = OutputFormat.text,
) -> None:
    """Delete old sessions, each with its sub-sessions; sessions in use are left alone."""
    as_json = _json_mode(json_flag, output_format)

    async def main(interrupts: AsyncIterator[int]) -> None:
        async with open_runtime(durability="none", trust_project=False) as rt:
            if not (dry_run or yes) and sys.stdin.isatty():
                plan = await rt.cleanup(days=days, dry_run=True, all_projects=all_projects)
                confirmed = await confirm_cleanup(plan, interrupts) if plan.trees else True
                if confirmed is None:
                    fail("interrupted: nothing deleted", code=130, as_json=as_json)
                if not confirmed:
                    say("Nothing deleted.")
                    if as_json:
                        write_json({"dry_run": False, "days": days, "deleted": [], "in_use": []})
                    return  # the user's choice: not a failure
            result = await rt.cleanup(days=days, dry_run=dry_run, all_projects=all_projects)
        gone = [row for tree in result.trees for row in tree] if dry_run else result.removed
        if as_json:
            write_json(
                {
                    "dry_run": dry_run,
                    "days": days,
                    "would_delete" if dry_run else "deleted": [row.session_id for row in gone],
                    "in_use": [row.session_id for row in result.in_use],
                }
            )
            return
        verb = "Would delete" if dry_run else "Deleted"
        for row in gone:
            print(f"{verb} {row.session_id}")
        for row in result.in_use:
            print(f"Kept {row.session_id} (in use)")
        if not gone and result.in_use:
            say(f"Nothing deleted: the sessions older than {days:g} days are in use.")
        elif not gone:
            scope = "any project" if all_projects else "this project"
            say(f"No session of {scope} is older than {days:g} days.")

    execute(main, as_json=as_json)


def main() -> None:
    """The ``amplifier`` command.

    The process is the command's own: it starts with the cyclic garbage
    collector paused until the API is loaded (``_running.pause_collector``).
    At exit the interpreter runs one last garbage collection over every
    object of the modules a turn loads (about 400): a tenth of an offline
    ``run``, spent freeing memory the system takes back anyway. Frozen
    objects are left out of that walk; they are still released by reference
    count, and by then the command has closed its files and the runtime has
    made its records durable. Exit handlers run last registered first: this
    one runs after those registered while the command ran.

    ``--debug`` may come anywhere before a ``--`` (``amplifier run --debug
    "..."``), as the run flags may come before or after the command.
    """
    pause_collector()
    atexit.register(gc.freeze)
    sys.argv[1:] = debug_first(sys.argv[1:])
    with tolerant_stdout():
        try:
            app_for(sys.argv[1:])()
        except OSError as exc:  # standard output could not be written (a full disk): said once
            drop(sys.__stdout__ or sys.stdout)  # the last flush at exit goes nowhere
            sys.stderr.write(f"Error: {exc.strerror or exc}\n")
            sys.exit(1)


def app_for(args: Sequence[str]) -> typer.Typer:
    """``app`` with only the command that ``args`` name (after a leading ``--debug``), and
    of a group only the subcommand named next; ``app`` itself if they name none.

    typer builds the parameters of every command before it parses any (about
    20 ms for all of ours, a twentieth of an offline ``run``); a command needs
    only its own. Its help, errors and behaviour are the same either way.
    Shell completion gets every command.
    """
    if os.environ.get("_AMPLIFIER_COMPLETE"):
        return app
    words = [*(args[1:] if list(args[:1]) == ["--debug"] else args), "", ""]
    return _only(app, words[0], words[1]) or app


def _only(whole: typer.Typer, name: str, then: str = "") -> typer.Typer | None:
    """A copy of ``whole`` holding only its command or group ``name`` (of a group, only
    its command ``then`` if it has one); None if it has no ``name``."""
    commands = [c for c in whole.registered_commands if _name_of(c) == name]
    groups = [g for g in whole.registered_groups if g.name == name]
    if not commands and not groups:
        return None
    lean = copy.copy(whole)
    lean.registered_commands = commands
    lean.registered_groups = []
    for group in groups:
        inner = group.typer_instance and _only(group.typer_instance, then)
        if inner is not None:
            group = copy.copy(group)
            group.typer_instance = inner
        lean.registered_groups.append(group)
    return lean


def _name_of(command: CommandInfo) -> str:
    if command.name:
        return command.name
    return get_command_name(command.callback.__name__) if command.callback else ""


def debug_first(args: list[str]) -> list[str]:
    """``args`` with every ``--debug`` before a ``--`` moved to the front, where the root
    command takes it."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    rest = [arg for arg in args[:end] if arg != "--debug"]
    return ["--debug", *rest, *args[end:]]
