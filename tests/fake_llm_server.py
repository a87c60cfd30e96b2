"""A local stand-in for the OpenAI and Anthropic HTTP APIs, scripted per test.

``FakeLLMServer`` listens on 127.0.0.1 (a random port) in a background
thread, so it answers whether the test's event loop is asyncio or trio. It
speaks the real wire formats, streaming Server-Sent Events as the real
endpoints do:

    POST /v1/chat/completions   OpenAI: ``data: {chunk}`` events, then ``data: [DONE]``
    POST /v1/messages           Anthropic: ``event: <type>`` + ``data: {...}`` events,
                                message_start ... message_stop

Each request takes the next planned reply from a queue (``server.plan(...)``):

    Text(pieces)                 a streamed text answer, one delta per piece
                                 (``stall``: silence after the first piece;
                                 ``limit``: stopped by the output-token limit)
    ToolUse(name, arguments)     a streamed tool call (arguments split in fragments;
                                 ``raw_arguments`` + ``limit``: cut off mid-JSON)
    Status(code, message)        an HTTP error with the provider's JSON error body
    Stall(seconds)               no answer for a while (to trigger a client timeout)
    Garbage(body)                a 200 whose body is not the wire format at all
    BrokenStream(chunked)        a stream that breaks off in the middle of a JSON event

Every request is recorded (``server.requests``: path, headers, JSON body) so
tests can assert on exactly what a provider sent. A request with nothing
planned gets a 400 saying so, which fails the test with a clear message.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

Kind = Literal["openai", "anthropic"]
"""The wire formats the server speaks (and the provider kinds that use them)."""


@dataclass(frozen=True)
class Text:
    """A streamed text answer: each piece is one delta on the wire."""

    pieces: tuple[str, ...]
    input_tokens: int = 11
    output_tokens: int = 7
    model: str | None = None
    """The model the server says it used (default: the requested one)."""
    stall: float = 0.0
    """If set, go silent for this long after the first piece, then hang up."""
    limit: bool = False
    """Stop as at the output-token limit (finish_reason ``length``, stop_reason ``max_tokens``)."""


@dataclass(frozen=True)
class ToolUse:
    """A streamed tool call, optionally after some text; arguments arrive in fragments."""

    name: str
    arguments: dict[str, Any]
    id: str = "call_1"
    raw_arguments: str | None = None
    """Sent instead of the arguments' JSON (to send JSON that is broken)."""
    text: str = ""
    input_tokens: int = 13
    output_tokens: int = 5
    limit: bool = False
    """Stop as at the output-token limit (with ``raw_arguments``: a call cut off mid-JSON)."""


@dataclass(frozen=True)
class Status:
    """An HTTP error with the provider's JSON error body."""

    code: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stall:
    """Send nothing for ``seconds`` (ended early when the server closes)."""

    seconds: float


@dataclass(frozen=True)
class Garbage:
    """A 200 answer whose body is not the wire format."""

    body: bytes = b"<html>this is not an event stream</html>"


@dataclass(frozen=True)
class BrokenStream:
    """A stream that starts well and breaks off in the middle of a JSON event."""

    chunked: bool = False
    """Cut inside an HTTP chunk (the client sees the body end early), rather
    than end a body delimited by the connection (the client sees a clean end)."""


Reply = Text | ToolUse | Status | Stall | Garbage | BrokenStream


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it (header names lower-cased)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeLLMServer:
    """The scripted server; use as a context manager (``with FakeLLMServer() as server``)."""

    def __init__(self) -> None:
        self._replies: queue.Queue[Reply] = queue.Queue()
        self._requests: list[Recorded] = []
        self._lock = threading.Lock()
        # Set on close so that stalled handlers end at once instead of holding
        # the test (and the server's threads) for the whole stall.
        self.closing = threading.Event()
        self.stalled = threading.Event()
        """Set once a ``Text`` with ``stall`` has sent its first piece and gone silent."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        """What to pass as an OpenAI ``base_url`` (the SDK appends ``/chat/completions``)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What to pass as an Anthropic ``base_url`` (the SDK appends ``/v1/messages``)."""
        return self.url

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def plan(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one."""
        for reply in replies:
            self._replies.put(reply)

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def record(self, request: Recorded) -> None:
        with self._lock:
            self._requests.append(request)

    def next_reply(self) -> Reply | None:
        """The reply planned for the current request (``None``: nothing planned)."""
        try:
            return self._replies.get_nowait()
        except queue.Empty:
            return None


