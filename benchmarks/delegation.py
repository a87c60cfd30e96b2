"""The sub-session round trip: spawn a delegated child, one turn, persist it, join.

One round trip = a parent hands an instruction to a new child, the child
answers once, the parent gets the answer and the child's end. The parent
runs them one after the other, and a round trip's latency is the time the
parent waits for it. Measured, in one run, on asyncio and on trio:

- ``ours, echo child`` (durability ``fsync`` and ``none``): a root session
  whose turn handler calls ``turn.delegate("explorer", "go")`` N times; the
  child's turn records ``{"role": "assistant", "content": "done"}`` (what one
  offline-provider turn persists) and returns ``"done"``. Each round trip
  persists the parent's ``delegate:start``, its metadata (the child listed),
  the child's creation (its folder, built behind the journal),
  ``session:start``, ``prompt:submit``, user message, metadata, assistant
  message, ``prompt:complete``, ``session:end``, metadata, and the parent's
  ``delegate:end``, in causal order; the child's assistant message is
  acknowledged (the handler's ``turn.record``), and the rest is committed
  with it or with the parent's next acknowledged record.
- ``ours, offline agent child``: ``amplifier.open_runtime`` with the real
  agent loop and the offline provider; each round trip is one ask of
  ``/delegate explorer: hi`` to a ``default`` session: a parent model call
  that calls the delegate tool, the ``explorer`` child's own model call, and
  the parent's final model call, with every event of all three persisted.
  It is the same shape as the SDK's agent-as-tool run below. (The parent's
  history grows by one turn per round trip, and each turn reads it back, so
  this path is kept short.)
- ``raw anyio``: the same shape with no persistence and no runtime: per round
  trip, a task group, two memory object streams, a child task that receives
  one message, replies and exits, and the parent waits for the reply and the
  task's end.
- ``autogen-core`` (asyncio only): a ``SingleThreadedAgentRuntime``; per round
  trip a new agent instance (a fresh ``AgentId`` key, so the runtime
  instantiates a new ``RoutedAgent`` from its registered factory) and one
  ``send_message`` request/reply. Nothing persisted.
- ``OpenAI Agents SDK`` (asyncio only): agent-as-tool (``Agent.as_tool``) with
  scripted models, nothing reaching the network, tracing disabled: per
  round trip one ``Runner.run(parent, ...)`` whose model calls the sub-agent
  tool once, the sub-agent's model answers, and the parent's model finishes.
  Nothing persisted.

Targets (the rate of round trips, ours vs the baseline, as the median of
each repetition's ratio: the paths take turns, so a machine that drifts
moves both sides of a ratio alike; the asyncio-only peers are compared
with ours on both backends). Like for like, the offline
agent child against the OpenAI Agents SDK's agent-as-tool (both run three
model calls through an agent loop): >= 1.5x with ``fsync`` and >= 3x with
``none``. The echo child keeps its own: with ``fsync`` >= 3x the SDK's
agent-as-tool, and with ``none`` >= 0.5x autogen-core's new agent plus
message. Neither peer persists anything. Raw anyio is shown for scale.
``--strict`` exits 1 unless every row of the comparison table is met.

Only the public API (``import amplifier``) is used for our paths. Rates are
round trips over the wall time of the whole sequential loop (opening and
closing the runtime, the parent session and the peers' runtimes are not
timed). Every run checks what it produced: for ours, one child folder per
round trip on disk, each with a completed ``session:end`` and its two
messages; for the others, one reply (and one child) per round trip.

Reproduce::

    .venv/bin/python benchmarks/delegation.py            # full size, < 60 s
    .venv/bin/python benchmarks/delegation.py --quick    # smoke test, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import orjson

import amplifier

if TYPE_CHECKING:
    from agents import Agent

Backend = Literal["asyncio", "trio"]
Mode = Literal["echo-fsync", "echo-none", "agent-fsync", "agent-none", "anyio", "autogen", "sdk"]

BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")
MODES: tuple[Mode, ...] = (
    "echo-fsync",
    "echo-none",
    "agent-fsync",
    "agent-none",
    "anyio",
    "autogen",
    "sdk",
)
ASYNCIO_ONLY: frozenset[Mode] = frozenset({"autogen", "sdk"})
DURABILITY: dict[Mode, amplifier.Durability] = {
    "echo-fsync": "fsync",
    "echo-none": "none",
    "agent-fsync": "fsync",
    "agent-none": "none",
}
LABEL: dict[Mode, str] = {
    "echo-fsync": "ours, echo child",
    "echo-none": "ours, echo child",
    "agent-fsync": "ours, offline agent child",
    "agent-none": "ours, offline agent child",
    "anyio": "raw anyio",
    "autogen": "autogen-core",
    "sdk": "OpenAI Agents SDK",
}
FULL_TRIPS: dict[Mode, int] = {
    "echo-fsync": 200,
    "echo-none": 200,
    "agent-fsync": 40,
    "agent-none": 40,
    "anyio": 5000,
    "autogen": 2000,
    "sdk": 300,
}
"""Round trips per run: about half a second to a second and a half each."""
QUICK_TRIPS: dict[Mode, int] = {
    "echo-fsync": 8,
    "echo-none": 8,
    "agent-fsync": 3,
    "agent-none": 3,
    "anyio": 50,
    "autogen": 20,
    "sdk": 5,
}
PEERS: dict[Mode, str] = {"autogen": "autogen_core", "sdk": "agents"}
"""Import names of the peer libraries (the ``bench`` extra): missing ones are skipped."""
DISTRIBUTIONS = ("anyio", "trio", "pydantic", "autogen-core", "openai-agents", "openai")


@dataclass(frozen=True, slots=True)
class Target:
    baseline: Mode
    factor: float
    variants: tuple[tuple[Mode, ...], ...]
    """Our modes compared with this baseline."""


TARGETS: tuple[Target, ...] = (
    Target("sdk", 1.5, (("agent-fsync",),)),
    Target("sdk", 3.0, (("agent-none",),)),
    Target("sdk", 3.0, (("echo-fsync",),)),
    Target("autogen", 0.5, (("echo-none",),)),
)

REPO = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python benchmarks/delegation.py"
CHILD_AGENT = "explorer"


@dataclass(frozen=True, slots=True)
class RunResult:
    trips: int
    seconds: float
    latencies: list[float]
    """Latency of every round trip, seconds."""

    @property
    def rate(self) -> float:
        return self.trips / self.seconds

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def timed_loop(trips: int, step: Callable[[int], Awaitable[None]]) -> RunResult:
    """Run ``step(i)`` for i in range(trips), one after the other, timing each and the whole."""
    clock = time.perf_counter
    latencies: list[float] = []
    start = clock()
    for i in range(trips):
        began = clock()
        await step(i)
        latencies.append(clock() - began)
    return RunResult(trips, clock() - start, latencies)


# -- ours: an echo child, through a turn handler ---------------------------------------


class DelegatingHandler:
    """The root's turn delegates ``trips`` times in sequence; each child answers "done"."""

    def __init__(self, trips: int) -> None:
        self.trips = trips
        self.result: RunResult | None = None
        self.errors: list[str] = []

    def prepare_session(
        self, agent: str | None, *, profile: str | None = None
    ) -> amplifier.SessionSetup:
        return amplifier.SessionSetup(agent=agent or "default")

    async def on_resume(self, session: amplifier.SessionContext) -> None:
        return None

    async def run_turn(self, turn: amplifier.Turn) -> str:
        if turn.session.depth >= 1:  # the child: one offline-provider-like turn
            await turn.record({"role": "assistant", "content": "done"})
            return "done"

        async def step(i: int) -> None:
            result = await turn.delegate(CHILD_AGENT, "go")
            if not result.ok or result.response != "done":
                self.errors.append(f"round trip {i}: {result.status} {result.error}")

        self.result = await timed_loop(self.trips, step)
        return f"{self.trips} round trips"


