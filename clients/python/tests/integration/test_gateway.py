"""The SDK against the REAL gateway binary and real Django, Flask and FastAPI backends.

Each test in the first part runs once per backend framework (the ``stack``
fixture). Channel names are unique per test, so tests do not see each other.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any, Callable, List, Tuple

import pytest

import rainbow
from rainbow import AsyncClient, Client
from rainbow.backend import make_signature, sign

from backends.servers import free_port, http
from support.gateway import TOKEN, Gateway, Stack


def channel() -> str:
    return "c-" + uuid.uuid4().hex[:12]


def identity_of(client: Client) -> str:
    _, reply = client.send(1, None, qos=1, timeout=5)
    return str(reply["identity"])


def ready(client: Client) -> Client:
    """One round trip: the gateway reads a SEND only once the connection is
    registered and the connect hook's control headers are applied. (The 101
    can reach the client a moment before that, so an API call racing the
    handshake may not see the new connection yet.)"""
    assert client.send(1, "ready?", qos=1, timeout=5)[1]["echo"] == "ready?"
    return client


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Collector:
    """An ``on_message`` handler that records messages and replies with a tag."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.messages: List[Tuple[int, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, msg_type: int, data: Any) -> Any:
        with self.lock:
            self.messages.append((msg_type, data))
        return {"who": self.tag}

    def wait_for(self, count: int, timeout: float = 5.0) -> List[Tuple[int, Any]]:
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} messages for {self.tag}")
        return list(self.messages)


# --------------------------------------------------------------------------- connect


def test_connect_hook_accepts_and_sees_the_client(stack: Stack) -> None:
    with Client(stack.gateway.ws_url, device_id="dev-42", os="pytest", params={"app": "it"}) as client:
        identity = identity_of(client)
    assert identity
    event = stack.backend.scenario.find("connect", identity)
    assert event["params"] == {"app": "it"}, "client query params reach the hook, the signature is stripped"
    assert event["headers"]["x-deviceid"] == "dev-42"
    assert event["headers"]["x-client-os"] == "pytest"


def test_device_id_and_os_may_come_as_query_params(stack: Stack) -> None:
    with Client(stack.gateway.ws_url, device_id="dev-q", os="browser", headers=False) as client:
        identity = identity_of(client)
    assert stack.backend.scenario.find("connect", identity)


def test_connect_hook_denial_is_a_401(stack: Stack) -> None:
    with pytest.raises(rainbow.ConnectionRefused) as caught:
        Client(stack.gateway.ws_url, params={"deny": "1"}, reconnect=False)
    assert caught.value.status == 401


def test_async_client_denial_is_a_401(stack: Stack) -> None:
    async def main() -> None:
        client = AsyncClient(stack.gateway.ws_url, params={"deny": "yes"})
        await client.connect()

    with pytest.raises(rainbow.ConnectionRefused) as caught:
        asyncio.run(main())
    assert caught.value.status == 401


# --------------------------------------------------------------------------- forward


def test_forward_reply_and_context_round_trip(stack: Stack) -> None:
    with Client(stack.gateway.ws_url, device_id="dev-ctx") as client:
        assert client.send(2, {"name": "ann"}, qos=1) == (2, {"status": "ok"})
        rsp_type, reply = client.send(1, {"x": 1}, qos=2, timeout=5)
    assert rsp_type == 1, "v1 replies carry no type: the request's type comes back"
    assert reply["echo"] == {"x": 1}
    assert reply["backend"] == stack.name
    assert reply["context"] == {"device": "dev-ctx", "name": "ann"}, "cookie set at connect and by a message"


