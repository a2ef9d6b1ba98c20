"""The blocking and asyncio clients against a scripted WebSocket peer.

The peer (tests/support/scripted_gateway.py) speaks the v1 packets the way the
spec says the gateway does, so these tests pin the clients' own behaviour:
QoS flows, DUP retransmission, qos-2 dedup, refusals, reconnects, callbacks.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import time
from typing import Any, Iterator, List

import pytest

import rainbow
from rainbow import AsyncClient, Client
from rainbow.protocol import Ack, Com, Qos, Rec, Rel, Send
from support.scripted_gateway import Peer, ScriptedGateway, answer, answer_everything, manual


@pytest.fixture
def gateway() -> Iterator[ScriptedGateway]:
    """Answers every SEND like a gateway with an echoing backend."""
    gw = ScriptedGateway()
    yield gw
    gw.close()
    assert not gw.errors, gw.errors


@pytest.fixture
def manual_gateway() -> Iterator[ScriptedGateway]:
    """Leaves each connection to the test (push packets, read answers)."""
    gw = ScriptedGateway(manual)
    yield gw
    gw.close()
    assert not gw.errors, gw.errors


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def client_sends(gw: ScriptedGateway) -> List[Send]:
    return [p for _, p in gw.log if isinstance(p, Send)]


def test_send_returns_the_request_type_and_the_reply(gateway: ScriptedGateway) -> None:
    with Client(gateway.url, device_id="dev-1", os="linux") as client:
        assert client.send(1, {"id": 100}, qos=1) == (1, {"echo": {"id": 100}, "type": 1})
        assert client.send(7, [1, 2], qos=2, timeout=5) == (7, {"echo": [1, 2], "type": 7})
        assert client.send(3, "hi", qos=0) == (3, None)
        time.sleep(0.2)
    sends = client_sends(gateway)
    assert [(s.message_type, s.qos, s.id) for s in sends] == [(1, 1, 1), (7, 2, 2), (3, 0, 0)]
    assert sends[2].payload == b'"hi"'
    # The qos-2 tail: REC -> REL -> COM.
    assert any(isinstance(p, Rel) and p.id == 2 for _, p in gateway.log)


def test_device_id_and_os_travel_as_headers_or_query(gateway: ScriptedGateway) -> None:
    with Client(gateway.url, device_id="dev-1", os="ios", params={"token": "t 1"}, extra_headers={"X-App": "chat"}):
        pass
    path, _ = gateway.requests[0]
    headers = gateway.headers_of(0)
    assert path.startswith("/connect/?") and "token=t+1" in path
    assert headers["x-deviceid"] == "dev-1" and headers["x-client-os"] == "ios" and headers["x-app"] == "chat"
    with Client(gateway.url + "/connect/?a=1", device_id="dev-2", os="web", headers=False):
        pass
    path, _ = gateway.requests[1]
    assert "a=1" in path and "X-DEVICEID=dev-2" in path and "X-CLIENT-OS=web" in path
    assert "x-deviceid" not in gateway.headers_of(1)


def test_unanswered_send_is_retransmitted_with_dup() -> None:
    async def ignore_first_copy(peer: Peer) -> None:
        while True:
            packet = await peer.recv(timeout=3600)
            if isinstance(packet, Send) and not packet.dup:
                continue  # lost on the way
            await answer(peer, packet)

    gw = ScriptedGateway(ignore_first_copy)
    try:
        with Client(gw.url, retransmit_interval=0.2) as client:
            started = time.monotonic()
            assert client.send(5, {"n": 1}, qos=1, timeout=5) == (5, {"echo": {"n": 1}, "type": 5})
            assert 0.15 < time.monotonic() - started < 2
            assert client.send(6, None, qos=2, timeout=5)[0] == 6
        sends = client_sends(gw)
        assert [(s.message_type, s.dup) for s in sends] == [(5, False), (5, True), (6, False), (6, True)]
        assert sends[0].id == sends[1].id and sends[0].payload == sends[1].payload
    finally:
        gw.close()


def test_timeout_is_a_rainbow_and_builtin_timeout_error() -> None:
    async def silent(peer: Peer) -> None:
        while True:
            await peer.recv(timeout=3600)

    gw = ScriptedGateway(silent)
    try:
        with Client(gw.url, retransmit_interval=0.2) as client:
            started = time.monotonic()
            with pytest.raises(rainbow.TimeoutError) as caught:
                client.send(1, {}, qos=1, timeout=0.7)
            assert 0.6 < time.monotonic() - started < 2
            assert isinstance(caught.value, builtins.TimeoutError)
            assert "backend" in str(caught.value)
        dups = [s for s in client_sends(gw) if s.dup]
        assert len(dups) >= 2, "retransmitted while waiting"
    finally:
        gw.close()


@pytest.mark.parametrize(("status", "word"), [(401, "denied"), (503, "unreachable")])
def test_refused_handshake_carries_the_status(gateway: ScriptedGateway, status: int, word: str) -> None:
    gateway.refuse = (status, "no")
    with pytest.raises(rainbow.ConnectionRefused) as caught:
        Client(gateway.url)
    assert caught.value.status == status
    assert word in str(caught.value)


def test_unreachable_gateway_is_connection_lost() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(rainbow.ConnectionLost, match="could not connect"):
        Client(f"ws://127.0.0.1:{port}", open_timeout=2)


def test_pushed_messages_are_answered_with_the_handlers_reply(manual_gateway: ScriptedGateway) -> None:
    seen: List[Any] = []

    def on_message(msg_type: int, data: Any) -> Any:
        seen.append((msg_type, data))
        return {"thanks": data["n"]}

    with Client(manual_gateway.url, on_message=on_message):
        peer = manual_gateway.peer(0)

        async def push() -> List[Any]:
            await peer.send(Send(1001, Qos.AT_MOST_ONCE, 0, False, b'{"n": 0}'))
            await peer.send(Send(1002, Qos.AT_LEAST_ONCE, 11, False, b'{"n": 1}'))
            ack = await peer.recv()
            await peer.send(Send(1003, Qos.EXACTLY_ONCE, 12, False, b'{"n": 2}'))
            rec = await peer.recv()
            await peer.send(Rel(12))
            com = await peer.recv()
            return [ack, rec, com]

        ack, rec, com = manual_gateway.run(push())
    assert seen == [(1001, {"n": 0}), (1002, {"n": 1}), (1003, {"n": 2})]
    assert ack == Ack(11, b'{"thanks":1}')
    assert rec == Rec(12, b'{"thanks":2}')
    assert com == Com(12)


def test_qos2_duplicate_before_rel_is_delivered_once(manual_gateway: ScriptedGateway) -> None:
    seen: List[Any] = []
    with Client(manual_gateway.url, on_message=lambda t, d: seen.append(d) or "ok"):
        peer = manual_gateway.peer(0)

        async def push() -> List[Any]:
            await peer.send(Send(9, Qos.EXACTLY_ONCE, 5, False, b"1"))
            first = await peer.recv()
            await peer.send(Send(9, Qos.EXACTLY_ONCE, 5, True, b"1"))  # our REC was "lost"
            again = await peer.recv()
            await peer.send(Rel(5))
            com = await peer.recv()
            await peer.send(Send(9, Qos.EXACTLY_ONCE, 5, False, b"2"))  # id reused after REL: new message
            third = await peer.recv()
            return [first, again, com, third]

        first, again, com, third = manual_gateway.run(push())
    assert seen == [1, 2]
    assert first == again == Rec(5, b'"ok"')
    assert com == Com(5)
    assert third == Rec(5, b'"ok"')


def test_handler_may_send_without_deadlock(manual_gateway: ScriptedGateway) -> None:
    box: dict = {}

    def on_message(msg_type: int, data: Any) -> Any:
        box["inner"] = client.send(2, "from handler", qos=1, timeout=5)
        return "done"

    client = Client(manual_gateway.url, on_message=on_message)
    try:
        peer = manual_gateway.peer(0)

        async def push() -> Any:
            await peer.send(Send(1, Qos.AT_LEAST_ONCE, 1, False, b"{}"))
            while True:
                packet = await peer.recv()
                if isinstance(packet, Send):
                    await answer(peer, packet)
                else:
                    return packet

        assert manual_gateway.run(push()) == Ack(1, b'"done"')
        assert box["inner"] == (2, {"echo": "from handler", "type": 2})
    finally:
        client.close()


def test_failing_handler_leaves_the_message_unanswered(manual_gateway: ScriptedGateway) -> None:
    calls = []

    def on_message(msg_type: int, data: Any) -> Any:
        calls.append(data)
        if len(calls) == 1:
            raise ValueError("boom")
        return "second try"

    with Client(manual_gateway.url, on_message=on_message):
        peer = manual_gateway.peer(0)

        async def push() -> Any:
            await peer.send(Send(1, Qos.EXACTLY_ONCE, 3, False, b"1"))
            with pytest.raises(asyncio.TimeoutError):
                await peer.recv(timeout=0.5)
            await peer.send(Send(1, Qos.EXACTLY_ONCE, 3, True, b"1"))  # retransmission is processed
            return await peer.recv()

        assert manual_gateway.run(push()) == Rec(3, b'"second try"')
    assert calls == [1, 1]


def test_send_async_calls_back_with_the_reply_or_the_error() -> None:
    async def answer_only_type_1(peer: Peer) -> None:
        while True:
            packet = await peer.recv(timeout=3600)
            if not isinstance(packet, Send) or packet.message_type == 1:
                await answer(peer, packet)

    gw = ScriptedGateway(answer_only_type_1)
    results: List[Any] = []
    done = threading.Event()

    def callback(*args: Any) -> None:
        results.append((threading.current_thread().name, args))
        if len(results) == 2:
            done.set()

    try:
        with Client(gw.url, retransmit_interval=0.1) as client:
            future = client.send_async(1, {"id": 100}, qos=1, callback=callback)
            client.send_async(2, {}, qos=1, timeout=0.3, callback=callback)
            assert future.result(5) == (1, {"echo": {"id": 100}, "type": 1})
            assert done.wait(5)
    finally:
        gw.close()
    by_count = {len(args): (name, args) for name, args in results}
    assert by_count[2][1] == (1, {"echo": {"id": 100}, "type": 1})
    assert isinstance(by_count[1][1][0], rainbow.TimeoutError)
    assert {name for name, _ in results} == {"rainbow-callbacks"}


def test_bytes_pass_through_both_ways(gateway: ScriptedGateway) -> None:
    with Client(gateway.url) as client:
        rsp_type, content = client.send(4, b"\x00\xff", qos=1)
    assert (rsp_type, content) == (4, b"raw:\x00\xff")
    assert client_sends(gateway)[0].payload == b"\x00\xff"


def test_iteration_receives_and_acknowledges(manual_gateway: ScriptedGateway) -> None:
    client = Client(manual_gateway.url)
    peer = manual_gateway.peer(0)

    async def push() -> Any:
        await peer.send(Send(1001, Qos.AT_LEAST_ONCE, 1, False, b'{"a": 1}'))
        await peer.send(Send(1002, Qos.AT_MOST_ONCE, 0, False, b"not json"))
        return await peer.recv()

    pending = asyncio.run_coroutine_threadsafe(push(), manual_gateway._loop)
    received = []
    for msg in client:
        received.append(msg)
        if len(received) == 2:
            break
    assert pending.result(5) == Ack(1, b"")
    assert [(m.type, m.data, m.qos) for m in received] == [(1001, {"a": 1}, Qos.AT_LEAST_ONCE), (1002, b"not json", 0)]
    with pytest.raises(rainbow.TimeoutError):
        client.receive(timeout=0.2)
    client.close()
    assert list(client) == [], "iteration ends once closed"


def test_reconnects_after_the_connection_drops() -> None:
    async def drop_first(peer: Peer) -> None:
        if peer.number == 1:
            await peer.recv(timeout=3600)  # swallow one SEND, then hang up
            await peer.ws.close(1011, "going away")
            return
        await answer_everything(peer)

    gw = ScriptedGateway(drop_first)
    connects = []
    try:
        with Client(gw.url, backoff=(0.05, 0.2), on_connect=lambda: connects.append(1)) as client:
            with pytest.raises(rainbow.ConnectionLost, match="lost"):
                client.send(1, {}, qos=1, timeout=5)
            assert client.send(2, {}, qos=1, timeout=5) == (2, {"echo": {}, "type": 2})
            assert len(gw.peers) == 2
        assert connects == [1, 1]
    finally:
        gw.close()


def test_malformed_packet_closes_with_1002_and_reconnects() -> None:
    close_codes: List[Any] = []

    async def garbage_first(peer: Peer) -> None:
        if peer.number == 1:
            await peer.send_raw(b"\x60\x00\x01")
            await peer.ws.wait_closed()
            close_codes.append(peer.ws.protocol.close_code)
            return
        await answer_everything(peer)

    gw = ScriptedGateway(garbage_first)
    try:
        with Client(gw.url, backoff=(0.05, 0.2)) as client:
            gw.peer(1)
            wait_until(lambda: client.connected and client.async_client._connections == 2)
            assert client.send(1, None, qos=1, timeout=5) == (1, {"echo": None, "type": 1})
        wait_until(lambda: bool(close_codes))
        assert close_codes == [1002]
    finally:
        gw.close()


def test_gives_up_when_the_backend_denies_the_reconnect() -> None:
    async def drop(peer: Peer) -> None:
        gw.refuse = (401, "Unauthorized")
        await peer.ws.close(1011, "bye")

    gw = ScriptedGateway(drop)
    try:
        client = Client(gw.url, backoff=(0.05, 0.2))
        wait_until(lambda: client.async_client.closed)
        with pytest.raises(rainbow.ConnectionLost, match="gave up"):
            client.send(1, {}, qos=1, timeout=1)
        with pytest.raises(rainbow.ConnectionRefused):
            client.receive()
        client.close()
    finally:
        gw.close()


def test_async_client_sends_and_iterates(gateway: ScriptedGateway) -> None:
    async def main() -> Any:
        async with AsyncClient(gateway.url, device_id="a1", os="asyncio") as client:
            assert await client.send(1, {"id": 100}, qos=1) == (1, {"echo": {"id": 100}, "type": 1})
            assert await client.send(2, {"id": 100}, qos=2) == (2, {"echo": {"id": 100}, "type": 2})
            peer = gateway.peer(0)
            pushed = asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(
                    _push_and_collect(peer, Send(1001, Qos.EXACTLY_ONCE, 4, False, b'{"x": 1}')), gateway._loop
                )
            )
            received = []
            async for msg in client:
                received.append(msg)
                break
            return received, await pushed

    received, answers = asyncio.run(main())
    assert [(m.type, m.data) for m in received] == [(1001, {"x": 1})]
    assert answers == [Rec(4, b""), Com(4)]


async def _push_and_collect(peer: Peer, packet: Send) -> List[Any]:
    await peer.send(packet)
    rec = await peer.expect()
    await peer.send(Rel(packet.id))
    return [rec, await peer.expect()]


def test_async_client_handler_and_send_async(gateway: ScriptedGateway) -> None:
    async def main() -> Any:
        got: List[Any] = []

        async def on_message(msg_type: int, data: Any) -> Any:
            await asyncio.sleep(0)
            return {"handled": msg_type}

        client = AsyncClient(gateway.url, on_message=on_message)
        await client.connect()
        try:
            task = client.send_async(3, [3], qos=1, callback=lambda *a: got.append(a))
            assert await task == (3, {"echo": [3], "type": 3})
            peer = gateway.peer(0)

            async def push() -> Any:
                await peer.send(Send(1005, Qos.AT_LEAST_ONCE, 2, False, b"null"))
                return await peer.expect()

            ack = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(push(), gateway._loop))
            with pytest.raises(RuntimeError):
                await client.receive()
        finally:
            await client.close()
        with pytest.raises(rainbow.ClientClosed):
            await client.send(1, {})
        return got, ack

    got, ack = asyncio.run(main())
    assert got == [(3, {"echo": [3], "type": 3})]
    assert ack == Ack(2, b'{"handled":1005}')


def test_pending_sends_fail_when_the_client_closes() -> None:
    async def silent(peer: Peer) -> None:
        while True:
            await peer.recv(timeout=3600)

    gw = ScriptedGateway(silent)
    try:
        client = Client(gw.url)
        future = client.send_async(1, {}, qos=1, timeout=30)
        time.sleep(0.2)
        client.close()
        with pytest.raises(rainbow.ClientClosed):
            future.result(5)
    finally:
        gw.close()


def test_in_flight_limit_waits_for_room() -> None:
    async def slow(peer: Peer) -> None:
        while True:
            packet = await peer.recv(timeout=3600)
            await asyncio.sleep(0.1)
            await answer(peer, packet)

    gw = ScriptedGateway(slow)
    try:
        with Client(gw.url, max_in_flight=2) as client:
            futures = [client.send_async(1, i, qos=1, timeout=5) for i in range(6)]
            assert [f.result(10)[1]["echo"] for f in futures] == list(range(6))
    finally:
        gw.close()


def test_send_async_is_bounded() -> None:
    async def silent(peer: Peer) -> None:
        while True:
            await peer.recv(timeout=3600)

    gw = ScriptedGateway(silent)
    try:
        with Client(gw.url, max_pending=2) as client:
            client.send_async(1, {}, qos=1, timeout=0.5)
            client.send_async(1, {}, qos=1, timeout=0.5)
            with pytest.raises(rainbow.RainbowError, match="pending"):
                client.send_async(1, {}, qos=1, timeout=0.5)
            time.sleep(1.0)
            client.send_async(1, {}, qos=0).result(5)  # room again once they timed out
    finally:
        gw.close()
