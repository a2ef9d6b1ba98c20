"""The Django, Flask and ASGI adapters on real servers, called as the gateway would.

No gateway here: the test signs each hook call itself, so these run anywhere.
The same backends face the real gateway in tests/integration.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest

from backends import servers
from backends.servers import Backend, http
from rainbow.backend import decode_context, encode_context, make_signature, sign

TOKEN = "adapter-token"


@pytest.fixture(scope="module", params=["django", "flask", "fastapi"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    started = servers.start(request.param, TOKEN)
    yield started
    started.stop()


def hook(
    backend: Backend,
    path: str,
    *,
    method: str = "GET",
    body: Optional[bytes] = None,
    query: Optional[Dict[str, Any]] = None,
    identity: Optional[str] = "f" * 64,
    cookie: Optional[str] = None,
    signature: Optional[Dict[str, Any]] = None,
) -> Tuple[int, Dict[str, str], bytes]:
    from urllib.parse import urlencode

    params = dict(query or {})
    params.update(sign(TOKEN) if signature is None else signature)
    headers = {"X-DEVICEID": "dev-9", "X-CLIENT-OS": "test"}
    if identity is not None:
        headers["RAINBOWCLIENTIDENTITY"] = identity
    if cookie is not None:
        headers["RAINBOWCLIENTCOOKIE"] = cookie
    status, rsp_headers, rsp_body = http(method, f"{backend.url}/rainbow/{path}?{urlencode(params)}", headers, body)
    return status, {k.lower(): v for k, v in rsp_headers.items()}, rsp_body


def test_connect_hook_accepts_and_sets_context_and_channel(backend: Backend) -> None:
    status, headers, body = hook(backend, "connect/", query={"channel": "lobby", "app": "x"})
    assert status == 200
    assert json.loads(body) == {"status": "success"}
    assert decode_context(headers["rainbowclientcookie"]) == {"device": "dev-9"}
    assert headers["rainbowclientchannel"] == "lobby"
    event = backend.scenario.find("connect", "f" * 64)
    assert event["params"] == {"channel": "lobby", "app": "x"}


def test_connect_hook_denies(backend: Backend) -> None:
    status, _, body = hook(backend, "connect/", query={"deny": "1"}, identity="d" * 64)
    assert status == 200 and json.loads(body) == {"status": "denied"}


def test_message_hook_round_trips_data_and_context(backend: Backend) -> None:
    cookie = encode_context({"name": "ann"})
    status, headers, body = hook(
        backend, "message/1/", method="POST", body=b'{"hello": "world"}', cookie=cookie, identity="a" * 64
    )
    assert status == 200, body
    reply = json.loads(body)
    assert reply["echo"] == {"hello": "world"}
    assert reply["identity"] == "a" * 64
    assert reply["context"] == {"name": "ann"}
    assert reply["type"] == 1
    assert decode_context(headers["rainbowclientcookie"]) == {"name": "ann"}


def test_message_hook_sets_context_and_channels(backend: Backend) -> None:
    status, headers, _ = hook(backend, "message/2/", method="POST", body=b'{"name": "bob"}')
    assert status == 200
    assert decode_context(headers["rainbowclientcookie"]) == {"name": "bob"}
    _, headers, _ = hook(backend, "message/3/", method="POST", body=b'{"channel": "c1"}')
    assert headers["rainbowclientchannel"] == "c1"
    _, headers, _ = hook(backend, "message/4/", method="POST", body=b'{"channel": "c1"}')
    assert headers["rainbowclientchannelunsub"] == "c1"


def test_close_hook(backend: Backend) -> None:
    cookie = base64.b64encode(b'{"name": "zed"}').decode()
    status, _, _ = hook(backend, "close/", cookie=cookie, identity="c" * 64)
    assert status == 200
    assert backend.scenario.find("close", "c" * 64)["context"] == {"name": "zed"}


@pytest.mark.parametrize("path", ["connect/", "close/", "message/1/"])
def test_bad_signature_is_rejected(backend: Backend, path: str) -> None:
    method = "POST" if path.startswith("message") else "GET"
    ts = sign(TOKEN)["timestamp"]
    wrong = {"timestamp": ts, "nonce": 42, "signature": make_signature("not-the-token", ts, 42)}
    status, headers, body = hook(backend, path, method=method, body=b"{}", signature=wrong)
    assert status == 403
    assert headers["rainbowrequestinvalid"] == "60001"
    assert "mismatch" in json.loads(body)["msg"]


def test_stale_and_missing_signatures_are_rejected(backend: Backend) -> None:
    stale = {"timestamp": 1_400_000_000, "nonce": 7, "signature": make_signature(TOKEN, 1_400_000_000, 7)}
    status, headers, body = hook(backend, "connect/", signature=stale)
    assert (status, headers["rainbowrequestinvalid"]) == (403, "60001")
    assert "window" in json.loads(body)["msg"]
    status, headers, _ = hook(backend, "connect/", signature={})
    assert (status, headers["rainbowrequestinvalid"]) == (403, "60001")


def test_missing_identity_and_wrong_method(backend: Backend) -> None:
    status, headers, _ = hook(backend, "message/1/", method="POST", body=b"{}", identity=None)
    assert (status, headers["rainbowrequestinvalid"]) == (400, "60002")
    status, headers, _ = hook(backend, "message/1/", method="GET")
    assert (status, headers["rainbowrequestinvalid"]) == (405, "60003")


def test_unknown_message_type_is_404(backend: Backend) -> None:
    status, _, _ = hook(backend, "message/77/", method="POST", body=b"{}")
    assert status == 404