async def run_ours_echo(
    directory: Path, trips: int, durability: amplifier.Durability, *, verify: bool
) -> RunResult:
    handler = DelegatingHandler(trips)
    home = directory / "home"
    async with amplifier.open_runtime(
        home=home, cwd=directory, durability=durability, handler=handler
    ) as rt:
        async with rt.open_session() as session:
            await session.ask("go")
            root = session.id
    if handler.errors:
        raise AssertionError(f"{len(handler.errors)} failed round trips: {handler.errors[:3]}")
    if handler.result is None:
        raise AssertionError("the parent's turn did not run")
    if verify:
        verify_children(home, root, trips, answer="done")
    return handler.result


# -- ours: the real agent loop with the offline provider --------------------------------


async def run_ours_agent(
    directory: Path, trips: int, durability: amplifier.Durability, *, verify: bool
) -> RunResult:
    home = directory / "home"
    replies: list[str] = []
    async with amplifier.open_runtime(home=home, cwd=directory, durability=durability) as rt:
        async with rt.open_session(agent="default") as session:

            async def step(i: int) -> None:
                reply = await session.ask(f"/delegate {CHILD_AGENT}: hi")
                replies.append(reply.text)

            result = await timed_loop(trips, step)
            root = session.id
    # The parent's final answer restates its prompt: its second model call ran.
    bad = [text for text in replies if f"You asked: /delegate {CHILD_AGENT}: hi" not in text]
    if len(replies) != trips or bad:
        raise AssertionError(f"{len(replies)} replies, {len(bad)} unexpected: {bad[:1]}")
    if verify:
        verify_children(home, root, trips, answer=None)
        verify_tool_results(home, root, trips)
    return result


