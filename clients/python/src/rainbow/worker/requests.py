"""What a worker's handlers receive (one request per task) and what they answer."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from .._payload import encode_payload
from ..backend.hooks import decode_context, encode_context

if TYPE_CHECKING:  # pragma: no cover
    from .app import Worker

__all__ = ["Reply", "Request", "ConnectRequest", "MessageRequest", "CloseRequest", "Channels", "Context"]

#: A channel name or several.
Channels = Union[str, Iterable[str], None]
#: A connection context: the cookie string itself, or a mapping (stored as
#: base64 JSON, the cookie form the webhook backends use too).
Context = Union[str, Mapping[str, Any], None]


def _channels(value: Channels) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    out = [str(c) for c in value]
    return out


def _context(value: Context) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    return encode_context(value)


class Reply:
    """One ``reply`` frame's content (docs/worker-protocol.md §4), minus the task id.

    Build one through the request (``request.accept()``, ``request.deny()``,
    ``request.reply()``) rather than directly.
    """

    __slots__ = ("accept", "context", "sub", "unsub", "error", "body")

    def __init__(
        self,
        *,
        accept: Optional[bool] = None,
        context: Context = None,
        sub: Channels = None,
        unsub: Channels = None,
        error: Optional[str] = None,
        body: bytes = b"",
    ) -> None:
        self.accept = accept
        self.context = _context(context)
        self.sub = _channels(sub)
        self.unsub = _channels(unsub)
        self.error = error
        self.body = bytes(body)

    def header(self, task: Any) -> Dict[str, Any]:
        """The frame header for task ``task``."""
        header: Dict[str, Any] = {"op": "reply", "task": task}
        for name in ("accept", "context", "sub", "unsub", "error"):
            value = getattr(self, name)
            if value is not None:
                header[name] = value
        return header

    def to_json(self) -> Dict[str, Any]:
        """A JSON-able form (for dedup stores); the body as latin-1 text."""
        out = {k: v for k, v in self.header(None).items() if k not in ("op", "task")}
        out["body"] = self.body.decode("latin-1")
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Reply":
        return cls(
            accept=value.get("accept"),
            context=value.get("context"),
            sub=value.get("sub"),
            unsub=value.get("unsub"),
            error=value.get("error"),
            body=str(value.get("body", "")).encode("latin-1"),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reply) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_json().items() if v not in (None, ""))
        return f"Reply({fields})"


class Request:
    """A task from the gateway, as a handler sees it.

    Common attributes: ``identity`` (the client connection, 64 hex), ``kind``
    (``"connect"``, ``"message"``, ``"close"``), ``task`` (the gateway's task
    id), ``key`` (stays the same when the task is delivered again: make side
    effects idempotent by it) and ``attempt`` (1, or more on redelivery after
    a worker died). ``app`` is the :class:`~rainbow.worker.Worker`.
    """

    kind = ""

    def __init__(self, app: "Worker", header: Mapping[str, Any], body: bytes, send: Callable[["Reply"], None]) -> None:
        self.app = app
        self.header = dict(header)
        self.body = body
        self.task = header.get("task")
        self.identity: str = str(header.get("identity") or "")
        self.key: str = str(header.get("key") if header.get("key") is not None else "")
        try:
            self.attempt = int(header.get("attempt") or 1)
        except (TypeError, ValueError):
            self.attempt = 1
        self._send = send
        self._lock = threading.Lock()
        self._reply: Optional[Reply] = None

    @property
    def replied(self) -> bool:
        """Whether this task was answered already."""
        return self._reply is not None

    def _finish(self, reply: Reply) -> Reply:
        with self._lock:
            if self._reply is not None:
                raise RuntimeError(f"task {self.task!r} ({self.kind}) was already answered: {self._reply!r}")
            self._reply = reply
        self._send(reply)
        return reply

    def push(self, data: Any = None, *, msg_type: int = 1, qos: int = 2, timeout: float = 10.0) -> Dict[str, Any]:
        """Sends ``data`` to this request's connection (the ``push`` API call)."""
        return self.app.push(data, identity=self.identity, msg_type=msg_type, qos=qos, timeout=timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} task={self.task!r} identity={self.identity[:12]}… attempt={self.attempt}>"


