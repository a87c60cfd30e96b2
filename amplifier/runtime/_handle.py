"""The caller's handle on a session of this process's runtime: ask it, cancel it, close it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, assert_never

import anyio

from amplifier.persistence import EndStatus, SessionLocation, SessionMetadata

from ._bus import Subscription
from ._exceptions import TurnCancelled, TurnFailed
from ._labels import attribute_changes, check_end
from ._lifecycle import SessionState
from ._messages import Answered, Cancelled, Failed, Reply, check_prompt
from ._protocols import Session

if TYPE_CHECKING:
    from ._actor import SessionActor


class LocalSession(Session):
    """A handle on an open session: ask it, cancel its turn, subscribe to it, close it."""

    def __init__(self, actor: SessionActor) -> None:
        self._actor = actor

    @property
    def id(self) -> str:
        return self._actor.id

    @property
    def metadata(self) -> SessionMetadata:
        return self._actor.metadata.model_copy(deep=True)

    @property
    def state(self) -> SessionState:
        return self._actor.state

    @property
    def location(self) -> SessionLocation:
        return self._actor.location

    async def ask(
        self, prompt: str, *, on_text: Callable[[str], Awaitable[None]] | None = None
    ) -> Reply:
        outcome = await self._actor.ask(check_prompt(prompt), on_text=on_text)
        match outcome:
            case Answered(reply=reply):
                return reply
            case Failed(reason=reason, error=error):
                raise TurnFailed(self.id, reason) from error
            case Cancelled():
                raise TurnCancelled(self.id)
            case _:
                assert_never(outcome)

    async def set_attributes(self, values: Mapping[str, str | None]) -> SessionMetadata:
        changes = attribute_changes(values)

        def change(meta: SessionMetadata) -> None:
            for key, value in changes.items():
                if value is None:
                    meta.attributes.pop(key, None)
                else:
                    meta.attributes[key] = value

        return await self._actor.relabel(change)

    def cancel(self) -> None:
        self._actor.cancel_turn()

    def subscribe(self, *, tree: bool = True, buffer: int = 1024) -> Subscription:
        return self._actor.subscribe(tree=tree, buffer=buffer)

    async def close(
        self,
        *,
        status: EndStatus = "completed",
        error: str | None = None,
        keep_previous: bool = False,
    ) -> None:
        check_end(status, error)
        self._actor.close_mailbox(status, error, keep_previous=keep_previous)
        await self._actor.wait_ended()

    async def __aenter__(self) -> LocalSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class()):
            # Cancelled here: do not wait (that would block the cancellation);
            # the session ends on its own with status cancelled.
            self._actor.close_mailbox("cancelled")
            return
        await self.close()
