"""ASGI integration: a plain ASGI app serving the gateway's hooks.

It has no dependency of its own, so it runs under any ASGI server, and mounts
into Starlette or FastAPI::

    from fastapi import FastAPI
    from rainbow.asgi import RainbowASGI
    from rainbow.backend import Hooks, RainbowResponse

    hooks = Hooks(token="qwe123")

    @hooks.message(1)
    async def echo(request):
        return RainbowResponse({"echo": request.data}, request)

    app = FastAPI()
    app.mount("/rainbow", RainbowASGI(hooks))
    # -> /rainbow/connect/, /rainbow/close/, /rainbow/message/{msg_type}/

``async def`` handlers run on the event loop; plain functions run in a worker
thread (so they may call the blocking :class:`~rainbow.backend.RainbowAPI`;
``async`` handlers should use :class:`~rainbow.backend.AsyncRainbowAPI`).
"""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional, Tuple
from urllib.parse import parse_qsl

from .backend import CLOSE, CONNECT, MESSAGE, HookResult, Hooks

__all__ = ["RainbowASGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MESSAGE_PATH = re.compile(r"^/message/(\d{1,5})/?$")


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette's ``get_route_path``)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def _match(route: str) -> Optional[Tuple[str, Optional[int]]]:
    if route in ("/connect/", "/connect"):
        return CONNECT, None
    if route in ("/close/", "/close"):
        return CLOSE, None
    found = _MESSAGE_PATH.match(route)
    if found and int(found.group(1)) <= 0xFFFF:
        return MESSAGE, int(found.group(1))
    return None


class RainbowASGI:
    """An ASGI app for ``connect/``, ``close/`` and ``message/{msg_type}/``.

    :param hooks: the handlers; every call's signature is verified with
        ``hooks.token``.
    :param max_body: the largest message payload accepted, in bytes (413 above).
    """

    def __init__(self, hooks: Hooks, *, max_body: int = 1 << 20) -> None:
        self.hooks = hooks
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        matched = _match(_route_path(scope))
        if matched is None:
            await _respond(send, HookResult(404, b"not a rainbow hook", {"Content-Type": "text/plain"}))
            return
        kind, msg_type = matched
        body = await _read_body(receive, self.max_body)
        if body is None:
            await _respond(send, HookResult.error(413, f"payload larger than {self.max_body} bytes"))
            return
        headers: Dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        hooks = self.hooks
        parsed = hooks.parse(
            kind,
            method=scope.get("method", "GET"),
            query=query,
            headers=headers,
            body=body,
            msg_type=msg_type,
            native=scope,
        )
        if isinstance(parsed, HookResult):
            await _respond(send, parsed)
            return
        handler = await asyncio.to_thread(hooks.handler_for, parsed.kind, parsed.msg_type)
        if handler is not None and inspect.iscoroutinefunction(handler):
            result = hooks.call(parsed)
        else:
            result = await asyncio.to_thread(hooks.call, parsed)
        if inspect.isawaitable(result):
            result = await result
        await _respond(send, hooks.render(parsed, result))


async def _read_body(receive: Receive, limit: int) -> Optional[bytes]:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, result: HookResult) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items()]
    headers.append((b"content-length", str(len(result.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": result.status, "headers": headers})
    await send({"type": "http.response.body", "body": result.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
