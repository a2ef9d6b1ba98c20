"""The backend kit: everything a business server needs to work with a Rainbow
gateway, independent of any web framework.

- Signatures (spec §7): v1 for the gateway's hook calls (:func:`sign`,
  :func:`verify_signature`, :func:`check_signature`, :class:`NonceCache`) and
  v2 for API calls (:func:`sign_v2`, :func:`make_signature_v2`,
  :func:`verify_signature_v2`, :func:`encode_query`).
- Hooks (spec §3-§6): :class:`Hooks` (handler registry and hook serving),
  :func:`parse_request`, :class:`RainbowRequest`, :class:`RainbowResponse`,
  :class:`HookResult`.
- The gateway's API (spec §8): :class:`RainbowAPI`, :class:`AsyncRainbowAPI`.

Framework adapters on top of this core: :mod:`rainbow.django`,
:mod:`rainbow.flask`, :mod:`rainbow.asgi`.
"""

from __future__ import annotations

from ..errors import RainbowAPIError, RainbowAPIUnreachable, SignatureError
from .api import AsyncRainbowAPI, RainbowAPI
from .hooks import (
    CHANNEL_HEADER,
    CHANNEL_UNSUB_HEADER,
    CLOSE,
    CONNECT,
    COOKIE_HEADER,
    IDENTITY_HEADER,
    INVALID_HEADER,
    INVALID_IDENTITY,
    INVALID_METHOD,
    INVALID_SIGNATURE,
    MESSAGE,
    HookResult,
    Hooks,
    RainbowRequest,
    BadPayload,
    MissingIdentity,
    RainbowResponse,
    decode_context,
    encode_context,
    parse_request,
)
from .signature import (
    DEFAULT_WINDOW,
    NonceCache,
    check_signature,
    encode_query,
    make_signature,
    make_signature_v2,
    sign,
    sign_v2,
    verify_signature,
    verify_signature_v2,
)

__all__ = [
    "sign",
    "make_signature",
    "verify_signature",
    "check_signature",
    "sign_v2",
    "make_signature_v2",
    "verify_signature_v2",
    "encode_query",
    "NonceCache",
    "DEFAULT_WINDOW",
    "Hooks",
    "HookResult",
    "RainbowRequest",
    "RainbowResponse",
    "encode_context",
    "decode_context",
    "parse_request",
    "MissingIdentity",
    "BadPayload",
    "RainbowAPI",
    "AsyncRainbowAPI",
    "RainbowAPIError",
    "RainbowAPIUnreachable",
    "SignatureError",
    "CONNECT",
    "CLOSE",
    "MESSAGE",
    "IDENTITY_HEADER",
    "COOKIE_HEADER",
    "CHANNEL_HEADER",
    "CHANNEL_UNSUB_HEADER",
    "INVALID_HEADER",
    "INVALID_SIGNATURE",
    "INVALID_IDENTITY",
    "INVALID_METHOD",
]
