"""The chat room of examples/chat-python, as a Rainbow *worker* (maple style).

Instead of answering the gateway's HTTP hooks, these processes attach to the
gateway's ``/worker/`` endpoint and pull the clients' messages. Restart or
redeploy them at will (``kill -HUP``): clients stay connected and nothing
they sent with qos 1/2 is lost.

Message types (client -> worker), as in the Flask version:

- 0 ``{"message": name}``: set your name (kept in the connection's context),
  join channel ``room``; everyone there gets 1001 ``{"name", "identity"}``.
- 1 ``{"message": text}``: everyone in ``room`` gets 1002 ``{"name", "message", "identity"}``.
- when a named client leaves, ``room`` gets 1004 ``{"name", "identity"}``.

Environment: ``RAINBOW_WORKER_URL`` (default ``ws://127.0.0.1:1984/worker/``),
``RAINBOW_TOKEN`` (the gateway's ``security_token``, default ``qwe123``),
``WORKERS`` (processes, default 2), ``CREDITS`` (tasks in hand per process,
default 8), ``DEDUP_PATH`` (a SQLite file remembering replies of handled
tasks, default ``chat-dedup.sqlite`` in the current directory; empty disables).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

from rainbow.worker import CloseRequest, ConnectRequest, MessageRequest, SqliteDedup, Worker

ROOM = "room"
JOINED, SAID, LEFT = 1001, 1002, 1004

dedup_path = os.environ.get("DEDUP_PATH", "chat-dedup.sqlite")
app = Worker(
    os.environ.get("RAINBOW_WORKER_URL", "ws://127.0.0.1:1984/worker/"),
    token=os.environ.get("RAINBOW_TOKEN", "qwe123"),
    credits=int(os.environ.get("CREDITS", "8")),
    name="chat",
    dedup=SqliteDedup(dedup_path) if dedup_path else None,
)


def _text(request: MessageRequest, limit: int) -> Optional[str]:
    """The ``message`` field of the client's JSON payload, trimmed, or None."""
    try:
        data = request.json()
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return None
    text = data["message"].strip()
    return text[:limit] if text else None


def _name(request: Any) -> Optional[str]:
    """The name kept in the connection's context by type 0, if any."""
    try:
        name = request.context_data().get("user")
    except ValueError:
        return None
    return name if isinstance(name, str) else None


@app.connect
def connect(request: ConnectRequest) -> Any:
    # Everyone may enter; a real app would check request.params / request.headers here
    # and return request.deny() (the client gets HTTP 401).
    return request.accept()


@app.route(0)
def update_name(request: MessageRequest) -> Any:
    name = _text(request, 32)
    if name is None:
        return {"status": "error", "msg": 'send {"message": "your name"}'}
    # Subscribe first (an API call), so the newcomer sees its own welcome too.
    app.sub(request.identity, ROOM)
    app.push({"name": name, "identity": request.identity}, channel=ROOM, msg_type=JOINED, qos=1)
    # The reply's context becomes the connection's cookie: later tasks see it.
    return request.reply({"status": "ok", "identity": request.identity}, context={"user": name})


@app.route(1)
def send_message(request: MessageRequest) -> Dict[str, Any]:
    name = _name(request)
    if not name:
        return {"status": "error", "msg": "set your name first (message type 0)"}
    text = _text(request, 2000)
    if text is None:
        return {"status": "error", "msg": 'send {"message": "some text"}'}
    app.push({"name": name, "message": text, "identity": request.identity}, channel=ROOM, msg_type=SAID, qos=1)
    return {"status": "ok"}


@app.close
def close(request: CloseRequest) -> None:
    name = _name(request)
    if name:
        app.push({"name": name, "identity": request.identity}, channel=ROOM, msg_type=LEFT, qos=0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s")
    app.run(workers=int(os.environ.get("WORKERS", "2")))
