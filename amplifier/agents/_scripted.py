"""The ``scripted`` provider: replays a file of model turns, for tests.

The file (JSON, or YAML) is a list of turns, used in order, one per model call::

    - text: "Let me look."
      tool_calls:
        - {name: read_file, arguments: {path: README.md}}
    - text: "README.md says hello."
    - error: "simulated outage"       # this call fails with ProviderError
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from ._exceptions import ConfigError, ProviderError
from ._messages import AssistantMessage, ToolCall, Usage
from ._provider import ProviderRequest, ProviderResponse, TextSink
from ._yaml import YamlProblem, load_yaml


class ScriptedCall(BaseModel):
    """A tool call a scripted turn makes: the tool's name and its arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    arguments: dict[str, JsonValue] = {}


class ScriptedTurn(BaseModel):
    """One answer of a script: text, tool calls, or an ``error`` the call fails with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = ""
    tool_calls: tuple[ScriptedCall, ...] = ()
    error: str | None = None


class ScriptedProvider:
    """Answers each call with the next turn of its script; fails when the script runs out."""

    name = "scripted"

    def __init__(self, turns: Sequence[ScriptedTurn], *, model: str = "scripted") -> None:
        self._turns = list(turns)
        self._next = 0
        self.model = model
        self.requests: list[ProviderRequest] = []
        """Every request received, for tests to inspect."""

    @classmethod
    def from_file(cls, path: Path, *, model: str = "scripted") -> ScriptedProvider:
        try:
            data = load_yaml(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, YamlProblem) as exc:
            raise ConfigError(f"cannot read the script: {exc}", path=path) from None
        if not isinstance(data, list):
            raise ConfigError("a script is a list of turns", path=path)
        try:
            turns = [ScriptedTurn.model_validate(turn) for turn in data]
        except ValidationError as exc:
            raise ConfigError(f"invalid turn: {exc.errors()[0]['msg']}", path=path) from None
        return cls(turns, model=model)

    async def complete(
        self, request: ProviderRequest, *, on_text: TextSink | None = None
    ) -> ProviderResponse:
        self.requests.append(request)
        if self._next >= len(self._turns):
            raise ProviderError("scripted", f"the script has no turn {self._next + 1}")
        turn = self._turns[self._next]
        self._next += 1
        if turn.error is not None:
            raise ProviderError("scripted", turn.error)
        if on_text is not None and turn.text:
            await on_text(turn.text)
        calls = tuple(
            ToolCall(id=f"script_{self._next}_{n}", name=call.name, arguments=dict(call.arguments))
            for n, call in enumerate(turn.tool_calls, start=1)
        )
        message = AssistantMessage(
            content=turn.text, tool_calls=calls, provider=self.name, model=self.model
        )
        return ProviderResponse(
            message=message,
            usage=Usage(output_tokens=len(turn.text) // 4),
            stop_reason="tool_use" if calls else "end_turn",
        )

    async def aclose(self) -> None:
        return None
