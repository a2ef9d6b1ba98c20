"""The asyncio client: one long WebSocket connection to a Rainbow gateway.

:class:`AsyncClient` drives the sans-IO state machines of
:mod:`rainbow.protocol` over a ``websockets`` connection:

- ``await client.send(type, data, qos=1)`` returns ``(type, reply)`` once the
  gateway's ACK/REC arrives (v1 replies carry no type, so the request's type
  is returned); unanswered sends are retransmitted with DUP every
  ``retransmit_interval`` seconds until their timeout, then raise
  :class:`rainbow.TimeoutError`.
- Messages the gateway pushes go to the ``on_message`` handler, or to
  ``async for msg in client`` / ``await client.receive()``. qos 1/2 are
  answered automatically (the handler's return value is the reply, JSON
  encoded), and a qos-2 duplicate that arrives before its REL is not delivered
  twice.
- A lost connection is re-established with exponential backoff (a new
  connection gets a new identity from the gateway; ``on_connect`` runs after
  each connect so the application can restore its state). Sends still waiting
  for an answer fail with :class:`rainbow.ConnectionLost`: their message ids
  meant nothing on the new connection.

Everything that waits is bounded: the inbox (``max_queue``), sends in flight
(``max_in_flight``), the qos-2 window (``max_unreleased``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Set, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ._payload import decode_payload, encode_payload
from .errors import ClientClosed, ConnectionLost, ConnectionRefused, RainbowError, TimeoutError
from .protocol import (
    Ack,
    Com,
    DecodeError,
    Expired,
    Inbound,
    Outbound,
    Packet,
    Qos,
    Rec,
    Rel,
    Retransmit,
    Send,
    WindowFull,
    decode,
    encode,
)

__all__ = ["AsyncClient", "Message", "MessageHandler", "SendCallback"]

log = logging.getLogger("rainbow.client")

#: ``on_message(msg_type, data)``; its return value (maybe awaited) is the reply.
MessageHandler = Callable[[int, Any], Any]
#: ``callback(rsp_type, content)`` on success, ``callback(exception)`` on failure.
SendCallback = Callable[..., Any]


@dataclass(frozen=True)
class Message:
    """A message the gateway pushed to this client."""

    #: The message type (the "URL" of the message).
    type: int
    #: The payload: JSON decoded, ``bytes`` if it is not JSON, ``None`` if empty.
    data: Any
    #: The delivery guarantee the sender asked for.
    qos: Qos = Qos.AT_MOST_ONCE
    #: The payload exactly as received.
    raw: bytes = b""
    #: Whether the gateway marked this as a retransmission.
    dup: bool = False
    #: The gateway's message id (0 for qos 0).
    id: int = 0


@dataclass(eq=False)
class _Pending:
    """The tag an :class:`Outbound` entry carries: who waits for the answer."""

    future: "asyncio.Future[bytes]"
    msg_type: int
    qos: Qos
    timeout: float


@dataclass(eq=False)
class _Connection:
    """One WebSocket connection and its per-connection QoS state."""

    ws: ClientConnection
    outbound: "Outbound[_Pending]"
    inbound: Inbound
    number: int
    lost: Optional[BaseException] = None

    async def write(self, packet: Packet) -> None:
        await self.ws.send(encode(packet))


def _accepts_kw(func: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


class AsyncClient:
    """An asyncio client of a Rainbow gateway.

    Use it as ``async with AsyncClient(url, device_id=..., os=...) as client:``
    or call :meth:`connect` and :meth:`close` yourself.

    :param url: ``ws://host:port`` (the path defaults to ``/connect/``).
    :param device_id: sent as ``X-DEVICEID``; a random id if omitted.
    :param os: sent as ``X-CLIENT-OS``.
    :param params: extra query parameters, passed to the backend's connect hook.
    :param headers: ``True`` sends device id and os as headers, ``False`` as
        query parameters (for peers that cannot set headers).
    :param extra_headers: more request headers (the gateway forwards them to
        the connect hook, e.g. an auth token).
    :param on_message: ``handler(msg_type, data)``, plain or ``async``; its
        return value is the reply to a qos 1/2 message. Without a handler,
        iterate over the client instead.
    :param on_connect: ``callback()`` (plain or ``async``) run after every
        successful (re)connect, as a separate task.
    :param reconnect: reconnect with backoff when the connection is lost.
    :param backoff: ``(first, max)`` seconds between reconnect attempts.
    :param retransmit_interval: seconds between DUP retransmissions (3 s, as
        the original server).
    :param max_in_flight: qos 1/2 sends awaiting an answer at once (more wait).
    :param max_queue: pushed messages waiting for the handler or ``receive()``;
        beyond it qos-0 messages are dropped and qos 1/2 left unanswered (the
        gateway retransmits them).
    :param max_pending: unfinished :meth:`send_async` calls.
    """

    def __init__(
        self,
        url: str,
        device_id: Optional[str] = None,
        os: str = "python",
        params: Optional[Mapping[str, Any]] = None,
        headers: bool = True,
        *,
        extra_headers: Optional[Mapping[str, str]] = None,
        on_message: Optional[MessageHandler] = None,
        on_connect: Optional[Callable[[], Any]] = None,
        reconnect: bool = True,
        backoff: Tuple[float, float] = (0.5, 30.0),
        retransmit_interval: float = 3.0,
        open_timeout: float = 10.0,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = 20.0,
        max_in_flight: int = 256,
        max_unreleased: int = 128,
        max_queue: int = 1024,
        max_pending: int = 1024,
        max_size: int = 1 << 20,
        decode_json: bool = True,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.url = url
        self.device_id = device_id or uuid.uuid4().hex
        self.os = os
        self.params: Dict[str, str] = {k: str(v) for k, v in (params or {}).items()}
        self.headers_mode = bool(headers)
        self.extra_headers: Dict[str, str] = dict(extra_headers or {})
        self.reconnect = reconnect
        self.backoff = backoff
        self.retransmit_interval = retransmit_interval
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_in_flight = max_in_flight
        self.max_unreleased = max_unreleased
        self.max_queue = max_queue
        self.max_pending = max_pending
        self._pending = 0
        self.max_size = max_size
        self.decode_json = decode_json
        self._on_message = on_message
        self._on_connect = on_connect

        # Event-loop objects are created in connect(), on the loop that runs us
        # (asyncio primitives bind to a loop on Python 3.9).
        self._conn: Optional[_Connection] = None
        self._connections = 0
        self._started = False
        self._closing = False
        self._fatal: Optional[BaseException] = None
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._incoming: "Optional[asyncio.Queue[Tuple[_Connection, Message]]]" = None
        self._connected: Optional[asyncio.Event] = None
        self._stopped: Optional[asyncio.Event] = None
        self._timer_wake: Optional[asyncio.Event] = None
        self._capacity: Optional[asyncio.Event] = None
        self._connect_task: "Optional[asyncio.Task[Any]]" = None

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """Whether a connection to the gateway is up right now."""
        return self._conn is not None

    @property
    def closed(self) -> bool:
        """Whether the client was closed or gave up for good."""
        return self._closing or self._fatal is not None

    @property
    def connection_url(self) -> str:
        """The URL the WebSocket handshake goes to."""
        parts = urlsplit(self.url)
        path = parts.path if parts.path not in ("", "/") else "/connect/"
        query = parse_qsl(parts.query, keep_blank_values=True)
        query.extend(self.params.items())
        if not self.headers_mode:
            query.extend([("X-DEVICEID", self.device_id), ("X-CLIENT-OS", self.os)])
        return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))

    # ------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def connect(self) -> None:
        """Opens the connection; raises :class:`ConnectionRefused` if the
        gateway refuses (401: the backend denied, 503: backend down or gateway
        full) and :class:`ConnectionLost` if it cannot be reached."""
        if self._closing:
            raise ClientClosed("this client was closed; create a new one")
        if self._started:
            return
        self._incoming = asyncio.Queue(self.max_queue)
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()
        self._timer_wake = asyncio.Event()
        self._capacity = asyncio.Event()
        conn = await self._open()
        self._started = True
        self._install(conn)
        self._spawn(self._supervise(conn), "supervisor")
        self._spawn(self._timer(), "timer")
        if self._on_message is not None:
            self._spawn(self._dispatch(), "dispatcher")

    async def close(self) -> None:
        """Closes the connection and stops reconnecting. Sends still waiting
        for an answer fail with :class:`ClientClosed`. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if not self._started:
            return
        assert self._stopped is not None and self._connected is not None
        self._stopped.set()
        self._connected.set()
        conn = self._conn
        if conn is not None:
            self._uninstall(conn, ClientClosed("the client was closed"))
            try:
                await conn.ws.close(1000, "client closing")
            except (ConnectionClosed, OSError) as exc:
                log.debug("closing the websocket failed: %s", exc)
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    # ---------------------------------------------------------------- sending

    async def send(
        self, msg_type: int, data: Any = None, qos: int = 1, timeout: float = 10.0
    ) -> Tuple[int, Any]:
        """Sends a message and returns ``(rsp_type, content)``.

        qos 0 returns ``(msg_type, None)`` once written. qos 1/2 wait for the
        gateway's ACK/REC, whose payload is the backend's reply (JSON decoded;
        ``bytes`` if it is not JSON; ``None`` if empty). ``data`` is
        JSON-encoded unless it is ``bytes``.

        Raises :class:`rainbow.TimeoutError` when no answer came within
        ``timeout`` seconds (a v1 gateway answers nothing when the backend
        failed), :class:`ConnectionLost` when the connection dropped first.
        """
        qos = Qos(qos)
        payload = encode_payload(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._wait_connected(deadline, msg_type)
        if qos == Qos.AT_MOST_ONCE:
            try:
                await conn.write(Send(message_type=msg_type, qos=qos, payload=payload))
            except ConnectionClosed as exc:
                raise ConnectionLost(f"connection to the gateway closed while sending type {msg_type}") from exc
            return msg_type, None
        while not conn.outbound.has_capacity():
            conn = await self._wait_capacity(deadline, msg_type)
        future: "asyncio.Future[bytes]" = loop.create_future()
        pending = _Pending(future=future, msg_type=msg_type, qos=qos, timeout=timeout)
        packet = conn.outbound.send(loop.time(), msg_type, qos, payload, deadline, pending)
        self._wake_timer()
        try:
            await conn.write(packet)
        except ConnectionClosed:
            # The reader sees the close too and fails the future with
            # ConnectionLost; the deadline covers the rest.
            log.debug("connection closed while writing type %s; awaiting the outcome", msg_type)
        reply = await future
        return msg_type, decode_payload(reply, self.decode_json)

    def send_async(
        self,
        msg_type: int,
        data: Any = None,
        qos: int = 1,
        timeout: float = 10.0,
        callback: Optional[SendCallback] = None,
    ) -> "asyncio.Task[Tuple[int, Any]]":
        """Starts :meth:`send` in a task and returns it. ``callback`` (plain or
        ``async``) gets ``(rsp_type, content)`` or, on failure, the exception.
        At most ``max_pending`` such sends may be unfinished at once."""
        if self._pending >= self.max_pending:
            raise RainbowError(f"{self._pending} send_async calls are still pending (max_pending)")
        self._pending += 1

        async def run() -> Tuple[int, Any]:
            try:
                try:
                    result = await self.send(msg_type, data, qos=qos, timeout=timeout)
                except Exception as exc:
                    if callback is not None:
                        await _call_logged(callback, exc)
                    raise
                if callback is not None:
                    await _call_logged(callback, *result)
                return result
            finally:
                self._pending -= 1

        return self._spawn(run(), f"send_async type {msg_type}", track=False)

    # -------------------------------------------------------------- receiving

    async def receive(self, timeout: Optional[float] = None) -> Message:
        """The next message pushed by the gateway (when there is no
        ``on_message`` handler). A qos 1/2 message is answered (with an empty
        reply) as it is handed out. Raises :class:`ClientClosed` once the
        client is closed, the fatal error if it gave up reconnecting, and
        :class:`rainbow.TimeoutError` after ``timeout`` seconds."""
        if self._on_message is not None:
            raise RuntimeError("messages go to the on_message handler; do not also receive()")
        if not self._started or self._incoming is None or self._stopped is None:
            raise ConnectionLost("the client is not connected; call connect() first")
        queue, stopped = self._incoming, self._stopped
        while True:
            if not queue.empty():
                conn, msg = queue.get_nowait()
                await self._answer(conn, msg, b"")
                return msg
            if self._fatal is not None:
                raise self._fatal
            if self._closing:
                raise ClientClosed("the client was closed")
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(stopped.wait())
            try:
                done, _ = await asyncio.wait({getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
            if getter in done and not getter.cancelled():
                conn, msg = getter.result()
                await self._answer(conn, msg, b"")
                return msg
            if not done:
                raise TimeoutError(f"no message from the gateway within {timeout:g} s")

    def __aiter__(self) -> "AsyncClient":
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except ClientClosed:
            raise StopAsyncIteration from None

    # ------------------------------------------------------------- internals

    def _spawn(self, coro: Awaitable[Any], name: str, track: bool = True) -> "asyncio.Task[Any]":
        task = asyncio.ensure_future(coro)
        if track:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: _log_task_failure(t, name))
        return task

    async def _open(self) -> _Connection:
        url = self.connection_url
        headers: Dict[str, str] = {}
        if self.headers_mode:
            headers.update({"X-DEVICEID": self.device_id, "X-CLIENT-OS": self.os})
        headers.update(self.extra_headers)
        kwargs: Dict[str, Any] = dict(
            additional_headers=headers,
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=None,
            max_size=self.max_size,
        )
        if _accepts_kw(ws_connect.__init__, "proxy"):
            kwargs["proxy"] = None  # the gateway is reached directly
        try:
            ws = await ws_connect(url, **kwargs)
        except InvalidStatus as exc:
            response = exc.response
            raise ConnectionRefused(
                response.status_code, response.reason_phrase, bytes(response.body or b"")
            ) from exc
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
            raise ConnectionLost(f"could not connect to the gateway at {url}: {exc or type(exc).__name__}") from exc
        self._connections += 1
        log.info("connected to the gateway at %s (connection #%d)", url, self._connections)
        return _Connection(
            ws=ws,
            outbound=Outbound(
                retransmit_interval=self.retransmit_interval, max_in_flight=self.max_in_flight
            ),
            inbound=Inbound(max_unreleased=self.max_unreleased),
            number=self._connections,
        )

    def _install(self, conn: _Connection) -> None:
        assert self._connected is not None
        self._conn = conn
        self._connected.set()
        self._set_capacity()
        if self._on_connect is not None:
            on_connect = self._on_connect
            self._spawn(_call_logged(on_connect), "on_connect", track=False)

    def _uninstall(self, conn: _Connection, reason: BaseException) -> None:
        """Forgets a dead connection and fails everything that waited on it."""
        if self._conn is conn:
            self._conn = None
            assert self._connected is not None
            if not self._closing and self._fatal is None:
                self._connected.clear()
        conn.lost = reason
        for pending in conn.outbound.drain():
            if not pending.future.done():
                if isinstance(reason, ClientClosed):
                    pending.future.set_exception(ClientClosed(str(reason)))
                else:
                    pending.future.set_exception(
                        ConnectionLost(
                            f"connection to the gateway lost before it answered type {pending.msg_type} "
                            f"(qos {int(pending.qos)}): {reason}"
                        )
                    )
        self._set_capacity()

    async def _supervise(self, conn: _Connection) -> None:
        """Reads the current connection; when it ends, reconnects with backoff."""
        assert self._stopped is not None
        while True:
            reason = await self._read(conn)
            self._uninstall(conn, reason)
            if self._closing:
                return
            if not self.reconnect:
                self._give_up(ConnectionLost(f"connection to the gateway lost: {reason}"))
                return
            log.warning("connection to the gateway lost (%s); reconnecting", reason)
            delay, ceiling = self.backoff
            while True:
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                try:
                    conn = await self._open()
                    break
                except ConnectionRefused as exc:
                    if exc.status == 401:
                        self._give_up(exc)
                        return
                    log.warning("reconnect refused: %s; retrying", exc)
                except ConnectionLost as exc:
                    log.warning("reconnect failed: %s; retrying", exc)
                delay = min(delay * 2, ceiling)
            if self._closing:
                await conn.ws.close(1000, "client closing")
                return
            self._install(conn)

    def _give_up(self, reason: BaseException) -> None:
        log.error("giving up on the gateway: %s", reason)
        self._fatal = reason
        assert self._stopped is not None and self._connected is not None
        self._stopped.set()
        self._connected.set()

    async def _read(self, conn: _Connection) -> BaseException:
        """Processes packets until the connection ends; returns why it ended."""
        try:
            async for frame in conn.ws:
                if isinstance(frame, str):
                    await conn.ws.close(1003, "text frames are not Rainbow packets")
                    return ConnectionLost("the gateway sent a text frame (not a Rainbow packet)")
                try:
                    packet = decode(frame)
                except DecodeError as exc:
                    log.error("the gateway sent a malformed packet (%s): %s", exc.kind, exc)
                    await conn.ws.close(1002, f"malformed packet: {exc.kind}")
                    return ConnectionLost(f"the gateway sent a malformed packet: {exc}")
                try:
                    await self._on_packet(conn, packet)
                except WindowFull as exc:
                    log.error("the gateway left too many qos-2 messages unreleased: %s", exc)
                    await conn.ws.close(1008, "qos-2 window full")
                    return ConnectionLost(f"qos-2 window full: {exc}")
            return ConnectionLost(_close_reason(conn.ws))
        except ConnectionClosed as exc:
            return ConnectionLost(f"closed by the gateway or network: {exc}")
        except OSError as exc:
            return ConnectionLost(f"network error: {exc}")

    async def _on_packet(self, conn: _Connection, packet: Packet) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(packet, Ack):
            answered = conn.outbound.on_ack(packet.id, packet.payload)
            if answered is not None:
                _resolve(answered.tag, packet.payload)
                self._set_capacity()
        elif isinstance(packet, Rec):
            answered, rel = conn.outbound.on_rec(loop.time(), packet.id, packet.payload)
            self._wake_timer()
            await self._write_quietly(conn, rel)
            if answered is not None:
                _resolve(answered.tag, packet.payload)
        elif isinstance(packet, Com):
            conn.outbound.on_com(packet.id)
            self._set_capacity()
        elif isinstance(packet, Rel):
            await self._write_quietly(conn, conn.inbound.on_rel(packet.id))
        elif isinstance(packet, Send):
            disposition = conn.inbound.on_send(loop.time(), packet)
            if not disposition.process:
                log.debug("qos-2 duplicate id %d not delivered again", packet.id)
                if disposition.resend is not None:
                    await self._write_quietly(conn, disposition.resend)
                return
            msg = Message(
                type=packet.message_type,
                data=decode_payload(packet.payload, self.decode_json),
                qos=packet.qos,
                raw=packet.payload,
                dup=packet.dup,
                id=packet.id,
            )
            assert self._incoming is not None
            try:
                self._incoming.put_nowait((conn, msg))
            except asyncio.QueueFull:
                # Never block the reader (it also carries our ACKs). A qos 1/2
                # message stays unanswered, so the gateway retransmits it.
                conn.inbound.failed(packet.id, packet.qos)
                log.warning(
                    "inbox full (%d messages): %s message type %d",
                    self.max_queue,
                    "dropped qos-0" if packet.qos == Qos.AT_MOST_ONCE else "left unanswered (will be retransmitted)",
                    packet.message_type,
                )

    async def _write_quietly(self, conn: _Connection, packet: Packet) -> None:
        try:
            await conn.write(packet)
        except ConnectionClosed as exc:
            log.debug("could not write %s: connection closed (%s)", type(packet).__name__, exc)

    async def _answer(self, conn: _Connection, msg: Message, reply: bytes) -> None:
        packet = conn.inbound.answer(msg.id, msg.qos, reply)
        if packet is not None and conn is self._conn:
            await self._write_quietly(conn, packet)

    async def _dispatch(self) -> None:
        """Feeds queued messages to the ``on_message`` handler, one at a time."""
        assert self._incoming is not None and self._on_message is not None
        handler = self._on_message
        while True:
            conn, msg = await self._incoming.get()
            try:
                reply = handler(msg.type, msg.data)
                if inspect.isawaitable(reply):
                    reply = await reply
                encoded = encode_payload(reply)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("on_message handler failed for message type %d (client side)", msg.type)
                conn.inbound.failed(msg.id, msg.qos)
                continue
            await self._answer(conn, msg, encoded)

    async def _timer(self) -> None:
        """Retransmits unanswered packets and expires overdue sends."""
        assert self._timer_wake is not None
        loop = asyncio.get_running_loop()
        while True:
            self._timer_wake.clear()
            conn = self._conn
            due = conn.outbound.next_deadline() if conn is not None else None
            try:
                if due is None:
                    await self._timer_wake.wait()
                else:
                    await asyncio.wait_for(self._timer_wake.wait(), max(0.0, due - loop.time()))
            except asyncio.TimeoutError:
                pass
            conn = self._conn
            if conn is None:
                continue
            for action in conn.outbound.on_timeout(loop.time()):
                if isinstance(action, Retransmit):
                    log.debug("retransmitting %s", action.packet)
                    await self._write_quietly(conn, action.packet)
                elif isinstance(action, Expired):
                    _expire(action.tag)
            self._set_capacity()

    def _wake_timer(self) -> None:
        if self._timer_wake is not None:
            self._timer_wake.set()

    def _set_capacity(self) -> None:
        if self._capacity is not None:
            self._capacity.set()

    async def _wait_connected(self, deadline: float, msg_type: int) -> _Connection:
        if not self._started:
            if self._closing:
                raise ClientClosed("the client was closed")
            raise ConnectionLost("the client is not connected; call connect() first")
        assert self._connected is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._fatal is not None:
                raise ConnectionLost(f"the client gave up on the gateway: {self._fatal}") from self._fatal
            if self._closing:
                raise ClientClosed("the client was closed")
            if self._conn is not None:
                return self._conn
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"not connected to the gateway in time to send type {msg_type} (reconnecting)")
            try:
                await asyncio.wait_for(self._connected.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def _wait_capacity(self, deadline: float, msg_type: int) -> _Connection:
        assert self._capacity is not None
        loop = asyncio.get_running_loop()
        self._capacity.clear()
        remaining = deadline - loop.time()
        if remaining > 0:
            try:
                await asyncio.wait_for(self._capacity.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        if loop.time() >= deadline:
            raise TimeoutError(
                f"{self.max_in_flight} messages awaited their answers; type {msg_type} could not be sent in time"
            )
        return await self._wait_connected(deadline, msg_type)


def _close_reason(ws: ClientConnection) -> str:
    # ws.close_code/close_reason appeared in websockets 15; the protocol has them in all versions.
    protocol = getattr(ws, "protocol", None)
    code = getattr(protocol, "close_code", None)
    reason = getattr(protocol, "close_reason", None)
    return f"closed by the gateway (code {code}{', ' + reason if reason else ''})"


def _resolve(pending: _Pending, payload: bytes) -> None:
    if not pending.future.done():
        pending.future.set_result(bytes(payload))


def _expire(pending: _Pending) -> None:
    if pending.future.done():
        return
    answer = "ACK" if pending.qos == Qos.AT_LEAST_ONCE else "REC"
    pending.future.set_exception(
        TimeoutError(
            f"no {answer} from the gateway for message type {pending.msg_type} (qos {int(pending.qos)}) "
            f"within {pending.timeout:g} s; a v1 gateway answers nothing when the backend's forward hook "
            "fails or times out, so check the backend too"
        )
    )


async def _call_logged(callback: Callable[..., Any], *args: Any) -> None:
    """Runs a user callback (plain or async); its errors are logged, not raised."""
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("callback %r raised", callback)


def _log_task_failure(task: "asyncio.Task[Any]", name: str) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, RainbowError):
        log.error("rainbow client task %s failed", name, exc_info=exc)

