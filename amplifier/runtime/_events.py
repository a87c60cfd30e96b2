"""Events as models: an event's name and its payload are one frozen model.

Producers build an ``Event`` and hand it to ``emit``; the name lives in the
model's ``name``, in one place, and the payload is the model's fields, so a
renamed field fails at type-check time rather than in a reader.
``events.jsonl`` holds ``{"event": name, "data": fields}`` as before.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    """The base of every typed event: ``name`` is its ``event`` string."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]

    def data(self) -> dict[str, Any]:
        """The payload as stored (its own fields left at None are not written)."""
        fields = self.model_dump(mode="json")
        return {key: value for key, value in fields.items() if value is not None}

    @classmethod
    def parse(cls, data: Any) -> Any:
        """The event again from a stored payload (extra keys of newer writers are ignored)."""
        return cls.model_validate(
            {key: value for key, value in data.items() if key in cls.model_fields}
            if isinstance(data, dict)
            else data
        )
