"""Django integration with rainbow-django's names, on the framework-neutral core.

A rainbow-django application migrates by changing its imports::

    # before: from rainbow_django import rainbow, RainbowResponse, send, subscribe
    from rainbow.django import rainbow, rainbow_connect, rainbow_close, RainbowResponse, send, subscribe

and its URLconf::

    path("rainbow/", include("rainbow.django.urls"))   # connect/, close/, message/<int:msg_type>/

Settings: ``RAINBOW_SERVER_URL`` (the gateway, for :func:`send`,
:func:`subscribe`, :func:`unsubscribe`), ``RAINBOW_TOKEN`` (the shared
``security_token``; every hook call's signature is verified with it),
``RAINBOW_DATA_FORMAT`` (``"json"``, the default, or ``"raw"``) and
``RAINBOW_SIGNATURE`` (how API calls are signed: ``"v2"``, the default, or
``"v1"`` for a gateway older than v2 signatures).

Handlers live in each installed app's ``rainbow`` module, discovered on the
first hook call, as rainbow-django did (but an import error in one of them is
raised, not swallowed).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Tuple

from ..backend import HookResult, Hooks, RainbowAPI, RainbowRequest, RainbowResponse

__all__ = [
    "rainbow",
    "rainbow_connect",
    "rainbow_close",
    "RainbowRequest",
    "RainbowResponse",
    "HookResult",
    "send",
    "subscribe",
    "unsubscribe",
    "hooks",
    "get_api",
]

Handler = Callable[[RainbowRequest], Any]


def _setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name, None)


def _discover() -> None:
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("rainbow")


#: The handler registry the Django views serve.
hooks = Hooks(
    token=lambda: _setting("RAINBOW_TOKEN"),
    data_format=lambda: _setting("RAINBOW_DATA_FORMAT") or "json",
    loader=_discover,
)


def rainbow(msg_type: int) -> Callable[[Handler], Handler]:
    """Declares the handler of client messages of type ``msg_type``::

        @rainbow(msg_type=1)
        def on_chat(rbrequest):
            return RainbowResponse({"status": "ok"}, rbrequest)
    """
    return hooks.message(msg_type)


def rainbow_connect(func: Handler) -> Handler:
    """Declares the connect hook handler (return ``RainbowResponse({"status": "success"})`` to accept)."""
    return hooks.connect(func)


def rainbow_close(func: Handler) -> Handler:
    """Declares the close hook handler."""
    return hooks.close(func)


_api_lock = threading.Lock()
_api: Optional[Tuple[Tuple[Any, Any, Any], RainbowAPI]] = None


def get_api() -> RainbowAPI:
    """The :class:`RainbowAPI` for ``RAINBOW_SERVER_URL``, ``RAINBOW_TOKEN`` and
    ``RAINBOW_SIGNATURE``."""
    global _api
    key = (_setting("RAINBOW_SERVER_URL"), _setting("RAINBOW_TOKEN"), _setting("RAINBOW_SIGNATURE") or "v2")
    with _api_lock:
        if _api is None or _api[0] != key:
            _api = (key, RainbowAPI(str(key[0] or ""), str(key[1] or ""), signature=str(key[2])))
        return _api[1]


def send(channel: str, msg_type: int, data: Any, qos: int = 0, timeout: float = 10) -> Tuple[Optional[int], Any]:
    """Sends ``data`` to every connection on ``channel``; returns
    ``(connections, reply)``. Raises :class:`rainbow.RainbowAPIError`."""
    return get_api().send(channel, msg_type, data, qos=qos, timeout=timeout)


def subscribe(channel: str, identity: str, occupy: bool = False) -> None:
    """Subscribes connection ``identity`` to ``channel``."""
    get_api().subscribe(channel, identity, occupy=occupy)


def unsubscribe(channel: str, identity: str) -> None:
    """Unsubscribes connection ``identity`` from ``channel``."""
    get_api().unsubscribe(channel, identity)
