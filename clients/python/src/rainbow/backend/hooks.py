"""The backend's side of the gateway's hooks (spec §3-§6), framework-neutral.

The gateway calls three hooks on the backend, each signed (§7) and carrying
the connection's identity in ``RAINBOWCLIENTIDENTITY``:

- ``GET connect/?{client params}&timestamp&nonce&signature``: accept the
  connection with a JSON body ``{"status": "success"}``, anything else denies.
- ``POST message/{type}/`` with the client's payload: the response body is
  the reply the client gets.
- ``GET close/``: the connection ended.

:class:`Hooks` holds the handlers and turns one HTTP hook call into a
:class:`HookResult` (status, body, headers); the Django, Flask and ASGI
adapters only translate their request and response objects. Handlers get a
:class:`RainbowRequest` and return a :class:`RainbowResponse` (or plain data).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .._payload import encode_payload
from ..errors import SignatureError
from .signature import DEFAULT_WINDOW, NonceCache, check_signature

__all__ = [
    "IDENTITY_HEADER",
    "COOKIE_HEADER",
    "CHANNEL_HEADER",
    "CHANNEL_UNSUB_HEADER",
    "INVALID_HEADER",
    "INVALID_SIGNATURE",
    "INVALID_IDENTITY",
    "INVALID_METHOD",
    "CONNECT",
    "CLOSE",
    "MESSAGE",
    "RainbowRequest",
    "RainbowResponse",
    "HookResult",
    "Hooks",
    "encode_context",
    "decode_context",
    "parse_request",
    "MissingIdentity",
    "BadPayload",
]

log = logging.getLogger("rainbow.backend")

IDENTITY_HEADER = "RAINBOWCLIENTIDENTITY"
COOKIE_HEADER = "RAINBOWCLIENTCOOKIE"
CHANNEL_HEADER = "RAINBOWCLIENTCHANNEL"
CHANNEL_UNSUB_HEADER = "RAINBOWCLIENTCHANNELUNSUB"
INVALID_HEADER = "RAINBOWREQUESTINVALID"
#: ``RAINBOWREQUESTINVALID`` values (spec §5).
INVALID_SIGNATURE = 60001
INVALID_IDENTITY = 60002
INVALID_METHOD = 60003

CONNECT = "connect"
CLOSE = "close"
MESSAGE = "message"
_KINDS = (CONNECT, CLOSE, MESSAGE)
_SIGNATURE_PARAMS = ("timestamp", "nonce", "signature")
CHANNEL_SEPARATOR = ";;"

Handler = Callable[["RainbowRequest"], Any]


def encode_context(context: Mapping[str, Any]) -> str:
    """The cookie form of a context: base64 of its JSON (as rainbow-django)."""
    text = json.dumps(dict(context), separators=(",", ":"), sort_keys=True)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_context(cookie: Optional[str]) -> Dict[str, Any]:
    """The context in a cookie; ``{}`` for a missing or empty cookie.

    Raises :class:`ValueError` for a cookie that is not base64 of a JSON
    object (the caller decides whether that is fatal).
    """
    if cookie is None or not cookie.strip():
        return {}
    raw = cookie.strip()
    padded = raw + "=" * (-len(raw) % 4)
    try:
        try:
            decoded = base64.b64decode(padded, validate=True)
        except binascii.Error:
            decoded = base64.urlsafe_b64decode(padded)
        value = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cookie is not base64 of JSON: {exc}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"cookie holds a JSON {type(value).__name__}, not an object")
    return value


class RainbowRequest:
    """One hook call from the gateway, as a handler sees it.

    ``identity`` is the connection's identity, ``msg_type`` the message type
    (forward hook only), ``data`` the client's payload (JSON decoded with
    ``data_format="json"``, raw bytes with ``"raw"``), ``context`` the
    connection's context (its cookie decoded to a dict), ``params`` the
    query parameters without the signature (on connect: the client's own
    parameters), ``headers`` the request headers (lower-case names).

    For rainbow-django compatibility, ``rbidentity`` is an alias of
    ``identity``, and other attributes are looked up on ``native``, the
    framework's own request (so ``request.GET`` or ``request.META`` still work
    in a Django connect handler).
    """

    def __init__(
        self,
        identity: str,
        msg_type: Optional[int] = None,
        data: Any = None,
        context: Optional[Dict[str, Any]] = None,
        *,
        kind: str = MESSAGE,
        params: Optional[Mapping[str, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
        body: bytes = b"",
        cookie: Optional[str] = None,
        native: Any = None,
    ) -> None:
        self.identity = identity
        self.msg_type = msg_type
        self.data = data
        self.context: Dict[str, Any] = context if context is not None else {}
        self.kind = kind
        self.params: Dict[str, str] = dict(params or {})
        self.headers: Dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        self.body = body
        self.cookie = cookie
        self.native = native

    @property
    def rbidentity(self) -> str:
        """rainbow-django's name for :attr:`identity`."""
        return self.identity

    def __getattr__(self, name: str) -> Any:
        native = self.__dict__.get("native")
        if native is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(native, name)

    def __repr__(self) -> str:
        return f"RainbowRequest(kind={self.kind!r}, identity={self.identity!r}, msg_type={self.msg_type!r})"


