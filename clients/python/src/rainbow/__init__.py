"""Rainbow SDK for Python.

- :class:`Client` (blocking) and :class:`AsyncClient` (asyncio): clients of
  the Rainbow WebSocket gateway.
- :mod:`rainbow.protocol`: the v1 packet codec and QoS state machines (sans IO).
- :mod:`rainbow.backend`: the framework-neutral backend kit (hook signatures,
  requests and responses, the gateway's HTTP API), with adapters in
  :mod:`rainbow.django`, :mod:`rainbow.flask` and :mod:`rainbow.asgi`.
"""

from __future__ import annotations

from .aio import AsyncClient, Message
from .client import Client
from .errors import (
    ClientClosed,
    ConnectionLost,
    ConnectionRefused,
    ProtocolError,
    RainbowAPIError,
    RainbowAPIUnreachable,
    RainbowError,
    SignatureError,
    TimeoutError,
)
from .protocol import Qos

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "Message",
    "Qos",
    "RainbowError",
    "ProtocolError",
    "ConnectionRefused",
    "ConnectionLost",
    "ClientClosed",
    "TimeoutError",
    "SignatureError",
    "RainbowAPIError",
    "RainbowAPIUnreachable",
    "__version__",
]
