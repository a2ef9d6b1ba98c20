"""v2 signatures (spec §7.4): the canonical request, the test vector, binding."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from rainbow.backend import encode_query, make_signature_v2, sign_v2, verify_signature_v2
from rainbow.backend.signature import body_digest, canonical_query, canonical_request, percent_encode

TOKEN = "qwe123"
PAIRS = [("channel", "room 1"), ("msgtype", 1001), ("qos", 1)]
BODY = b'{"n":1}'
CANONICAL_QUERY = "channel=room%201&msgtype=1001&nonce=4f9c2a1b7d3e6a5c&qos=1&timestamp=1700000000"
DIGEST = "2bfd14f43d17fc7cea24e0917a8879b4b2f880b8baeec1b9d90fbaad655e71bd"
SIGNATURE = "4855ef57fa5d2bbb0f52dc09ffb98820947442c1bb48ecdbe20e61b5b7d7d2bc"


def test_the_test_vector() -> None:
    everything = PAIRS + [("timestamp", 1700000000), ("nonce", "4f9c2a1b7d3e6a5c"), ("signature", "ignored")]
    assert canonical_query(everything) == CANONICAL_QUERY
    assert body_digest(BODY) == DIGEST
    canonical = canonical_request("POST", "/send/", CANONICAL_QUERY, DIGEST, 1700000000, "4f9c2a1b7d3e6a5c")
    assert canonical == f"RAINBOW-HMAC-SHA256\nPOST\n/send/\n{CANONICAL_QUERY}\n{DIGEST}\n1700000000\n4f9c2a1b7d3e6a5c"
    assert hmac.new(b"qwe123", canonical.encode(), hashlib.sha256).hexdigest() == SIGNATURE
    assert make_signature_v2(TOKEN, "POST", "/send/", PAIRS, BODY, 1700000000, "4f9c2a1b7d3e6a5c") == SIGNATURE
    pairs = sign_v2(TOKEN, "POST", "/send/", PAIRS, BODY, timestamp=1700000000, nonce="4f9c2a1b7d3e6a5c")
    assert encode_query(pairs) == (
        "channel=room%201&msgtype=1001&qos=1&timestamp=1700000000&nonce=4f9c2a1b7d3e6a5c&signature=" + SIGNATURE
    )


def test_rfc3986_encoding() -> None:
    assert percent_encode("a b+c/é~-._") == "a%20b%2Bc%2F%C3%A9~-._"
    assert percent_encode(b"\xff") == "%FF"
    # Sorted by encoded name, then value; duplicates kept; signature dropped.
    assert canonical_query([("x", "2"), ("x", "10"), ("X", "1"), ("signature", "s")]) == "X=1&x=10&x=2"


def test_fresh_signatures_verify_and_bind_the_request() -> None:
    pairs = sign_v2(TOKEN, "POST", "/send/", PAIRS, BODY)
    assert len(dict(pairs)["nonce"]) == 16 and len(dict(pairs)["signature"]) == 64
    assert abs(int(dict(pairs)["timestamp"]) - time.time()) < 2
    assert verify_signature_v2(TOKEN, "POST", "/send/", pairs, BODY)
    assert not verify_signature_v2("other", "POST", "/send/", pairs, BODY)
    assert not verify_signature_v2(TOKEN, "POST", "/send/", pairs, b"{}"), "another body"
    assert not verify_signature_v2(TOKEN, "POST", "/sub/", pairs, BODY), "another endpoint"
    assert not verify_signature_v2(TOKEN, "GET", "/send/", pairs, BODY), "another method"
    other_channel = [(k, "room 2" if k == "channel" else v) for k, v in pairs]
    assert not verify_signature_v2(TOKEN, "POST", "/send/", other_channel, BODY)
    stale = sign_v2(TOKEN, "POST", "/send/", PAIRS, BODY, timestamp=int(time.time()) - 60)
    assert not verify_signature_v2(TOKEN, "POST", "/send/", stale, BODY)
    assert sign_v2(TOKEN, "POST", "/send/")[-3][0] == "timestamp", "no params is fine"


def test_caller_signing_params_are_replaced_and_bad_nonces_refused() -> None:
    pairs = sign_v2(TOKEN, "GET", "/worker/", [("signature", "old"), ("nonce", "1"), ("name", "w")], b"")
    assert [k for k, _ in pairs] == ["name", "timestamp", "nonce", "signature"]
    with pytest.raises(ValueError, match="v2 nonce"):
        sign_v2(TOKEN, "GET", "/worker/", nonce="a.b")
