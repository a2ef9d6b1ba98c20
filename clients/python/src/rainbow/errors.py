"""Every exception the SDK raises, in one place.

Each message says which side failed: this client, the gateway, or the
backend (business server) behind the gateway.

Hierarchy::

    RainbowError
    ├── ProtocolError                 bytes that are not a v1 packet (protocol.DecodeError)
    ├── ConnectionRefused             the gateway refused the WebSocket handshake (401/503...)
    ├── ConnectionLost                the connection ended, or never came up
    │   └── ClientClosed              ... because the application closed the client
    ├── TimeoutError                  no ACK/REC in time (also a builtins.TimeoutError)
    ├── SignatureError                a hook request with a bad/stale/missing signature
    └── RainbowAPIError               the gateway's HTTP API answered an error
        └── RainbowAPIUnreachable     ... or could not be reached at all
"""

from __future__ import annotations

import builtins
from typing import Optional

__all__ = [
    "RainbowError",
    "ProtocolError",
    "ConnectionRefused",
    "ConnectionLost",
    "ClientClosed",
    "TimeoutError",
    "SignatureError",
    "RainbowAPIError",
    "RainbowAPIUnreachable",
]


class RainbowError(Exception):
    """Base class of every Rainbow SDK error."""


class ProtocolError(RainbowError):
    """A peer sent bytes that are not a valid v1 packet."""


class ConnectionRefused(RainbowError, ConnectionError):
    """The gateway refused the WebSocket handshake.

    ``status`` is the gateway's HTTP status: 401 means the backend's connect
    hook denied the client, 503 means the backend could not be reached (or the
    gateway is full). ``reason`` is the HTTP reason phrase and ``body`` the
    response body, if any.
    """

    def __init__(self, status: int, reason: str = "", body: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        if status == 401:
            who = "the backend's connect hook denied this client"
        elif status == 503:
            who = "the backend is unreachable or failing, or the gateway is full"
        else:
            who = "the gateway refused the handshake"
        detail = body.decode("utf-8", "replace").strip()[:200] if body else ""
        text = f"gateway answered HTTP {status} {reason}".rstrip() + f": {who}"
        if detail:
            text += f" ({detail})"
        super().__init__(text)


class ConnectionLost(RainbowError, ConnectionError):
    """The connection to the gateway ended (or was never up) before an answer came."""


class ClientClosed(ConnectionLost):
    """The application closed the client; pending sends are abandoned."""


class TimeoutError(RainbowError, builtins.TimeoutError):  # noqa: A001 - deliberate shadowing
    """No answer (ACK/REC) arrived in time.

    A v1 gateway sends nothing back when the backend fails or times out, so a
    timeout may mean the backend's forward hook failed: check its logs.
    """


class SignatureError(RainbowError):
    """A hook request's signature is missing, wrong or outside the time window.

    ``code`` is the ``RAINBOWREQUESTINVALID`` value answered to the gateway.
    """

    def __init__(self, message: str, code: int = 60001) -> None:
        super().__init__(message)
        self.code = code


class RainbowAPIError(RainbowError):
    """The gateway's backend API answered an error.

    ``msg`` is the gateway's own ``msg`` field (e.g. ``"signature error"``,
    ``"timeout"``, ``"channel miss"``, ``"no such connection"``), and
    ``http_status`` the HTTP status, when there was an answer.
    """

    def __init__(self, msg: str, *, http_status: Optional[int] = None, path: str = "") -> None:
        self.msg = msg
        self.http_status = http_status
        self.path = path
        where = f" to {path}" if path else ""
        status = f" (HTTP {http_status})" if http_status is not None else ""
        super().__init__(f"gateway refused the API call{where}{status}: {msg}")


class RainbowAPIUnreachable(RainbowAPIError):
    """The gateway's API could not be reached or did not answer in time."""

    def __init__(self, msg: str, *, path: str = "") -> None:
        RainbowError.__init__(self, f"gateway API{' ' + path if path else ''} unreachable: {msg}")
        self.msg = msg
        self.http_status = None
        self.path = path
