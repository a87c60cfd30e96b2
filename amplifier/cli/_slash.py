"""Slash commands of interactive mode: ``/help``, ``/cost``, ``/model``, ...

Rule 1: a slash command is never sent to the model. A line that starts with
        an unknown one says so and lists the known ones, except the offline
        provider's own directives (``/delegate``, ``/tool``, ``/fail``,
        ``/sleep``), which are prompts, and a path (``/etc/hosts: what is
        it?``), whose first word holds another ``/``.
Rule 2: a command that changes which session is open (``/clear``,
        ``/resume``, ``/agent NAME``) opens the new one first, then closes
        the old one: a failure leaves the old one open, and the old one stays
        resumable.
Rule 3: the same commands work at a terminal and with piped lines.
Rule 4: a command is one line. Text of several lines (a paste, Esc-Enter)
        is a prompt even if it starts like a command: a pasted log that
        begins ``/exit status 137`` is asked about, never run and cut off.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from amplifier import AmplifierError, SessionClosed, UsageError

from ._render import cost, label, safe, token_counts, usage_lines

if TYPE_CHECKING:
    from ._interactive import Chat

Argument = Literal["sessions", "agents", "models", "tags", "rewind"] | None


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    usage: str
    help: str
    argument: Argument
    run: Callable[[Chat, str], Awaitable[None]]


MODEL_DIRECTIVES = ("/delegate", "/tool", "/fail", "/sleep")
"""Lines the offline provider acts on: prompts, not commands (Rule 1)."""

REWIND_FLAGS = ("--turn", "--dry-run", "--undo", "--force")


def parse(text: str) -> tuple[Command | None, str, str] | None:
    """``(command, its name as typed, argument)`` if ``text`` is a slash command (None
    in the first place: an unknown one); None if ``text`` is a prompt (Rule 1)."""
    if not text.startswith("/") or "\n" in text.strip():  # Rule 4
        return None
    word, _, rest = text.strip().partition(" ")
    if "/" in word[1:] or word in MODEL_DIRECTIVES or len(word) == 1:
        return None
    name = word[1:].lower()
    found = next((c for c in COMMANDS if c.name == name or name in _ALIASES.get(c.name, ())), None)
    return found, word, rest.strip()


def unknown(word: str) -> str:
    names = ", ".join(f"/{c.name}" for c in COMMANDS)
    return f"Unknown command {safe(word)}. Commands: {names} (/help says more)."


def help_text() -> str:
    shown = [
        (
            " ".join(
                [", ".join(f"/{n}" for n in (c.name, *_ALIASES.get(c.name, ()))), c.usage]
            ).rstrip(),
            c.help,
        )
        for c in COMMANDS
    ]
    width = max(len(usage) for usage, _ in shown)
    rows = [f"  {usage:<{width}}  {about}" for usage, about in shown]
    return "\n".join(
        [
            "Type a prompt and press Enter. Commands:",
            *rows,
            "Keys: Enter sends; Esc-Enter (or Alt-Enter) starts a new line, and a paste",
            "stays one prompt. Up/Down: history; Ctrl-R: search it; Tab completes",
            "commands, their arguments, and @path (a file of the project, attached).",
            "Ctrl-C while an answer is coming cancels that turn; the session goes on.",
            "/exit, Ctrl-D, or Ctrl-C twice at the prompt leaves.",
            "Lines starting with /tool, /delegate, /fail or /sleep go to the model",
            "(the offline provider acts on them).",
        ]
    )


# -- completion ---------------------------------------------------------------------


def completions(text: str, chat: Chat) -> Iterable[tuple[str, int, str]]:
    """What completes ``text`` (what is typed before the cursor): (replacement, start
    relative to the cursor, description)."""
    if text.startswith("/") and " " not in text and "\n" not in text:
        for command in COMMANDS:
            if f"/{command.name}".startswith(text.lower()):
                yield f"/{command.name}", -len(text), command.help
        return
    word = text.split()[-1] if text and not text[-1].isspace() else ""
    if word.startswith("@"):
        from ._mentions import complete_path

        for name, is_dir in complete_path(word[1:], chat.root):
            yield "@" + name + ("/" if is_dir else ""), -len(word), "folder" if is_dir else ""
        return
    parsed = parse(text)
    if parsed is None or parsed[0] is None or "\n" in text:
        return
    command = parsed[0]
    names = chat.names
    if command.argument == "sessions":  # the rest of the line: a name may hold spaces
        rest = text.partition(" ")[2]
        for value, meta in names.sessions:
            if value.lower().startswith(rest.lower()):
                yield value, -len(rest), meta
        return
    candidates: list[tuple[str, str]] = []
    match command.argument:
        case "agents":
            candidates = [(a, "") for a in names.agents]
        case "models":
            candidates = [(m, "") for m in names.models]
        case "tags":
            candidates = [(f"-{t}", "remove") for t in names.tags]
        case "rewind":
            candidates = [(f, "") for f in REWIND_FLAGS]
        case None:
            return
    for value, meta in candidates:
        if value.startswith(word):
            yield value, -len(word), meta


# -- the commands -------------------------------------------------------------------


async def _help(chat: Chat, argument: str) -> None:
    print(help_text())


async def _exit(chat: Chat, argument: str) -> None:
    chat.leaving = True


async def _cost(chat: Chat, argument: str) -> None:
    from amplifier import session_usage

    report = await session_usage(chat.rt, chat.session.id)
    rows = await chat.rt.tree(chat.session.id)
    print("\n".join(usage_lines(report, rows)))


async def _model(chat: Chat, argument: str) -> None:
    meta = chat.session.metadata
    current = f"{meta.attributes.get('provider', '?')}/{meta.attributes.get('model', '?')}"
    if not argument:
        known = ", ".join(chat.names.models) or "none"
        print(f"Model: {safe(current)}. Models the profile names: {safe(known)}.")
        print("/model NAME switches this session's model from its next turn.")
        return
    if len(argument.split()) != 1 or len(argument) > 200 or not argument.isprintable():
        chat.say("Error: a model name is one word (/model NAME)")
        return
    if meta.attributes.get("provider") == "offline":
        chat.say(
            "Error: the offline provider has one model; a profile with another provider "
            "(--profile) has models to choose from"
        )
        return
    await chat.session.set_attributes({"model": argument})
    chat.relabelled()
    chat.say(f"Model: {argument} from the next turn (was {current}).")


async def _agent(chat: Chat, argument: str) -> None:
    agents = chat.names.agents
    meta = chat.session.metadata
    if not argument:
        print(f"Agent: {safe(meta.agent)}. Agents: {safe(', '.join(agents))}.")
        print("A session keeps its agent: /agent NAME starts a new session with another.")
        return
    if argument not in agents:
        chat.say(f"Error: unknown agent {argument!r}; agents: {', '.join(agents)}")
        return
    previous = chat.session.id
    opening = chat.rt.open_session(agent=argument, profile=meta.profile)
    if await chat.switch(opening, fresh=True):
        chat.say(f"New session with agent {argument}; the previous one stays resumable: {previous}")
    else:
        chat.say(f"New session with agent {argument}.")


async def _tools(chat: Chat, argument: str) -> None:
    tools = await chat.tools()
    meta = chat.session.metadata
    if not tools:
        print(f"Agent {safe(meta.agent)} has no tools.")
        return
    print(f"Tools of agent {safe(meta.agent)} (profile {safe(meta.profile or 'base')}):")
    width = max(len(name) for name, _, _ in tools)
    for name, description, asks in tools:
        first = description.strip().splitlines()[0] if description.strip() else ""
        note = "  (asks first, unless a rule allows it)" if asks else ""
        print(f"  {safe(name):<{width}}  {safe(first)}{note}")


async def _compact(chat: Chat, argument: str) -> None:
    from amplifier.agents import COMPACT_REQUEST

    prompt = COMPACT_REQUEST + (f"\n\n{argument}" if argument else "")
    if await chat.turn(prompt, mentions=False):
        chat.say(
            "(compacted: the next turns see this summary in place of the conversation "
            "before it; the transcript keeps everything)"
        )


async def _clear(chat: Chat, argument: str) -> None:
    meta = chat.session.metadata
    previous = chat.session.id
    opening = chat.rt.open_session(agent=meta.agent, profile=meta.profile)
    if await chat.switch(opening, fresh=True):
        chat.say(f"New session. The previous one stays resumable: /resume {previous}")
    else:
        chat.say("New session.")


async def _resume(chat: Chat, argument: str) -> None:
    from ._picker import recent_sessions, show_choices

    rt = chat.rt
    target: str
    if argument:
        target = (await rt.find(argument)).session_id
    else:
        rows = [r for r in await recent_sessions(rt) if r.session_id != chat.session.id]
        if not rows:
            chat.say("No other session of this project to resume.")
            return
        show_choices(rows)
        target = ""
        while not target:
            kind, text = await chat.ask(
                f"Resume which session? [1-{len(rows)}, Enter: 1, q: none] "
            )
            answer = (text or "").strip().lower() if kind == "line" else "q"
            if answer in ("q", "quit"):
                chat.say("Nothing resumed.")
                return
            answer = answer or "1"
            if answer.isdigit() and 1 <= int(answer) <= len(rows):
                target = rows[int(answer) - 1].session_id
            else:
                chat.say(f"Type a number from 1 to {len(rows)}, or q.")
    if target == chat.session.id:
        chat.say(f"Already in session {target}.")
        return
    await chat.switch(rt.resume(target), history=True)


async def _rename(chat: Chat, argument: str) -> None:
    if not argument:
        name = chat.session.metadata.name
        print(f"Name: {safe(name)}" if name else "This session has no name.")
        print("/rename NAME names it; /rename --clear takes the name away.")
        return
    if argument == "--clear":  # as `session rename ID --clear`
        await chat.rt.rename(chat.session.id, None)
        chat.relabelled()
        chat.say("The session has no name now.")
        return
    meta = await chat.rt.rename(chat.session.id, argument)
    chat.relabelled()
    chat.say(f"Named: {meta.name}")


async def _tag(chat: Chat, argument: str) -> None:
    add = [w[1:] if w.startswith("+") else w for w in argument.split() if not w.startswith("-")]
    remove = [w[1:] for w in argument.split() if w.startswith("-")]
    if add or remove:
        meta = await chat.rt.tag(chat.session.id, add=add, remove=remove)
        chat.relabelled()
    else:
        meta = chat.session.metadata
    print(f"Tags: {' '.join(f'#{safe(t)}' for t in meta.tags)}" if meta.tags else "No tags.")
    if not argument:
        print("/tag +x -y adds x and removes y.")


async def _diff(chat: Chat, argument: str) -> None:
    from amplifier import session_diff

    from ._file_history import _show_diff

    if argument not in ("", "--stat"):
        chat.say(f"Error: /diff takes --stat or nothing, not {safe(argument)!r}")
        return
    report = await session_diff(chat.rt, chat.session.id)
    _show_diff(report, stat=argument == "--stat")


async def _rewind(chat: Chat, argument: str) -> None:
    from amplifier import session_rewind

    from ._file_history import _report, _show_plan

    try:
        words = shlex.split(argument)
    except ValueError as exc:
        chat.say(f"Error: {exc}")
        return
    turn: int | None = None
    flags = {w for w in words if w in REWIND_FLAGS and w != "--turn"}
    if "--turn" in words:
        index = words.index("--turn")
        value = words[index + 1] if index + 1 < len(words) else ""
        if not value.isdigit() or int(value) < 1:
            chat.say("Error: --turn takes a turn number (1, 2, ...)")
            return
        turn = int(value)
        words[index : index + 2] = []
    extra = [w for w in words if w not in REWIND_FLAGS]
    if extra:
        chat.say(f"Error: /rewind takes {', '.join(REWIND_FLAGS)}; not {' '.join(extra)}")
        return
    undo, force = "--undo" in flags, "--force" in flags
    rt, session_id = chat.rt, chat.session.id
    plan = await session_rewind(rt, session_id, turn=turn, undo=undo, dry_run=True)
    if "--dry-run" in flags or not plan.files:
        _report(plan, as_json=False)
        return
    if not force and any(f.conflict or f.problem for f in plan.files):
        _show_plan(plan.files)
        chat.say("Not rewound: some files changed since, or cannot be restored (--force).")
        return
    _show_plan(plan.files)
    kind, text = await chat.ask(f"Rewind {len(plan.files)} file(s)? [y/N] ")
    if kind != "line" or (text or "").strip().lower() not in ("y", "yes"):
        chat.say("Nothing rewound.")
        return
    # A rewind holds the whole session tree: the session closes for it, then opens again.
    await chat.reopen_after(
        lambda: session_rewind(rt, session_id, turn=turn, undo=undo, force=force),
        then=lambda report: _report(report, as_json=False),
    )


COMMANDS: tuple[Command, ...] = (
    Command("help", "", "this help", None, _help),
    Command("cost", "", "tokens and cost of this session and its sub-sessions", None, _cost),
    Command("model", "[NAME]", "this session's model; NAME switches it", "models", _model),
    Command("agent", "[NAME]", "the agent; NAME starts a new session with it", "agents", _agent),
    Command("tools", "", "the tools this session's agent may call", None, _tools),
    Command("compact", "[FOCUS]", "summarise; later turns see the summary", None, _compact),
    Command("clear", "", "start a new session (this one stays resumable)", None, _clear),
    Command("resume", "[ID|NAME]", "switch to another session (none: pick)", "sessions", _resume),
    Command("rename", "NAME|--clear", "name this session, or take its name away", None, _rename),
    Command("tag", "+x -y", "add and remove tags", "tags", _tag),
    Command("diff", "[--stat]", "the files this session tree changed", None, _diff),
    Command(
        "rewind", "[--turn N]", "put them back (--dry-run, --undo, --force)", "rewind", _rewind
    ),
    Command("exit", "", "leave (also Ctrl-D)", None, _exit),
)
_ALIASES = {"exit": ("quit",)}


async def run(chat: Chat, command: Command, argument: str) -> None:
    """Run one command; a failure is one line, and the session goes on. A command that
    takes no argument, given one, does nothing and says so (``/exit now`` is no ``/exit``:
    the text may have been meant for the model)."""
    if argument and not command.usage:
        chat.say(f"Error: /{command.name} takes nothing after it; nothing was done")
        return
    try:
        await command.run(chat, argument)
    except SessionClosed as exc:
        chat.say(f"Error: {exc}")
    except (AmplifierError, UsageError) as exc:
        chat.say(f"Error: {exc}")
    sys.stdout.flush()


def status_line(chat: Chat) -> str:
    """The bottom line: name (or id), agent, model, tokens so far, and cost if priced."""
    meta = chat.session.metadata
    parts = [label(meta) or chat.session.id, meta.agent]
    parts.append(f"{meta.attributes.get('provider', '?')}/{meta.attributes.get('model', '?')}")
    tokens = chat.tokens
    if tokens is not None:
        parts.append(f"{token_counts(tokens)} tokens")
        if tokens.calls > tokens.unpriced:
            parts.append(cost(tokens))
    return " · ".join(safe(p) for p in parts)
