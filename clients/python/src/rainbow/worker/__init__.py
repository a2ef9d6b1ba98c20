"""Rainbow workers: backend processes that attach to the gateway and pull tasks
(docs/worker-protocol.md; the "maple" design).

::

    from rainbow.worker import Worker

    app = Worker("ws://127.0.0.1:1984/worker/", token="qwe123", credits=4, name="chat")

    @app.connect
    def on_connect(request):                 # .identity .headers .params .remote
        return request.accept(context={"user": request.params.get("user")}, sub=["lobby"])

    @app.route(1)
    def hello(request):                      # .identity .type .qos .context .data .json() .key .attempt
        request.reply({"ok": True})
        app.push({"hi": True}, channel="lobby", msg_type=2, qos=1)

    @app.close
    def on_close(request):
        ...

    app.run(workers=2)                       # supervisor + 2 processes; TERM drains, HUP restarts

- :class:`Worker`: handler registry, connection, API calls (``push``, ``sub``,
  ``unsub``, ``disconnect``), :meth:`~Worker.run` / :meth:`~Worker.serve` /
  :meth:`~Worker.start`.
- Requests: :class:`ConnectRequest`, :class:`MessageRequest`, :class:`CloseRequest`; :class:`Reply`.
- Redelivered tasks: :class:`SqliteDedup`, :class:`MemoryDedup`.
- Frames: :func:`encode_frame`, :func:`decode_frame`.
"""

from __future__ import annotations

from .app import MAX_CALLS, MAX_CREDITS, Worker, worker_url
from .dedup import DedupStore, MemoryDedup, SqliteDedup
from .errors import Deny, EndpointMissing, HandshakeRefused, SignatureRefused, WorkerError, WorkerProtocolError
from .frame import VERSION, FrameError, decode_frame, encode_frame
from .requests import CloseRequest, ConnectRequest, MessageRequest, Reply, Request

__all__ = [
    "Worker",
    "worker_url",
    "Request",
    "ConnectRequest",
    "MessageRequest",
    "CloseRequest",
    "Reply",
    "Deny",
    "DedupStore",
    "MemoryDedup",
    "SqliteDedup",
    "WorkerError",
    "HandshakeRefused",
    "SignatureRefused",
    "EndpointMissing",
    "WorkerProtocolError",
    "FrameError",
    "encode_frame",
    "decode_frame",
    "VERSION",
    "MAX_CALLS",
    "MAX_CREDITS",
]