def verify_tool_results(home: Path, root: str, trips: int) -> None:
    """The parent's transcript holds one completed ``delegate`` result per round trip."""
    path = next(home.glob(f"projects/*/sessions/{root}/transcript.jsonl"))
    results = [
        orjson.loads(message["content"])
        for message in map(orjson.loads, path.read_bytes().splitlines())
        if message.get("role") == "tool" and message.get("name") == "delegate"
    ]
    done = [result for result in results if result.get("status") == "completed"]
    if len(results) != trips or len(done) != trips:
        raise AssertionError(f"{len(results)} delegate results, {len(done)} completed")


def verify_children(home: Path, root: str, trips: int, *, answer: str | None) -> None:
    """On disk: the root and one completed child per round trip, each with its two messages."""
    folders = [path for path in home.glob("projects/*/sessions/*") if path.is_dir()]
    children = [path for path in folders if path.name != root]
    if len(folders) != trips + 1 or len(children) != trips:
        raise AssertionError(f"{len(folders)} session folders on disk; expected 1 + {trips}")
    for folder in children:
        meta = orjson.loads((folder / "metadata.json").read_bytes())
        if meta["parent_id"] != root or meta["status"] != "completed":
            raise AssertionError(f"{folder.name}: parent {meta['parent_id']}, {meta['status']}")
        events = [
            orjson.loads(line)["event"]
            for line in (folder / "events.jsonl").read_bytes().splitlines()
        ]
        expected = ["session:start", "prompt:submit", "prompt:complete", "session:end"]
        if [event for event in events if event in expected] != expected:
            raise AssertionError(f"{folder.name}: events {events}")
        messages = [
            orjson.loads(line) for line in (folder / "transcript.jsonl").read_bytes().splitlines()
        ]
        roles = [message.get("role") for message in messages]
        if roles != ["user", "assistant"]:
            raise AssertionError(f"{folder.name}: transcript roles {roles}")
        if answer is not None and messages[-1].get("content") != answer:
            raise AssertionError(f"{folder.name}: answer {messages[-1].get('content')!r}")
    parent = orjson.loads(
        next(path for path in folders if path.name == root).joinpath("metadata.json").read_bytes()
    )
    if len(parent["children"]) != trips:
        raise AssertionError(f"the parent lists {len(parent['children'])} children")


