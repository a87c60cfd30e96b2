"""What the SDK-backed providers share: reading server-sent events, and failing well.

Both SDKs are generated from the same template, so their exception classes
line up one for one; ``SdkErrors`` names one SDK's classes and ``Failures``
turns any of them into a one-line ``ProviderError`` that never shows the key.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Protocol, Self, TypeVar

import anyio
import httpx2
from pydantic import ValidationError

from ._exceptions import (
    ProviderError,
    ProviderMalformed,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from ._provider import ProviderRequest, ProviderResponse, TextSink
from ._provider_config import ProviderConfig

MAX_LINE: Final = 16 << 20
"""A longer line without a newline is not an event stream."""
MAX_REASON: Final = 300
"""Characters of a server's message kept in an error."""
LOCAL_PLACEHOLDER_KEY: Final = "no-key-needed"
"""Sent to a ``base_url`` endpoint when no key is configured: local servers
ignore it, and the SDKs refuse to run (or go looking for credentials) without one."""
DRAIN_LIMIT: Final = 1 << 20
"""Bytes still read after a stream went wrong, hoping for its end, before giving up."""
CLOSE_TIMEOUT: Final = 5.0
"""Seconds closing a client may take: closing TLS to a peer that went away can hang."""


class StreamParser(Protocol):
    """Reads one provider's event stream into a response."""

    @property
    def given_up(self) -> bool:
        """The stream went wrong; stop reading (``result`` raises why)."""
        ...

    def feed(self, data: bytes) -> list[str]:
        """Take more bytes; return the text pieces they completed."""
        ...

    def result(self) -> ProviderResponse: ...


class StreamingResponse(Protocol):
    @property
    def http_response(self) -> httpx2.Response: ...


class _Closable(Protocol):
    async def close(self) -> None: ...


_Client = TypeVar("_Client", bound=_Closable)


@dataclass(frozen=True, slots=True)
class SdkErrors:
    """One SDK's exception classes (``openai.*`` or ``anthropic.*``)."""

    timeout: type[Exception]
    status: type[Exception]
    connection: type[Exception]
    validation: type[Exception]
    api: type[Exception]
    base: type[Exception]