class _WithContext(Request):
    def __init__(self, app: "Worker", header: Mapping[str, Any], body: bytes, send: Callable[[Reply], None]) -> None:
        super().__init__(app, header, body, send)
        context = header.get("context")
        #: The connection's cookie (a string), or ``None``.
        self.context: Optional[str] = None if context is None else str(context)

    def context_data(self) -> Dict[str, Any]:
        """The context as a dict, when it is the base64-JSON cookie form
        (what ``context={...}`` stores); ``{}`` when there is none.
        Raises :class:`ValueError` for other strings."""
        return decode_context(self.context)


class ConnectRequest(Request):
    """A client wants to connect: ``headers``, ``params`` (its query), ``remote`` ("ip:port").

    Answer with ``return request.accept(...)`` or ``request.deny()`` (or
    return ``True``/``None`` to accept, ``False`` to deny, or raise
    :class:`~rainbow.worker.Deny`).
    """

    kind = "connect"

    def __init__(self, app: "Worker", header: Mapping[str, Any], body: bytes, send: Callable[[Reply], None]) -> None:
        super().__init__(app, header, body, send)
        headers = header.get("headers")
        params = header.get("params")
        self.headers: Dict[str, str] = dict(headers) if isinstance(headers, dict) else {}
        self.params: Dict[str, str] = dict(params) if isinstance(params, dict) else {}
        self.remote: str = str(header.get("remote") or "")

    def accept(self, *, context: Context = None, sub: Channels = None, unsub: Channels = None) -> Reply:
        """Accepts the client (sent at once), optionally setting its context and channels."""
        return self._finish(Reply(accept=True, context=context, sub=sub, unsub=unsub))

    def deny(self) -> Reply:
        """Refuses the client: it gets HTTP 401 (sent at once)."""
        return self._finish(Reply(accept=False))


class MessageRequest(_WithContext):
    """A client's SEND: ``type``, ``qos``, ``context``, ``data`` (the raw payload bytes).

    Answer with ``request.reply(data, ...)`` (sent at once) or by returning
    the reply data; ``None`` answers an empty payload.
    """

    kind = "message"

    def __init__(self, app: "Worker", header: Mapping[str, Any], body: bytes, send: Callable[[Reply], None]) -> None:
        super().__init__(app, header, body, send)
        self.type: int = int(header.get("type") or 0)
        self.qos: int = int(header.get("qos") or 0)
        #: The client's payload, exactly as sent.
        self.data: bytes = body

    def json(self) -> Any:
        """The payload parsed as JSON (``None`` if empty); raises :class:`ValueError` if it is not JSON."""
        if not self.data:
            return None
        return json.loads(self.data.decode("utf-8"))

    def text(self) -> str:
        return self.data.decode("utf-8")

    def reply(
        self, data: Any = None, *, context: Context = None, sub: Channels = None, unsub: Channels = None
    ) -> Reply:
        """Answers the message: ``data`` is the client's ACK/REC payload (bytes as
        they are, anything else as JSON); ``context``, ``sub``, ``unsub`` change
        the connection (``unsub`` is applied before ``sub``)."""
        return self._finish(Reply(context=context, sub=sub, unsub=unsub, body=encode_payload(data)))


class CloseRequest(_WithContext):
    """The client connection ended (``context`` as it was). Acknowledged when the handler returns."""

    kind = "close"

    def ack(self) -> Reply:
        return self._finish(Reply())


REQUEST_CLASSES = {"connect": ConnectRequest, "message": MessageRequest, "close": CloseRequest}