class RainbowResponse:
    """What a handler answers: the reply data plus connection control.

    ``context`` starts as a copy of the request's context and becomes the
    connection's cookie; :meth:`sub` / :meth:`unsub` subscribe or unsubscribe
    the connection to channels through response headers. :meth:`render`
    produces the HTTP body and headers.
    """

    def __init__(
        self,
        data: Any = None,
        request: Optional[RainbowRequest] = None,
        context: Optional[Mapping[str, Any]] = None,
        *,
        status: int = 200,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.data = data
        self.request = request
        self._original: Dict[str, Any] = dict(request.context) if request is not None else {}
        if context is not None:
            self.context: Dict[str, Any] = dict(context)
        else:
            self.context = dict(self._original)
        self.status = status
        self.headers: Dict[str, str] = dict(headers or {})
        self.subscribes: List[str] = []
        self.unsubscribes: List[str] = []

    def sub(self, *channels: str) -> "RainbowResponse":
        """Subscribes the connection to ``channels`` (header ``RAINBOWCLIENTCHANNEL``)."""
        for channel in channels:
            self.subscribes.append(_check_channel(channel))
        return self

    def unsub(self, *channels: str) -> "RainbowResponse":
        """Unsubscribes the connection (header ``RAINBOWCLIENTCHANNELUNSUB``;
        the gateway applies it before the subscribes)."""
        for channel in channels:
            self.unsubscribes.append(_check_channel(channel))
        return self

    def render(self, data_format: str = "json") -> Tuple[bytes, Dict[str, str]]:
        """``(body, headers)``: the data encoded per ``data_format`` and the
        control headers (cookie, channels) the gateway applies."""
        if data_format == "raw" and isinstance(self.data, str):
            body = self.data.encode("utf-8")
            content_type = "text/plain; charset=utf-8"
        else:
            body = encode_payload(self.data)
            if isinstance(self.data, (bytes, bytearray, memoryview)):
                content_type = "application/octet-stream"
            else:
                content_type = "application/json"
        headers: Dict[str, str] = {"Content-Type": content_type}
        headers.update(self.headers)
        if self.context or self._original:
            headers[COOKIE_HEADER] = encode_context(self.context)
        if self.subscribes:
            headers[CHANNEL_HEADER] = CHANNEL_SEPARATOR.join(self.subscribes)
        if self.unsubscribes:
            headers[CHANNEL_UNSUB_HEADER] = CHANNEL_SEPARATOR.join(self.unsubscribes)
        return body, headers


def _check_channel(channel: str) -> str:
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"a channel must be a non-empty string, got {channel!r}")
    if CHANNEL_SEPARATOR in channel:
        raise ValueError(f"a channel cannot contain {CHANNEL_SEPARATOR!r}: {channel!r}")
    try:
        channel.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"a channel travels in an HTTP header and must be latin-1: {channel!r}") from None
    if any(c in channel for c in "\r\n"):
        raise ValueError(f"a channel cannot contain line breaks: {channel!r}")
    return channel


@dataclass
class HookResult:
    """The HTTP answer to one hook call."""

    status: int
    body: bytes
    headers: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, message: str, code: Optional[int] = None) -> "HookResult":
        """An error answer; ``code`` also goes to ``RAINBOWREQUESTINVALID``."""
        payload: Dict[str, Any] = {"status": "error", "msg": message}
        headers = {"Content-Type": "application/json"}
        if code is not None:
            payload["code"] = code
            headers[INVALID_HEADER] = str(code)
        return cls(status, json.dumps(payload).encode("utf-8"), headers)


