"""A minimal stand-in for the gateway's /worker/ endpoint, for worker unit tests.

It speaks docs/worker-protocol.md from the gateway's side just enough to pin
the SDK's own behaviour: the signed handshake, welcome/hello, tasks the test
sends, replies, credit frames, drain/drained, and API calls answered by a
test-supplied function. It does not enforce the credit window (so tests can
check that the SDK itself never runs more than ``credits`` handlers).
This is not the gateway: tests/integration runs the real one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from rainbow.backend import NonceCache, verify_signature, verify_signature_v2
from rainbow.worker import decode_frame, encode_frame

Frame = Tuple[Dict[str, Any], bytes]
#: ``on_call(header, body)`` -> the result fields, or ``None`` to leave the call unanswered.
CallAnswer = Callable[[Dict[str, Any], bytes], Optional[Dict[str, Any]]]


def answer_ok(header: Dict[str, Any], body: bytes) -> Optional[Dict[str, Any]]:
    return {"status": 0, "connections": 1, "data": "", "echo_op": header["op"], "echo_body": body.decode("latin-1")}


class PeerConn:
    """One attached worker, as the stand-in sees it."""

    def __init__(self, ws: ServerConnection, number: int, query: Dict[str, str]) -> None:
        self.ws = ws
        self.number = number
        self.query = query
        self.hello: Dict[str, Any] = {}
        self.frames: "asyncio.Queue[Frame]" = asyncio.Queue()
        self.log: List[Frame] = []
        self.held: Dict[Any, Dict[str, Any]] = {}
        self.draining = False
        self.drained_sent = False
        self.closed = asyncio.Event()
        self.close_code: Optional[int] = None
        self.close_reason = ""


class WorkerPeer:
    def __init__(self, token: str = "qwe123", on_call: CallAnswer = answer_ok, auto_drained: bool = True) -> None:
        self.token = token
        self.on_call = on_call
        self.auto_drained = auto_drained
        self.refuse: Optional[Tuple[int, bytes]] = None
        self.welcome: Dict[str, Any] = {"op": "welcome", "version": 1, "node": "test-node"}
        self.conns: List[PeerConn] = []
        self.errors: List[BaseException] = []
        self.task_ids = itertools.count(1)
        self._nonces = NonceCache()
        self._queries: Dict[int, Dict[str, str]] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: Optional[asyncio.Event] = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="worker-peer", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("worker peer did not start")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/worker/"

    # -- server ------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Optional[Response]:
        parts = urlsplit(request.path)
        query = dict(parse_qsl(parts.query))
        if self.refuse is not None:
            status, body = self.refuse
            return connection.respond(status, body.decode())
        if parts.path != "/worker/":
            return connection.respond(404, "not found\n")
        ts, nonce, sig = query.get("timestamp"), query.get("nonce"), query.get("signature")
        if len(sig or "") == 64:  # v2, the SDK's default: bound to the path and query
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            valid = verify_signature_v2(self.token, "GET", parts.path, pairs, b"")
        else:
            valid = verify_signature(self.token, ts, nonce, sig)
        if not valid or not self._nonces.check_and_add(str(ts), str(nonce)):
            rsp = connection.respond(401, json.dumps({"status": 1, "msg": "signature error"}))
            return rsp
        self._queries[id(connection)] = query
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        conn = PeerConn(ws, len(self.conns) + 1, self._queries.pop(id(ws), {}))
        try:
            welcome = dict(self.welcome)
            welcome.setdefault("worker", conn.number)
            await ws.send(encode_frame(welcome))
            header, _ = decode_frame(await asyncio.wait_for(ws.recv(), 5))
            assert header["op"] == "hello", header
            conn.hello = header
            self.conns.append(conn)
            async for raw in ws:
                header, body = decode_frame(raw)
                conn.log.append((header, body))
                op = header["op"]
                if op == "reply":
                    conn.held.pop(header.get("task"), None)
                elif op == "drain":
                    conn.draining = True
                elif op in ("send", "push", "sub", "unsub", "close"):
                    result = self.on_call(header, body)
                    if result is not None:
                        await ws.send(encode_frame({"op": "result", "req": header["req"], **result}))
                await conn.frames.put((header, body))
                if conn.draining and not conn.held and self.auto_drained and not conn.drained_sent:
                    conn.drained_sent = True
                    await ws.send(encode_frame({"op": "drained"}))
        except ConnectionClosed:
            pass
        except Exception as exc:  # recorded for the test
            self.errors.append(exc)
        finally:
            if conn not in self.conns:
                self.conns.append(conn)
            rcvd = ws.protocol.close_rcvd
            if rcvd is not None:
                conn.close_code, conn.close_reason = rcvd.code, rcvd.reason
            conn.closed.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serve(
            self._handler, "127.0.0.1", 0, process_request=self._process_request, compression=None
        ) as server:
            self.port = list(server.sockets)[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # -- driving it from the test thread -----------------------------------

    def run(self, coro: Awaitable[Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def conn(self, index: int = 0, timeout: float = 5.0) -> PeerConn:
        """The ``index``-th worker connection, once its hello arrived."""
        deadline = time.monotonic() + timeout
        while len(self.conns) <= index:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker connection #{index + 1} never said hello")
            time.sleep(0.01)
        return self.conns[index]

    def task(self, conn: PeerConn, kind: str = "message", body: bytes = b"", **fields: Any) -> int:
        """Sends a task; returns its id. Defaults: identity, key, attempt 1, type 1, qos 1."""
        task = next(self.task_ids)
        header: Dict[str, Any] = {"op": "task", "task": task, "kind": kind, "identity": "ab" * 32, "key": f"k{task}", "attempt": 1}
        if kind == "message":
            header.update(type=1, qos=1, context=None)
        elif kind == "connect":
            header.update(headers={"user-agent": "test"}, params={}, remote="127.0.0.1:5555")
        elif kind == "close":
            header.update(context=None)
        header.update(fields)

        async def go() -> None:
            conn.held[task] = header
            await conn.ws.send(encode_frame(header, body))

        self.run(go())
        return task

    def send_raw(self, conn: PeerConn, data: Any) -> None:
        self.run(conn.ws.send(data))

    def drained(self, conn: PeerConn) -> None:
        async def go() -> None:
            conn.drained_sent = True
            await conn.ws.send(encode_frame({"op": "drained"}))

        self.run(go())

    def drop(self, conn: PeerConn, code: int = 1011, reason: str = "test drop") -> None:
        self.run(conn.ws.close(code, reason))

    def next(self, conn: PeerConn, op: Optional[str] = None, timeout: float = 5.0) -> Frame:
        """The next frame from the worker (of ``op``, skipping others)."""

        async def go() -> Frame:
            while True:
                header, body = await asyncio.wait_for(conn.frames.get(), timeout)
                if op is None or header["op"] == op:
                    return header, body

        return self.run(go(), timeout + 1)  # type: ignore[no-any-return]

    def replies(self, conn: PeerConn, count: int, timeout: float = 5.0) -> Dict[Any, Frame]:
        """``count`` replies, by task id."""
        out: Dict[Any, Frame] = {}
        while len(out) < count:
            header, body = self.next(conn, "reply", timeout)
            assert header["task"] not in out, f"task {header['task']} answered twice"
            out[header["task"]] = (header, body)
        return out

    def wait_closed(self, conn: PeerConn, timeout: float = 5.0) -> None:
        self.run(asyncio.wait_for(conn.closed.wait(), timeout), timeout + 1)
