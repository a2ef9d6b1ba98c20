"""The worker application: handlers, the connection to the gateway, API calls.

One :class:`Worker` per program. Each worker process holds one WebSocket to
the gateway's ``/worker/`` endpoint (docs/worker-protocol.md), driven by an
asyncio loop; handlers are plain functions run on a thread pool sized to
``credits``, the window of unanswered tasks the gateway allows this process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import logging
import os
import random
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Set, Tuple, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .._payload import encode_payload
from ..backend.signature import encode_query, sign, sign_v2, signature_version
from ..errors import ConnectionLost, TimeoutError
from .dedup import DedupStore
from .errors import Deny, EndpointMissing, HandshakeRefused, SignatureRefused, WorkerProtocolError
from .frame import VERSION, decode_frame, encode_frame
from .requests import REQUEST_CLASSES, ConnectRequest, MessageRequest, Reply, Request

__all__ = ["Worker", "worker_url", "MAX_CALLS", "MAX_CREDITS"]

log = logging.getLogger("rainbow.worker")

#: The most API calls a worker may have unanswered (docs/worker-protocol.md §6).
MAX_CALLS = 1024
#: The largest credit window (docs/worker-protocol.md §3).
MAX_CREDITS = 10000

Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)


def worker_url(
    url: str,
    token: str,
    name: Optional[str] = None,
    *,
    timestamp: Optional[int] = None,
    nonce: Optional[Any] = None,
    signature: str = "v2",
) -> str:
    """The signed handshake URL (docs/worker-protocol.md §1) for ``url``.

    ``url`` is the gateway's worker endpoint (``ws://host:port/worker/``); a
    bare ``ws://host:port`` gets ``/worker/`` and ``http(s)`` becomes ``ws(s)``.
    Signed like an API call (spec §7) with fresh ``timestamp`` and ``nonce``:
    v2 (a ``GET`` of this path and query with an empty body) unless
    ``signature="v1"``, for a gateway older than v2 signatures.
    """
    signature_version(signature)
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/worker/"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _SIGNED]
    if signature == "v1":
        signed = sign(token, timestamp, nonce)
        query += [("timestamp", str(signed["timestamp"])), ("nonce", str(signed["nonce"])), ("signature", signed["signature"])]
        if name:
            query.append(("name", name))
        return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))
    if name:
        query.append(("name", name))
    pairs = sign_v2(token, "GET", path, query, b"", timestamp, None if nonce is None else str(nonce))
    return urlunsplit((scheme, parts.netloc, path, encode_query(pairs), ""))


_SIGNED = frozenset({"timestamp", "nonce", "signature", "name"})


def _reason(text: str) -> str:
    """A WebSocket close reason: at most 123 bytes of UTF-8."""
    raw = text.encode("utf-8")[:123]
    return raw.decode("utf-8", "ignore")


def _handler_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


class _Conn:
    """One attached WebSocket and what belongs to it."""

    def __init__(self, ws: ClientConnection, welcome: Dict[str, Any], number: int) -> None:
        self.ws = ws
        self.number = number
        self.node = welcome.get("node")
        self.worker_id = welcome.get("worker")
        self.calls: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self.running = 0  # tasks of this connection being handled (threads busy)
        self.unanswered = 0  # tasks of this connection not answered yet (the gateway's count)
        self.window = 0  # the credit window the gateway was last told
        self.credit_pending = False
        self.draining = False
        self.drained = False
        self.closed = False
        self.drain_timer: Optional[asyncio.TimerHandle] = None
        self.closer: "Optional[asyncio.Future[None]]" = None
        self.over_window_warned = False

    async def send(self, header: Dict[str, Any], body: bytes = b"") -> None:
        await self.ws.send(encode_frame(header, body))


class _Runtime:
    """The connection loop of one worker process (or one :meth:`Worker.start`)."""

    def __init__(
        self,
        app: "Worker",
        *,
        foreground: bool,
        raise_first: bool,
        ready_fd: Optional[int] = None,
        parent_pid: Optional[int] = None,
    ) -> None:
        self.app = app
        self.foreground = foreground
        self.raise_first = raise_first
        self.ready_fd = ready_fd
        self.parent_pid = parent_pid
        self.credits = app.credits
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, app.credits), thread_name_prefix="rainbow-worker"
        )
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.loop_thread: Optional[int] = None
        self.conn: Optional[_Conn] = None
        self.busy = 0  # tasks being handled, all connections
        self.stopping = False
        self.first = threading.Event()  # first attach, or first failure with raise_first
        self.first_error: Optional[BaseException] = None
        self.stopped = threading.Event()
        self.call_slots = threading.BoundedSemaphore(MAX_CALLS)
        self.req_ids = itertools.count(1)
        self.connections = 0
        self.attached: Optional[asyncio.Event] = None
        self.wake: Optional[asyncio.Event] = None

    # -- the loop ----------------------------------------------------------

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.attached = asyncio.Event()
        self.wake = asyncio.Event()
        watchers = []
        if self.foreground:
            self._install_signals()
        if self.parent_pid:
            watchers.append(asyncio.ensure_future(self._watch_parent()))
        failures = 0
        try:
            while not self.stopping:
                try:
                    conn = await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure to attach is retried
                    failures += 1
                    if self.raise_first and not self.first.is_set():
                        self.first_error = exc
                        self.first.set()
                        return
                    delay = self._backoff(failures)
                    self._log_open_failure(exc, delay)
                else:
                    failures = 0
                    await self._session(conn)
                    if self.stopping:
                        break
                    delay = self._backoff(1)
                    log.info("reconnecting to %s in %.1f s", self.app.url, delay)
                try:
                    await asyncio.wait_for(self.wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            for watcher in watchers:
                watcher.cancel()
            await self._finish()

    def _backoff(self, failures: int) -> float:
        base, cap = self.app.backoff
        return float(min(cap, base * (2 ** min(failures - 1, 30))) * random.uniform(0.5, 1.0))

    def _log_open_failure(self, exc: BaseException, delay: float) -> None:
        if isinstance(exc, (SignatureRefused, EndpointMissing, WorkerProtocolError)):
            log.error("cannot attach to %s: %s; retrying in %.1f s", self.app.url, exc, delay)
        else:
            log.warning("cannot attach to %s: %s; retrying in %.1f s", self.app.url, exc or type(exc).__name__, delay)

    def _install_signals(self) -> None:
        assert self.loop is not None
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._on_stop_signal, sig)
        if hasattr(signal, "SIGHUP"):
            # The supervisor handles HUP (graceful restart); one process alone cannot restart itself.
            self.loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, sig: int) -> None:
        log.info("worker pid %d: %s, draining", os.getpid(), signal.Signals(sig).name)
        self.request_stop(drain=True)

    def _on_hup(self) -> None:
        # Under Worker.run() the supervisor handles HUP (new workers attach
        # before the old ones drain); a HUP sent to the whole process group
        # must not make every worker drain at once. Alone, HUP drains like TERM.
        if self.parent_pid is None:
            self._on_stop_signal(signal.SIGHUP)

    async def _watch_parent(self) -> None:
        while not self.stopping:
            await asyncio.sleep(1.0)
            if os.getppid() != self.parent_pid:
                log.warning("worker pid %d: the supervisor (pid %s) is gone, draining", os.getpid(), self.parent_pid)
                self.request_stop(drain=True)

    async def _open(self) -> _Conn:
        app = self.app
        url = worker_url(app.url, app.token, app.name, signature=app.signature)
        kwargs: Dict[str, Any] = {
            "open_timeout": app.open_timeout,
            "max_size": app.max_frame,
            "compression": None,
            "ping_interval": app.ping_interval,
            "ping_timeout": app.ping_interval,
            "close_timeout": 5,
        }
        if "proxy" in inspect.signature(ws_connect.__init__).parameters:
            kwargs["proxy"] = None  # the gateway is reached directly
        try:
            ws = await ws_connect(url, **kwargs)
        except InvalidStatus as exc:
            rsp = exc.response
            body = bytes(rsp.body or b"")
            if rsp.status_code == 401:
                raise SignatureRefused(401, rsp.reason_phrase, body) from None
            if rsp.status_code == 404:
                raise EndpointMissing(404, rsp.reason_phrase, body) from None
            raise HandshakeRefused(rsp.status_code, rsp.reason_phrase, body) from None
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
            raise ConnectionLost(f"could not reach the gateway: {exc or type(exc).__name__}") from exc
        try:
            try:
                first = await asyncio.wait_for(ws.recv(), app.open_timeout)
            except asyncio.TimeoutError:
                raise WorkerProtocolError(f"no welcome within {app.open_timeout:g} s") from None
            header, _ = decode_frame(first, app.max_frame or 0)
            if header["op"] != "welcome":
                raise WorkerProtocolError(f"expected a welcome frame, got op {header['op']!r}")
            if header.get("version") != VERSION:
                raise WorkerProtocolError(
                    f"the gateway speaks worker protocol version {header.get('version')!r}, this SDK speaks {VERSION}"
                )
            self.connections += 1
            conn = _Conn(ws, header, self.connections)
            conn.window = self._desired_window(conn)
            await conn.send({"op": "hello", "version": VERSION, "credits": conn.window})
        except WorkerProtocolError as exc:
            await ws.close(exc.close_code, _reason(str(exc)))
            raise
        except BaseException:
            await ws.close()
            raise
        self.conn = conn
        assert self.attached is not None
        self.attached.set()
        log.info(
            "worker pid %d attached to %s (node %s, worker %s, credits %d)",
            os.getpid(),
            app.url,
            conn.node,
            conn.worker_id,
            conn.window,
        )
        if not self.first.is_set():
            self.first.set()
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, b"R")
                os.close(self.ready_fd)
            except OSError:
                pass
            self.ready_fd = None
        return conn

    async def _session(self, conn: _Conn) -> None:
        if self.stopping:
            await self._begin_drain(conn)
        try:
            async for raw in conn.ws:
                try:
                    self._on_frame(conn, raw)
                except WorkerProtocolError as exc:
                    log.error("protocol error from the gateway: %s; closing with %d", exc, exc.close_code)
                    await conn.ws.close(exc.close_code, _reason(str(exc)))
                    break
                if conn.drained and conn.closer is None:
                    # Handlers may still be calling the API after their reply:
                    # keep reading (their results) until they are done.
                    conn.closer = asyncio.ensure_future(self._close_when_idle(conn))
        except ConnectionClosed:
            pass
        finally:
            self._lost(conn)
        rcvd = conn.ws.protocol.close_rcvd
        code, why = (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")
        if conn.drained:
            log.info("worker pid %d drained and detached from %s", os.getpid(), self.app.url)
        elif code in (1002, 1003, 1007, 1008, 1009):
            log.error("the gateway closed this worker for a protocol error: %s %s", code, why)
        elif not self.stopping:
            log.warning(
                "lost the connection to %s (%s%s)", self.app.url, code if code else "no close frame", f" {why}" if why else ""
            )

    async def _close_when_idle(self, conn: _Conn) -> None:
        deadline = time.monotonic() + self.app.drain_timeout
        while (conn.running or conn.calls) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await conn.ws.close(1000, "drained")

    def _on_frame(self, conn: _Conn, raw: Any) -> None:
        header, body = decode_frame(raw, self.app.max_frame or 0)
        op = header["op"]
        if op == "task":
            self._on_task(conn, header, body)
        elif op == "result":
            req = header.get("req")
            future = conn.calls.pop(req, None) if isinstance(req, int) else None
            if future is None or future.done():
                log.debug("result for an unknown or abandoned call %r", req)
                return
            future.set_result({k: v for k, v in header.items() if k not in ("op", "req")})
        elif op == "drained":
            if not conn.draining:
                log.warning("the gateway sent 'drained' without a drain")
            conn.drained = True
        elif op == "welcome":
            raise WorkerProtocolError("a second welcome frame")
        else:
            raise WorkerProtocolError(f"unknown op {op!r}")

    def _on_task(self, conn: _Conn, header: Dict[str, Any], body: bytes) -> None:
        if header.get("task") is None:
            raise WorkerProtocolError("a task frame without a task id")
        conn.running += 1
        conn.unanswered += 1
        self.busy += 1
        if conn.unanswered > conn.window and not conn.over_window_warned:
            conn.over_window_warned = True
            log.warning(
                "the gateway sent %d unanswered tasks with a credit window of %d; extra tasks wait for a thread",
                conn.unanswered,
                conn.window,
            )
        try:
            self.executor.submit(self._run_task, conn, header, body)
        except RuntimeError:  # executor shut down: the process is exiting
            conn.running -= 1
            self.busy -= 1

    def _run_task(self, conn: _Conn, header: Dict[str, Any], body: bytes) -> None:
        task = header.get("task")
        try:
            self.app._dispatch(header, body, lambda reply: self._send_reply(conn, task, reply))
        except BaseException:  # noqa: BLE001 - _dispatch already answers; this is a last resort
            log.exception("task %r: dispatch failed", task)
        finally:
            try:
                assert self.loop is not None
                self.loop.call_soon_threadsafe(self._task_done, conn)
            except RuntimeError:  # loop closed
                pass

    def _send_reply(self, conn: _Conn, task: Any, reply: Reply) -> None:
        if conn.closed:
            log.info("task %r: not answered, its connection ended (the gateway delivers it again)", task)
            return
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(self._write_reply(conn, task, reply), self.loop)
        try:
            future.result(self.app.call_timeout)
        except Exception as exc:  # noqa: BLE001
            log.info("task %r: reply not sent (%s); the gateway delivers it again", task, exc or type(exc).__name__)

    async def _write_reply(self, conn: _Conn, task: Any, reply: Reply) -> None:
        # Counted before the frame is written: the gateway's next task can only come after it.
        conn.unanswered -= 1
        await conn.send(reply.header(task), reply.body)

    def _task_done(self, conn: _Conn) -> None:
        conn.running -= 1
        self.busy -= 1
        self._sync_window()

    # -- credits -----------------------------------------------------------

    def _desired_window(self, conn: _Conn) -> int:
        """``credits`` minus the tasks still running for connections that
        ended: the threads they hold are not free for this connection."""
        return max(0, self.credits - (self.busy - conn.running))

    def _sync_window(self) -> None:
        conn = self.conn
        if conn is None or conn.closed or conn.draining:
            return
        desired = self._desired_window(conn)
        if desired != conn.window:
            conn.window = desired
            if not conn.credit_pending:
                conn.credit_pending = True
                asyncio.ensure_future(self._flush_credit(conn))

    async def _flush_credit(self, conn: _Conn) -> None:
        conn.credit_pending = False
        if conn.closed:
            return
        try:
            await conn.send({"op": "credit", "credits": conn.window})
        except ConnectionClosed:
            pass

    def set_credits(self, credits: int) -> None:
        self.credits = credits
        self._sync_window()

    # -- stopping ----------------------------------------------------------

    def request_stop(self, drain: bool = True) -> None:
        if self.stopping:
            return
        self.stopping = True
        assert self.wake is not None
        self.wake.set()
        conn = self.conn
        if conn is not None and not conn.closed:
            if drain:
                asyncio.ensure_future(self._begin_drain(conn))
            else:
                asyncio.ensure_future(conn.ws.close(1001, "worker stopping"))

    async def _begin_drain(self, conn: _Conn) -> None:
        if conn.draining or conn.closed:
            return
        conn.draining = True
        log.info("worker pid %d draining (%d task(s) in hand)", os.getpid(), conn.running)
        try:
            await conn.send({"op": "drain"})
        except ConnectionClosed:
            return
        assert self.loop is not None
        conn.drain_timer = self.loop.call_later(
            self.app.drain_timeout, lambda: asyncio.ensure_future(self._drain_expired(conn))
        )

    async def _drain_expired(self, conn: _Conn) -> None:
        if conn.closed or conn.drained:
            return
        log.warning(
            "no 'drained' from the gateway within %g s (%d task(s) in hand); closing anyway",
            self.app.drain_timeout,
            conn.running,
        )
        await conn.ws.close(1001, "drain timeout")

    def _lost(self, conn: _Conn) -> None:
        conn.closed = True
        if conn.drain_timer is not None:
            conn.drain_timer.cancel()
        if self.conn is conn:
            self.conn = None
            assert self.attached is not None
            self.attached.clear()
        for future in conn.calls.values():
            if not future.done():
                future.set_exception(
                    ConnectionLost("the connection to the gateway ended before the answer (the call may have run)")
                )
        conn.calls.clear()

    async def _finish(self) -> None:
        deadline = time.monotonic() + self.app.drain_timeout
        if self.busy:
            log.info("waiting for %d running handler(s)", self.busy)
        while self.busy > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.busy:
            log.warning("%d handler(s) still running at exit", self.busy)
        self.executor.shutdown(wait=False)
        if self.ready_fd is not None:
            try:
                os.close(self.ready_fd)
            except OSError:
                pass
            self.ready_fd = None
        self.first.set()

    # -- API calls ---------------------------------------------------------

    def call(self, op: str, fields: Dict[str, Any], body: bytes, wait: float) -> Dict[str, Any]:
        if self.stopped.is_set() or self.loop is None:
            raise ConnectionLost("the worker is not running (start it with start(), serve() or run())")
        if threading.get_ident() == self.loop_thread:
            raise RuntimeError("a blocking API call from the worker's event loop thread would deadlock")
        deadline = time.monotonic() + wait
        if not self.call_slots.acquire(timeout=wait):
            raise TimeoutError(f"{MAX_CALLS} API calls unanswered for {wait:g} s")
        try:
            future = asyncio.run_coroutine_threadsafe(self._acall(op, fields, body, deadline), self.loop)
            try:
                return future.result(max(0.0, deadline - time.monotonic()) + 1.0)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise TimeoutError(f"no answer to the {op!r} call within {wait:g} s") from None
        finally:
            self.call_slots.release()

    async def _acall(self, op: str, fields: Dict[str, Any], body: bytes, deadline: float) -> Dict[str, Any]:
        assert self.attached is not None
        conn = self.conn
        if conn is None or conn.closed:
            if self.stopping:
                raise ConnectionLost("the worker is stopping and no longer attached")
            try:
                await asyncio.wait_for(self.attached.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ConnectionLost(f"not attached to the gateway; the {op!r} call was not sent") from None
            conn = self.conn
            if conn is None:
                raise ConnectionLost(f"not attached to the gateway; the {op!r} call was not sent")
        req = next(self.req_ids)
        future: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        conn.calls[req] = future
        try:
            try:
                await conn.send({"op": op, "req": req, **fields}, body)
            except ConnectionClosed:
                raise ConnectionLost(f"the connection to the gateway ended; the {op!r} call was not sent") from None
            try:
                return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise TimeoutError(f"no answer to the {op!r} call (req {req}) in time") from None
        finally:
            conn.calls.pop(req, None)


class Worker:
    """A Rainbow worker: attaches to the gateway and pulls tasks (maple style).

    ::

        app = Worker("ws://127.0.0.1:1984/worker/", token="qwe123", credits=4, name="chat")

        @app.route(1)
        def hello(request):
            request.reply({"ok": True})

        app.run(workers=2)

    - ``credits``: unanswered tasks the gateway may give each worker process
      (0..10000); handlers run on that many threads.
    - ``dedup``: an optional :class:`~rainbow.worker.DedupStore` answering a
      redelivered task with the reply remembered for its key.
    - ``call_timeout``: seconds to wait for an API answer (``sub``, ``unsub``,
      ``disconnect``; ``push`` waits its own ``timeout`` plus 5 s) and for a
      reply to be written.
    - ``drain_timeout``: how long a drain may take before the worker closes anyway.
    - ``backoff``: ``(first, most)`` seconds between reconnection attempts
      (doubling, with jitter).
    - ``signature``: how the handshake is signed, ``"v2"`` (the default) or
      ``"v1"`` for a gateway older than v2 signatures.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        credits: int = 4,
        name: Optional[str] = None,
        dedup: Optional[DedupStore] = None,
        call_timeout: float = 10.0,
        drain_timeout: float = 60.0,
        open_timeout: float = 10.0,
        ping_interval: Optional[float] = 20.0,
        backoff: Tuple[float, float] = (0.5, 30.0),
        max_frame: Optional[int] = 64 * 1024 * 1024,
        signature: str = "v2",
    ) -> None:
        if not token:
            raise ValueError("token (the gateway's security_token) is required")
        if not 0 <= int(credits) <= MAX_CREDITS:
            raise ValueError(f"credits must be 0..{MAX_CREDITS}, got {credits}")
        if name is not None and len(name.encode("utf-8")) > 64:
            raise ValueError("name is limited to 64 bytes")
        worker_url(url, token, name, signature=signature)  # validates the URL and the version
        self.url = url
        self.token = token
        self.signature = signature
        self.credits = int(credits)
        self.name = name
        self.dedup = dedup
        self.call_timeout = call_timeout
        self.drain_timeout = drain_timeout
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.backoff = backoff
        self.max_frame = max_frame
        self._routes: Dict[int, Handler] = {}
        self._on_connect: Optional[Handler] = None
        self._on_close: Optional[Handler] = None
        self._missing_logged: Set[int] = set()
        self._keys: Dict[str, threading.Event] = {}  # keys of tasks being handled in this process
        self._lock = threading.Lock()
        self._rt: Optional[_Runtime] = None
        self._thread: Optional[threading.Thread] = None

    # -- registration ------------------------------------------------------

    @staticmethod
    def _check(func: Any) -> None:
        if not callable(func):
            raise TypeError(f"a handler must be callable, got {func!r}")
        if inspect.iscoroutinefunction(func):
            raise TypeError(f"{_handler_name(func)} is async: worker handlers are plain functions (they run in threads)")

    def connect(self, func: H) -> H:
        """Registers the connect handler (without one, every client is accepted)."""
        self._check(func)
        self._on_connect = func
        return func

    def close(self, func: H) -> H:
        """Registers the close handler (without one, close tasks are acknowledged)."""
        self._check(func)
        self._on_close = func
        return func

    def route(self, *msg_types: int) -> Callable[[H], H]:
        """Registers a handler for client messages of these types (0..65535)."""
        if not msg_types:
            raise TypeError("route() needs at least one message type")
        for t in msg_types:
            if not isinstance(t, int) or not 0 <= t <= 65535:
                raise ValueError(f"message types are 0..65535, got {t!r}")

        def register(func: H) -> H:
            self._check(func)
            for t in msg_types:
                self._routes[t] = func
            return func

        return register

    # -- dispatch (runs on handler threads) --------------------------------

    def _dispatch(self, header: Dict[str, Any], body: bytes, send: Callable[[Reply], None]) -> None:
        """Handles one task and sends exactly one reply through ``send``."""
        kind = header.get("kind")
        cls = REQUEST_CLASSES.get(kind)  # type: ignore[arg-type]
        if cls is None:
            log.error("task %r has an unknown kind %r", header.get("task"), kind)
            send(Reply(error=f"unknown task kind {kind!r}"))
            return
        key = header.get("key")
        store = self.dedup

        def deliver(reply: Reply) -> None:
            if store is not None and key and reply.error is None:
                try:
                    store.put(str(key), reply)
                except Exception:  # noqa: BLE001 - the reply matters more than the memory of it
                    log.exception("dedup store: could not remember key %r", key)
            send(reply)

        request: Request = cls(self, header, body, deliver)
        mine = self._claim_key(request.key)
        try:
            if store is not None and request.attempt > 1 and request.key:
                try:
                    known = store.get(request.key)
                except Exception:  # noqa: BLE001
                    log.exception("dedup store: could not look up key %r", request.key)
                    known = None
                if known is not None:
                    log.info(
                        "task %r (%s, key %s, attempt %d) was handled before: answering the remembered reply",
                        request.task,
                        request.kind,
                        request.key,
                        request.attempt,
                    )
                    with request._lock:
                        request._reply = known
                    send(known)
                    return
            self._run_handler(request)
        finally:
            if not request.replied:  # a BaseException escaped the handler
                request._finish(Reply(error="the handler did not complete"))
            if mine is not None:
                with self._lock:
                    self._keys.pop(request.key, None)
                mine.set()

    def _claim_key(self, key: str) -> Optional[threading.Event]:
        """Runs tasks with the same key one at a time in this process: a task
        redelivered while its first delivery still runs here (the connection
        dropped, the handler did not) waits for it, then finds its reply in
        the dedup store."""
        if not key:
            return None
        while True:
            with self._lock:
                running = self._keys.get(key)
                if running is None:
                    mine = self._keys[key] = threading.Event()
                    return mine
            running.wait()

    def _run_handler(self, request: Request) -> None:
        handler: Optional[Handler]
        if isinstance(request, MessageRequest):
            handler = self._routes.get(request.type)
            if handler is None:
                with self._lock:
                    first = request.type not in self._missing_logged
                    self._missing_logged.add(request.type)
                if first:
                    log.error("no handler for message type %d (answering an error; logged once per type)", request.type)
                request._finish(Reply(error=f"no handler for message type {request.type}"))
                return
        elif isinstance(request, ConnectRequest):
            handler = self._on_connect
        else:
            handler = self._on_close
        result: Any = None
        if handler is not None:
            try:
                result = handler(request)
            except Deny:
                result = False
            except Exception as exc:  # noqa: BLE001 - every failure is answered
                if request.replied:
                    log.exception("%s raised after answering task %r", _handler_name(handler), request.task)
                    return
                log.exception("%s failed on %r", _handler_name(handler), request)
                request._finish(Reply(error=f"{type(exc).__name__}: {exc}"[:500]))
                return
        if request.replied:
            return
        if isinstance(request, ConnectRequest):
            if isinstance(result, Reply):
                if result.accept is None:
                    result.accept = True
                request._finish(result)
            else:
                request._finish(Reply(accept=result is not False))
        elif isinstance(request, MessageRequest):
            request._finish(result if isinstance(result, Reply) else Reply(body=encode_payload(result)))
        else:
            request._finish(Reply())

    # -- lifecycle ---------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether this process is attached to the gateway right now."""
        rt = self._rt
        return rt is not None and rt.conn is not None and not rt.conn.closed

    def start(self, timeout: float = 10.0) -> "Worker":
        """Runs the worker on a background thread of this process and returns
        once attached. Raises the first failure (:class:`SignatureRefused`,
        :class:`EndpointMissing`, :class:`rainbow.ConnectionLost`...) instead
        of retrying it; after that, connections lost are re-established.
        Also the way to make API calls from a script that handles no tasks
        (``credits=0``)."""
        if self._rt is not None and not self._rt.stopped.is_set():
            raise RuntimeError("this worker is already running")
        rt = _Runtime(self, foreground=False, raise_first=True)
        self._rt = rt
        thread = threading.Thread(target=self._thread_main, args=(rt,), name="rainbow-worker-loop", daemon=True)
        self._thread = thread
        thread.start()
        if not rt.first.wait(timeout):
            self.stop(drain=False)
            raise TimeoutError(f"not attached to {self.url} within {timeout:g} s")
        if rt.first_error is not None:
            thread.join(timeout)
            raise rt.first_error
        return self

    def _thread_main(self, rt: _Runtime) -> None:
        try:
            asyncio.run(rt.main())
        except BaseException:  # noqa: BLE001
            log.exception("the worker loop failed")
        finally:
            rt.stopped.set()
            rt.first.set()

    def stop(self, drain: bool = True, timeout: Optional[float] = None) -> None:
        """Stops a worker started with :meth:`start`: drains (in-flight tasks
        are answered, ``drained`` awaited) unless ``drain=False``, then closes."""
        rt, thread = self._rt, self._thread
        if rt is None or thread is None:
            return
        loop = rt.loop
        if loop is not None and not rt.stopped.is_set():
            try:
                loop.call_soon_threadsafe(rt.request_stop, drain)
            except RuntimeError:
                pass
        thread.join(self.drain_timeout + 10 if timeout is None else timeout)

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def serve(self) -> None:
        """Runs this process as one worker until SIGTERM, SIGINT or SIGHUP, then
        drains and returns. Connections lost are re-established with backoff."""
        self._serve()

    def _serve(self, ready_fd: Optional[int] = None, parent_pid: Optional[int] = None) -> None:
        rt = _Runtime(self, foreground=True, raise_first=False, ready_fd=ready_fd, parent_pid=parent_pid)
        self._rt = rt
        try:
            asyncio.run(rt.main())
        finally:
            rt.stopped.set()

    def run(self, workers: int = 1, *, reexec: Optional[bool] = None, stop_timeout: Optional[float] = None) -> None:
        """Runs a supervisor and ``workers`` worker processes until SIGTERM/SIGINT.

        - SIGTERM/SIGINT: every worker drains and exits; then the supervisor exits 0.
        - SIGHUP: graceful restart: fresh workers start, and the old ones are
          drained once the new ones are attached, so some worker is always attached.
        - A worker that dies is restarted, with backoff when it keeps dying.

        With ``reexec`` (the default when the program is a script or ``-m``
        module), each worker process runs the program again from the start,
        so a SIGHUP picks up new code; otherwise workers are forked from the
        supervisor. Raises ``SystemExit`` with a non-zero status when a worker
        had to be killed at stop.
        """
        from .supervisor import run_supervisor

        run_supervisor(self, workers, reexec=reexec, stop_timeout=stop_timeout)

    # -- API calls (from handlers or any thread but the loop's) ------------

    def _call(self, op: str, fields: Dict[str, Any], body: bytes = b"", wait: Optional[float] = None) -> Dict[str, Any]:
        rt = self._rt
        if rt is None:
            raise ConnectionLost("the worker is not running (start it with start(), serve() or run())")
        return rt.call(op, fields, body, self.call_timeout if wait is None else wait)

    def push(
        self,
        data: Any = None,
        *,
        channel: Optional[str] = None,
        identity: Optional[str] = None,
        msg_type: int = 1,
        qos: int = 2,
        timeout: float = 10.0,
    ) -> Dict[str, Any]:
        """Sends ``data`` (bytes as they are, anything else as JSON) to every
        connection subscribed to ``channel`` (the ``send`` call), or to the
        connection ``identity`` (``push``). Returns the gateway's answer, e.g.
        ``{"status": 0, "connections": 2, "data": ""}``; qos 1/2 wait up to
        ``timeout`` s for the receivers' ACK/REC."""
        if (channel is None) == (identity is None):
            raise ValueError("push() needs exactly one of channel= or identity=")
        fields: Dict[str, Any] = {"type": int(msg_type), "qos": int(qos), "timeout": timeout}
        if channel is not None:
            op, fields["channel"] = "send", channel
        else:
            op, fields["identity"] = "push", identity
        return self._call(op, fields, encode_payload(data), wait=timeout + 5.0)

    def sub(self, identity: str, channel: str, occupy: bool = False) -> Dict[str, Any]:
        """Subscribes connection ``identity`` to ``channel`` (``occupy``: remove its other subscribers)."""
        return self._call("sub", {"identity": identity, "channel": channel, "occupy": bool(occupy)})

    def unsub(self, identity: str, channel: str) -> Dict[str, Any]:
        """Unsubscribes connection ``identity`` from ``channel``."""
        return self._call("unsub", {"identity": identity, "channel": channel})

    def disconnect(self, identity: str, reason: Optional[str] = None) -> Dict[str, Any]:
        """Closes client connection ``identity`` (WebSocket 1000 with ``reason``); its close task follows."""
        fields: Dict[str, Any] = {"identity": identity}
        if reason is not None:
            fields["reason"] = reason
        return self._call("close", fields)

    def set_credits(self, credits: int) -> None:
        """Changes this process's window (0 pauses it), up to the ``credits`` it started with."""
        if not 0 <= credits <= self.credits:
            raise ValueError(f"credits must be 0..{self.credits} (the thread pool's size)")
        rt = self._rt
        if rt is None or rt.loop is None:
            raise ConnectionLost("the worker is not running")
        rt.loop.call_soon_threadsafe(rt.set_credits, credits)


def _child_main(app: Worker, ready_fd: int, parent_pid: int) -> int:
    """Body of a worker process under the supervisor; returns its exit status."""
    try:
        app._serve(ready_fd=ready_fd, parent_pid=parent_pid)
        return 0
    except BaseException:  # noqa: BLE001
        log.exception("worker pid %d failed", os.getpid())
        return 1
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
