"""examples/chat-python against the real gateway: the seed's chat room end to end."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from backends.servers import free_port, wait_listening
from rainbow import Client
from support.gateway import Gateway

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "chat-python"
TOKEN = "qwe123"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("chat_example_app", EXAMPLE / "app.py")
    assert spec is not None and spec.loader is not None, f"no chat example at {EXAMPLE}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chat(make_gateway: Callable[..., Gateway]) -> Iterator[Gateway]:
    from werkzeug.serving import make_server

    port = free_port()
    holder: dict = {}

    # The app needs the gateway's URL and the gateway needs the app's: pick the
    # app's port first, start the gateway, then the app.
    gateway = make_gateway(f"http://127.0.0.1:{port}")
    app = load_example().create_app(token=TOKEN, server_url=gateway.url)
    server = make_server("127.0.0.1", port, app, threaded=True)
    holder["thread"] = threading.Thread(target=server.serve_forever, daemon=True)
    holder["thread"].start()
    wait_listening(port)
    yield gateway
    server.shutdown()


class Room:
    def __init__(self) -> None:
        self.seen: List[Tuple[int, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, msg_type: int, data: Any) -> None:
        with self.lock:
            self.seen.append((msg_type, data))

    def wait_for(self, predicate: Callable[[Tuple[int, Any]], bool], timeout: float = 5.0) -> Tuple[int, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for item in self.seen:
                    if predicate(item):
                        return item
            time.sleep(0.02)
        raise AssertionError(f"never received the expected message; got {self.seen}")


def test_chat_room(chat: Gateway) -> None:
    alice_room, bob_room = Room(), Room()
    alice = Client(chat.ws_url, os="test", on_message=alice_room)
    bob = Client(chat.ws_url, os="test", on_message=bob_room)
    try:
        assert alice.send(1, {"message": "anyone?"}, qos=1)[1]["status"] == "error", "no name yet"

        rsp_type, reply = alice.send(0, {"message": "alice"}, qos=1)
        assert rsp_type == 0 and reply["status"] == "ok"
        alice_id = reply["identity"]
        _, joined = alice_room.wait_for(lambda m: m[0] == 1001)
        assert joined == {"name": "alice", "identity": alice_id}

        bob_id = bob.send(0, {"message": "bob"}, qos=2)[1]["identity"]
        for room in (alice_room, bob_room):
            room.wait_for(lambda m: m == (1001, {"name": "bob", "identity": bob_id}))

        assert alice.send(1, {"message": "hi bob"}, qos=1)[1] == {"status": "ok"}
        said = (1002, {"name": "alice", "message": "hi bob", "identity": alice_id})
        alice_room.wait_for(lambda m: m == said)
        bob_room.wait_for(lambda m: m == said)

        alice.close()
        bob_room.wait_for(lambda m: m == (1004, {"name": "alice", "identity": alice_id}), timeout=10)
    finally:
        alice.close()
        bob.close()
