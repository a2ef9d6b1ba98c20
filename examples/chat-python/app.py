"""The chat room of the original Rainbow slides, as a Flask backend.

The gateway forwards every client message here; this backend never holds a
connection. Message types (client -> backend):

- 0 ``{"message": name}``: set your name. It is kept in the connection's
  context (the gateway's cookie), the connection joins channel ``room`` and
  everyone there gets 1001 ``{"name", "identity"}``.
- 1 ``{"message": text}``: say something; everyone in ``room`` gets 1002
  ``{"name", "message", "identity"}``.

When a named client's connection closes, ``room`` gets 1004 ``{"name", "identity"}``.

Configuration (environment): ``RAINBOW_TOKEN`` (the gateway's
``security_token``, default ``qwe123``), ``RAINBOW_SERVER_URL`` (the gateway,
default ``http://localhost:1984``), ``PORT`` (default 8000).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from flask import Flask

from rainbow.backend import Hooks, RainbowAPI, RainbowRequest, RainbowResponse
from rainbow.flask import create_blueprint

ROOM = "room"
JOINED, SAID, LEFT = 1001, 1002, 1004

log = logging.getLogger("chat")


def _text(request: RainbowRequest, limit: int) -> Optional[str]:
    """The ``message`` field of the client's payload, trimmed, or None."""
    data = request.data
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return None
    text = data["message"].strip()
    return text[:limit] if text else None


def create_app(token: Optional[str] = None, server_url: Optional[str] = None) -> Flask:
    """The chat backend; its hooks are served under ``/rainbow/``."""
    token = token or os.environ.get("RAINBOW_TOKEN", "qwe123")
    server_url = server_url or os.environ.get("RAINBOW_SERVER_URL", "http://localhost:1984")
    api = RainbowAPI(server_url, token)
    hooks = Hooks(token=token)

    @hooks.connect
    def connect(request: RainbowRequest) -> RainbowResponse:
        return RainbowResponse({"status": "success"})

    @hooks.message(0)
    def update_name(request: RainbowRequest) -> Any:
        name = _text(request, 32)
        if name is None:
            return {"status": "error", "msg": 'send {"message": "your name"}'}
        rsp = RainbowResponse({"status": "ok", "identity": request.identity}, request)
        rsp.context["user"] = name
        api.subscribe(ROOM, request.identity)
        api.send(ROOM, JOINED, {"name": name, "identity": request.identity})
        return rsp

    @hooks.message(1)
    def send_message(request: RainbowRequest) -> Any:
        name = request.context.get("user")
        if not name:
            return {"status": "error", "msg": "set your name first (message type 0)"}
        text = _text(request, 2000)
        if text is None:
            return {"status": "error", "msg": 'send {"message": "some text"}'}
        api.send(ROOM, SAID, {"name": name, "message": text, "identity": request.identity})
        return RainbowResponse({"status": "ok"}, request)

    @hooks.close
    def close(request: RainbowRequest) -> RainbowResponse:
        name = request.context.get("user")
        if name:
            api.send(ROOM, LEFT, {"name": name, "identity": request.identity})
        return RainbowResponse({"status": "success"})

    app = Flask(__name__)
    app.register_blueprint(create_blueprint(hooks), url_prefix="/rainbow")

    @app.get("/")
    def index() -> str:
        return "Rainbow chat backend: the gateway calls /rainbow/connect/, /rainbow/close/, /rainbow/message/<type>/\n"

    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    create_app().run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), threaded=True)