# -- raw anyio: a task, two streams and a join per round trip ---------------------------


async def run_raw_anyio(trips: int) -> RunResult:
    ended = 0

    async def child(
        inbox: anyio.abc.ObjectReceiveStream[str], outbox: anyio.abc.ObjectSendStream[str]
    ) -> None:
        nonlocal ended
        async with inbox, outbox:
            message = await inbox.receive()
            await outbox.send(f"{message}: done")
        ended += 1

    async def step(i: int) -> None:
        to_child, inbox = anyio.create_memory_object_stream[str](1)
        outbox, from_child = anyio.create_memory_object_stream[str](1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(child, inbox, outbox)
            async with to_child, from_child:
                await to_child.send("go")
                reply = await from_child.receive()
        # Leaving the task group joined the child.
        if reply != "go: done":
            raise AssertionError(f"round trip {i}: reply {reply!r}")

    result = await timed_loop(trips, step)
    if ended != trips:
        raise AssertionError(f"{ended} children ended; expected {trips}")
    return result


# -- autogen-core: a new agent instance and one send_message per round trip --------------


@dataclass(frozen=True, slots=True)
class AskChild:
    text: str


@dataclass(frozen=True, slots=True)
class ChildReply:
    text: str


async def run_autogen(trips: int) -> RunResult:
    from autogen_core import AgentId, RoutedAgent, SingleThreadedAgentRuntime, message_handler

    created = 0

    class Child(RoutedAgent):
        def __init__(self) -> None:
            nonlocal created
            super().__init__("a delegated child")
            created += 1

        @message_handler
        async def on_ask(self, message: AskChild, ctx: object) -> ChildReply:
            return ChildReply(f"{message.text}: done")

    runtime = SingleThreadedAgentRuntime()
    await Child.register(runtime, CHILD_AGENT, Child)
    runtime.start()
    replies = 0

    async def step(i: int) -> None:
        nonlocal replies
        reply = await runtime.send_message(AskChild("go"), AgentId(CHILD_AGENT, f"child-{i}"))
        if not isinstance(reply, ChildReply) or reply.text != "go: done":
            raise AssertionError(f"round trip {i}: reply {reply!r}")
        replies += 1

    try:
        result = await timed_loop(trips, step)
    finally:
        await runtime.stop_when_idle()
        await runtime.close()
    if created != trips or replies != trips:
        raise AssertionError(f"{created} agents, {replies} replies; expected {trips} of each")
    return result


# -- the OpenAI Agents SDK: agent-as-tool with scripted models ---------------------------


def _import_openai_agents() -> None:
    """Tracing off and a dummy key, before the SDK is first imported: nothing leaves."""
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    os.environ["OPENAI_API_KEY"] = "sk-benchmark-offline-not-a-key"
    import agents  # noqa: F401


def sdk_agents() -> tuple[Agent[Any], Callable[[], tuple[int, int]]]:
    """The parent agent (its sub-agent as a tool) and a counter of (parent, child) model calls."""
    _import_openai_agents()
    from agents import Agent, ModelResponse, Usage
    from agents.items import TResponseInputItem, TResponseStreamEvent
    from agents.models.interface import Model
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    def message(text: str) -> ResponseOutputMessage:
        return ResponseOutputMessage(
            id="msg_bench",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )

    def tool_output(items: str | list[TResponseInputItem]) -> str | None:
        if isinstance(items, str):
            return None
        for item in items:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                return str(item.get("output"))
        return None

    class ScriptedModel(Model):
        """Answers at once: with a call of ``tool`` first (if any), then with text."""

        def __init__(self, tool: str | None) -> None:
            self.tool = tool
            self.calls = 0

        async def get_response(
            self,
            system_instructions: str | None,
            input: str | list[TResponseInputItem],
            model_settings: Any,
            tools: list[Any],
            output_schema: Any,
            handoffs: list[Any],
            tracing: Any,
            *,
            previous_response_id: str | None,
            conversation_id: str | None,
            prompt: Any,
        ) -> ModelResponse:
            self.calls += 1
            answered = tool_output(input)
            if self.tool is not None and answered is None:
                call = ResponseFunctionToolCall(
                    id=f"fc_{self.calls}",
                    call_id=f"call_{self.calls}",
                    type="function_call",
                    name=self.tool,
                    arguments=orjson.dumps({"input": "go"}).decode(),
                    status="completed",
                )
                return ModelResponse(output=[call], usage=Usage(), response_id=None)
            text = "done" if self.tool is None else f"child said: {answered}"
            return ModelResponse(output=[message(text)], usage=Usage(), response_id=None)

        async def stream_response(
            self,
            system_instructions: str | None,
            input: str | list[TResponseInputItem],
            model_settings: Any,
            tools: list[Any],
            output_schema: Any,
            handoffs: list[Any],
            tracing: Any,
            *,
            previous_response_id: str | None,
            conversation_id: str | None,
            prompt: Any,
        ) -> AsyncIterator[TResponseStreamEvent]:
            raise NotImplementedError("the benchmark does not stream")
            yield  # an async generator, as the interface expects

    child_model = ScriptedModel(None)
    parent_model = ScriptedModel(CHILD_AGENT)
    child = Agent(name=CHILD_AGENT, instructions="Answer the instruction.", model=child_model)
    parent = Agent(
        name="default",
        instructions="Delegate to the explorer.",
        model=parent_model,
        tools=[child.as_tool(CHILD_AGENT, "Hand work to the explorer sub-agent.")],
    )
    return parent, lambda: (parent_model.calls, child_model.calls)


async def run_sdk(trips: int) -> RunResult:
    from agents import RunConfig, Runner

    parent, calls = sdk_agents()
    config = RunConfig(tracing_disabled=True)
    finals: list[object] = []

    async def step(i: int) -> None:
        run = await Runner.run(parent, "go", run_config=config)
        finals.append(run.final_output)

    result = await timed_loop(trips, step)
    parent_calls, child_calls = calls()
    bad = [final for final in finals if final != "child said: done"]
    if bad or len(finals) != trips or (parent_calls, child_calls) != (2 * trips, trips):
        raise AssertionError(
            f"{len(finals)} runs ({len(bad)} wrong, e.g. {bad[:1]}), {parent_calls} parent and "
            f"{child_calls} child model calls; expected {trips} runs, {2 * trips} and {trips}"
        )
    return result


# -- driving the runs ---------------------------------------------------------------------


def run_one(backend: Backend, mode: Mode, trips: int, root: Path, *, verify: bool) -> RunResult:
    """One measurement in a fresh directory, on a fresh event loop."""
    directory = Path(tempfile.mkdtemp(prefix=f"{backend}-{mode}-", dir=root))
    try:
        match mode:
            case "echo-fsync" | "echo-none":
                job = partial(run_ours_echo, directory, trips, DURABILITY[mode], verify=verify)
            case "agent-fsync" | "agent-none":
                job = partial(run_ours_agent, directory, trips, DURABILITY[mode], verify=verify)
            case "anyio":
                job = partial(run_raw_anyio, trips)
            case "autogen":
                job = partial(run_autogen, trips)
            case "sdk":
                job = partial(run_sdk, trips)
        return anyio.run(job, backend=backend)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def plan(backends: Sequence[Backend], available: Sequence[Mode]) -> list[tuple[Backend, Mode]]:
    """Every (backend, mode) to measure; the asyncio-only peers once, on asyncio."""
    pairs: list[tuple[Backend, Mode]] = []
    for backend in backends:
        pairs.extend((backend, mode) for mode in available if mode not in ASYNCIO_ONLY)
    pairs.extend(("asyncio", mode) for mode in available if mode in ASYNCIO_ONLY)
    return pairs


def default_root() -> Path:
    """The system temp dir if it is on the repository's file system, else the repository."""
    temp = Path(tempfile.gettempdir())
    if temp.stat().st_dev == REPO.stat().st_dev:
        return temp
    return REPO / "benchmarks"


def filesystem(path: Path) -> str:
    """``/dev/vda ext4 on /`` for the mount holding ``path`` (best effort, Linux)."""
    best = ("", "?", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                device, point, kind = line.split()[:3]
                if str(path).startswith(point) and len(point) >= len(best[0]):
                    best = (point, kind, device)
    except OSError:
        return "unknown file system"
    point, kind, device = best
    return f"{device} {kind} on {point}"


def versions() -> str:
    found = []
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sub-session round trip: ours vs raw anyio, autogen-core, OpenAI Agents SDK.",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply the round trips per run (1; e.g. 200 for our echo child)",
    )
    parser.add_argument("--repeat", type=int, default=None, help="repetitions, median kept (3)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: a few round trips, 1 repetition"
    )
    parser.add_argument(
        "--backend", choices=[*BACKENDS, "both"], default="both", help="event loop (both)"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir on disk)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip reading our sessions back after each run"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if a target is not met"
    )
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.scale is None:
        args.scale = 1.0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.scale <= 0:
        parser.error("--scale must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK_TRIPS if args.quick else FULL_TRIPS
    trips = {mode: max(1, round(count * args.scale)) for mode, count in sizes.items()}
    backends: tuple[Backend, ...] = BACKENDS if args.backend == "both" else (args.backend,)
    missing = {mode: name for mode, name in PEERS.items() if importlib.util.find_spec(name) is None}
    available = [mode for mode in MODES if mode not in missing]
    pairs = plan(backends, available)
    base = (args.dir or default_root()).resolve()
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="amplifier-bench-", dir=base))
    verify = not args.no_verify

    print(
        "delegation benchmark: sequential sub-session round trips (spawn a child, one turn, "
        f"its records persisted, join); median of {args.repeat}"
    )
    print("round trips per run: " + ", ".join(f"{mode} {trips[mode]}" for mode in available))
    for mode, name in missing.items():
        print(f"skipped {LABEL[mode]}: {name} is not installed (pip install -e '.[bench]')")
    results: dict[tuple[Backend, Mode], list[RunResult]] = {}
    started = time.perf_counter()
    try:
        if not args.quick:  # warm up imports, threads and the page cache; not measured
            for backend, mode in pairs:
                run_one(backend, mode, QUICK_TRIPS[mode], root, verify=False)
        for repetition in range(args.repeat):
            # Interleaved, in a rotating order, so drift hits every mode alike.
            shift = repetition % len(pairs)
            for backend, mode in pairs[shift:] + pairs[:shift]:
                result = run_one(backend, mode, trips[mode], root, verify=verify)
                results.setdefault((backend, mode), []).append(result)
                print(
                    f"  run {repetition + 1}/{args.repeat} {backend:7} {mode:11} "
                    f"{result.rate:9.0f} trips/s  p50 {result.percentile_ms(50):7.3f} ms"
                    f"  p99 {result.percentile_ms(99):7.3f} ms",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started

    met = report(results, backends)
    print(
        f"\nmachine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} "
        f"{platform.release()}, python {platform.python_version()}, amplifier "
        f"{metadata.version('amplifier')}; {versions()}; writing in {base} ({filesystem(base)}); "
        f"{elapsed:.1f} s of runs (warm-up included)"
    )
    print(f"reproduce: {COMMAND}" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""))
    return 1 if args.strict and not met else 0