def test_qos0_send_reaches_the_backend(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    with Client(stack.gateway.ws_url) as client:
        assert client.send(1, {"marker": marker}, qos=0) == (1, None)
        identity = identity_of(client)
    wait_until(
        lambda: any(
            e["kind"] == "message" and e["data"] == {"marker": marker} and e["identity"] == identity
            for e in stack.backend.scenario.events
        ),
        what="the qos-0 message at the backend",
    )


def test_message_type_without_handler_times_out_for_a_v1_client(stack: Stack) -> None:
    with Client(stack.gateway.ws_url, retransmit_interval=1.0) as client:
        with pytest.raises(rainbow.TimeoutError):
            client.send(999, {}, qos=1, timeout=2)
        assert client.send(1, "still fine", qos=1)[1]["echo"] == "still fine"


def test_send_async_calls_back(stack: Stack) -> None:
    results: List[Any] = []
    done = threading.Event()

    def callback(*args: Any) -> None:
        results.append(args)
        done.set()

    with Client(stack.gateway.ws_url) as client:
        client.send_async(1, {"id": 100}, qos=1, callback=callback)
        assert done.wait(10)
    (rsp_type, content), = results
    assert rsp_type == 1 and content["echo"] == {"id": 100}


# --------------------------------------------------------------------------- channels


def test_channel_subscription_set_by_response_headers(stack: Stack) -> None:
    room = channel()
    api = stack.gateway.api()
    a, b = Collector("a"), Collector("b")
    with Client(stack.gateway.ws_url, params={"channel": room}, on_message=a) as ca, Client(
        stack.gateway.ws_url, on_message=b
    ) as cb:
        ready(ca)
        # a joined through the connect hook's RAINBOWCLIENTCHANNEL header.
        assert api.send(room, 1001, {"n": 1}, qos=1) == (1, {"who": "a"})
        # b joins through a message hook's header.
        assert cb.send(3, {"channel": room}, qos=1)[1] == {"joined": room}
        connections, _ = api.send(room, 1001, {"n": 2}, qos=1)
        assert connections == 2
        # b leaves through RAINBOWCLIENTCHANNELUNSUB.
        assert cb.send(4, {"channel": room}, qos=1)[1] == {"left": room}
        assert api.send(room, 1001, {"n": 3}, qos=1) == (1, {"who": "a"})
        assert ca.connected
    assert a.wait_for(3) == [(1001, {"n": 1}), (1001, {"n": 2}), (1001, {"n": 3})]
    assert b.wait_for(1) == [(1001, {"n": 2})]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_api_send_at_each_qos_collects_client_replies(stack: Stack, qos: int) -> None:
    room = channel()
    api = stack.gateway.api()
    a, b = Collector("a"), Collector("b")
    with Client(stack.gateway.ws_url, params={"channel": room}, on_message=a) as ca, Client(
        stack.gateway.ws_url, params={"channel": room}, on_message=b
    ) as cb:
        ready(ca)
        ready(cb)
        connections, reply = api.send(room, 1001, {"qos": qos}, qos=qos, timeout=5)
        if qos == 0:
            assert (connections, reply) == (None, None)
        else:
            assert connections == 2
            assert reply in ({"who": "a"}, {"who": "b"})
        assert a.wait_for(1) == [(1001, {"qos": qos})]
        assert b.wait_for(1) == [(1001, {"qos": qos})]
        time.sleep(0.3)
        assert len(a.messages) == 1 and len(b.messages) == 1, "delivered exactly once"


def test_api_send_to_an_empty_channel(stack: Stack) -> None:
    assert stack.gateway.api().send(channel(), 1, {}, qos=1) == (0, None)


def test_api_subscribe_unsubscribe_and_occupy(stack: Stack) -> None:
    room = channel()
    api = stack.gateway.api()
    a, b = Collector("a"), Collector("b")
    with Client(stack.gateway.ws_url, on_message=a) as ca, Client(stack.gateway.ws_url, on_message=b) as cb:
        ida, idb = identity_of(ca), identity_of(cb)
        api.subscribe(room, ida)
        api.subscribe(room, idb)
        assert api.send(room, 7, "both", qos=1)[0] == 2
        api.unsubscribe(room, idb)
        assert api.send(room, 7, "a only", qos=1) == (1, {"who": "a"})
        api.subscribe(room, idb, occupy=True)
        assert api.send(room, 7, "b owns it", qos=1) == (1, {"who": "b"})
    assert [d for _, d in a.wait_for(2)] == ["both", "a only"]
    assert [d for _, d in b.wait_for(2)] == ["both", "b owns it"]


def test_api_subscribe_of_an_unknown_identity_fails(stack: Stack) -> None:
    with pytest.raises(rainbow.RainbowAPIError) as caught:
        stack.gateway.api().subscribe(channel(), "0" * 64)
    assert caught.value.msg == "no such connection"


def test_backend_calls_the_api_from_inside_a_hook(stack: Stack) -> None:
    """The seed's chat flow: subscribe through the API and broadcast, inside forward hooks."""
    room = channel()
    a = Collector("a")
    with Client(stack.gateway.ws_url, on_message=a) as client:
        assert client.send(6, {"channel": room}, qos=1)[1] == {"subscribed": room}
        _, reply = client.send(5, {"channel": room, "payload": {"hi": 1}, "qos": 0}, qos=1)
        assert reply == {"connections": None, "reply": None}
        _, reply = client.send(5, {"channel": room, "payload": {"hi": 2}, "qos": 1}, qos=1, timeout=8)
        assert reply == {"connections": 1, "reply": {"who": "a"}}
    assert a.wait_for(2) == [(1002, {"hi": 1}), (1002, {"hi": 2})]


# --------------------------------------------------------------------------- close


def test_close_hook_gets_identity_and_context(stack: Stack) -> None:
    client = Client(stack.gateway.ws_url, device_id="dev-close")
    client.send(2, {"name": "zoe"}, qos=1)
    identity = identity_of(client)
    client.close()
    event = stack.backend.scenario.find("close", identity, timeout=10)
    assert event["context"] == {"device": "dev-close", "name": "zoe"}


# --------------------------------------------------------------------------- asyncio


def test_async_client_round_trip_and_iteration(stack: Stack) -> None:
    room = channel()
    api = stack.gateway.api()

    async def main() -> Any:
        async with AsyncClient(stack.gateway.ws_url, params={"channel": room}) as client:
            rsp_type, reply = await client.send(2, {"name": "async"}, qos=2)
            assert (rsp_type, reply) == (2, {"status": "ok"})
            _, reply = await client.send(1, [1, 2], qos=1)
            assert reply["context"]["name"] == "async"
            pushed = asyncio.ensure_future(asyncio.to_thread(api.send, room, 1003, {"push": True}, 2, 5))
            received = []
            async for msg in client:
                received.append(msg)
                break
            return received, await pushed

    received, result = asyncio.run(main())
    assert [(m.type, m.data) for m in received] == [(1003, {"push": True})]
    assert result == (1, None), "iteration acknowledges with an empty reply"


def test_async_client_handler_reply(stack: Stack) -> None:
    room = channel()
    api = stack.gateway.api()

    async def main() -> Any:
        async def on_message(msg_type: int, data: Any) -> Any:
            return {"async": data}

        async with AsyncClient(stack.gateway.ws_url, params={"channel": room}, on_message=on_message) as client:
            await client.send(1, "ready?", qos=1)  # registered (see ready())
            return await asyncio.to_thread(api.send, room, 1004, 5, 1, 5)

    assert asyncio.run(main()) == (1, {"async": 5})


# --------------------------------------------------------------------------- signatures and failures


def test_bad_or_stale_hook_signature_is_rejected_by_the_kit(stack: Stack) -> None:
    """Straight to the backend, as a forger would: the kit answers 403 / 60001."""
    ts = int(time.time())
    forged = {"timestamp": ts, "nonce": 1, "signature": make_signature("guess", ts, 1)}
    stale = {"timestamp": ts - 60, "nonce": 2, "signature": make_signature(TOKEN, ts - 60, 2)}
    from urllib.parse import urlencode

    for params in (forged, stale, {}):
        status, headers, _ = http(
            "POST",
            f"{stack.backend.url}/rainbow/message/1/?{urlencode(params)}",
            {"RAINBOWCLIENTIDENTITY": "f" * 64},
            b"{}",
        )
        assert status == 403
        assert {k.lower(): v for k, v in headers.items()}["rainbowrequestinvalid"] == "60001"


def test_gateway_with_the_wrong_token_is_refused_by_the_kit(stack: Stack, make_gateway: Callable[..., Gateway]) -> None:
    impostor = make_gateway(stack.backend.url, token="not-" + TOKEN)
    try:
        with pytest.raises(rainbow.ConnectionRefused) as caught:
            Client(impostor.ws_url, reconnect=False)
        assert caught.value.status == 401
    finally:
        impostor.stop()


def test_backend_down_is_a_503(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(rainbow.ConnectionRefused) as caught:
            Client(gateway.ws_url, reconnect=False)
        assert caught.value.status == 503
    finally:
        gateway.stop()


def test_api_errors_carry_the_gateways_msg(flask_stack: Stack) -> None:
    gateway = flask_stack.gateway
    with pytest.raises(rainbow.RainbowAPIError) as caught:
        gateway.api(token="wrong").send(channel(), 1, {})
    assert caught.value.msg == "signature error"
    with pytest.raises(rainbow.RainbowAPIError) as caught:
        gateway.api().send(channel(), 1, {}, qos=3)
    assert caught.value.msg == "qos level error"
    with pytest.raises(rainbow.RainbowAPIError) as caught:
        gateway.api().send("", 1, {})
    assert caught.value.msg == "channel miss"
    assert gateway.api().hello() is True


def test_api_rejects_a_stale_signature(flask_stack: Stack) -> None:
    gateway = flask_stack.gateway
    old = sign(TOKEN, timestamp=int(time.time()) - 60)
    from urllib.parse import urlencode

    body = json.dumps({"identity": "x", "channel": "y"}).encode()
    status, _, raw = http("POST", f"{gateway.url}/sub/?{urlencode(old)}", {}, body)
    assert json.loads(raw) == {"status": 1, "msg": "signature error"}, (status, raw)


def test_gateway_retransmits_an_unanswered_push_with_dup(flask_stack: Stack) -> None:
    """The handler fails once, so the client leaves the qos-2 SEND unanswered;
    the gateway retransmits it (DUP, every 3 s) and the retry is processed once."""
    room = channel()
    calls: List[Any] = []

    def flaky(msg_type: int, data: Any) -> Any:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("first delivery fails on purpose")
        return {"attempt": len(calls)}

    with Client(flask_stack.gateway.ws_url, params={"channel": room}, on_message=flaky) as client:
        ready(client)
        started = time.monotonic()
        assert flask_stack.gateway.api().send(room, 1005, "again", qos=2, timeout=8) == (1, {"attempt": 2})
        assert time.monotonic() - started >= 2.5, "answered by the retransmission, not the first copy"
        time.sleep(0.5)
    assert calls == ["again", "again"]