class SSEDecoder:
    """Server-sent events from a byte stream: the part of the format that LLM APIs use.

    ``feed`` returns each complete event as ``(event type, data)``; an event
    still open when the body ends is never returned (the spec drops it).
    Raises ``ValueError`` on a line too long to be an event.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._kind = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        self._buffer += data
        events: list[tuple[str, str]] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            raw = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if self._data:
                    events.append((self._kind, "\n".join(self._data)))
                self._kind, self._data = "", []
            elif not line.startswith(":"):  # ``:`` starts a comment (keep-alive)
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._kind = value
        if len(self._buffer) > MAX_LINE:
            raise ValueError(f"a line of the stream is over {MAX_LINE} bytes")
        return events


# -- errors --------------------------------------------------------------------


class Failures:
    """Builds every ``ProviderError`` of this provider: one line, never the key (Rule 2)."""

    def __init__(self, provider: str, secret: str, timeout: float, errors: SdkErrors) -> None:
        self.provider = provider
        self._secret = secret
        self._timeout = timeout
        self._errors = errors

    def clean(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        text = " ".join(text.split())
        return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."

    def malformed(self, reason: str) -> ProviderMalformed:
        return ProviderMalformed(self.provider, self.clean(reason))

    def unavailable(self, reason: str) -> ProviderUnavailable:
        return ProviderUnavailable(self.provider, self.clean(reason))

    def cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` as the cause to chain, unless its own text would show the key."""
        return None if self._secret and self._secret in str(exc) else exc

    def json_object(self, text: str, what: str) -> dict[str, Any]:
        """``text`` parsed as a JSON object (empty: ``{}``); ``what`` names it in the error."""
        try:
            value = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise self.malformed(f"{what} is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise self.malformed(f"{what} is not a JSON object")
        return value

    def tool_arguments(self, text: str, what: str, *, limit: bool) -> dict[str, Any] | None:
        """A tool call's arguments (``json_object``), or None if the output-token
        ``limit`` cut them off before they were valid JSON."""
        try:
            return self.json_object(text, what)
        except ProviderMalformed:
            if limit:
                return None
            raise

    def from_exception(self, exc: BaseException) -> ProviderError:
        """The ``ProviderError`` for an SDK or transport exception."""
        errors = self._errors
        if isinstance(exc, errors.timeout | httpx2.TimeoutException):
            return ProviderTimeout(
                self.provider, f"no answer within {self._timeout:g}s{retries(exc)}"
            )
        if isinstance(exc, errors.status):
            status: Any = exc  # both SDKs: status_code, body, message, request_id
            detail = f"HTTP {status.status_code}: {server_message(status.body, status.message)}"
            if status.request_id:
                detail += f" (request {status.request_id})"
            if status.status_code in (408, 409, 429) or status.status_code >= 500:
                return self.unavailable(detail + retries(exc))
            return ProviderRejected(self.provider, self.clean(detail))
        if isinstance(exc, errors.connection):
            connection: Any = exc
            cause = exc.__cause__ or exc.__context__
            return self.unavailable(
                f"cannot reach {connection.request.url.copy_with(query=None)}: "
                f"{cause or connection.message}{retries(exc)}"
            )
        if isinstance(exc, httpx2.RemoteProtocolError):
            return self.malformed(f"the stream broke off: {exc}")
        if isinstance(exc, httpx2.HTTPError):
            return self.unavailable(f"the connection failed during the answer: {exc}")
        if isinstance(exc, errors.validation):
            return self.malformed(str(getattr(exc, "message", exc)))
        if isinstance(exc, errors.api):
            return self.unavailable(str(getattr(exc, "message", exc)))
        return ProviderRejected(self.provider, self.clean(str(exc) or type(exc).__name__))


def retries(exc: BaseException) -> str:
    """`` (after N retries)`` as the SDK counted them on the last attempt, or nothing."""
    try:
        request = getattr(exc, "request", None)
    except RuntimeError:  # httpx2 raises this for a request it was never given
        return ""
    if not isinstance(request, httpx2.Request):
        return ""
    count = request.headers.get("x-stainless-retry-count", "0")
    if not count.isdigit() or int(count) == 0:
        return ""
    return f" (after {count} {'retry' if int(count) == 1 else 'retries'})"


def server_message(body: object, fallback: str) -> str:
    """The ``error.message`` of an API error body, else the SDK's own message."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body
    return fallback


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


class EventStream:
    """Turns the bytes of one event stream into an answer (synchronous, so easy to reason about).

    ``feed`` returns the new text pieces; a problem with the stream is kept
    (not raised) so that the caller reads on to the end (an SDK connection
    left half-read cannot be reused), and ``result`` raises it. A subclass
    handles one event's data in ``_event`` and builds the response in
    ``result`` after ``_check``.
    """

    def __init__(self, failures: Failures, model: str, content_type: str) -> None:
        self._failures = failures
        self._content_type = content_type
        self._model = model
        self._events = SSEDecoder()
        self._head = b""
        self._seen_events = 0
        self._failure: ProviderError | None = None
        self._ignored = 0

    @property
    def given_up(self) -> bool:
        """The stream went wrong long ago and is still going: stop reading it."""
        return self._ignored > DRAIN_LIMIT

    def feed(self, data: bytes) -> list[str]:
        if self._failure is not None:
            self._ignored += len(data)
            return []
        if len(self._head) < 80:
            self._head += data[: 80 - len(self._head)]
        try:
            events = self._events.feed(data)
        except ValueError as exc:
            self._failure = self._failures.malformed(str(exc))
            return []
        pieces: list[str] = []
        for _, payload in events:
            self._seen_events += 1
            try:
                pieces.extend(self._event(payload))
            except ProviderError as exc:
                self._failure = exc
                break
        return pieces

    def _event(self, payload: str) -> list[str]:
        """One event's data: the text pieces it completes (raise ``ProviderError`` if wrong)."""
        raise NotImplementedError

    def _check(self, *, complete: bool) -> None:
        """Raise why there is no answer: an earlier failure, no event stream, or cut off."""
        if self._failure is not None:
            raise self._failure
        if self._seen_events == 0:
            raise self._failures.malformed(
                f"the answer is not an event stream (content-type {self._content_type!r}, "
                f"body starts {self._head!r})"
            )
        if not complete:
            raise self._failures.malformed("the stream broke off before the answer was complete")


class SdkProvider(Generic[_Client]):
    """What the SDK-backed providers share: the key, streaming through a parser, closing.

    A subclass names itself (``NAME``, ``DEFAULT_MODEL``, ``ERRORS``) and
    supplies the client, the streaming request and the parser of its wire
    format. The stream is read from the raw body, always to its end: the
    SDKs' own stream readers leave generators open, which trio reports.
    Close it with ``aclose()`` (or ``async with``): the SDKs' fallback
    finaliser only works on asyncio.
    """

    NAME: ClassVar[str]
    DEFAULT_MODEL: ClassVar[str]
    ERRORS: ClassVar[SdkErrors]

    def __init__(self, config: ProviderConfig) -> None:
        key = config.key()
        if not key:
            # Local endpoints (Ollama, vLLM, llama.cpp, gateways) need no key.
            key = LOCAL_PLACEHOLDER_KEY if config.base_url else config.require_key()
        self._config = config
        secret = "" if key == LOCAL_PLACEHOLDER_KEY else key
        self._failures = Failures(self.NAME, secret, config.timeout, self.ERRORS)
        self._client = self._make_client(key, config)
        self._closed = False

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def model(self) -> str:
        return self._config.model or self.DEFAULT_MODEL

    def _make_client(self, key: str, config: ProviderConfig) -> _Client:
        raise NotImplementedError

    def _send(
        self, request: ProviderRequest, model: str
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        raise NotImplementedError

    def _parser(self, model: str, content_type: str) -> StreamParser:
        raise NotImplementedError

    async def complete(
        self, request: ProviderRequest, *, on_text: TextSink | None = None
    ) -> ProviderResponse:
        """Stream one answer; ``on_text`` gets each text delta as it arrives.

        Raises ``ProviderError`` after the SDK's retries, and
        ``anyio.ClosedResourceError`` after ``aclose()``. Cancellation
        propagates unchanged.
        """
        if self._closed:
            raise anyio.ClosedResourceError(f"the {self.NAME} provider is closed")
        model = request.model or self.model
        try:
            async with self._send(request, model) as response:
                body = response.http_response
                stream = self._parser(model, body.headers.get("content-type", ""))
                async with aclosing(body.aiter_bytes()) as chunks:
                    async for data in chunks:
                        for piece in stream.feed(data):
                            if on_text is not None:
                                await on_text(piece)
                        if stream.given_up:
                            break
                return stream.result()
        except (self.ERRORS.base, httpx2.HTTPError) as exc:
            failure = self._failures.from_exception(exc)
            raise failure from self._failures.cause(exc)

    async def aclose(self) -> None:
        """Close the SDK client and its connections. Idempotent, shielded, time-bounded."""
        if self._closed:
            return
        self._closed = True
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
