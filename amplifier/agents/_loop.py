"""The agent loop: what answers a prompt inside a session turn.

    prompt -> provider:request -> provider:response -> tool calls
           -> tool:pre / tool:post (the calls of one response concurrently)
           -> provider:request -> ... until an answer without tool calls,
              or the profile's max_rounds

Rule 1: every message goes to the transcript as it happens: the assistant
        message when its response is complete, each tool result as soon as
        it and every result before it are done (results keep call order).
        Records are sent without waiting: they are durable with the turn's
        answer, which the session waits for; only a tool with side effects
        waits for them before it runs (its ``tool:pre`` and its approval
        first: write-ahead).
Rule 2: the model always sees a valid history: ``_context.normalize`` pairs
        every call with a result, ``_context.fit`` keeps it in the window.
Rule 3: a turn cut off (cancelled, crashed) leaves no call without a result
        for long: the loop answers unfinished calls "interrupted; outcome
        unknown" when it is cancelled, and ``on_resume`` does the same for
        whatever a crash left, on every resume path.
Rule 4: API keys live in the provider objects only; events record the
        provider, model, usage and latency.
Rule 5: what the model wrote before its answer was cut off (the turn
        cancelled, the stream failed, the output-token limit reached) is
        kept: an assistant message marked ``cut_off``. A tool call that the
        limit cut off mid-JSON is not run: its result tells the model so,
        and the turn goes on, so the model can try again.
Rule 6: tools run in the session's own project directory (the ``cwd`` its
        metadata records), wherever it is resumed from.
Rule 7: a session runs under its own profile (the one its metadata
        records), as that profile is configured now: its provider, limits
        (rounds, delegation depth and breadth, child timeout) and redaction
        (``prepare_session`` gives the runtime the session's). The
        Runtime's profile serves the sessions that record none, and sets
        the durability of the store all sessions share.
Rule 8: a turn asked with ``COMPACT_REQUEST`` (``compact_session``) is one
        model call without tools whose answer, a summary of the
        conversation, is recorded marked ``summary``; later turns show the
        model the conversation from that request on, in place of the whole.
        The transcript keeps everything.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import orjson

from amplifier._log import log_failure
from amplifier.runtime import (
    ApprovalDecision,
    ApprovalRequest,
    Reply,
    Session,
    SessionContext,
    SessionSetup,
    Turn,
)

from ._bash import Bash
from ._context import (
    CHARS_PER_TOKEN,
    INTERRUPTED,
    Prepared,
    fit,
    missing_results,
    normalize,
)
from ._delegate_tool import DelegateTool, cancelled_result
from ._events import (
    ApprovalDecided,
    ApprovalRequested,
    ContextCompacted,
    ProviderFailed,
    ProviderLimited,
    ProviderRequested,
    ProviderResponded,
    SessionRepaired,
    ToolFinished,
    ToolStarted,
    TurnLimited,
)
from ._exceptions import AgentWarning, ConfigError, ProviderError, ToolFailed, UnknownProfile
from ._file_tools import file_tools
from ._messages import (
    AssistantMessage,
    CutOff,
    Message,
    Parsed,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    parse_history,
    to_record,
)
from ._permissions import DEFAULT_RULE, Judge, Permissions, Verdict, always_rule, subject_of
from ._profiles import Profile
from ._provider import Provider, ProviderRequest
from ._provider_config import ProviderConfig
from ._providers import make_provider
from ._redact import COMMON_PATTERNS, Redactor
from ._specs import AgentCatalog, AgentSpec
from ._tools import (
    Previewing,
    Tool,
    ToolBox,
    ToolContext,
    clip,
    labels_of,
    parse_arguments,
    storable,
)
from ._write_tools import write_tools

if TYPE_CHECKING:
    from ._mcp_servers import McpServers

FINAL_RECORDS_TIMEOUT = 5.0
REPAIR_WINDOW = 256 * 1024
"""Bytes at the end of a transcript searched for a turn a crash cut off."""
_PARSED = "agents.parsed"
"""Where a session keeps the messages it already read (``read_messages``'s ``parsed``)."""
_PREPARED = "agents.prepared"
"""Where a session keeps its history as its last model call saw it (``Prepared``)."""
_EXCERPT = 300
_SHOWN = 4000
"""Characters of a command or diff kept in ``approval:request``."""
_CHANGED = "agents.changed_since"
"""Files someone changed since the session last wrote them (told to the next turn's model)."""
PROVIDER_KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
"""Where providers read their keys by default: never passed on to commands."""


class AgentTurnHandler:
    """Runs agents for every session of a Runtime, each under its own profile (Rule 7)."""

    def __init__(
        self,
        *,
        catalog: AgentCatalog,
        profile: Profile,
        root: Path,
        provider: Provider | None = None,
        profiles: Callable[[str], Profile] | None = None,
        permissions: Permissions | None = None,
        assume_yes: bool = False,
        tools: Sequence[Tool] = (),
        mcp: McpServers | None = None,
    ) -> None:
        """``profile`` is the Runtime's; ``profiles`` gives any other by name, as configured now.

        ``permissions`` are rules beside every profile's own (the command
        line's ``--allow``/``--deny``); ``assume_yes`` lets every call that
        would ask run (a deny still refuses). ``tools`` are a program's own
        (``@amplifier.tool``): each replaces a built-in or profile tool of
        its name, with a warning. ``mcp``: the Runtime's MCP servers, whose
        tools each turn's agent is given as its tool patterns name them.
        """
        self.catalog = catalog
        self._mcp = mcp
        self.profile = profile
        self._root = root.resolve()
        self._fixed = provider
        self._providers: dict[ProviderConfig, Provider] = {}
        self._chosen: dict[tuple[str, str, str | None], tuple[AgentSpec, Profile, Provider]] = {}
        """The provider of an agent, profile and model, as ``_provider`` found it last."""
        self._load_profile = profiles
        self._profiles: dict[str, Profile] = {profile.name: profile}
        delegate = DelegateTool(
            catalog,
            child_timeout=lambda context: self._profile_of(context.turn.session).child_timeout,
        )
        builtin = ToolBox([*file_tools(), *write_tools(), Bash(), delegate])
        self._builtin = builtin
        self._given = tuple(tools)
        for given in tools:
            if given.name in builtin:
                warnings.warn(
                    f"tool {given.name!r} given to open_runtime replaces the built-in one",
                    AgentWarning,
                    stacklevel=3,
                )
        self._toolboxes: dict[str, ToolBox] = {}
        self._kits: dict[tuple[str, str], tuple[AgentSpec, Profile, ToolBox, int]] = {}
        self._shadowed: set[str] = set()
        """MCP tools left out for a tool of ours of the same name (warned once each)."""
        self._projects: dict[str, Path] = {self._root.as_posix(): self._root}
        self._redactors: dict[str, Redactor | None] = {}
        self._permissions = permissions or Permissions()
        self._assume_yes = assume_yes
        self._judges: dict[str, Judge] = {}
        self._environments: dict[str, Mapping[str, str]] = {}

    @property
    def tool_names(self) -> list[str]:
        """Every tool this handler runs for the Runtime's profile: the names agent specs and
        profiles may use (besides globs, and the ``mcp_`` tools servers bring)."""
        return self.toolbox(self.profile).names

    # -- the TurnHandler protocol -------------------------------------------------

    def prepare_session(self, agent: str | None, *, profile: str | None = None) -> SessionSetup:
        settings = self.profile_named(profile)
        spec = self._spec(agent or settings.agent, announce=True)
        provider = self._provider(spec, settings)
        self.toolbox(settings)  # a Python tool that cannot be loaded fails here, before writing
        redactor = self.redactor(settings)
        return SessionSetup(
            agent=spec.name,
            attributes={"provider": provider.name, "model": provider.model},
            max_depth=settings.max_depth,
            max_children=settings.max_children,
            scrub=redactor,
            screen=redactor.screen if redactor is not None else None,
        )

    async def on_resume(self, session: SessionContext) -> None:
        """Repair a turn a crash cut off: answer every call left without a result.

        A cut-off turn is the last one, so only the end of the history is
        looked at; but as much is read as the next turn will want, which the
        session then keeps (its first turn reads nothing again).
        """
        spec = self._spec(session.agent)
        profile = self._profile_of(session)
        window = self._window(self._kit(spec, profile)[1])
        await session.history_tail(max_bytes=window)
        tail = await session.history_tail(max_bytes=REPAIR_WINDOW)
        history, unreadable = parse_history(tail.messages, parsed=_kept(session, _PARSED, Parsed))
        missing = missing_results(history)
        for call_id, name in missing:
            result = ToolResultMessage(
                tool_call_id=call_id, name=name, content=INTERRUPTED, is_error=True
            )
            await session.post_record(to_record(result))
        if missing or unreadable:
            await session.post(
                SessionRepaired(tool_results_added=len(missing), unreadable_messages=unreadable)
            )
        await self._notice_changed_files(session)

    async def _notice_changed_files(self, session: SessionContext) -> None:
        """Say which files the session tree changed that someone changed since (and tell
        the model at the next turn)."""
        meta = session.metadata
        if not meta.files_changed and not meta.children:
            return  # nothing of its own, nor below it, to look at
        from ._file_history import changed_since  # only here: a turn seldom needs it

        project = self._project_dir(session)
        changed = await anyio.to_thread.run_sync(changed_since, session.location, project)
        if not changed:
            return
        session.state[_CHANGED] = changed
        warnings.warn(
            f"changed since session {session.id} last wrote them: {', '.join(changed)} "
            "(the next turn's model is told)",
            AgentWarning,
            stacklevel=2,
        )

    async def run_turn(self, turn: Turn) -> str:
        spec = self._spec(turn.session.agent)
        profile = self._profile_of(turn.session)
        chosen = turn.session.attributes.get("model")
        provider = self._provider(spec, profile, model=chosen)
        tools, budget = self._kit(spec, profile, await self._mcp_tools(spec, profile))
        root = self._project_dir(turn.session)
        history, partial = await self._history(turn, budget)
        if turn.prompt.startswith(COMPACT_REQUEST):
            return await self._compact(turn, provider, spec, history, budget, profile)
        changed = turn.session.state.pop(_CHANGED, None)
        if isinstance(changed, list) and changed and history:
            # Told once, just before the prompt; not stored: the files say it themselves.
            notice = UserMessage(
                content="[Amplifier: since this session last changed them, someone else "
                f"changed these files: {', '.join(map(str, changed))}. Read them again "
                "before you change them.]"
            )
            history.insert(len(history) - 1, notice)
        prepared = _kept(turn.session, _PREPARED, Prepared)
        for round_ in range(1, profile.max_rounds + 1):
            normalized, tokens = prepared.normalized(history)
            messages, compaction = fit(normalized, budget, tokens=tokens)
            if compaction is not None or partial:
                shortened = compaction.as_event() if compaction is not None else {}
                await turn.post(
                    ContextCompacted(
                        round=round_, history_read="tail" if partial else "all", **shortened
                    )
                )
                partial = False  # said once per turn
            message = await self._call(turn, provider, spec, tools, messages, round_, profile)
            await turn.post_record(to_record(message))
            history.append(message)
            if not message.tool_calls:
                turn.cut_off = message.cut_off
                return message.content
            history.extend(
                await self._run_tools(turn, spec, tools, message.tool_calls, root, profile)
            )
        note = (
            f"Stopped after {profile.max_rounds} model calls (the profile's max_rounds); "
            "the work so far is in this session's transcript."
        )
        await turn.post(TurnLimited(rounds=profile.max_rounds))
        await turn.post_record(to_record(AssistantMessage(content=note, provider="amplifier")))
        return note

    async def _compact(
        self,
        turn: Turn,
        provider: Provider,
        spec: AgentSpec,
        history: list[Message],
        budget: int,
        profile: Profile,
    ) -> str:
        """Ask for a summary of the conversation and record it marked (Rule 8)."""
        messages, _ = fit(normalize(history), budget)
        await turn.emit(
            "context:compact",
            {"requested": True, "messages_before": len(history) - 1},
        )
        message = await self._call(turn, provider, spec, _NO_TOOLS, messages, 1, profile)
        summary = message.model_copy(update={"summary": True, "tool_calls": ()})
        await turn.record(to_record(summary))
        return summary.content

    def profile_named(self, name: str | None) -> Profile:
        """The profile ``name`` as configured now (None: the Runtime's).

        Raises ``UnknownProfile`` or ``ConfigError``. Each is read once per Runtime.
        """
        if name is None:
            return self.profile
        profile = self._profiles.get(name)
        if profile is None:
            if self._load_profile is None:
                raise UnknownProfile(name, sorted(self._profiles))
            profile = self._profiles[name] = self._load_profile(name)
        return profile

    def redactor(self, profile: Profile) -> Redactor | None:
        """What scrubs the records of sessions under ``profile``: its provider's key and
        patterns (None: the profile turns redaction off). One per profile."""
        if profile.name not in self._redactors:
            redactor = None
            if profile.redact:
                key = profile.provider.key()
                redactor = Redactor(
                    secrets=[key] if key else (),
                    patterns=(*COMMON_PATTERNS, *profile.redact_patterns),
                )
            self._redactors[profile.name] = redactor
        return self._redactors[profile.name]

    def _profile_of(self, session: SessionContext) -> Profile:
        return self.profile_named(session.profile)

    def _spec(self, agent: str, *, announce: bool = False) -> AgentSpec:
        """The spec of ``agent``; a name of the Amplifier CLI's is read as ours (``cli_agent``)."""
        if ":" in agent:
            agent = cli_agent(self.catalog, agent, announce=announce)
        return self.catalog[agent]

    async def aclose(self) -> None:
        """Close every provider this handler opened."""
        providers, self._providers = list(self._providers.values()), {}
        self._chosen = {}
        for provider in providers:
            await provider.aclose()

    async def _history(self, turn: Turn, budget: int) -> tuple[list[Message], bool]:
        """The first prompt and as much recent history as the window could use.

        Only the end of the transcript is read (about twice what the window
        holds, in bytes of JSON), so a turn costs the same in a session of a
        hundred messages or of a hundred thousand. True if part was not read.
        """
        tail = await turn.session.history_tail(max_bytes=self._window(budget))
        parsed = _kept(turn.session, _PARSED, Parsed)
        history, _ = parse_history(tail.messages, parsed=parsed)
        summed = _after_summary(history) if parsed.summarised else None
        if summed is not None:
            return summed, False  # what came before is in the summary (Rule 8)
        if tail.complete:
            return history, False
        first, _ = parse_history([tail.first] if tail.first is not None else [])
        gap = UserMessage(content="[earlier messages left out to fit the context window]")
        return [*first, gap, *history], True

    # -- one model call -----------------------------------------------------------

    async def _call(
        self,
        turn: Turn,
        provider: Provider,
        spec: AgentSpec,
        tools: ToolBox,
        messages: Sequence[Message],
        round_: int,
        profile: Profile,
    ) -> AssistantMessage:
        # Built from values already validated (messages, specs, the profile's limit): checking
        # each message again against the union of message kinds costs about 1 us a message,
        # every call, in a session of thousands.
        request = ProviderRequest.model_construct(
            model=provider.model,
            instructions=spec.instructions,
            messages=tuple(messages),
            tools=tools.specs(),
            max_output_tokens=profile.max_output_tokens,
        )
        label = {"provider": provider.name, "model": provider.model, "round": round_}
        await turn.post(
            ProviderRequested(
                provider=provider.name,
                model=provider.model,
                round=round_,
                messages=len(messages),
                tools=tools.names,
            )
        )
        started = anyio.current_time()
        pieces: list[str] = []

        async def collect(piece: str) -> None:
            pieces.append(piece)  # kept if the answer is cut off (Rule 5)
            await turn.stream(piece)

        try:
            response = await provider.complete(request, on_text=collect)
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True):
                await self._keep_cut_off(turn, provider, pieces, "cancelled")
            raise
        except ProviderError as exc:
            latency = round((anyio.current_time() - started) * 1000, 1)
            await turn.post(ProviderFailed(**label, latency_ms=latency, error=str(exc)))
            await self._keep_cut_off(turn, provider, pieces, "failed")
            raise
        latency = round((anyio.current_time() - started) * 1000, 1)
        message = response.message
        await turn.post(
            ProviderResponded(
                **label,
                latency_ms=latency,
                usage=response.usage.model_dump(),
                stop_reason=response.stop_reason,
                tool_calls=[call.name for call in message.tool_calls],
            )
        )
        if response.hit_limit:
            await turn.post(
                ProviderLimited(
                    **label,
                    max_output_tokens=request.max_output_tokens,
                    stop_reason=response.stop_reason,
                    answer_cut=not message.tool_calls,
                    tool_calls_cut=[call.name for call in message.tool_calls if call.cut_off],
                )
            )
            message = message.model_copy(update={"cut_off": "output_limit"})
        return message

    async def _keep_cut_off(
        self, turn: Turn, provider: Provider, pieces: list[str], why: CutOff
    ) -> None:
        """Record the text an answer got to before it was cut off, if any (Rule 5)."""
        if not pieces:
            return
        message = AssistantMessage(
            content="".join(pieces), provider=provider.name, model=provider.model, cut_off=why
        )
        await turn.post_record(to_record(message))

    # -- tools ------------------------------------------------------------------------

    async def _run_tools(
        self,
        turn: Turn,
        spec: AgentSpec,
        tools: ToolBox,
        calls: Sequence[ToolCall],
        root: Path,
        profile: Profile,
    ) -> list[ToolResultMessage]:
        """Run the calls concurrently; record their results in call order as they complete.

        ``tool_concurrency`` workers take the calls in order, each the next
        one not yet taken: an answer of a thousand calls holds as many tasks
        as may run at once, not a thousand waiting for a slot. A single call
        (the usual answer) runs in the turn's own task: a task group and its
        scheduling are for calls side by side.
        """
        results: list[ToolResultMessage | None] = [None] * len(calls)
        recorded = 0
        taken = 0
        # Uncontended (the usual case), taken without yielding to the event loop.
        recording = anyio.Lock(fast_acquire=True)

        async def record_ready() -> None:
            nonlocal recorded
            if recording.locked():
                # Its holder is between two records: it records what is ready, ours too,
                # before it lets go. Meanwhile this worker takes its next call.
                return
            async with recording:
                while recorded < len(calls) and (ready := results[recorded]) is not None:
                    await turn.post_record(to_record(ready))
                    recorded += 1

        async def work() -> None:
            nonlocal taken
            while taken < len(calls):
                index = taken
                taken += 1
                results[index] = await self._run_tool(
                    turn, spec, tools, calls[index], root, profile
                )
                await record_ready()

        cancelled = False
        try:
            if len(calls) == 1:
                results[0] = await self._run_tool(turn, spec, tools, calls[0], root, profile)
                await record_ready()
            else:
                async with anyio.create_task_group() as tg:
                    for _ in range(min(len(calls), profile.tool_concurrency)):
                        tg.start_soon(work)
        except BaseException as exc:
            cancelled = is_cancellation(exc)
            raise
        finally:
            if recorded < len(calls):
                # Cut off: answer what did not finish, so the history stays valid.
                with anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True):
                    for index in range(recorded, len(calls)):
                        results[index] = results[index] or unfinished(calls[index], cancelled)
                    await record_ready()
        return [result for result in results if result is not None]

    async def _run_tool(
        self,
        turn: Turn,
        spec: AgentSpec,
        tools: ToolBox,
        call: ToolCall,
        root: Path,
        profile: Profile,
    ) -> ToolResultMessage:
        tool = tools.get(call.name)
        labels = labels_of(tool)
        await turn.post(
            ToolStarted(tool=call.name, call_id=call.id, arguments=call.arguments, **labels)
        )
        started = anyio.current_time()
        is_error = True
        trace: str | None = None
        context: ToolContext | None = None
        try:
            try:
                if call.cut_off:
                    raise ToolFailed(
                        "not run: the answer reached the output-token limit (max_output_tokens "
                        f"{profile.max_output_tokens}) before this call's arguments were "
                        "complete, so they are not valid JSON. Call the tool again with shorter "
                        "arguments, or split the work into smaller calls."
                    )
                if tool is None:
                    raise ToolFailed(
                        f"no tool {call.name!r} for agent {spec.name!r}; "
                        f"available: {', '.join(tools.names) or 'none'}"
                    )
                arguments = parse_arguments(tool, call.arguments)
                context = ToolContext(
                    root=root,
                    turn=turn,
                    agent=spec,
                    call_id=call.id,
                    environment=self._environment(profile),
                )
                await self._permit(turn, tool, arguments, call, context, profile)
                if tool.side_effects:
                    # Write-ahead: tool:pre and the decision are durable before it runs.
                    await turn.sync()
                output = await tool.run(arguments, context)
                is_error = False
            except ToolFailed as exc:
                output = str(exc)
            except Exception as exc:  # a tool's bug must not end the turn: the model is told
                output = f"{type(exc).__name__}: {exc}"
                trace = log_failure(f"tool {call.name!r} failed in session {turn.session.id}", exc)
        except anyio.get_cancelled_exc_class():
            if context is not None and context.changes:
                # Cut off after it changed files: the changes stay on record.
                with anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True):
                    await self._record_changes(turn, context)
                    await turn.post(
                        ToolFinished(
                            tool=call.name,
                            call_id=call.id,
                            is_error=True,
                            result=INTERRUPTED,
                            file=context.changes[-1],
                        )
                    )
            raise
        output = clip(storable(output))  # what a tool says of a file name not in UTF-8 too
        redact = self.redactor(profile)
        if redact is not None:
            output = redact(output)  # tool output is stored: no secrets in it
        changed = context.changes[-1] if context is not None and context.changes else None
        if changed is not None:
            await self._record_changes(turn, cast(ToolContext, context))
        if trace is not None:
            trace = storable(trace)
            if redact is not None:
                trace = redact(trace)
        await turn.post(
            ToolFinished(
                tool=call.name,
                **labels,
                call_id=call.id,
                is_error=is_error,
                latency_ms=round((anyio.current_time() - started) * 1000, 1),
                result=output[:_EXCERPT],
                result_chars=len(output),
                file=changed,
                traceback=trace,
            )
        )
        return ToolResultMessage(
            tool_call_id=call.id, name=call.name, content=output, is_error=is_error
        )

    async def _record_changes(self, turn: Turn, context: ToolContext) -> None:
        await turn.session.count_file_changes(len(context.changes))

    # -- permissions ------------------------------------------------------------------

    async def _permit(
        self,
        turn: Turn,
        tool: Tool,
        arguments: Any,
        call: ToolCall,
        context: ToolContext,
        profile: Profile,
    ) -> None:
        """Let the call run, or raise ``ToolFailed`` saying why not (``_permissions``).

        A call that asks goes to whoever opened the session tree; its
        question and the answer are recorded, and both are durable before
        the call runs. A call with side effects records who allowed it.
        """
        subject = subject_of(tool.subject, call.arguments, context.root)

        def judged() -> Verdict:
            return self._judge(profile)(
                tool.name, subject, side_effects=tool.side_effects, granted=turn.session.granted
            )

        verdict = judged()
        if verdict.outcome == "ask":
            # One question at a time per session: an answer "always" may settle the next.
            async with _kept(turn.session, _ASKING, anyio.Lock):
                verdict = judged()
                if verdict.outcome == "ask":
                    await self._ask(turn, tool, arguments, call, context, verdict, subject)
                    return
        if verdict.outcome == "deny":
            await turn.post(
                ApprovalDecided(
                    call_id=call.id,
                    tool=tool.name,
                    decision="deny",
                    decided_by="rule",
                    rule=verdict.rule,
                )
            )
            raise ToolFailed(
                f"not run: the permission rule deny {verdict.rule!r} refuses this call"
            )
        if tool.side_effects or verdict.rule != DEFAULT_RULE:
            reason = None
            if verdict.granted_by == "assume_yes":
                reason = "everything that would ask is allowed (--yes)"
            elif verdict.granted_by == "granted":
                reason = "granted to this session earlier (always)"
            await turn.post(
                ApprovalDecided(
                    call_id=call.id,
                    tool=tool.name,
                    decision="allow",
                    decided_by="rule",
                    rule=verdict.rule,
                    reason=reason,
                )
            )

    async def _ask(
        self,
        turn: Turn,
        tool: Tool,
        arguments: Any,
        call: ToolCall,
        context: ToolContext,
        verdict: Verdict,
        subject: str | None,
    ) -> None:
        """Ask whoever opened the session tree; ``ToolFailed`` unless the answer allows."""
        shown = await self._preview(tool, arguments, context)
        grant = always_rule(tool.name, subject)
        request = ApprovalRequest(
            session_id=turn.session.id,
            agent=turn.session.agent,
            tool=tool.name,
            arguments=call.arguments,
            shown=shown,
            rule=verdict.rule,
            call_id=call.id,
            always_rule=grant,
        )
        await turn.post(
            ApprovalRequested(
                call_id=call.id,
                tool=tool.name,
                rule=verdict.rule,
                shown=shown[:_SHOWN],
            )
        )
        try:
            decision = await turn.session.request_approval(request)
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(FINAL_RECORDS_TIMEOUT, shield=True):
                await turn.post(
                    ApprovalDecided(
                        call_id=call.id,
                        tool=tool.name,
                        decision="deny",
                        decided_by="no one",
                        rule=verdict.rule,
                        reason="withdrawn: the turn was cancelled before anyone answered",
                    )
                )
            raise
        granted = None
        if decision.allowed and decision.always:
            await turn.session.grant(grant)
            granted = grant
        await turn.post(
            ApprovalDecided(
                call_id=call.id,
                tool=tool.name,
                decision="allow" if decision.allowed else "deny",
                decided_by=decision.decided_by,
                rule=verdict.rule,
                reason=decision.reason,
                granted=granted,
            )
        )
        if not decision.allowed:
            raise ToolFailed(_refusal(tool.name, decision))

    async def _preview(self, tool: Tool, arguments: Any, context: ToolContext) -> str:
        """What the call would do, for whoever is asked (a tool that cannot apply fails here)."""
        if isinstance(tool, Previewing):
            return await tool.preview(arguments, context)
        return orjson.dumps(arguments.model_dump(mode="json")).decode()

    def _judge(self, profile: Profile) -> Judge:
        judge = self._judges.get(profile.name)
        if judge is None:
            rules = profile.permissions.merged(self._permissions)
            judge = self._judges[profile.name] = Judge.of(rules, assume_yes=self._assume_yes)
        return judge

    def _environment(self, profile: Profile) -> Mapping[str, str]:
        """This process's environment without the providers' API keys (for commands)."""
        environment = self._environments.get(profile.name)
        if environment is None:
            names = {*PROVIDER_KEY_VARIABLES, profile.provider.api_key_env}
            key = profile.provider.key()
            environment = self._environments[profile.name] = {
                name: value
                for name, value in os.environ.items()
                if name not in names and not (key and value == key)
            }
        return environment

    # -- configuration ----------------------------------------------------------------

    def _project_dir(self, session: SessionContext) -> Path:
        """Where the session's tools run (Rule 6); the runtime's directory if none is recorded."""
        recorded = session.cwd
        if not recorded:
            return self._root
        resolved = self._projects.get(recorded)
        if resolved is None:  # resolved once per Runtime: a project does not move under it
            resolved = self._projects[recorded] = Path(recorded).resolve()
        return resolved

    def _kit(
        self, spec: AgentSpec, profile: Profile, mcp: Sequence[Tool] = ()
    ) -> tuple[ToolBox, int]:
        """The tools of ``spec`` under ``profile`` and the history's token budget with them.

        Made once per agent and profile (their schemas are measured to fit
        the window): the same for every turn, unless MCP tools join.
        """
        if mcp:
            tools = self._tools_for(spec, profile, mcp)
            return tools, self._budget(spec, tools, profile)
        key = (spec.name, profile.name)
        kit = self._kits.get(key)
        if kit is None or kit[0] is not spec or kit[1] is not profile:
            tools = self._tools_for(spec, profile)
            kit = self._kits[key] = (spec, profile, tools, self._budget(spec, tools, profile))
        return kit[2], kit[3]

    def _tools_for(self, spec: AgentSpec, profile: Profile, mcp: Sequence[Tool] = ()) -> ToolBox:
        toolbox = self.toolbox(profile)
        if mcp:
            # A tool of ours (a built-in, the profile's, the program's) keeps its name: an
            # MCP server's tool of that name is left out, with a warning, once.
            ours = set(toolbox.names)
            taken = [tool.name for tool in mcp if tool.name in ours]
            for name in taken:
                if name not in self._shadowed:
                    self._shadowed.add(name)
                    warnings.warn(
                        f"the MCP tool {name} is left out: a tool of this Runtime has its name",
                        AgentWarning,
                        stacklevel=2,
                    )
            mcp = [tool for tool in mcp if tool.name not in ours]
        chosen = toolbox.with_tools(mcp).only(spec.tools)
        return chosen.only(name for name in chosen.names if profile.tools.permits(name))

    async def _mcp_tools(self, spec: AgentSpec, profile: Profile) -> Sequence[Tool]:
        """The tools of the MCP servers the agent's patterns may name (started on first use)."""
        if self._mcp is None:
            return ()
        return await self._mcp.tools_for(profile, spec.tools)

    def toolbox(self, profile: Profile) -> ToolBox:
        """Every tool sessions under ``profile`` may be given: the built-ins, the profile's
        Python tools (``tools.python``), then the program's own (which win).

        Raises ``ConfigError`` naming the profile and the import path of a
        Python tool that cannot be loaded.
        """
        toolbox = self._toolboxes.get(profile.name)
        if toolbox is None:
            imported = []
            for path in profile.tools.python:
                from ._function_tools import import_tool  # only here: few profiles name any

                try:
                    found = import_tool(path)
                    found.check()
                except (ValueError, ConfigError) as exc:
                    raise ConfigError(
                        f"profile {profile.name}: tools.python: {path}: {exc}"
                    ) from None
                imported.append(found)
            toolbox = self._builtin.with_tools(imported).with_tools(self._given)
            self._toolboxes[profile.name] = toolbox
        return toolbox

    def _window(self, budget: int) -> int:
        """Bytes of transcript to read for a history of ``budget`` tokens (about twice that)."""
        return budget * CHARS_PER_TOKEN * 2 + 65536

    def _budget(self, spec: AgentSpec, tools: ToolBox, profile: Profile) -> int:
        """Tokens left for the history once instructions, tool schemas and the answer fit."""
        fixed = len(spec.instructions) // 4 + sum(
            len(str(t.parameters)) // 4 for t in tools.specs()
        )
        return max(256, profile.context_window - profile.max_output_tokens - fixed)

    def _config(self, spec: AgentSpec, profile: Profile, model: str | None) -> ProviderConfig:
        config = profile.provider
        if spec.provider is not None and spec.provider != config.kind:
            config = ProviderConfig(kind=spec.provider)
        if spec.model is not None:
            config = config.model_copy(update={"model": spec.model})
        if model and model != config.model:
            config = config.model_copy(update={"model": model})
        return config

    def _provider(self, spec: AgentSpec, profile: Profile, *, model: str | None = None) -> Provider:
        """The provider for ``spec`` under ``profile``; ``model``: the session's own choice
        (its ``model`` attribute, ``Session.set_attributes``), which wins over both."""
        if self._fixed is not None:
            return self._fixed
        # Every turn asks: the configuration is made and looked up once per agent,
        # profile and model (a profile read again is a new object, and is looked up).
        key = (spec.name, profile.name, model)
        chosen = self._chosen.get(key)
        if chosen is not None and chosen[0] is spec and chosen[1] is profile:
            return chosen[2]
        config = self._config(spec, profile, model)
        provider = self._providers.get(config)
        if provider is None:
            provider = self._providers[config] = make_provider(config)
        self._chosen[key] = (spec, profile, provider)
        return provider


