"""The Django views serving the gateway's hooks (see :mod:`rainbow.django.urls`)."""

from __future__ import annotations

from typing import Optional

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from ..backend import CLOSE, CONNECT, MESSAGE, HookResult
from . import hooks

__all__ = ["connect", "close", "on_message"]


def _to_django(result: HookResult) -> HttpResponse:
    response = HttpResponse(result.body, status=result.status, content_type=result.headers.get("Content-Type"))
    for name, value in result.headers.items():
        if name.lower() != "content-type":
            response[name] = value
    return response


def _serve(request: HttpRequest, kind: str, msg_type: Optional[int] = None) -> HttpResponseBase:
    query = {key: request.GET.get(key, "") for key in request.GET}
    parsed = hooks.parse(
        kind,
        method=request.method or "GET",
        query=query,
        headers=dict(request.headers),
        body=request.body,
        msg_type=msg_type,
        native=request,
    )
    if isinstance(parsed, HookResult):
        return _to_django(parsed)
    result = hooks.call(parsed)
    if isinstance(result, HttpResponseBase):  # rainbow-django handlers could return one
        return result
    return _to_django(hooks.render(parsed, result))


@csrf_exempt
def connect(request: HttpRequest) -> HttpResponseBase:
    """``GET connect/``: a client is connecting."""
    return _serve(request, CONNECT)


@csrf_exempt
def close(request: HttpRequest) -> HttpResponseBase:
    """``GET close/``: a client's connection ended."""
    return _serve(request, CLOSE)


@csrf_exempt
def on_message(request: HttpRequest, msg_type: int) -> HttpResponseBase:
    """``POST message/<msg_type>/``: a client sent a message."""
    return _serve(request, MESSAGE, int(msg_type))
