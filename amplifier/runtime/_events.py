"""Events as models: an event's name and its payload are one frozen model (STYLE rule 18).

Producers build an ``Event`` and hand it to ``emit``; the name lives in the
model's ``name``, in one place, and the payload is the model's fields, so a
renamed field fails at type-check time rather than in a reader.
``events.jsonl`` holds ``{"event": name, "data": fields}``, byte for byte
as before the models: fields keep their order, and a field declared with
``optional()`` is left out while it is None.

These are the runtime's own events; the agent loop's are in
``amplifier.agents``, which also holds the closed union of all of them and
the one ``TypeAdapter`` that reads them back.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from amplifier.persistence.lowlevel import EncodedData, encode_data


def _none(value: object) -> bool:
    return value is None


_AS_PYDANTIC_WRITES = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_NON_STR_KEYS
)
"""What orjson writes otherwise than pydantic's JSON mode (times, dataclasses, subclasses
of the JSON types) goes to pydantic's conversion; keys that are not strings become
strings, as pydantic makes them."""


def optional() -> Any:
    """A field that is None unless given, and then not written at all."""
    return Field(default=None, exclude_if=_none)


class Event(BaseModel):
    """The base of every typed event: ``name`` is its ``event`` string.

    Reading is lenient: a newer writer's extra keys are ignored, and a field
    an older writer did not write yet takes its default. Writing is checked
    by the type checker, which knows every field's name and type.
    """

    # Built when first used: a command uses a few of them, and each costs start-up time.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    name: ClassVar[str]
    _left_out_when_none: ClassVar[frozenset[str]] = frozenset()
    """The ``optional()`` fields."""
    _plain: ClassVar[bool] = True
    """No field renamed, hidden or serialised by code of its own: ``encode`` may read
    the fields as they stand."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        fields = cls.model_fields
        cls._left_out_when_none = frozenset(
            name for name, info in fields.items() if info.exclude_if is _none
        )
        decorators = cls.__pydantic_decorators__
        cls._plain = not (decorators.field_serializers or decorators.model_serializers) and all(
            not info.exclude
            and info.exclude_if in (None, _none)
            and info.alias is None
            and info.serialization_alias is None
            for info in fields.values()
        )

    def data(self) -> dict[str, Any]:
        """The payload as stored."""
        return self.model_dump(mode="json")

    @classmethod
    def parse(cls, data: Any) -> Any:
        """The event again from a stored payload; ``ValidationError`` if it is not one."""
        return cls.model_validate(data)


def encode(event: Event) -> EncodedData:
    """``event``'s payload as JSON, byte for byte ``orjson.dumps(event.data())``.

    Made from the fields as they stand: what JSON cannot hold as it is (a
    time, a path, a set, a nested model) goes through pydantic's own
    conversion, and nothing else does. Every event a turn sends is encoded
    so, once; building ``data()`` first cost more than the encoding. A value
    JSON cannot hold at all (a string with a lone surrogate) is a
    ``UsageError``.
    """
    if not event._plain:
        return encode_data(event.data())
    values: dict[str, Any] = event.__dict__
    left_out = event._left_out_when_none
    if left_out:
        values = {k: v for k, v in values.items() if v is not None or k not in left_out}
    extra = event.__pydantic_extra__
    if extra:
        values = {**values, **extra}
    return encode_data(values, default=to_jsonable_python, option=_AS_PYDANTIC_WRITES)


class SessionStarted(Event):
    """``session:start``: a session was created; its configuration labels follow its fields."""

    model_config = ConfigDict(frozen=True, extra="allow", defer_build=True)
    name: ClassVar[str] = "session:start"

    session_id: str
    agent: str = "default"
    profile: str | None = None
    parent_id: str | None = None
    root_id: str = ""
    depth: int = 0
    cwd: str = ""


class SessionResumed(Event):
    """``session:resume``: a stored session was opened again, and what was found."""

    name: ClassVar[str] = "session:resume"

    messages: int = 0
    previous_status: str = ""
    metadata_rebuilt: bool = False
    children_dropped: list[str] = []
    torn_lines_set_aside: list[str] = []
    previous_config: dict[str, Any] = {}
    config: dict[str, Any] = {}


class PromptSubmitted(Event):
    """``prompt:submit``: a turn began with this prompt."""

    name: ClassVar[str] = "prompt:submit"

    prompt: str = ""
    turn: int | None = None


class PromptCompleted(Event):
    """``prompt:complete``: a turn ended: completed, failed (with its error) or cancelled."""

    name: ClassVar[str] = "prompt:complete"

    turn: int | None = None
    status: Literal["completed", "failed", "cancelled"]
    error: str | None = optional()
    traceback: str | None = optional()


class SessionEnded(Event):
    """``session:end``: the session ended, and how."""

    name: ClassVar[str] = "session:end"

    status: str
    error: str | None = optional()
    traceback: str | None = optional()


class DelegateStarted(Event):
    """``delegate:start``: a sub-session was created (or resumed) for an instruction."""

    name: ClassVar[str] = "delegate:start"

    child_id: str
    agent: str = ""
    instruction: str = ""
    resumed: bool = False


class DelegateEnded(Event):
    """``delegate:end``: a sub-session returned, and how."""

    name: ClassVar[str] = "delegate:end"

    child_id: str
    agent: str = ""
    status: str
    error: str | None = optional()
    traceback: str | None = optional()
