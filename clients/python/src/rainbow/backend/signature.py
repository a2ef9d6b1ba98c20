"""Signatures of hook and API calls (spec §7).

``signature = hex(sha1(concat(sorted([token, str(timestamp), str(nonce)]))))``

The gateway signs every hook call it makes to the backend, and the backend
signs every API call it makes to the gateway, with the same shared
``security_token`` (``RAINBOW_TOKEN``). Checks compare in constant time and
accept timestamps within ±``window`` seconds of the local clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Union

from ..errors import SignatureError

__all__ = [
    "DEFAULT_WINDOW",
    "make_signature",
    "sign",
    "verify_signature",
    "check_signature",
    "NonceCache",
]

#: Accepted clock difference, in seconds, between signer and checker.
DEFAULT_WINDOW = 10

Stamp = Union[int, str]


def make_signature(token: str, timestamp: Stamp, nonce: Stamp) -> str:
    """The hex SHA-1 of the sorted, concatenated ``[token, timestamp, nonce]``."""
    parts = sorted([str(token), str(timestamp), str(nonce)])
    return hashlib.sha1("".join(parts).encode("utf-8")).hexdigest()


def sign(token: str, timestamp: Optional[int] = None, nonce: Optional[int] = None) -> Dict[str, Any]:
    """Fresh query parameters ``{timestamp, nonce, signature}`` for one call."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    n = secrets.randbelow(10**9) + 1 if nonce is None else int(nonce)
    return {"timestamp": ts, "nonce": n, "signature": make_signature(token, ts, n)}


def _why_invalid(
    token: str,
    timestamp: Optional[Stamp],
    nonce: Optional[Stamp],
    signature: Optional[str],
    window: float,
    now: Optional[float],
) -> Optional[str]:
    if not token:
        return "no security token is configured on this side"
    missing = [n for n, v in (("timestamp", timestamp), ("nonce", nonce), ("signature", signature)) if v in (None, "")]
    if missing:
        return "missing " + ", ".join(missing)
    try:
        ts = int(str(timestamp))
        int(str(nonce))
    except ValueError:
        return "timestamp and nonce must be integers"
    current = time.time() if now is None else now
    if abs(current - ts) > window:
        return f"timestamp {ts} is {current - ts:+.0f} s away from this clock (window ±{window:g} s)"
    expected = make_signature(token, str(timestamp), str(nonce))
    if not hmac.compare_digest(expected.encode("ascii"), str(signature).strip().lower().encode("utf-8")):
        return "signature mismatch (is the security_token the same on both sides?)"
    return None


def verify_signature(
    token: str,
    timestamp: Optional[Stamp],
    nonce: Optional[Stamp],
    signature: Optional[str],
    window: float = DEFAULT_WINDOW,
    now: Optional[float] = None,
) -> bool:
    """Whether the signature is right and the timestamp within ±``window`` s.

    Missing or malformed values are simply invalid. The comparison runs in
    constant time (:func:`hmac.compare_digest`).
    """
    return _why_invalid(token, timestamp, nonce, signature, window, now) is None


class NonceCache:
    """Remembers recently seen nonces to reject replays inside the window.

    Bounded: at most ``max_entries`` nonces are kept; older ones fall out
    (they are outside the time window by then, or the cache is too small for
    the traffic, in which case a replay may slip through but nothing breaks).
    Thread-safe.
    """

    def __init__(self, window: float = DEFAULT_WINDOW, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: "OrderedDict[str, float]" = OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, timestamp: Stamp, nonce: Stamp, now: Optional[float] = None) -> bool:
        """Records the nonce; ``False`` if it was already seen inside the window."""
        current = time.time() if now is None else now
        key = f"{timestamp}:{nonce}"
        with self._lock:
            horizon = current - 2 * self.window
            while self._seen:
                oldest_key, seen_at = next(iter(self._seen.items()))
                if seen_at >= horizon and len(self._seen) < self.max_entries:
                    break
                self._seen.popitem(last=False)
            if key in self._seen:
                return False
            self._seen[key] = current
            return True


def check_signature(
    token: str,
    params: Mapping[str, Any],
    window: float = DEFAULT_WINDOW,
    now: Optional[float] = None,
    nonces: Optional[NonceCache] = None,
) -> None:
    """Checks ``timestamp``, ``nonce`` and ``signature`` in query ``params``.

    Raises :class:`rainbow.SignatureError` saying what is wrong.
    """
    timestamp, nonce, signature = params.get("timestamp"), params.get("nonce"), params.get("signature")
    why = _why_invalid(token, timestamp, nonce, signature, window, now)
    if why is not None:
        raise SignatureError(f"invalid signature from the gateway: {why}")
    if nonces is not None and not nonces.check_and_add(str(timestamp), str(nonce), now):
        raise SignatureError("invalid signature from the gateway: nonce replayed inside the window")
