"""Payload conventions shared by the clients and the backend kit.

Payloads are opaque bytes on the wire and JSON text by convention: anything
that is not ``bytes`` is JSON-encoded (UTF-8), ``bytes`` pass through untouched,
and ``None`` is the empty payload. Decoding reverses that: an empty payload is
``None``, JSON text becomes Python values, and anything else stays ``bytes``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["encode_payload", "decode_payload"]


def encode_payload(data: Any) -> bytes:
    """The wire form of ``data``: bytes as they are, ``None`` as empty, else JSON."""
    if data is None:
        return b""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_payload(raw: bytes, use_json: bool = True) -> Any:
    """The Python value of a payload: ``None`` if empty, JSON if it parses, else bytes."""
    if not raw:
        return None
    if not use_json:
        return bytes(raw)
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return bytes(raw)