def render(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if i in right else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    print(line(header))
    print(
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    for row in rows:
        print(line(row))


def report(
    results: dict[tuple[Backend, Mode], list[RunResult]], backends: Sequence[Backend]
) -> bool:
    """Print both tables and a verdict per target; True if every target row is met."""

    def median(backend: Backend, mode: Mode, value: Callable[[RunResult], float]) -> float:
        return statistics.median(value(run) for run in results[(backend, mode)])

    def rate(backend: Backend, mode: Mode) -> float:
        return median(backend, mode, lambda r: r.rate)

    def where(backend: Backend, mode: Mode) -> Backend:
        return "asyncio" if mode in ASYNCIO_ONLY else backend

    print("\nper round trip (medians of the runs):\n")
    rows: list[tuple[str, ...]] = []
    for backend in BACKENDS:
        for mode in MODES:
            if (backend, mode) not in results:
                continue
            rows.append(
                (
                    LABEL[mode],
                    backend,
                    DURABILITY.get(mode, "- (nothing persisted)"),
                    f"{rate(backend, mode):.0f}",
                    f"{median(backend, mode, lambda r: r.percentile_ms(50)):.3f}",
                    f"{median(backend, mode, lambda r: r.percentile_ms(99)):.3f}",
                )
            )
    render(("path", "backend", "durability", "round trips/s", "p50 ms", "p99 ms"), rows, {3, 4, 5})

    print(
        "\nours vs the peers (rates: medians of the runs; ratio: the median of each "
        "repetition's ours / baseline):\n"
    )
    table: list[tuple[str, ...]] = []
    verdicts: list[str] = []
    everything = True
    for target in TARGETS:
        for backend in backends:
            base_backend = where(backend, target.baseline)
            if (base_backend, target.baseline) not in results:
                everything = False
                verdicts.append(
                    f"{backend:7}  ours >= {target.factor:g}x {LABEL[target.baseline]}: "
                    "not measured (peer not installed)"
                )
                continue
            baseline = rate(base_backend, target.baseline)
            name = LABEL[target.baseline] + (
                f" ({base_backend} only)" if target.baseline in ASYNCIO_ONLY else ""
            )
            for variant in target.variants:
                figures = []
                for mode in variant:
                    if (backend, mode) not in results:
                        continue
                    ours = rate(backend, mode)
                    # Each repetition's run against the baseline's run of the same
                    # repetition, seconds apart: drift moves both sides alike.
                    ratio = statistics.median(
                        mine.rate / theirs.rate
                        for mine, theirs in zip(
                            results[(backend, mode)],
                            results[(base_backend, target.baseline)],
                            strict=True,
                        )
                    )
                    ok = ratio >= target.factor
                    everything = everything and ok
                    table.append(
                        (
                            LABEL[mode].removeprefix("ours, "),
                            backend,
                            f"{ours:.0f}/s ({DURABILITY[mode]})",
                            name,
                            f"{baseline:.0f}/s",
                            f"{ratio:.2f}x",
                            f">= {target.factor:g}x",
                            "met" if ok else "NOT met",
                        )
                    )
                    figures.append((DURABILITY[mode], ok, ratio, ours))
                state = "met" if figures and all(ok for _, ok, _, _ in figures) else "NOT met"
                detail = "; ".join(
                    f"{durability} {ratio:.2f}x ({ours:.0f} vs {baseline:.0f}/s)"
                    for durability, _, ratio, ours in figures
                )
                verdicts.append(
                    f"{backend:7}  {LABEL[variant[0]]} >= {target.factor:g}x {name}: "
                    f"{state}: {detail}"
                )
    render(
        (
            "workload",
            "backend",
            "ours (durability)",
            "baseline",
            "baseline rate",
            "ratio",
            "target",
            "met?",
        ),
        table,
        {4, 5},
    )
    print(
        "\nworkload: what our child runs (echo: a handler turn recording one assistant message; "
        "offline agent: the agent loop and offline provider, parent and child). The baselines "
        "persist nothing; autogen-core and the OpenAI Agents SDK run on asyncio only, and the "
        "trio rows compare ours on trio with them on asyncio.\n"
    )
    for line in verdicts:
        print(line)
    return everything


if __name__ == "__main__":
    sys.exit(main())
