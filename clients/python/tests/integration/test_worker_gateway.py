"""Python workers (rainbow.worker) against the REAL gateway binary.

The gateway routes every event to workers (``[workers] worker_route =
workers``); the worker program is tests/support/worker_app.py run with
``Worker.run(workers=N)`` in its own process group; clients are
``rainbow.Client``. The whole module is skipped only when the binary has no
``/worker/`` endpoint (a correctly signed handshake answered 404).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import rainbow
from rainbow import Client
from rainbow.worker import SignatureRefused, Worker
from support.gateway import TOKEN, Gateway, GatewayStartError
from support.worker_gateway import WorkerProgram, has_worker_endpoint, start_worker_gateway


@pytest.fixture(scope="module")
def worker_binary(gateway_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        present = has_worker_endpoint(gateway_binary, tmp_path_factory.mktemp("probe"))
    except GatewayStartError as exc:
        pytest.fail(str(exc))
    if not present:
        pytest.skip(f"{gateway_binary} has no /worker/ endpoint (answers 404): a gateway without worker support")
    return gateway_binary


@pytest.fixture
def gateway(worker_binary: Path, tmp_path: Path) -> Iterator[Gateway]:
    try:
        gw = start_worker_gateway(worker_binary, tmp_path / "gateway")
    except GatewayStartError as exc:
        pytest.fail(str(exc))
    yield gw
    gw.stop()


@pytest.fixture
def programs() -> Iterator[List[WorkerProgram]]:
    started: List[WorkerProgram] = []
    yield started
    for program in started:
        program.kill_all()


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition", tail: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{tail()}")
        time.sleep(0.05)


def launch(gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram], *args: str, workers: int = 1) -> WorkerProgram:
    program = WorkerProgram(gateway, tmp_path / "worker", "--workers", str(workers), *args)
    programs.append(program)
    wait_until(
        lambda: program.attached_lines() >= workers,
        15,
        f"{workers} worker process(es) attached",
        lambda: program.tail() + "\n--- gateway ---\n" + gateway.log_tail(),
    )
    return program


def channel() -> str:
    return "c-" + uuid.uuid4().hex[:12]


class Inbox:
    def __init__(self) -> None:
        self.messages: List[Tuple[int, Any]] = []

    def __call__(self, msg_type: int, data: Any) -> Any:
        self.messages.append((msg_type, data))
        return {"got": True}


def effects_db(tmp_path: Path) -> str:
    return str(tmp_path / "effects.sqlite")


def query(path: str, sql: str, *params: Any) -> List[Tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


# --------------------------------------------------------------------------- round trips


def test_qos_round_trips_through_the_python_worker(gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]) -> None:
    launch(gateway, tmp_path, programs)
    with Client(gateway.ws_url, params={"user": "ann"}) as client:
        t, reply = client.send(1, {"x": 1}, qos=1, timeout=10)
        assert t == 1 and reply["echo"] == {"x": 1} and reply["attempt"] == 1
        t, reply2 = client.send(1, [2], qos=2, timeout=10)
        assert reply2["echo"] == [2]
        assert client.send(1, "zero", qos=0) == (1, None)
        assert len(reply["identity"]) == 64 and reply2["identity"] == reply["identity"]


def test_connect_accept_with_context_and_deny_401(gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]) -> None:
    db = effects_db(tmp_path)
    launch(gateway, tmp_path, programs, "--effects", db)
    with pytest.raises(rainbow.ConnectionRefused) as refused:
        Client(gateway.ws_url, params={"token": "bad"}, reconnect=False)
    assert refused.value.status == 401
    with Client(gateway.ws_url, params={"user": "bob"}) as client:
        _, reply = client.send(1, None, qos=1, timeout=10)
    context = json.loads(base64.b64decode(reply["context"]))
    assert context == {"user": "bob"}
    identity = reply["identity"]
    wait_until(lambda: query(db, "SELECT context FROM closes WHERE identity = ?", identity), 10, "the close task")
    assert query(db, "SELECT context FROM closes WHERE identity = ?", identity) == [(reply["context"],)]


def test_handler_errors_fail_the_hook(gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]) -> None:
    program = launch(gateway, tmp_path, programs)
    with pytest.raises(rainbow.ConnectionRefused) as refused:
        Client(gateway.ws_url, params={"token": "boom"}, reconnect=False)
    assert refused.value.status == 503
    with Client(gateway.ws_url, retransmit_interval=1.0) as client:
        for msg_type in (6, 99):  # a handler that raises; a type without handler
            with pytest.raises(rainbow.TimeoutError):
                client.send(msg_type, {}, qos=1, timeout=2)
        assert client.send(1, "still fine", qos=2, timeout=10)[1]["echo"] == "still fine"
    log = program.log_text()
    assert "RuntimeError: broken handler" in log and "Traceback" in log
    assert log.count("no handler for message type 99") == 1, "logged once per type"


def test_reply_controls_context_sub_unsub(gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]) -> None:
    launch(gateway, tmp_path, programs)
    room = channel()
    api = gateway.api()
    inbox = Inbox()
    with Client(gateway.ws_url, on_message=inbox) as client:
        _, reply = client.send(3, {"context": "ctx-1", "sub": [room]}, qos=1, timeout=10)
        assert reply == {"context_was": reply["context_was"]}
        assert client.send(1, None, qos=1, timeout=10)[1]["context"] == "ctx-1"
        connections, _ = api.send(room, 9, {"hello": "room"}, qos=1)
        assert connections == 1
        wait_until(lambda: (9, {"hello": "room"}) in inbox.messages, 5, "the channel message")
        client.send(3, {"unsub": [room]}, qos=1, timeout=10)
        connections, _ = api.send(room, 9, {"again": True}, qos=1)
        assert connections == 0


def test_app_push_reaches_a_subscribed_client_and_push_to_identity(
    gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]
) -> None:
    launch(gateway, tmp_path, programs)
    room = channel()
    listener_inbox = Inbox()
    with Client(gateway.ws_url, params={"sub": room}, on_message=listener_inbox) as listener, Client(
        gateway.ws_url
    ) as talker:
        listener.send(1, "ready", qos=1, timeout=10)
        _, result = talker.send(4, {"channel": room, "data": {"say": "hi"}, "type": 12}, qos=1, timeout=15)
        assert result["status"] == 0 and result["connections"] == 1, result
        wait_until(lambda: (12, {"say": "hi"}) in listener_inbox.messages, 5, "app.push at the listener")

        _, result = listener.send(5, None, qos=1, timeout=15)
        assert result["status"] == 0 and result["connections"] == 1, result
        wait_until(lambda: (7, {"to": "you"}) in listener_inbox.messages, 5, "request.push at the listener")


def test_bad_token_is_refused_as_a_signature_error(gateway: Gateway) -> None:
    app = Worker(f"{gateway.ws_url}/worker/", token="not-the-token", credits=1)
    with pytest.raises(SignatureRefused) as refused:
        app.start(timeout=10)
    assert refused.value.status == 401 and "signature" in str(refused.value)


def test_api_from_outside_handlers(gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]) -> None:
    db = effects_db(tmp_path)
    launch(gateway, tmp_path, programs, "--effects", db)
    room = channel()
    inbox = Inbox()
    with Client(gateway.ws_url, on_message=inbox, reconnect=False) as client:
        identity = client.send(1, None, qos=1, timeout=10)[1]["identity"]
        # credits=0: a script that only calls the API (a "trigger")
        with Worker(f"{gateway.ws_url}/worker/", token=TOKEN, credits=0, name="script") as script:
            assert script.sub(identity, room)["status"] == 0
            assert script.push({"n": 1}, channel=room, msg_type=3, qos=1)["connections"] == 1
            wait_until(lambda: (3, {"n": 1}) in inbox.messages, 5, "the channel push")
            assert script.push({"n": 2}, identity=identity, msg_type=4, qos=2)["connections"] == 1
            wait_until(lambda: (4, {"n": 2}) in inbox.messages, 5, "the identity push")
            assert script.unsub(identity, room)["status"] == 0
            assert script.push({"n": 3}, channel=room, msg_type=3, qos=1)["connections"] == 0
            missing = script.sub("0" * 64, room)
            assert missing["status"] == 1, missing
            assert script.disconnect(identity, reason="bye")["status"] == 0
            wait_until(lambda: query(db, "SELECT 1 FROM closes WHERE identity = ?", identity), 10, "the close task")


def test_credits_window_and_concurrency(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    app = Worker(f"{gateway.ws_url}/worker/", token=TOKEN, credits=2, name="window")

    @app.route(1)
    def slow(request: Any) -> Any:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return request.json()

    with caplog.at_level(logging.WARNING, "rainbow.worker"), app:
        clients = [Client(gateway.ws_url) for _ in range(6)]
        try:
            results: List[Any] = []
            threads = [
                threading.Thread(target=lambda c=c, i=i: results.append(c.send(1, i, qos=1, timeout=20)[1]))
                for i, c in enumerate(clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(results) == list(range(6))
        finally:
            for c in clients:
                c.close()
    assert state["peak"] == 2
    assert not [r for r in caplog.records if "credit window" in r.getMessage()], "the gateway kept to the window"


def test_a_protocol_error_is_named_and_the_worker_reconnects(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    app = Worker(f"{gateway.ws_url}/worker/", token=TOKEN, credits=1, name="clumsy", backoff=(0.1, 0.5))
    with caplog.at_level(logging.INFO, "rainbow.worker"), app:
        with pytest.raises(rainbow.ConnectionLost):
            app._call("dance", {})  # not an op: the gateway closes with 1002 naming it
        wait_until(lambda: app.attached, 10, "reattached")
        assert app.sub("0" * 64, "c")["msg"] == "no such connection"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("protocol error: 1002" in m and "dance" in m for m in errors), errors


def test_workers_reattach_when_the_gateway_comes_back(
    worker_binary: Path, tmp_path: Path, programs: List[WorkerProgram]
) -> None:
    first = start_worker_gateway(worker_binary, tmp_path / "gateway")
    try:
        program = launch(first, tmp_path, programs, workers=2)
        with Client(first.ws_url, reconnect=False) as client:
            assert client.send(1, "before", qos=1, timeout=10)[1]["echo"] == "before"
    finally:
        first.stop()
    time.sleep(1.0)  # the workers retry with backoff meanwhile
    second = start_worker_gateway(worker_binary, tmp_path / "gateway", port=first.port)
    try:
        wait_until(lambda: program.attached_lines() >= 4, 20, "both workers reattached", program.tail)
        with Client(second.ws_url) as client:
            assert client.send(1, "after", qos=2, timeout=10)[1]["echo"] == "after"
        assert "lost the connection" in program.log_text()
        assert program.process.poll() is None
    finally:
        second.stop()


# --------------------------------------------------------------------------- crashes and restarts


class Sender(threading.Thread):
    """Sends type-2 (effect) messages ``count`` times, qos alternating 1 and 2,
    each waiting for its answer, on one client connection."""

    def __init__(self, gateway: Gateway, count: int, name: str, base: int = 0, pause: float = 0.0) -> None:
        super().__init__(name=name, daemon=True)
        self.connects = 0
        self.client = Client(gateway.ws_url, on_connect=self._connected, retransmit_interval=2.0)
        self.count = count
        self.pause = pause
        self.base = base
        self.replies: Dict[int, Any] = {}
        self.sent: Dict[int, int] = {}  # seq -> qos
        self.error: Optional[BaseException] = None
        self.stop_early = threading.Event()

    def _connected(self) -> None:
        self.connects += 1

    def run(self) -> None:
        try:
            for i in range(self.count):
                if self.stop_early.is_set():
                    break
                seq = self.base + i
                qos = 1 if i % 2 == 0 else 2
                self.sent[seq] = qos
                _, reply = self.client.send(2, {"seq": seq}, qos=qos, timeout=60)
                self.replies[seq] = reply
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self.error = exc

    def check(self, timeout: float = 120) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still sending after {timeout} s"
        assert self.error is None, f"{self.name}: {self.error!r}"
        assert set(self.replies) == set(self.sent), "every message answered"
        assert all(r["seq"] == seq for seq, r in self.replies.items())
        identities = {r["identity"] for r in self.replies.values()}
        assert len(identities) == 1 and self.connects == 1, "the client connection never dropped"
        self.client.close()


def check_effects(db: str, senders: List[Sender]) -> None:
    """qos 2: exactly one effect per message; qos 1: at least one; one effect per key."""
    per_key = query(db, "SELECT key, COUNT(*) FROM effects GROUP BY key HAVING COUNT(*) > 1")
    assert per_key == [], f"a key's effect was applied twice: {per_key}"
    counts = dict(query(db, "SELECT seq, COUNT(*) FROM effects GROUP BY seq"))
    for sender in senders:
        for seq, qos in sender.sent.items():
            if qos == 2:
                assert counts.get(seq) == 1, f"qos-2 seq {seq}: {counts.get(seq)} effects"
            else:
                assert counts.get(seq, 0) >= 1, f"qos-1 seq {seq}: no effect"


def last_run(db: str) -> int:
    try:
        return int(query(db, "SELECT COALESCE(MAX(rowid), 0) FROM runs")[0][0])
    except sqlite3.OperationalError:
        return 0


def run_count(db: str) -> int:
    try:
        return int(query(db, "SELECT COUNT(*) FROM runs")[0][0])
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_task_redelivers_and_effects_happen_once(
    gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]
) -> None:
    db = effects_db(tmp_path)
    program = launch(gateway, tmp_path, programs, "--effects", db, "--dedup", str(tmp_path / "dedup.sqlite"), "--slow", "0.6")
    sender = Sender(gateway, 16, "killed")
    sender.start()
    # Kill the worker twice mid-task: once before the handler's commit (0.1 s
    # into its 0.6 s), once after it (0.45 s in), each time in a fresh task.
    for delay in (0.1, 0.45):
        seen = last_run(db)
        fresh: List[Tuple[Any, ...]] = []
        wait_until(
            lambda: fresh.extend(query(db, "SELECT pid FROM runs WHERE rowid > ? AND attempt = 1", seen)) or fresh,
            20,
            "a first delivery to start",
            program.tail,
        )
        time.sleep(delay)
        pid = fresh[0][0]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pid not in program.children(), 10, "the killed worker gone")
        wait_until(lambda: len(program.children()) == 1, 20, "the worker restarted", program.tail)
    sender.check(150)
    check_effects(db, [sender])
    redelivered = query(db, "SELECT key, attempt FROM runs WHERE attempt > 1")
    assert len({k for k, _ in redelivered}) >= 2, f"both kills caused a redelivery: {redelivered}"
    # The kill after the commit: the redelivered run found the key handled and did not apply it again.
    after_commit = query(
        db,
        "SELECT r.key FROM runs r JOIN effects e ON e.key = r.key WHERE r.attempt > 1 AND e.attempt < r.attempt",
    )
    assert after_commit, "a redelivery of an already applied effect was seen and skipped"
    assert program.process.poll() is None


def test_whole_program_killed_and_started_again(gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]) -> None:
    """SIGKILL of the supervisor and its workers at once; a new program takes over the queue."""
    db = effects_db(tmp_path)
    args = ("--effects", db, "--slow", "0.4")
    program = launch(gateway, tmp_path, programs, *args)
    sender = Sender(gateway, 8, "restarted", base=5000)
    sender.start()
    wait_until(lambda: run_count(db) >= 3, 20, "traffic", program.tail)
    seen = last_run(db)
    wait_until(lambda: last_run(db) > seen, 20, "a task to start", program.tail)
    time.sleep(0.1)  # mid-task
    program.kill_all()
    time.sleep(0.5)  # nobody attached: the gateway queues the tasks
    launch(gateway, tmp_path, programs, *args)
    sender.check(120)
    check_effects(db, [sender])
    assert query(db, "SELECT COUNT(*) FROM runs WHERE attempt > 1")[0][0] >= 1


def test_sighup_restarts_gracefully_and_loses_nothing(
    gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]
) -> None:
    db = effects_db(tmp_path)
    program = launch(gateway, tmp_path, programs, "--effects", db, "--slow", "0.1", workers=2)
    first = set(program.children())
    assert len(first) == 2
    senders = [Sender(gateway, 40, f"hup-{i}", base=1000 * i) for i in range(2)]
    for s in senders:
        s.start()
    for _ in range(2):
        wait_until(lambda: run_count(db) > 4, 20, "traffic", program.tail)
        attached = program.attached_lines()
        old = set(program.children())
        program.signal(signal.SIGHUP)
        wait_until(lambda: program.attached_lines() >= attached + 2, 20, "the new generation attached", program.tail)
        wait_until(lambda: not (set(program.children()) & old), 30, "the old generation drained", program.tail)
        assert len(program.children()) == 2
    for s in senders:
        s.check(150)
    check_effects(db, senders)
    pids = {p for (p,) in query(db, "SELECT DISTINCT pid FROM effects")}
    assert pids - first, "the new workers did part of the work"
    assert program.log_text().count("drained and detached") >= 4
    assert "died" not in program.log_text()


def test_sigterm_drains_then_exits_0(gateway: Gateway, tmp_path: Path, programs: List[WorkerProgram]) -> None:
    db = effects_db(tmp_path)
    program = launch(gateway, tmp_path, programs, "--effects", db, "--slow", "2.0", workers=2)
    results: List[Any] = []
    with Client(gateway.ws_url) as client:
        client.send_async(2, {"seq": 1}, qos=2, timeout=30, callback=lambda *r: results.append(r))
        wait_until(lambda: run_count(db) >= 1, 10, "the task running")
        program.signal(signal.SIGTERM)
        assert program.process.wait(30) == 0, program.tail()
        wait_until(lambda: results, 10, "the in-flight task's answer")
    assert results[0][1]["seq"] == 1, results
    log = program.log_text()
    assert log.count("drained and detached") == 2, log[-3000:]
    assert "every worker stopped" in log
    assert program.children() == []