def unfinished(call: ToolCall, cancelled: bool) -> ToolResultMessage:
    """The result of a call its turn ended before: a cancelled delegation says it was
    cancelled (its sub-session is recorded so); any other call's outcome is unknown."""
    if cancelled and call.name == DelegateTool.name:
        return cancelled_result(call)
    return ToolResultMessage(
        tool_call_id=call.id, name=call.name, content=INTERRUPTED, is_error=True
    )


def is_cancellation(exc: BaseException) -> bool:
    """``exc`` is the backend's cancellation (alone, or a group of nothing else)."""
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return isinstance(exc, cancelled)


def cli_agent(catalog: AgentCatalog, agent: str, *, announce: bool) -> str:
    """Our agent for one the Amplifier CLI names ``bundle:name`` (its sub-sessions do).

    ``foundation:explorer`` is our ``explorer``; an agent of that name we do
    not have becomes ``default``, and (with ``announce``) a warning says so.
    Our own names never hold a ``:``.
    """
    name = agent.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    if name in catalog.names:
        return name
    if announce:
        warnings.warn(
            f"agent {agent!r} of a session the Amplifier CLI wrote is not known here; "
            "it goes on with the 'default' agent",
            AgentWarning,
            stacklevel=3,
        )
    return "default"


COMPACT_REQUEST = (
    "[Amplifier: compact] Summarise this conversation so far, for yourself: what was asked, "
    "what was done and found (files, commands, decisions), and what is left to do. Later "
    "turns will see your summary in place of the conversation before it."
)
"""The prompt of a turn that compacts the session's history (Rule 8)."""

