"""A scripted stand-in for the gateway's WebSocket side, for client unit tests.

It runs a ``websockets`` server on loopback in a background thread. Each
accepted connection runs ``script(peer)``, an async function the test
provides (default: :func:`answer_everything`), which reads and writes
Rainbow packets through :class:`Peer`. ``refuse`` makes the handshake fail
with an HTTP status. Everything observed is recorded for the test to check.
This is not the gateway: the integration tests run the real one.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from rainbow.protocol import Ack, Com, Packet, Qos, Rec, Rel, Send, decode, encode


class Peer:
    """One client connection, as the scripted gateway sees it."""

    def __init__(self, ws: ServerConnection, number: int, gateway: "ScriptedGateway") -> None:
        self.ws = ws
        self.number = number
        self.gateway = gateway
        self.received: List[Packet] = []
        #: With :func:`answer_everything`: the client's packets other than SEND.
        self.inbox: "asyncio.Queue[Packet]" = asyncio.Queue(1000)

    async def recv(self, timeout: float = 5.0) -> Packet:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, bytes), f"client sent a text frame: {frame!r}"
        packet = decode(frame)
        self.received.append(packet)
        self.gateway.log.append((self.number, packet))
        return packet

    async def expect(self, timeout: float = 5.0) -> Packet:
        """The next non-SEND packet collected by :func:`answer_everything`."""
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def send(self, packet: Packet) -> None:
        await self.ws.send(encode(packet))

    async def send_raw(self, data: bytes) -> None:
        await self.ws.send(data)


Script = Callable[[Peer], Awaitable[None]]


def reply_for(send: Send) -> bytes:
    try:
        value: Any = json.loads(send.payload) if send.payload else None
    except ValueError:
        return b"raw:" + send.payload
    return json.dumps({"echo": value, "type": send.message_type}).encode()


async def answer_everything(peer: Peer) -> None:
    """Answers like a gateway whose backend echoes: ACK/REC with a reply, COM
    for REL; the client's other packets (answers to pushes) go to ``peer.inbox``."""
    while True:
        packet = await peer.recv(timeout=3600)
        await answer(peer, packet)
        if not isinstance(packet, (Send, Rel)):
            peer.inbox.put_nowait(packet)


async def manual(peer: Peer) -> None:
    """Leaves the connection to the test, which drives it through ``ScriptedGateway.run``."""
    await peer.ws.wait_closed()


async def answer(peer: Peer, packet: Packet) -> None:
    if isinstance(packet, Send):
        if packet.qos == Qos.AT_LEAST_ONCE:
            await peer.send(Ack(packet.id, reply_for(packet)))
        elif packet.qos == Qos.EXACTLY_ONCE:
            await peer.send(Rec(packet.id, reply_for(packet)))
    elif isinstance(packet, Rel):
        await peer.send(Com(packet.id))


class ScriptedGateway:
    def __init__(self, script: Script = answer_everything) -> None:
        self.script = script
        self.refuse: Optional[Tuple[int, str]] = None
        self.requests: List[Tuple[str, Headers]] = []
        self.log: List[Tuple[int, Packet]] = []
        self.peers: List[Peer] = []
        self.errors: List[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: Optional[asyncio.Event] = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="scripted-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("scripted gateway did not start")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _process_request(self, connection: ServerConnection, request: Request) -> Optional[Response]:
        self.requests.append((request.path, request.headers))
        if self.refuse is not None:
            status, text = self.refuse
            return connection.respond(status, text)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        peer = Peer(ws, len(self.peers) + 1, self)
        self.peers.append(peer)
        try:
            await self.script(peer)
        except Exception as exc:  # recorded for the test; connection errors end scripts too
            from websockets.exceptions import ConnectionClosed

            if not isinstance(exc, ConnectionClosed):
                self.errors.append(exc)

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

    def peer(self, index: int = 0, timeout: float = 5.0) -> Peer:
        """The ``index``-th connection, waiting for its handler to start."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.peers) <= index:
            if time.monotonic() > deadline:
                raise AssertionError(f"connection #{index + 1} never reached the scripted gateway")
            time.sleep(0.01)
        return self.peers[index]

    def run(self, coro: Awaitable[Any], timeout: float = 10) -> Any:
        """Runs a coroutine on the gateway's loop (e.g. to push a packet)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def headers_of(self, index: int = -1) -> Dict[str, str]:
        return {k.lower(): v for k, v in self.requests[index][1].raw_items()}
