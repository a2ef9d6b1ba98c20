"""Hook requests and responses: parsing, context, control headers, dispatch."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, Optional

import pytest

from rainbow.backend import (
    HookResult,
    Hooks,
    RainbowRequest,
    RainbowResponse,
    decode_context,
    encode_context,
    sign,
)

TOKEN = "qwe123"


def cookie_of(context: Dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(context).encode()).decode()


def call(
    hooks: Hooks,
    kind: str,
    *,
    method: Optional[str] = None,
    body: bytes = b"",
    msg_type: Optional[int] = None,
    identity: Optional[str] = "abc123",
    cookie: Optional[str] = None,
    query: Optional[Dict[str, str]] = None,
    token: str = TOKEN,
    signed: bool = True,
) -> HookResult:
    q: Dict[str, str] = dict(query or {})
    if signed:
        q.update({k: str(v) for k, v in sign(token).items()})
    headers = {"X-DEVICEID": "dev"}
    if identity is not None:
        headers["RainbowClientIdentity"] = identity  # header names are case-insensitive
    if cookie is not None:
        headers["RAINBOWCLIENTCOOKIE"] = cookie
    method = method or ("POST" if kind == "message" else "GET")
    return hooks.handle(kind, method=method, query=q, headers=headers, body=body, msg_type=msg_type)


def test_context_round_trips_through_the_cookie() -> None:
    context = {"user": "jeff", "n": 1, "uni": "彩虹"}
    cookie = encode_context(context)
    assert cookie.isascii()
    assert json.loads(base64.b64decode(cookie)) == context
    assert decode_context(cookie) == context


@pytest.mark.parametrize("cookie", [None, "", "   "])
def test_missing_or_empty_cookie_is_an_empty_context(cookie: Optional[str]) -> None:
    assert decode_context(cookie) == {}


def test_cookie_without_padding_or_urlsafe_still_decodes() -> None:
    raw = base64.urlsafe_b64encode(json.dumps({"a": "??>>"}).encode()).decode().rstrip("=")
    assert decode_context(raw) == {"a": "??>>"}


@pytest.mark.parametrize(
    "cookie", ["%%%not-base64", base64.b64encode(b"[1,2]").decode(), base64.b64encode(b"{").decode()]
)
def test_foreign_cookie_is_a_value_error(cookie: str) -> None:
    with pytest.raises(ValueError):
        decode_context(cookie)


def test_response_builds_body_and_control_headers() -> None:
    request = RainbowRequest("id1", 3, {"message": "hi"}, {"user": "ann"})
    rsp = RainbowResponse({"status": "ok"}, request)
    rsp.context["room"] = "lobby"
    rsp.sub("room").sub("news", "sport")
    rsp.unsub("old")
    body, headers = rsp.render()
    assert json.loads(body) == {"status": "ok"}
    assert decode_context(headers["RAINBOWCLIENTCOOKIE"]) == {"user": "ann", "room": "lobby"}
    assert headers["RAINBOWCLIENTCHANNEL"] == "room;;news;;sport"
    assert headers["RAINBOWCLIENTCHANNELUNSUB"] == "old"
    assert request.context == {"user": "ann"}, "the request's context is not mutated"


def test_response_without_context_or_channels_sets_no_control_headers() -> None:
    body, headers = RainbowResponse({"status": "success"}).render()
    assert json.loads(body) == {"status": "success"}
    assert set(headers) == {"Content-Type"}


def test_clearing_the_context_sends_an_empty_cookie() -> None:
    request = RainbowRequest("id1", 1, None, {"user": "ann"})
    rsp = RainbowResponse(None, request)
    rsp.context.clear()
    body, headers = rsp.render()
    assert body == b""
    assert decode_context(headers["RAINBOWCLIENTCOOKIE"]) == {}


def test_explicit_context_replaces_the_requests() -> None:
    request = RainbowRequest("id1", 1, None, {"user": "ann"})
    _, headers = RainbowResponse("x", request, context={"user": "bob"}).render()
    assert decode_context(headers["RAINBOWCLIENTCOOKIE"]) == {"user": "bob"}


def test_bytes_and_raw_payloads_pass_through() -> None:
    assert RainbowResponse(b"\x00\x01").render()[0] == b"\x00\x01"
    assert RainbowResponse("plain").render("raw")[0] == b"plain"
    assert RainbowResponse("plain").render("json")[0] == b'"plain"'


@pytest.mark.parametrize("bad", ["", "a;;b", "line\nbreak", "频道", 5])
def test_channels_that_cannot_travel_in_a_header_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        RainbowResponse().sub(bad)


def test_request_is_compatible_with_rainbow_django() -> None:
    class Native:
        GET = {"token": "t"}

    request = RainbowRequest("id9", kind="connect", native=Native())
    assert request.rbidentity == "id9"
    assert request.GET == {"token": "t"}
    with pytest.raises(AttributeError):
        request.nope  # noqa: B018
    with pytest.raises(AttributeError):
        RainbowRequest("x").GET  # noqa: B018


@pytest.fixture
def hooks() -> Hooks:
    hooks = Hooks(token=TOKEN)

    @hooks.message(1)
    def echo(request: RainbowRequest) -> RainbowResponse:
        rsp = RainbowResponse({"echo": request.data, "identity": request.identity, "ctx": request.context}, request)
        rsp.context["seen"] = True
        rsp.sub("room")
        return rsp

    @hooks.message(2)
    def plain(request: RainbowRequest) -> Any:
        return [1, 2, 3]

    @hooks.message(3)
    def nothing(request: RainbowRequest) -> None:
        return None

    return hooks


def test_message_hook_round_trip(hooks: Hooks) -> None:
    result = call(hooks, "message", msg_type=1, body=b'{"message": "hi"}', cookie=cookie_of({"user": "ann"}))
    assert result.status == 200
    assert json.loads(result.body) == {"echo": {"message": "hi"}, "identity": "abc123", "ctx": {"user": "ann"}}
    assert decode_context(result.headers["RAINBOWCLIENTCOOKIE"]) == {"user": "ann", "seen": True}
    assert result.headers["RAINBOWCLIENTCHANNEL"] == "room"


def test_plain_return_values_become_the_reply(hooks: Hooks) -> None:
    assert json.loads(call(hooks, "message", msg_type=2, body=b"").body) == [1, 2, 3]
    result = call(hooks, "message", msg_type=3, body=b"{}")
    assert (result.status, result.body) == (200, b"")


def test_unknown_message_type_is_404(hooks: Hooks) -> None:
    result = call(hooks, "message", msg_type=99, body=b"{}")
    assert result.status == 404
    assert "99" in json.loads(result.body)["msg"]


def test_non_json_payload_is_400(hooks: Hooks) -> None:
    assert call(hooks, "message", msg_type=1, body=b"not json").status == 400


def test_raw_data_format_passes_bytes() -> None:
    hooks = Hooks(token=TOKEN, data_format="raw")
    seen = []

    @hooks.message(1)
    def raw(request: RainbowRequest) -> bytes:
        seen.append(request.data)
        return b"\xff"

    assert call(hooks, "message", msg_type=1, body=b"\x00bin").body == b"\xff"
    assert seen == [b"\x00bin"]


@pytest.mark.parametrize("kind", ["connect", "close", "message"])
def test_bad_signature_is_rejected_with_60001(hooks: Hooks, kind: str) -> None:
    result = call(hooks, kind, msg_type=1, body=b"{}", token="wrong")
    assert result.status == 403
    assert result.headers["RAINBOWREQUESTINVALID"] == "60001"
    assert call(hooks, kind, msg_type=1, body=b"{}", signed=False).headers["RAINBOWREQUESTINVALID"] == "60001"


def test_stale_signature_is_rejected(hooks: Hooks) -> None:
    from rainbow.backend import make_signature

    ts = 1_000_000_000
    query = {"timestamp": str(ts), "nonce": "5", "signature": make_signature(TOKEN, ts, 5)}
    result = hooks.handle("connect", method="GET", query=query, headers={"RAINBOWCLIENTIDENTITY": "x"})
    assert result.status == 403
    assert "window" in json.loads(result.body)["msg"]


def test_missing_identity_is_rejected_with_60002(hooks: Hooks) -> None:
    result = call(hooks, "message", msg_type=1, body=b"{}", identity=None)
    assert (result.status, result.headers["RAINBOWREQUESTINVALID"]) == (400, "60002")


def test_wrong_method_is_rejected_with_60003(hooks: Hooks) -> None:
    result = call(hooks, "message", msg_type=1, method="GET")
    assert (result.status, result.headers["RAINBOWREQUESTINVALID"]) == (405, "60003")
    assert call(hooks, "connect", method="POST").headers["RAINBOWREQUESTINVALID"] == "60003"


def test_connect_and_close_accept_by_default(hooks: Hooks) -> None:
    for kind in ("connect", "close"):
        result = call(hooks, kind)
        assert result.status == 200
        assert json.loads(result.body) == {"status": "success"}


def test_connect_handler_sees_client_params_and_can_deny() -> None:
    hooks = Hooks(token=TOKEN)
    seen = []

    @hooks.connect
    def on_connect(request: RainbowRequest) -> Any:
        seen.append((request.kind, request.identity, request.params, request.headers.get("x-deviceid")))
        if request.params.get("deny"):
            return False
        rsp = RainbowResponse({"status": "success"}, request)
        rsp.context["greeting"] = "hi"
        return rsp

    accepted = call(hooks, "connect", query={"room": "a"})
    assert json.loads(accepted.body) == {"status": "success"}
    assert decode_context(accepted.headers["RAINBOWCLIENTCOOKIE"]) == {"greeting": "hi"}
    denied = call(hooks, "connect", query={"deny": "1"})
    assert json.loads(denied.body) == {"status": "denied"}
    assert seen[0] == ("connect", "abc123", {"room": "a"}, "dev")


def test_foreign_cookie_gives_an_empty_context(hooks: Hooks) -> None:
    result = call(hooks, "message", msg_type=1, body=b"1", cookie="opaque-not-ours")
    assert json.loads(result.body)["ctx"] == {}


def test_token_may_be_read_lazily_and_must_be_set() -> None:
    settings = {"token": ""}
    hooks = Hooks(token=lambda: settings["token"])
    with pytest.raises(RuntimeError, match="token"):
        call(hooks, "connect")
    settings["token"] = TOKEN
    assert call(hooks, "connect").status == 200


def test_loader_runs_once_before_the_first_call() -> None:
    runs = []
    hooks = Hooks(token=TOKEN, loader=lambda: runs.append(1))
    call(hooks, "connect")
    call(hooks, "close")
    assert runs == [1]


def test_replacing_a_handler_warns(hooks: Hooks) -> None:
    with pytest.warns(RuntimeWarning):
        hooks.message(1)(lambda r: None)


def test_parse_request_without_a_framework() -> None:
    from rainbow.backend import BadPayload, MissingIdentity, parse_request

    request = parse_request(
        "message",
        query={"timestamp": "1", "nonce": "2", "signature": "x", "extra": "y"},
        headers={"RAINBOWCLIENTIDENTITY": "id7", "RAINBOWCLIENTCOOKIE": cookie_of({"user": "ann"})},
        body=b'{"message": "hi"}',
        msg_type=1,
    )
    assert (request.identity, request.msg_type, request.data) == ("id7", 1, {"message": "hi"})
    assert request.context == {"user": "ann"}
    assert request.params == {"extra": "y"}, "signature params are stripped"
    close = parse_request("close", query={}, headers={"rainbowclientidentity": "id7", "RAINBOWCLIENTCOOKIE": ""})
    assert (close.kind, close.context, close.data, close.msg_type) == ("close", {}, None, None)
    with pytest.raises(MissingIdentity):
        parse_request("connect", query={}, headers={})
    with pytest.raises(BadPayload):
        parse_request("message", query={}, headers={"RAINBOWCLIENTIDENTITY": "i"}, body=b"{", msg_type=1)
