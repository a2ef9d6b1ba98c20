"""The hook handlers every test backend serves, whatever its framework.

Message types:

- 1 echo: replies ``{"echo", "identity", "context", "type"}``.
- 2 set name: stores ``data["name"]`` in the context (the cookie).
- 3 join / 4 leave: subscribes / unsubscribes through response headers.
- 5 broadcast: the backend calls the gateway's ``/send/`` from inside the hook.
- 6 subscribe through the API (the seed's chat does this), then reply.
- anything else: no handler (404), so a v1 client times out.

The connect hook denies a client whose params have ``deny``, stores the
device id in the context, and subscribes to ``params["channel"]`` if given.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

from rainbow.backend import RainbowRequest, RainbowResponse

SendFn = Callable[..., Any]
SubscribeFn = Callable[[str, str], None]


class Scenario:
    def __init__(self, name: str) -> None:
        self.name = name
        self.events: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self.send: Optional[SendFn] = None
        self.subscribe: Optional[SubscribeFn] = None

    # ------------------------------------------------------------ bookkeeping

    def record(self, kind: str, request: RainbowRequest) -> None:
        with self._lock:
            self.events.append(
                {
                    "kind": kind,
                    "identity": request.identity,
                    "params": dict(request.params),
                    "headers": dict(request.headers),
                    "context": dict(request.context),
                    "msg_type": request.msg_type,
                    "data": request.data,
                }
            )
            del self.events[:-1000]  # bounded

    def find(self, kind: str, identity: Optional[str] = None, timeout: float = 5.0) -> Dict[str, Any]:
        """The first ``kind`` event (of ``identity``), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for event in self.events:
                    if event["kind"] == kind and (identity is None or event["identity"] == identity):
                        return event
            if time.monotonic() > deadline:
                raise AssertionError(f"the {self.name} backend never saw a {kind} hook for {identity}")
            time.sleep(0.02)

    # --------------------------------------------------------------- handlers

    def connect(self, request: RainbowRequest) -> RainbowResponse:
        self.record("connect", request)
        if request.params.get("deny"):
            return RainbowResponse({"status": "denied"}, request)
        rsp = RainbowResponse({"status": "success"}, request)
        rsp.context["device"] = request.headers.get("x-deviceid")
        if request.params.get("channel"):
            rsp.sub(request.params["channel"])
        return rsp

    def close(self, request: RainbowRequest) -> RainbowResponse:
        self.record("close", request)
        return RainbowResponse({"status": "success"})

    def echo(self, request: RainbowRequest) -> RainbowResponse:
        self.record("message", request)
        return RainbowResponse(
            {
                "echo": request.data,
                "identity": request.identity,
                "context": request.context,
                "type": request.msg_type,
                "backend": self.name,
            },
            request,
        )

    def set_name(self, request: RainbowRequest) -> RainbowResponse:
        self.record("message", request)
        rsp = RainbowResponse({"status": "ok"}, request)
        rsp.context["name"] = request.data["name"]
        return rsp

    def join(self, request: RainbowRequest) -> RainbowResponse:
        return RainbowResponse({"joined": request.data["channel"]}, request).sub(request.data["channel"])

    def leave(self, request: RainbowRequest) -> RainbowResponse:
        return RainbowResponse({"left": request.data["channel"]}, request).unsub(request.data["channel"])

    def broadcast(self, request: RainbowRequest) -> Any:
        assert self.send is not None
        data = request.data
        connections, reply = self.send(data["channel"], 1002, data["payload"], qos=data.get("qos", 0), timeout=5)
        return {"connections": connections, "reply": reply}

    def api_subscribe(self, request: RainbowRequest) -> Any:
        assert self.subscribe is not None
        self.subscribe(request.data["channel"], request.identity)
        return {"subscribed": request.data["channel"]}

    def handlers(self) -> Dict[int, Callable[[RainbowRequest], Any]]:
        return {
            1: self.echo,
            2: self.set_name,
            3: self.join,
            4: self.leave,
            5: self.broadcast,
            6: self.api_subscribe,
        }


#: The scenario served by the Django app (its handlers are module-level).
DJANGO = Scenario("django")
