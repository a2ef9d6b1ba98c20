"""Exceptions of the worker SDK (all are :class:`rainbow.RainbowError`)."""

from __future__ import annotations

from ..errors import ConnectionRefused, ProtocolError, RainbowError

__all__ = ["WorkerError", "HandshakeRefused", "SignatureRefused", "EndpointMissing", "WorkerProtocolError", "Deny"]


class WorkerError(RainbowError):
    """Base class of the worker SDK's own errors."""


class HandshakeRefused(WorkerError, ConnectionRefused):
    """The gateway refused the worker's WebSocket handshake (``status`` is its HTTP status)."""

    def __init__(self, status: int, reason: str = "", body: bytes = b"", detail: str = "") -> None:
        ConnectionRefused.__init__(self, status, reason, body)
        if detail:
            self.args = (f"gateway refused the worker handshake with HTTP {status}: {detail}",)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class SignatureRefused(HandshakeRefused):
    """HTTP 401 on /worker/: the gateway refused the handshake's signature.

    The token is not the gateway's ``security_token``, this host's clock is
    more than ``signature_window`` away from the gateway's, or the signed URL
    was replayed.
    """

    def __init__(self, status: int = 401, reason: str = "", body: bytes = b"") -> None:
        text = body.decode("utf-8", "replace").strip()[:200]
        super().__init__(
            status,
            reason,
            body,
            "signature refused: is the token the gateway's security_token, and this host's clock "
            f"within the gateway's signature_window? (gateway said: {text or 'nothing'})",
        )


class EndpointMissing(HandshakeRefused):
    """HTTP 404 on /worker/: this gateway has no worker endpoint (too old, or a wrong URL)."""

    def __init__(self, status: int = 404, reason: str = "", body: bytes = b"") -> None:
        super().__init__(
            status, reason, body, "no worker endpoint at this URL (a gateway without worker support, or a wrong path?)"
        )


class WorkerProtocolError(WorkerError, ProtocolError):
    """The gateway sent something the worker protocol does not allow.

    ``close_code`` is the WebSocket close code the worker answers it with.
    """

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class Deny(Exception):
    """Raise from a connect handler to refuse the client (it gets HTTP 401).

    Any other exception fails the hook instead (the client gets HTTP 503).
    """
