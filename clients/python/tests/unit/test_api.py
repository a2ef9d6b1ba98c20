"""RainbowAPI against a tiny stdlib HTTP server playing the gateway's API."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import parse_qsl, urlsplit

import pytest

from rainbow import RainbowAPIError, RainbowAPIUnreachable
from rainbow.backend import AsyncRainbowAPI, RainbowAPI, verify_signature, verify_signature_v2

TOKEN = "qwe123"


class FakeGateway:
    """Records each call and answers what the test queued (default: status 0)."""

    def __init__(self) -> None:
        self.calls: List[Dict[str, Any]] = []
        self.answers: List[Tuple[int, bytes]] = []
        self.delay = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                fake.calls.append(
                    {
                        "method": self.command,
                        "path": parts.path,
                        "query": dict(parse_qsl(parts.query)),
                        "pairs": parse_qsl(parts.query, keep_blank_values=True),
                        "body": self.rfile.read(length),
                        "headers": dict(self.headers),
                    }
                )
                if fake.delay:
                    time.sleep(fake.delay)
                status, body = fake.answers.pop(0) if fake.answers else (200, b'{"status": 0}')
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def answer(self, payload: Any, status: int = 200) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.answers.append((status, body))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    yield fake
    fake.close()


def assert_signed(call: Dict[str, Any]) -> None:
    """Signed v2 over this very request (method, path, query, body)."""
    assert verify_signature_v2(TOKEN, call["method"], call["path"], call["pairs"], call["body"]), call
    assert len(call["query"]["signature"]) == 64


def test_v2_signatures_bind_the_request_and_v1_is_an_option(gateway: FakeGateway) -> None:
    api = RainbowAPI(gateway.url, TOKEN)
    api.send("room 1", 1001, {"n": 1}, qos=1)
    api.subscribe("room", "i" * 64)
    first, second = gateway.calls
    assert_signed(first)
    assert_signed(second)
    assert not verify_signature_v2(TOKEN, "POST", "/sub/", first["pairs"], first["body"]), "bound to its path"
    assert first["query"]["channel"] == "room 1"
    old = RainbowAPI(gateway.url, TOKEN, signature="v1")
    old.send("room", 1, "x")
    q = gateway.calls[2]["query"]
    assert len(q["signature"]) == 40 and verify_signature(TOKEN, q["timestamp"], q["nonce"], q["signature"])
    with pytest.raises(ValueError, match="v1"):
        RainbowAPI(gateway.url, TOKEN, signature="v3")


def test_v2_signs_the_path_with_the_url_prefix(gateway: FakeGateway) -> None:
    RainbowAPI(gateway.url + "/rainbow/", TOKEN).send("room", 1, "x")
    call = gateway.calls[0]
    assert call["path"] == "/rainbow/send/"
    assert_signed(call)


def test_send_posts_the_payload_with_signed_params(gateway: FakeGateway) -> None:
    gateway.answer({"status": 0, "connections": 2, "data": '{"got": true}'})
    api = RainbowAPI(gateway.url + "/", TOKEN)
    connections, data = api.send("room", 1001, {"name": "jeff"}, qos=1, timeout=5)
    assert (connections, data) == (2, {"got": True})
    call = gateway.calls[0]
    assert (call["method"], call["path"]) == ("POST", "/send/")
    assert json.loads(call["body"]) == {"name": "jeff"}
    assert {k: call["query"][k] for k in ("channel", "msgtype", "qos", "timeout")} == {
        "channel": "room",
        "msgtype": "1001",
        "qos": "1",
        "timeout": "5",
    }
    assert_signed(call)


def test_send_qos0_and_empty_or_plain_replies(gateway: FakeGateway) -> None:
    api = RainbowAPI(gateway.url, TOKEN)
    gateway.answer({"status": 0})
    assert api.send("room", 1, "x") == (None, None)
    gateway.answer({"status": 0, "connections": 0, "data": ""})
    assert api.send("room", 1, "x", qos=2) == (0, None)
    gateway.answer({"status": 0, "connections": 1, "data": "not json"})
    assert api.send("room", 1, "x", qos=1) == (1, "not json")
    assert gateway.calls[0]["query"]["qos"] == "0", "rainbow-django's default qos is 0"


def test_send_bytes_pass_through(gateway: FakeGateway) -> None:
    RainbowAPI(gateway.url, TOKEN).send("c", 1, b"\x00raw")
    assert gateway.calls[0]["body"] == b"\x00raw"


@pytest.mark.parametrize("msg", ["signature error", "timeout", "channel miss", "qos level error", "params error"])
def test_gateway_errors_raise_with_its_msg(gateway: FakeGateway, msg: str) -> None:
    gateway.answer({"status": 1, "msg": msg})
    with pytest.raises(RainbowAPIError) as caught:
        RainbowAPI(gateway.url, TOKEN).send("room", 1, {})
    assert caught.value.msg == msg
    assert caught.value.http_status == 200
    assert "gateway" in str(caught.value) and msg in str(caught.value)


def test_http_error_statuses_with_json_still_carry_the_msg(gateway: FakeGateway) -> None:
    gateway.answer({"status": 1, "msg": "signature error"}, status=403)
    with pytest.raises(RainbowAPIError) as caught:
        RainbowAPI(gateway.url, TOKEN).subscribe("room", "abc")
    assert (caught.value.msg, caught.value.http_status) == ("signature error", 403)


def test_non_json_answer_is_an_error(gateway: FakeGateway) -> None:
    gateway.answer(b"<html>oops</html>", status=502)
    with pytest.raises(RainbowAPIError, match="not a JSON object") as caught:
        RainbowAPI(gateway.url, TOKEN).send("room", 1, {})
    assert caught.value.http_status == 502


def test_subscribe_and_unsubscribe_post_json_bodies(gateway: FakeGateway) -> None:
    api = RainbowAPI(gateway.url, TOKEN)
    api.subscribe("room", "id1")
    api.subscribe("room", "id2", occupy=True)
    api.unsubscribe("room", "id1")
    assert [c["path"] for c in gateway.calls] == ["/sub/", "/sub/", "/unsub/"]
    assert json.loads(gateway.calls[0]["body"]) == {"identity": "id1", "channel": "room", "occupy": False}
    assert json.loads(gateway.calls[1]["body"])["occupy"] is True
    assert json.loads(gateway.calls[2]["body"]) == {"identity": "id1", "channel": "room"}
    for call in gateway.calls:
        assert_signed(call)


def test_no_such_connection(gateway: FakeGateway) -> None:
    gateway.answer({"status": 1, "msg": "no such connection"})
    with pytest.raises(RainbowAPIError, match="no such connection"):
        RainbowAPI(gateway.url, TOKEN).subscribe("room", "nobody")


def test_unreachable_gateway() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RainbowAPIUnreachable, match="unreachable"):
        RainbowAPI(f"http://127.0.0.1:{port}", TOKEN).send("room", 1, {})
    assert RainbowAPI(f"http://127.0.0.1:{port}", TOKEN).hello() is False


def test_slow_gateway_times_out(gateway: FakeGateway) -> None:
    gateway.delay = 1.5
    api = RainbowAPI(gateway.url, TOKEN, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(RainbowAPIUnreachable, match="no answer"):
        api.subscribe("room", "x")
    assert time.monotonic() - started < 1.4


def test_send_http_timeout_covers_the_gateway_wait(gateway: FakeGateway) -> None:
    gateway.delay = 0.5
    api = RainbowAPI(gateway.url, TOKEN, timeout=0.3)
    gateway.answer({"status": 0, "connections": 1, "data": ""})
    assert api.send("room", 1, {}, qos=1, timeout=1) == (1, None)


def test_hello(gateway: FakeGateway) -> None:
    gateway.answer(b"ok")
    assert RainbowAPI(gateway.url, TOKEN).hello() is True
    assert gateway.calls[0]["path"] == "/hello/"


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="RAINBOW_SERVER_URL"):
        RainbowAPI("", TOKEN)
    with pytest.raises(ValueError, match="RAINBOW_TOKEN"):
        RainbowAPI("http://x", "")


def test_async_api(gateway: FakeGateway) -> None:
    gateway.answer({"status": 0, "connections": 3, "data": "[1]"})

    async def main() -> Any:
        api = AsyncRainbowAPI(gateway.url, TOKEN)
        result = await api.send("room", 1, {}, qos=1)
        await api.subscribe("room", "id")
        await api.unsubscribe("room", "id")
        return result

    assert asyncio.run(main()) == (3, [1])
    assert [c["path"] for c in gateway.calls] == ["/send/", "/sub/", "/unsub/"]
