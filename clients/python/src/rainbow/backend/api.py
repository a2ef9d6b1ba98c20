"""The gateway's backend API (spec §8), from the backend's side.

:class:`RainbowAPI` signs every call (§7, v2 by default: the signature binds
the method, path, query and body, so it is worthless for any other call),
bounds it with a timeout, and raises instead of swallowing errors (unlike
rainbow-django's helpers):

- :class:`rainbow.RainbowAPIError` when the gateway answers an error; ``msg``
  is the gateway's own message (``"signature error"``, ``"timeout"``,
  ``"channel miss"``, ``"qos level error"``, ``"no such connection"``...).
- :class:`rainbow.RainbowAPIUnreachable` when it cannot be reached or does
  not answer in time.

It only uses the standard library (``urllib``). :class:`AsyncRainbowAPI` runs
the same calls in worker threads for asyncio backends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from .._payload import decode_payload, encode_payload
from ..errors import RainbowAPIError, RainbowAPIUnreachable
from .signature import encode_query, sign, sign_v2, signature_version

__all__ = ["RainbowAPI", "AsyncRainbowAPI"]


class RainbowAPI:
    """A client of the gateway's HTTP API.

    :param server_url: the gateway's base URL, e.g. ``http://localhost:1984``
        (``RAINBOW_SERVER_URL``).
    :param token: the shared ``security_token`` (``RAINBOW_TOKEN``).
    :param timeout: HTTP timeout of ``subscribe``/``unsubscribe``, and the
        margin added to ``send``'s own timeout.
    :param use_env_proxy: honour ``http_proxy`` and friends (off by default:
        the gateway is normally reached directly).
    :param signature: ``"v2"`` (the default) or ``"v1"`` for a gateway older
        than v2 signatures (it answers v2-signed calls with ``signature
        error``). A gateway set to ``api_signature = v2`` refuses v1.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        decode_json: bool = True,
        use_env_proxy: bool = False,
        signature: str = "v2",
    ) -> None:
        if not server_url:
            raise ValueError("the gateway URL (RAINBOW_SERVER_URL) is not set")
        if not token:
            raise ValueError("the security token (RAINBOW_TOKEN) is not set")
        self.server_url = server_url.rstrip("/")
        self.token = token
        self.signature = signature_version(signature)
        # v2 signs the path as the gateway receives it: with the URL's own
        # path prefix, if any.
        self._base_path = urlsplit(self.server_url).path
        self.timeout = timeout
        self.decode_json = decode_json
        handlers = [] if use_env_proxy else [urllib.request.ProxyHandler({})]
        self._opener = urllib.request.build_opener(*handlers)

    def send(
        self, channel: str, msg_type: int, data: Any, qos: int = 0, timeout: float = 10
    ) -> Tuple[Optional[int], Any]:
        """Delivers a message to every connection subscribed to ``channel``.

        Returns ``(connections, data)``: how many receivers acknowledged, and
        one non-empty reply (JSON decoded when it parses, else the text).
        qos 0 is not acknowledged: ``(None, None)``. ``data`` is JSON-encoded
        unless it is ``bytes``.
        """
        params = {"channel": channel, "msgtype": int(msg_type), "qos": int(qos), "timeout": _num(timeout)}
        answer = self._call("/send/", params, encode_payload(data), http_timeout=float(timeout) + self.timeout)
        reply = answer.get("data")
        if isinstance(reply, str):
            reply = decode_payload(reply.encode("utf-8"), self.decode_json)
            if isinstance(reply, bytes):
                reply = reply.decode("utf-8")
        elif reply == "":
            reply = None
        connections = answer.get("connections")
        return (int(connections) if connections is not None else None), reply

    def subscribe(self, channel: str, identity: str, occupy: bool = False) -> None:
        """Subscribes connection ``identity`` to ``channel``; ``occupy`` first
        removes every other subscriber of the channel."""
        body = {"identity": identity, "channel": channel, "occupy": bool(occupy)}
        self._call("/sub/", {}, json.dumps(body).encode("utf-8"), content_type="application/json")

    def unsubscribe(self, channel: str, identity: str) -> None:
        """Unsubscribes connection ``identity`` from ``channel``."""
        body = {"identity": identity, "channel": channel}
        self._call("/unsub/", {}, json.dumps(body).encode("utf-8"), content_type="application/json")

    def hello(self) -> bool:
        """Whether the gateway answers its (unsigned) liveness check."""
        request = urllib.request.Request(self.server_url + "/hello/", method="GET")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return bool(response.status == 200 and response.read().strip() == b"ok")
        except (urllib.error.URLError, OSError):
            return False

    def _call(
        self,
        path: str,
        params: Mapping[str, Any],
        body: bytes,
        *,
        http_timeout: Optional[float] = None,
        content_type: str = "application/octet-stream",
    ) -> Dict[str, Any]:
        if self.signature == "v1":
            query = dict(params)
            query.update(sign(self.token))
            encoded = urlencode(query)
        else:
            encoded = encode_query(sign_v2(self.token, "POST", self._base_path + path, params, body))
        url = f"{self.server_url}{path}?{encoded}"
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
        timeout = self.timeout if http_timeout is None else http_timeout
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except urllib.error.URLError as exc:
            raise RainbowAPIUnreachable(f"{exc.reason} ({self.server_url})", path=path) from exc
        except (socket.timeout, TimeoutError) as exc:
            raise RainbowAPIUnreachable(f"no answer within {timeout:g} s ({self.server_url})", path=path) from exc
        except OSError as exc:
            raise RainbowAPIUnreachable(f"{exc} ({self.server_url})", path=path) from exc
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            answer = None
        if not isinstance(answer, dict):
            snippet = raw[:200].decode("utf-8", "replace")
            raise RainbowAPIError(f"answer is not a JSON object: {snippet!r}", http_status=status, path=path)
        if answer.get("status") != 0:
            msg = answer.get("msg") or f"status {answer.get('status')!r}"
            raise RainbowAPIError(str(msg), http_status=status, path=path)
        return answer


def _num(value: float) -> Any:
    return int(value) if float(value).is_integer() else value


class AsyncRainbowAPI:
    """:class:`RainbowAPI` for asyncio code: each call runs in a worker thread."""

    def __init__(self, server_url: str, token: str, **options: Any) -> None:
        self.sync = RainbowAPI(server_url, token, **options)

    async def send(
        self, channel: str, msg_type: int, data: Any, qos: int = 0, timeout: float = 10
    ) -> Tuple[Optional[int], Any]:
        """See :meth:`RainbowAPI.send`."""
        return await asyncio.to_thread(self.sync.send, channel, msg_type, data, qos, timeout)

    async def subscribe(self, channel: str, identity: str, occupy: bool = False) -> None:
        """See :meth:`RainbowAPI.subscribe`."""
        await asyncio.to_thread(self.sync.subscribe, channel, identity, occupy)

    async def unsubscribe(self, channel: str, identity: str) -> None:
        """See :meth:`RainbowAPI.unsubscribe`."""
        await asyncio.to_thread(self.sync.unsubscribe, channel, identity)

    async def hello(self) -> bool:
        """See :meth:`RainbowAPI.hello`."""
        return await asyncio.to_thread(self.sync.hello)