Setting = Union[str, Callable[[], Optional[str]], None]


def _resolve(setting: Setting) -> Optional[str]:
    return setting() if callable(setting) else setting


class MissingIdentity(ValueError):
    """A hook call without the ``RAINBOWCLIENTIDENTITY`` header."""


class BadPayload(ValueError):
    """A forwarded payload that does not match ``data_format``."""


def parse_request(
    kind: str,
    *,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes = b"",
    msg_type: Optional[int] = None,
    data_format: str = "json",
    native: Any = None,
) -> RainbowRequest:
    """Builds the :class:`RainbowRequest` of one hook call (no signature check:
    see :func:`~rainbow.backend.check_signature` or :meth:`Hooks.parse`).

    The identity comes from ``RAINBOWCLIENTIDENTITY`` (:class:`MissingIdentity`
    if absent), the context from ``RAINBOWCLIENTCOOKIE`` (``{}`` when missing,
    empty or not ours), the data from the body of a message hook: JSON
    decoded (:class:`BadPayload` if it is not JSON) or, with
    ``data_format="raw"``, the bytes. Header names are case-insensitive.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown hook kind {kind!r}")
    lower = {k.lower(): v for k, v in headers.items()}
    identity = lower.get(IDENTITY_HEADER.lower(), "").strip()
    if not identity:
        raise MissingIdentity(f"the {IDENTITY_HEADER} header is required")
    cookie = lower.get(COOKIE_HEADER.lower())
    try:
        context = decode_context(cookie)
    except ValueError as exc:
        log.warning("connection %s carries a cookie that is not ours (%s); context starts empty", identity, exc)
        context = {}
    data: Any = None
    if kind == MESSAGE:
        if data_format == "json":
            if body.strip():
                try:
                    data = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise BadPayload(f"the client's payload (type {msg_type}) is not JSON: {exc}") from exc
        elif data_format == "raw":
            data = bytes(body)
        else:
            raise RuntimeError(f"RAINBOW_DATA_FORMAT must be 'json' or 'raw', not {data_format!r}")
    params = {k: v for k, v in query.items() if k not in _SIGNATURE_PARAMS}
    return RainbowRequest(
        identity,
        msg_type if kind == MESSAGE else None,
        data,
        context,
        kind=kind,
        params=params,
        headers=lower,
        body=bytes(body),
        cookie=cookie,
        native=native,
    )


class Hooks:
    """A registry of hook handlers plus the logic to serve them.

    :param token: the shared ``security_token`` (or a callable returning it,
        read on every call, e.g. from Django settings).
    :param data_format: ``"json"`` (default) or ``"raw"`` (or a callable).
    :param window: accepted clock difference for signatures, in seconds.
    :param nonces: a :class:`NonceCache` to also reject replayed nonces.
    :param loader: called once before the first hook call (handler discovery).

    Register handlers with :meth:`connect`, :meth:`close` and
    :meth:`message`. Without a connect handler every connection is accepted;
    without a close handler the close hook just answers success.
    """

    def __init__(
        self,
        token: Setting = None,
        *,
        data_format: Setting = "json",
        window: float = DEFAULT_WINDOW,
        nonces: Optional[NonceCache] = None,
        loader: Optional[Callable[[], None]] = None,
    ) -> None:
        self.token = token
        self.data_format = data_format
        self.window = window
        self.nonces = nonces
        self._loader = loader
        self._loaded = loader is None
        self._load_lock = threading.Lock()
        self._handlers: Dict[Union[str, int], Handler] = {}

    # -------------------------------------------------------- registration

    def _register(self, key: Union[str, int], func: Handler) -> Handler:
        existing = self._handlers.get(key)
        if existing is not None and existing is not func:
            warnings.warn(f"rainbow handler for {key!r} replaced by {func!r}", RuntimeWarning, stacklevel=3)
        self._handlers[key] = func
        return func

    def connect(self, func: Handler) -> Handler:
        """Decorator: the connect hook handler."""
        return self._register(CONNECT, func)

    def close(self, func: Handler) -> Handler:
        """Decorator: the close hook handler."""
        return self._register(CLOSE, func)

    def message(self, msg_type: int) -> Callable[[Handler], Handler]:
        """Decorator factory: the handler of messages of type ``msg_type``."""
        msg_type = int(msg_type)
        if not 0 <= msg_type <= 0xFFFF:
            raise ValueError(f"message types are 0..65535, got {msg_type}")

        def decorate(func: Handler) -> Handler:
            return self._register(msg_type, func)

        return decorate

    def handler_for(self, kind: str, msg_type: Optional[int] = None) -> Optional[Handler]:
        """The registered handler of a hook, if any."""
        self.ensure_loaded()
        return self._handlers.get(msg_type if kind == MESSAGE else kind)  # type: ignore[arg-type]

    def ensure_loaded(self) -> None:
        """Runs the ``loader`` once (thread-safe)."""
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded and self._loader is not None:
                self._loader()
            self._loaded = True

    # ------------------------------------------------------------ serving

    def parse(
        self,
        kind: str,
        *,
        method: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes = b"",
        msg_type: Optional[int] = None,
        native: Any = None,
    ) -> Union[RainbowRequest, HookResult]:
        """Checks a hook call and builds its :class:`RainbowRequest`, or the
        :class:`HookResult` rejecting it (bad method, signature, identity or
        payload)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown hook kind {kind!r}")
        expected = "POST" if kind == MESSAGE else "GET"
        if method.upper() != expected and not (expected == "GET" and method.upper() == "HEAD"):
            log.warning("rainbow %s hook called with %s, expected %s", kind, method, expected)
            return HookResult.error(405, f"the {kind} hook expects {expected}", INVALID_METHOD)
        token = _resolve(self.token)
        if not token:
            raise RuntimeError("no Rainbow security token configured on the backend (RAINBOW_TOKEN)")
        try:
            check_signature(token, query, self.window, nonces=self.nonces)
        except SignatureError as exc:
            log.warning("rejected a rainbow %s hook call: %s", kind, exc)
            return HookResult.error(403, str(exc), INVALID_SIGNATURE)
        data_format = _resolve(self.data_format) or "json"
        try:
            return parse_request(
                kind,
                query=query,
                headers=headers,
                body=body,
                msg_type=msg_type,
                data_format=data_format,
                native=native,
            )
        except MissingIdentity as exc:
            log.warning("rejected a rainbow %s hook call: %s", kind, exc)
            return HookResult.error(400, str(exc), INVALID_IDENTITY)
        except BadPayload as exc:
            log.warning("rejected a rainbow %s hook call: %s", kind, exc)
            return HookResult.error(400, str(exc))

    def call(self, request: RainbowRequest) -> Any:
        """Runs the request's handler and returns what it returned (maybe an
        awaitable, for ``async`` handlers). A message type without a handler
        returns a 404 :class:`HookResult`."""
        handler = self.handler_for(request.kind, request.msg_type)
        if handler is None:
            if request.kind == MESSAGE:
                log.warning("no rainbow handler for message type %s", request.msg_type)
                return HookResult.error(404, f"no handler for message type {request.msg_type}")
            return None
        return handler(request)

    def render(self, request: RainbowRequest, result: Any) -> HookResult:
        """Turns a handler's return value into the HTTP answer.

        - :class:`HookResult`: as it is.
        - :class:`RainbowResponse`: its body and control headers.
        - on connect/close, ``None`` or ``True``: ``{"status": "success"}``;
          ``False``: ``{"status": "denied"}`` (the gateway refuses with 401).
        - anything else: the reply data, as ``RainbowResponse(result, request)``.
        """
        if isinstance(result, HookResult):
            return result
        if inspect.isawaitable(result):
            raise TypeError("async rainbow handlers need the ASGI adapter (rainbow.asgi)")
        if not isinstance(result, RainbowResponse):
            if request.kind != MESSAGE and (result is None or result is True):
                result = RainbowResponse({"status": "success"}, request)
            elif request.kind != MESSAGE and result is False:
                result = RainbowResponse({"status": "denied"}, request)
            else:
                result = RainbowResponse(result, request)
        body, headers = result.render(_resolve(self.data_format) or "json")
        return HookResult(result.status, body, headers)

    def handle(
        self,
        kind: str,
        *,
        method: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes = b"",
        msg_type: Optional[int] = None,
        native: Any = None,
    ) -> HookResult:
        """Serves one hook call synchronously: parse, call, render."""
        parsed = self.parse(
            kind, method=method, query=query, headers=headers, body=body, msg_type=msg_type, native=native
        )
        if isinstance(parsed, HookResult):
            return parsed
        return self.render(parsed, self.call(parsed))
