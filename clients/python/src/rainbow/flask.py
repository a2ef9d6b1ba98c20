"""Flask integration: a Blueprint serving the gateway's hooks from a :class:`~rainbow.backend.Hooks`.

::

    from flask import Flask
    from rainbow.backend import Hooks, RainbowResponse
    from rainbow.flask import create_blueprint

    hooks = Hooks(token="qwe123")

    @hooks.message(1)
    def echo(request):
        return RainbowResponse({"echo": request.data}, request)

    app = Flask(__name__)
    app.register_blueprint(create_blueprint(hooks), url_prefix="/rainbow")
    # -> /rainbow/connect/, /rainbow/close/, /rainbow/message/<int:msg_type>/
"""

from __future__ import annotations

from typing import Optional

from flask import Blueprint, Response, request

from .backend import CLOSE, CONNECT, MESSAGE, Hooks

__all__ = ["create_blueprint"]

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def create_blueprint(hooks: Hooks, name: str = "rainbow", url_prefix: Optional[str] = None) -> Blueprint:
    """A Blueprint with ``connect/``, ``close/`` and ``message/<int:msg_type>/``.

    Every call's signature is verified with ``hooks.token``; handlers run in
    Flask's request threads.
    """
    blueprint = Blueprint(name, __name__, url_prefix=url_prefix)

    def serve(kind: str, msg_type: Optional[int] = None) -> Response:
        result = hooks.handle(
            kind,
            method=request.method,
            query=request.args.to_dict(flat=True),
            headers=dict(request.headers),
            body=request.get_data(cache=False),
            msg_type=msg_type,
            native=request._get_current_object(),  # type: ignore[attr-defined]
        )
        return Response(result.body, status=result.status, headers=result.headers)

    def connect() -> Response:
        return serve(CONNECT)

    def close() -> Response:
        return serve(CLOSE)

    def message(msg_type: int) -> Response:
        return serve(MESSAGE, msg_type)

    blueprint.add_url_rule("/connect/", "connect", connect, methods=_METHODS, strict_slashes=False)
    blueprint.add_url_rule("/close/", "close", close, methods=_METHODS, strict_slashes=False)
    blueprint.add_url_rule("/message/<int:msg_type>/", "message", message, methods=_METHODS, strict_slashes=False)
    return blueprint
