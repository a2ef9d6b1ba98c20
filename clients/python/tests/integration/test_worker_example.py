"""examples/worker-python (the chat room as a worker) against the real gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from rainbow import Client
from support.gateway import GatewayStartError
from support.worker_gateway import has_worker_endpoint, start_worker_gateway

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "worker-python"


@pytest.fixture(scope="module")
def chat(gateway_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, "subprocess.Popen[bytes]", Path]]:
    if not has_worker_endpoint(gateway_binary, tmp_path_factory.mktemp("probe")):
        pytest.skip(f"{gateway_binary} has no /worker/ endpoint (answers 404)")
    work = tmp_path_factory.mktemp("worker-example")
    try:
        gateway = start_worker_gateway(gateway_binary, work / "gateway")
    except GatewayStartError as exc:
        pytest.fail(str(exc))
    log = work / "worker.log"
    env = dict(os.environ)
    env.update(
        RAINBOW_WORKER_URL=f"{gateway.ws_url}/worker/",
        RAINBOW_TOKEN=gateway.token,
        WORKERS="2",
        DEDUP_PATH=str(work / "dedup.sqlite"),
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "worker.py")], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while log.read_text(errors="replace").count(" attached to ") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        yield gateway.ws_url, proc, log
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
        gateway.stop()


class Room:
    def __init__(self) -> None:
        self.seen: List[Tuple[int, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, msg_type: int, data: Any) -> None:
        with self.lock:
            self.seen.append((msg_type, data))

    def wait_for(self, predicate: Callable[[Tuple[int, Any]], bool], timeout: float = 10.0) -> Tuple[int, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for item in self.seen:
                    if predicate(item):
                        return item
            time.sleep(0.02)
        raise AssertionError(f"not seen; got {self.seen}")


def test_chat_room_through_workers(chat: Tuple[str, Any, Path]) -> None:
    url, proc, log = chat
    alice_room, bob_room = Room(), Room()
    with Client(url, on_message=alice_room) as alice, Client(url, on_message=bob_room) as bob:
        _, joined = alice.send(0, {"message": "alice"}, qos=1, timeout=15)
        assert joined["status"] == "ok"
        alice_room.wait_for(lambda m: m[0] == 1001 and m[1]["name"] == "alice")
        assert bob.send(1, {"message": "too early"}, qos=1, timeout=15)[1]["status"] == "error"
        assert bob.send(0, {"message": "bob"}, qos=2, timeout=15)[1]["status"] == "ok"
        alice_room.wait_for(lambda m: m[0] == 1001 and m[1]["name"] == "bob")
        assert alice.send(1, {"message": "hi bob"}, qos=1, timeout=15)[1] == {"status": "ok"}
        bob_room.wait_for(lambda m: m == (1002, {"name": "alice", "message": "hi bob", "identity": joined["identity"]}))
    # alice and bob left: nobody is left in the room to see it, but the close tasks were answered
    assert proc.poll() is None


def test_term_stops_the_example_cleanly(chat: Tuple[str, Any, Path]) -> None:
    url, proc, log = chat
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text(errors="replace")[-3000:]
    assert log.read_text(errors="replace").count("drained and detached") == 2
