"""Handlers written exactly as for rainbow-django, only the import changed.

Discovered by ``rainbow.django`` in this installed app's ``rainbow`` module.
"""

from __future__ import annotations

from typing import Any

from rainbow.django import RainbowResponse, rainbow, rainbow_close, rainbow_connect

from ..scenario import DJANGO


@rainbow_connect
def connect(request: Any) -> RainbowResponse:
    assert request.rbidentity == request.identity
    assert request.META["HTTP_RAINBOWCLIENTIDENTITY"] == request.identity, "Django's request is reachable"
    return DJANGO.connect(request)


@rainbow_close
def close(request: Any) -> RainbowResponse:
    return DJANGO.close(request)


@rainbow(msg_type=1)
def echo(rbrequest: Any) -> Any:
    return DJANGO.echo(rbrequest)


@rainbow(msg_type=2)
def set_name(rbrequest: Any) -> Any:
    return DJANGO.set_name(rbrequest)


@rainbow(msg_type=3)
def join(rbrequest: Any) -> Any:
    return DJANGO.join(rbrequest)


@rainbow(msg_type=4)
def leave(rbrequest: Any) -> Any:
    return DJANGO.leave(rbrequest)


@rainbow(5)
def broadcast(rbrequest: Any) -> Any:
    return DJANGO.broadcast(rbrequest)


@rainbow(6)
def api_subscribe(rbrequest: Any) -> Any:
    return DJANGO.api_subscribe(rbrequest)
