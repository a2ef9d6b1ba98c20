"""Signatures of hook and API calls (spec §7), both versions.

- **v1**, the original's: ``hex(sha1(concat(sorted([token, str(timestamp),
  str(nonce)]))))`` (:func:`make_signature`, :func:`sign`). It binds nothing
  of the request. The gateway signs its **hook calls** this way, and the
  backend kit checks them with :func:`check_signature`.
- **v2**: ``hex(HMAC-SHA256(token, canonical request))``, binding the method,
  the path, the query and the body (:func:`make_signature_v2`,
  :func:`sign_v2`). The kit signs its **API calls** (:class:`RainbowAPI`, the
  worker handshake) this way, unless told to speak v1 to an old gateway.

Both use the same shared ``security_token`` (``RAINBOW_TOKEN``). Checks
compare in constant time and accept timestamps within ±``window`` seconds of
the local clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote

from ..errors import SignatureError

__all__ = [
    "DEFAULT_WINDOW",
    "ALGORITHM",
    "SIGNATURE_VERSIONS",
    "make_signature",
    "sign",
    "verify_signature",
    "check_signature",
    "NonceCache",
    "percent_encode",
    "canonical_query",
    "body_digest",
    "canonical_request",
    "make_signature_v2",
    "sign_v2",
    "encode_query",
    "verify_signature_v2",
    "signature_version",
]

#: The first line of a v2 canonical request.
ALGORITHM = "RAINBOW-HMAC-SHA256"
#: What a ``signature=`` option of this kit may say.
SIGNATURE_VERSIONS = ("v1", "v2")
#: The parameters a signer adds; never taken from the caller's own.
_SIGNING_PARAMS = ("timestamp", "nonce", "signature")
_V2_NONCE = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: Accepted clock difference, in seconds, between signer and checker.
DEFAULT_WINDOW = 10

Stamp = Union[int, str]
Params = Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]


def signature_version(version: str) -> str:
    """Checks a ``signature=`` option: ``"v1"`` or ``"v2"``."""
    if version not in SIGNATURE_VERSIONS:
        raise ValueError(f"signature must be 'v1' (for a gateway older than v2 signatures) or 'v2', not {version!r}")
    return version


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


# -- v2 ------------------------------------------------------------------------


def _pairs(params: Params) -> List[Tuple[str, str]]:
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(k), str(v)) for k, v in items]


def percent_encode(value: Union[str, bytes]) -> str:
    """RFC 3986 encoding: every byte but ``A-Z a-z 0-9 - . _ ~`` as ``%XX``
    (upper-case hex; a space is ``%20``). A ``str`` is encoded as UTF-8."""
    return quote(value.encode("utf-8") if isinstance(value, str) else value, safe="")


def canonical_query(pairs: Params) -> str:
    """v2's canonical query: every ``(name, value)`` pair but ``signature``
    (so with ``timestamp`` and ``nonce``), each side percent-encoded (:func:`percent_encode`),
    sorted by encoded name then encoded value, joined as ``name=value`` with
    ``&``. ``pairs`` are decoded values, as the caller means them."""
    encoded = sorted((percent_encode(k), percent_encode(v)) for k, v in _pairs(pairs) if k != "signature")
    return "&".join(f"{k}={v}" for k, v in encoded)


def body_digest(body: bytes) -> str:
    """Lower-case hex SHA-256 of the body (``b""`` when there is none)."""
    return hashlib.sha256(body).hexdigest()


def canonical_request(method: str, path: str, query: str, digest: str, timestamp: Stamp, nonce: Stamp) -> str:
    """The message v2 signs: seven lines joined by ``\n``: :data:`ALGORITHM`,
    the method (upper case, as sent), the path as in the request line (still
    percent-encoded, no query), the :func:`canonical_query`, the
    :func:`body_digest`, the timestamp and the nonce."""
    return "\n".join([ALGORITHM, method, path, query, digest, str(timestamp), str(nonce)])


def make_signature_v2(
    token: str, method: str, path: str, params: Params, body: bytes, timestamp: Stamp, nonce: Stamp
) -> str:
    """The v2 signature of a call: ``params`` are its own query parameters
    (without ``timestamp``, ``nonce`` or ``signature``), ``body`` its raw body."""
    pairs = [(k, v) for k, v in _pairs(params) if k not in _SIGNING_PARAMS]
    pairs += [("timestamp", str(timestamp)), ("nonce", str(nonce))]
    canonical = canonical_request(method, path, canonical_query(pairs), body_digest(body), timestamp, nonce)
    return hmac.new(str(token).encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_v2(
    token: str,
    method: str,
    path: str,
    params: Params = (),
    body: bytes = b"",
    timestamp: Optional[int] = None,
    nonce: Optional[str] = None,
) -> List[Tuple[str, str]]:
    """The whole query of a v2-signed call, as ``(name, value)`` pairs:
    ``params`` (any ``timestamp``, ``nonce`` or ``signature`` among them
    dropped), then fresh ``timestamp``, ``nonce`` (16 random hex digits) and
    ``signature``. Send them with :func:`encode_query`. ``path`` is the
    request path exactly as it will be sent (percent-encoded, no query)."""
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    n = secrets.token_hex(8) if nonce is None else str(nonce)
    if not _V2_NONCE.fullmatch(n):
        raise ValueError(f"a v2 nonce is 1 to 64 characters of A-Z a-z 0-9 - _, not {n!r}")
    pairs = [(k, v) for k, v in _pairs(params) if k not in _SIGNING_PARAMS]
    signature = make_signature_v2(token, method, path, pairs, body, ts, n)
    return pairs + [("timestamp", ts), ("nonce", n), ("signature", signature)]


def encode_query(pairs: Params) -> str:
    """A query string of ``pairs``, each side percent-encoded (:func:`percent_encode`), in order."""
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in _pairs(pairs))


def verify_signature_v2(
    token: str,
    method: str,
    path: str,
    pairs: Params,
    body: bytes,
    window: float = DEFAULT_WINDOW,
    now: Optional[float] = None,
) -> bool:
    """Whether a v2-signed call is right: ``pairs`` are all its decoded query
    parameters (with ``timestamp``, ``nonce`` and ``signature``; the first of
    each counts), the timestamp within ±``window`` s, the nonce well-formed,
    the HMAC equal in constant time. (No replay memory: see :class:`NonceCache`.)"""
    all_pairs = _pairs(pairs)
    first = {k: v for k, v in reversed(all_pairs)}
    ts, nonce, signature = first.get("timestamp"), first.get("nonce"), first.get("signature")
    if not token or ts is None or nonce is None or signature is None:
        return False
    if not ts.isdigit() or not ts.isascii() or not _V2_NONCE.fullmatch(nonce):
        return False
    current = time.time() if now is None else now
    if abs(current - int(ts)) > window:
        return False
    canonical = canonical_request(method, path, canonical_query(all_pairs), body_digest(body), ts, nonce)
    expected = hmac.new(str(token).encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().lower().encode("utf-8"))
