"""Worker-protocol frames (docs/worker-protocol.md §2) and the signed handshake URL (§1)."""

from __future__ import annotations

import json
import struct
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

import rainbow
from rainbow.backend import make_signature, make_signature_v2, verify_signature, verify_signature_v2
from rainbow.worker import FrameError, WorkerProtocolError, decode_frame, encode_frame, worker_url


def test_round_trip_with_body() -> None:
    frame = encode_frame({"op": "task", "task": 7, "kind": "message", "type": 3}, b"\x00\xffpayload")
    header, body = decode_frame(frame)
    assert header == {"op": "task", "task": 7, "kind": "message", "type": 3}
    assert body == b"\x00\xffpayload"


def test_layout_is_u32_be_length_json_then_body() -> None:
    frame = encode_frame({"op": "drain"}, b"xy")
    (length,) = struct.unpack(">I", frame[:4])
    assert json.loads(frame[4 : 4 + length]) == {"op": "drain"}
    assert frame[4 + length :] == b"xy"


def test_empty_body_and_unicode_header() -> None:
    header, body = decode_frame(encode_frame({"op": "reply", "task": 1, "context": "héllo ✓"}))
    assert header["context"] == "héllo ✓" and body == b""


def test_unknown_header_fields_pass_through() -> None:
    header, _ = decode_frame(encode_frame({"op": "welcome", "version": 1, "future": [1, 2]}))
    assert header["future"] == [1, 2]


def test_bytearray_and_memoryview_decode() -> None:
    frame = encode_frame({"op": "drained"}, b"b")
    assert decode_frame(bytearray(frame)) == ({"op": "drained"}, b"b")
    assert decode_frame(memoryview(frame)) == ({"op": "drained"}, b"b")


def test_encode_needs_a_string_op() -> None:
    with pytest.raises(ValueError):
        encode_frame({"task": 1})
    with pytest.raises(ValueError):
        encode_frame({"op": 3})


@pytest.mark.parametrize(
    "data, words",
    [
        ("text", "text message"),
        (b"", "shorter"),
        (b"\x00\x00\x01", "shorter"),
        (b"\x00\x00\x00\x10{}", "beyond"),
        (struct.pack(">I", 3) + b"{x}", "not UTF-8 JSON"),
        (struct.pack(">I", 2) + b"\xff\xfe", "not UTF-8 JSON"),
        (struct.pack(">I", 2) + b"[]", "not an object"),
        (struct.pack(">I", 2) + b"{}", "no string 'op'"),
        (struct.pack(">I", 8) + b'{"op":1}', "no string 'op'"),
    ],
)
def test_malformed_frames_are_named(data: object, words: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(data)  # type: ignore[arg-type]
    assert words in str(info.value)
    assert info.value.close_code == 1002
    assert isinstance(info.value, WorkerProtocolError) and isinstance(info.value, rainbow.ProtocolError)


def test_too_big_is_1009() -> None:
    frame = encode_frame({"op": "task"}, b"x" * 100)
    with pytest.raises(FrameError) as info:
        decode_frame(frame, max_size=50)
    assert info.value.close_code == 1009
    assert decode_frame(frame, max_size=len(frame))[1] == b"x" * 100


def test_zero_length_header_is_an_error_not_a_crash() -> None:
    with pytest.raises(FrameError):
        decode_frame(b"\x00\x00\x00\x00body")


# -- the signed handshake URL --------------------------------------------------


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_url_is_signed_like_an_api_call() -> None:
    url = worker_url("ws://127.0.0.1:1984/worker/", "qwe123", "chat", timestamp=1700000000, nonce=42, signature="v1")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("ws", "127.0.0.1:1984", "/worker/")
    q = query(url)
    assert q == {
        "timestamp": "1700000000",
        "nonce": "42",
        "signature": make_signature("qwe123", 1700000000, 42),
        "name": "chat",
    }


def test_v2_url_is_signed_over_path_and_query() -> None:
    url = worker_url("ws://127.0.0.1:1984/worker/?x=a+b", "qwe123", "chat 1", timestamp=1700000000, nonce="abc")
    parts = urlsplit(url)
    assert parts.query.startswith("x=a%20b&name=chat%201&timestamp=1700000000&nonce=abc&signature=")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    assert verify_signature_v2("qwe123", "GET", "/worker/", pairs, b"", now=1700000000)
    assert not verify_signature_v2("qwe123", "GET", "/other/", pairs, b"", now=1700000000)
    assert make_signature_v2(
        "qwe123", "GET", "/worker/", [("x", "a b"), ("name", "chat 1")], b"", 1700000000, "abc"
    ) == dict(pairs)["signature"]
    with pytest.raises(ValueError):
        worker_url("ws://h:1/worker/", "t", signature="v3")


def test_fresh_url_verifies_and_nonces_differ() -> None:
    v1 = lambda: query(worker_url("ws://h:1/worker/", "tok", signature="v1"))  # noqa: E731
    a, b = v1(), v1()
    assert verify_signature("tok", a["timestamp"], a["nonce"], a["signature"])
    assert not verify_signature("other", a["timestamp"], a["nonce"], a["signature"])
    assert a["nonce"] != b["nonce"]
    assert "name" not in a


@pytest.mark.parametrize(
    "given, scheme, path",
    [
        ("ws://h:1", "ws", "/worker/"),
        ("ws://h:1/", "ws", "/worker/"),
        ("http://h:1", "ws", "/worker/"),
        ("https://h/worker/", "wss", "/worker/"),
        ("wss://h/custom/worker/", "wss", "/custom/worker/"),
    ],
)
def test_url_forms(given: str, scheme: str, path: str) -> None:
    parts = urlsplit(worker_url(given, "t"))
    assert (parts.scheme, parts.path) == (scheme, path)


def test_old_signature_params_are_replaced_and_others_kept() -> None:
    q = query(worker_url("ws://h:1/worker/?x=1&signature=old&nonce=1", "t", timestamp=5, nonce=6, signature="v1"))
    assert q["x"] == "1" and q["nonce"] == "6" and q["signature"] == make_signature("t", 5, 6)


def test_bad_url() -> None:
    with pytest.raises(ValueError):
        worker_url("ftp://h/", "t")
    with pytest.raises(ValueError):
        worker_url("nohost", "t")
