"""Worker protocol frames (docs/worker-protocol.md §2), without IO.

Every frame is one binary WebSocket message::

    u32 big-endian header length | header: UTF-8 JSON object with "op" | body: raw bytes
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, Mapping, Tuple, Union

from .errors import WorkerProtocolError

__all__ = ["FrameError", "encode_frame", "decode_frame", "OPS_FROM_GATEWAY", "OPS_FROM_WORKER", "VERSION"]

#: The worker protocol version this SDK speaks.
VERSION = 1

#: Ops a gateway may send to a worker.
OPS_FROM_GATEWAY = frozenset({"welcome", "task", "result", "drained"})
#: Ops a worker may send to a gateway.
OPS_FROM_WORKER = frozenset({"hello", "credit", "reply", "drain", "send", "push", "sub", "unsub", "close"})

_LEN = struct.Struct(">I")


class FrameError(WorkerProtocolError):
    """Bytes that are not a worker-protocol frame (docs/worker-protocol.md §2).

    ``close_code`` is the WebSocket close code a peer answers it with: 1002
    (protocol error) or 1009 (too big).
    """


def encode_frame(header: Mapping[str, Any], body: Union[bytes, bytearray, memoryview] = b"") -> bytes:
    """One frame: ``header`` (must carry a string ``op``) as compact JSON, then ``body``."""
    if not isinstance(header.get("op"), str):
        raise ValueError(f"a frame header needs a string 'op', got {header.get('op')!r}")
    raw = json.dumps(dict(header), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _LEN.pack(len(raw)) + raw + bytes(body)


def decode_frame(data: Union[bytes, bytearray, memoryview, str], max_size: int = 0) -> Tuple[Dict[str, Any], bytes]:
    """``(header, body)`` of one frame; raises :class:`FrameError` naming the problem.

    Text messages, frames shorter than 4 bytes, a header length beyond the
    message, a header that is not a UTF-8 JSON object or lacks a string
    ``op`` are protocol errors; ``max_size`` (0 = unbounded) limits the frame.
    The op is not checked against a list here: callers decide what they accept.
    """
    if isinstance(data, str):
        raise FrameError("text message (worker frames are binary)")
    view = bytes(data)
    if max_size and len(view) > max_size:
        raise FrameError(f"frame of {len(view)} bytes is larger than {max_size}", close_code=1009)
    if len(view) < 4:
        raise FrameError(f"frame of {len(view)} bytes is shorter than its 4-byte header length")
    (length,) = _LEN.unpack_from(view)
    if length > len(view) - 4:
        raise FrameError(f"header length {length} is beyond the {len(view) - 4} bytes after it")
    try:
        header = json.loads(view[4 : 4 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError(f"header is a JSON {type(header).__name__}, not an object")
    if not isinstance(header.get("op"), str):
        raise FrameError("header has no string 'op'")
    return header, view[4 + length :]