_NO_TOOLS = ToolBox([])


def _after_summary(history: list[Message]) -> list[Message] | None:
    """The history from the last asked-for summary's request on (None: there is none)."""
    for index in range(len(history) - 1, -1, -1):
        message = history[index]
        if isinstance(message, AssistantMessage) and message.summary:
            before = history[index - 1] if index else None
            return history[index - 1 if isinstance(before, UserMessage) else index :]
    return None


_ASKING = "agents.asking"
"""Where a session keeps the lock its calls take to ask, one at a time."""
_Kept = TypeVar("_Kept")


def _refusal(tool: str, decision: ApprovalDecision) -> str:
    """What the model reads when a call that asked was not allowed to run."""
    reason = f": {decision.reason}" if decision.reason else ""
    match decision.decided_by:
        case "user":
            return f"not run: the user declined this {tool} call{reason}"
        case "no one":
            return f"not run: this {tool} call needs approval, and {decision.reason}"
        case _:
            return f"not run: this {tool} call was not approved{reason}"


def _kept(session: SessionContext, key: str, kind: type[_Kept]) -> _Kept:
    """What ``session`` keeps under ``key`` while it is open: a ``kind`` made on first use
    (the lock its calls take to ask, one at a time; the history it read and prepared last)."""
    kept = session.state.get(key)
    if not isinstance(kept, kind):
        kept = session.state[key] = kind()
    return kept


async def compact_session(
    session: Session,
    instructions: str | None = None,
    *,
    on_text: Callable[[str], Awaitable[None]] | None = None,
) -> Reply:
    """Ask the session's model to summarise the conversation so far (one turn, no tools).

    Later turns show the model that summary in place of the conversation
    before it (Rule 8); the transcript keeps everything. ``instructions``
    say what the summary should keep. Raises as ``Session.ask`` does.
    """
    prompt = COMPACT_REQUEST + (f"\n\n{instructions}" if instructions else "")
    return await session.ask(prompt, on_text=on_text)
