"""Signatures (spec §7): the algorithm, the window, constant-time checks."""

from __future__ import annotations

import hashlib
import time

import pytest

from rainbow import SignatureError
from rainbow.backend import NonceCache, check_signature, make_signature, sign, verify_signature

TOKEN = "qwe123"


def original(token: str, ts: int, nonce: int) -> str:
    """rainbow-django's algorithm, verbatim in spirit."""
    parts = [token, str(ts), str(nonce)]
    parts.sort()
    return hashlib.sha1("".join(parts).encode()).hexdigest()


def test_matches_the_original_algorithm() -> None:
    assert make_signature(TOKEN, 1400000000, 1234) == original(TOKEN, 1400000000, 1234)
    # The sort is a plain string sort: "9" > "10..." and the token may sort first or last.
    assert make_signature("9", 10, 2) == hashlib.sha1(b"1029").hexdigest()
    assert make_signature(TOKEN, "1400000000", "1234") == make_signature(TOKEN, 1400000000, 1234)


def test_sign_produces_fresh_valid_params() -> None:
    a, b = sign(TOKEN), sign(TOKEN)
    assert set(a) == {"timestamp", "nonce", "signature"}
    assert abs(a["timestamp"] - time.time()) < 2
    assert a["nonce"] != b["nonce"]
    assert verify_signature(TOKEN, a["timestamp"], a["nonce"], a["signature"])
    assert sign(TOKEN, 5, 6)["signature"] == original(TOKEN, 5, 6)


def test_good_signature_verifies() -> None:
    now = 1_700_000_000
    sig = original(TOKEN, now, 4321)
    assert verify_signature(TOKEN, now, 4321, sig, now=now)
    assert verify_signature(TOKEN, str(now), "4321", sig, now=now)
    assert verify_signature(TOKEN, now, 4321, sig.upper(), now=now), "hex case does not matter"


def test_wrong_signature_or_token_fails() -> None:
    now = 1_700_000_000
    sig = original(TOKEN, now, 4321)
    assert not verify_signature(TOKEN, now, 4321, "0" * 40, now=now)
    assert not verify_signature("other", now, 4321, sig, now=now)
    assert not verify_signature(TOKEN, now, 4322, sig, now=now)
    assert not verify_signature(TOKEN, now + 1, 4321, sig, now=now + 1)


@pytest.mark.parametrize("skew", [-11, 11, -3600, 3600])
def test_stale_or_future_timestamps_fail(skew: int) -> None:
    ts = 1_700_000_000
    sig = original(TOKEN, ts, 1)
    assert not verify_signature(TOKEN, ts, 1, sig, now=ts + skew)


@pytest.mark.parametrize("skew", [-10, -1, 0, 1, 10])
def test_timestamps_inside_the_window_pass(skew: int) -> None:
    ts = 1_700_000_000
    assert verify_signature(TOKEN, ts, 1, original(TOKEN, ts, 1), now=ts + skew)


def test_window_is_configurable() -> None:
    ts = 1_700_000_000
    assert verify_signature(TOKEN, ts, 1, original(TOKEN, ts, 1), window=60, now=ts + 59)


@pytest.mark.parametrize(
    "args",
    [
        (None, 1, "x"),
        (1_700_000_000, None, "x"),
        (1_700_000_000, 1, None),
        ("", "", ""),
        ("abc", 1, "x"),
        (1_700_000_000, "1.5", "x"),
    ],
)
def test_missing_or_malformed_values_fail(args: tuple) -> None:  # type: ignore[type-arg]
    assert not verify_signature(TOKEN, *args, now=1_700_000_000)


def test_empty_token_never_verifies() -> None:
    ts = 1_700_000_000
    assert not verify_signature("", ts, 1, original("", ts, 1), now=ts)


def test_check_signature_says_what_is_wrong() -> None:
    now = 1_700_000_000
    good = {"timestamp": str(now), "nonce": "7", "signature": original(TOKEN, now, 7)}
    check_signature(TOKEN, good, now=now)
    with pytest.raises(SignatureError, match="missing signature"):
        check_signature(TOKEN, {"timestamp": "1", "nonce": "2"}, now=now)
    with pytest.raises(SignatureError, match="window"):
        check_signature(TOKEN, good, now=now + 30)
    with pytest.raises(SignatureError, match="mismatch") as caught:
        check_signature("nope", good, now=now)
    assert caught.value.code == 60001


def test_nonce_cache_rejects_replays_inside_the_window() -> None:
    now = 1_700_000_000
    cache = NonceCache(window=10)
    good = {"timestamp": str(now), "nonce": "7", "signature": original(TOKEN, now, 7)}
    check_signature(TOKEN, good, now=now, nonces=cache)
    with pytest.raises(SignatureError, match="replayed"):
        check_signature(TOKEN, good, now=now + 1, nonces=cache)


def test_nonce_cache_is_bounded() -> None:
    cache = NonceCache(window=10, max_entries=3)
    for n in range(10):
        assert cache.check_and_add(100, n, now=100)
    assert len(cache._seen) <= 3
