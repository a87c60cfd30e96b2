"""A small MCP server over stdio, for the tests: it speaks the wire format by hand.

It starts in a few milliseconds (it imports nothing of the SDK), and its
tools misbehave on request: ``crash`` exits mid-call, ``hang`` never
answers, ``huge`` returns as many characters as asked. Each call runs in
a thread of its own, so calls are answered concurrently.

    python mcp_stub_server.py [--prefix P]   # every tool's name starts with P
    python mcp_stub_server.py --paging same|counting   # tools/list pages for ever
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

PREFIX = sys.argv[sys.argv.index("--prefix") + 1] if "--prefix" in sys.argv else ""
PAGING = sys.argv[sys.argv.index("--paging") + 1] if "--paging" in sys.argv else ""
"""``same`` or ``counting``: tools/list never ends its pages (the same cursor, or a new one)."""
_write = threading.Lock()
_arrived = threading.Condition()
_waiting = 0


def schema(**properties: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "required": sorted(properties),
    }


TOOLS = {
    "echo": ("Say the text back.", schema(text="string")),
    "add": ("Add two numbers; the sum as structured content.", schema(a="number", b="number")),
    "pid": ("The server's process id.", schema()),
    "crash": ("Exit while answering.", schema()),
    "hang": ("Never answer (writes the pid to pidfile first, if given).", {"type": "object"}),
    "huge": ("Return this many characters.", schema(chars="integer")),
    "image": ("Return a small picture.", schema()),
    "meet": ("Answer once two calls of it are running at the same time.", schema()),
    "fail": ("Fail as a tool does: an error result.", schema()),
    "latin1": ("Answer with bytes that are not UTF-8 (a Latin-1 file name).", schema()),
    "noise": ("Print a line that is not JSON, then answer.", schema()),
}


def send(message: dict[str, Any]) -> None:
    line = json.dumps(message) + "\n"
    with _write:
        sys.stdout.write(line)
        sys.stdout.flush()


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


def call(name: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
    global _waiting
    tool = name.removeprefix(PREFIX)
    match tool:
        case "echo":
            return text(str(arguments.get("text", "")))
        case "add":
            return {"content": [], "structuredContent": {"sum": arguments["a"] + arguments["b"]}}
        case "pid":
            return text(str(os.getpid()))
        case "crash":
            sys.stderr.write("stub crashing on purpose\n")
            sys.stderr.flush()
            os._exit(3)
        case "hang":
            if "pidfile" in arguments:
                with open(arguments["pidfile"], "w") as file:
                    file.write(str(os.getpid()))
            threading.Event().wait()
        case "huge":
            return text("x" * int(arguments["chars"]))
        case "image":
            return {"content": [{"type": "image", "data": "AAAA", "mimeType": "image/png"}]}
        case "meet":
            with _arrived:
                _waiting += 1
                _arrived.notify_all()
                met = _arrived.wait_for(lambda: _waiting >= 2, timeout=20)
            return text("met" if met else "alone")
        case "fail":
            return {"content": [{"type": "text", "text": "it did not work"}], "isError": True}
        case "noise":
            with _write:
                sys.stdout.write("this is not JSON\n")
                sys.stdout.flush()
            return text("after the noise")
    return None


def answer(message: dict[str, Any]) -> None:
    params = message.get("params") or {}
    if params.get("name", "").removeprefix(PREFIX) == "latin1":
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": text("caf@")}
        line = json.dumps(reply).encode().replace(b"caf@", b"caf\xe9")  # Latin-1's e-acute
        with _write:
            sys.stdout.buffer.write(line + b"\n")
            sys.stdout.flush()
        return
    result = call(params.get("name", ""), params.get("arguments") or {})
    if result is None:
        send({"jsonrpc": "2.0", "id": message["id"],
              "error": {"code": -32602, "message": f"unknown tool {params.get('name')}"}})
    else:
        send({"jsonrpc": "2.0", "id": message["id"], "result": result})


def main() -> None:
    sys.stderr.write(f"stub started, pid {os.getpid()}\n")
    sys.stderr.flush()
    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        if ident is None:
            continue  # a notification
        if method == "initialize":
            version = message["params"]["protocolVersion"]
            send({"jsonrpc": "2.0", "id": ident, "result": {
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "stub", "version": "1"},
            }})
        elif method == "tools/list":
            tools = [
                {"name": PREFIX + name, "description": description, "inputSchema": input_schema}
                for name, (description, input_schema) in TOOLS.items()
            ]
            page: dict[str, Any] = {"tools": tools}
            if PAGING:  # every page says there is another: the same tools, a new cursor
                cursor = (message.get("params") or {}).get("cursor") or "0"
                page["nextCursor"] = str(int(cursor) + 1) if PAGING == "counting" else cursor
            send({"jsonrpc": "2.0", "id": ident, "result": page})
        elif method == "tools/call":
            threading.Thread(target=answer, args=(message,), daemon=True).start()
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": ident, "result": {}})
        else:
            send({"jsonrpc": "2.0", "id": ident,
                  "error": {"code": -32601, "message": f"no method {method}"}})


if __name__ == "__main__":
    main()