class _Server(ThreadingHTTPServer):
    # A keep-alive connection that a client still holds must not keep the
    # server from closing; stalled handlers end through ``closing``.
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        fake: FakeLLMServer,
    ) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) leaves a broken pipe behind:
        # the expected end of such a request. Anything else is a bug here.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.fake.record(Recorded(self.path, headers, body))
        flavour = {OPENAI_PATH: "openai", ANTHROPIC_PATH: "anthropic"}.get(self.path)
        if flavour is None:
            self._json(404, {"error": {"message": f"fake server: no route {self.path}"}})
            return
        reply = self.server.fake.next_reply()
        if reply is None:
            self._error(flavour, Status(400, "fake server: no reply planned for this request"))
            return
        model = str(body.get("model", "unknown"))
        match reply:
            case Stall(seconds):
                self.server.fake.closing.wait(seconds)
                self.close_connection = True
            case Status():
                self._error(flavour, reply)
            case Garbage(data):
                self._start_stream()
                self._chunk(data)
                self._end_chunks()
            case BrokenStream(chunked):
                self._broken(flavour, model, chunked=chunked)
            case Text() | ToolUse():
                self._start_stream()
                if flavour == "openai":
                    events = _openai_events(reply, model)
                else:
                    events = _anthropic_events(reply, model)
                for event in events:
                    self._chunk(event)
                    if isinstance(reply, Text) and reply.stall and _carries(event, reply.pieces[0]):
                        self.server.fake.stalled.set()
                        self.server.fake.closing.wait(reply.stall)
                        self.close_connection = True
                        return
                self._end_chunks()

    # -- wire helpers -------------------------------------------------------------

    def _json(
        self, code: int, document: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, flavour: str, status: Status) -> None:
        document: dict[str, Any]
        if flavour == "openai":
            kind = _OPENAI_ERROR_TYPES.get(status.code, "server_error")
            document = {
                "error": {"message": status.message, "type": kind, "param": None, "code": None}
            }
            headers = {"x-request-id": "req_fake", **status.headers}
        else:
            kind = _ANTHROPIC_ERROR_TYPES.get(status.code, "api_error")
            document = {"type": "error", "error": {"type": kind, "message": status.message}}
            headers = {"request-id": "req_fake", **status.headers}
        self._json(status.code, document, headers)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _broken(self, flavour: str, model: str, *, chunked: bool) -> None:
        if flavour == "openai":
            events = list(_openai_events(Text(("Hello", " there")), model))
        else:
            events = list(_anthropic_events(Text(("Hello", " there")), model))
        # Everything up to the second piece of text, then half of that event.
        second = next(n for n, event in enumerate(events) if b" there" in event)
        head = b"".join(events[:second])
        cut = events[second][: len(events[second]) // 2]
        self.close_connection = True
        if chunked:
            self._start_stream()
            self._chunk(head)
            # Announce the whole event, send half of it, hang up.
            self.wfile.write(b"%x\r\n%s" % (len(events[second]), cut))
            self.wfile.flush()
            return
        # A body delimited by the connection's end (no length, not chunked) is
        # valid HTTP, so what the client sees is an event stream that stops in
        # the middle of a JSON object: the wire format broken, not the network.
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(head + cut)
        self.wfile.flush()


_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _openai_events(reply: Text | ToolUse, model: str) -> Iterator[bytes]:
    """The chunks of ``/v1/chat/completions`` with ``stream_options.include_usage``."""
    used = (reply.model if isinstance(reply, Text) else None) or model
    created = int(time.time())

    def chunk(
        delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
    ) -> bytes:
        document = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": used,
            "system_fingerprint": "fp_fake",
            "choices": (
                []
                if usage is not None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            ),
            "usage": usage,
        }
        return b"data: " + json.dumps(document).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if isinstance(reply, Text):
        for piece in reply.pieces:
            yield chunk({"content": piece})
        finish = "length" if reply.limit else "stop"
    else:
        if reply.text:
            yield chunk({"content": reply.text})
        arguments = _arguments(reply)
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": reply.id,
                        "type": "function",
                        "function": {"name": reply.name, "arguments": ""},
                    }
                ]
            }
        )
        for fragment in _fragments(arguments):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
        finish = "length" if reply.limit else "tool_calls"
    yield chunk({}, finish)
    yield chunk(
        {},
        usage={
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
    )
    yield b"data: [DONE]\n\n"


def _anthropic_events(reply: Text | ToolUse, model: str) -> Iterator[bytes]:
    """The events of a streamed ``/v1/messages`` answer."""
    used = (reply.model if isinstance(reply, Text) else None) or model

    def event(kind: str, document: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **document})}\n\n".encode()

    yield event(
        "message_start",
        {
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": used,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
            }
        },
    )
    index = 0
    text_pieces = reply.pieces if isinstance(reply, Text) else ((reply.text,) if reply.text else ())
    if text_pieces:
        yield event(
            "content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}
        )
        yield event("ping", {})
        for piece in text_pieces:
            yield event(
                "content_block_delta",
                {"index": index, "delta": {"type": "text_delta", "text": piece}},
            )
        yield event("content_block_stop", {"index": index})
        index += 1
    stop_reason = "end_turn"
    if isinstance(reply, ToolUse):
        yield event(
            "content_block_start",
            {
                "index": index,
                "content_block": {
                    "type": "tool_use",
                    "id": reply.id,
                    "name": reply.name,
                    "input": {},
                },
            },
        )
        for fragment in _fragments(_arguments(reply)):
            yield event(
                "content_block_delta",
                {"index": index, "delta": {"type": "input_json_delta", "partial_json": fragment}},
            )
        yield event("content_block_stop", {"index": index})
        stop_reason = "tool_use"
    if reply.limit:
        stop_reason = "max_tokens"
    yield event(
        "message_delta",
        {
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        },
    )
    yield event("message_stop", {})


def _carries(event: bytes, piece: str) -> bool:
    """Whether ``event`` is the one that streams ``piece``."""
    return json.dumps(piece).encode() in event


def _arguments(reply: ToolUse) -> str:
    return reply.raw_arguments if reply.raw_arguments is not None else json.dumps(reply.arguments)


def _fragments(text: str, size: int = 7) -> Iterator[str]:
    """``text`` in small pieces, as models stream tool arguments."""
    for start in range(0, len(text), size):
        yield text[start : start + size]


__all__ = [
    "ANTHROPIC_PATH",
    "OPENAI_PATH",
    "BrokenStream",
    "FakeLLMServer",
    "Garbage",
    "Recorded",
    "Reply",
    "Stall",
    "Status",
    "Text",
    "ToolUse",
]
