"""The worker's connection against a minimal stand-in of the gateway's /worker/
endpoint (tests/support/worker_peer.py): handshake, tasks, credits, API calls,
drain, reconnects and errors. The real gateway is in tests/integration."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Dict, Iterator, List
from urllib.parse import urlsplit

import pytest

import rainbow
from rainbow.worker import EndpointMissing, MessageRequest, SignatureRefused, Worker
from rainbow.worker import app as app_module
from support.worker_peer import WorkerPeer

TOKEN = "qwe123"


@pytest.fixture
def peer() -> Iterator[WorkerPeer]:
    p = WorkerPeer(TOKEN)
    yield p
    p.close()
    assert not p.errors, p.errors


@pytest.fixture
def running() -> Iterator[List[Worker]]:
    """Worker apps to stop after the test (without draining)."""
    apps: List[Worker] = []
    yield apps
    for app in apps:
        app.stop(drain=False, timeout=5)


def start(peer: WorkerPeer, running: List[Worker], setup: Any = None, **kwargs: Any) -> Worker:
    kwargs.setdefault("backoff", (0.05, 0.2))
    app = Worker(peer.url, token=TOKEN, **kwargs)
    if setup is not None:
        setup(app)
    running.append(app)
    return app.start(timeout=5)


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def test_handshake_is_signed_and_hello_carries_credits(peer: WorkerPeer, running: List[Worker]) -> None:
    app = start(peer, running, credits=3, name="chat")
    conn = peer.conn()
    assert conn.hello == {"op": "hello", "version": 1, "credits": 3}
    q = conn.query
    assert q["name"] == "chat" and len(q["signature"]) == 64, "signed v2 (the stand-in verified it)"
    assert app.attached


def test_the_handshake_can_be_signed_v1_for_an_old_gateway(peer: WorkerPeer, running: List[Worker]) -> None:
    app = start(peer, running, signature="v1")
    assert len(peer.conn().query["signature"]) == 40
    assert app.attached


def test_qos_round_trips(peer: WorkerPeer, running: List[Worker]) -> None:
    def setup(app: Worker) -> None:
        @app.route(1)
        def echo(request: MessageRequest) -> None:
            request.reply({"echo": request.json(), "qos": request.qos}, context="c", sub=["room"])

    start(peer, running, setup)
    conn = peer.conn()
    t1 = peer.task(conn, body=b'{"a":1}', qos=1)
    t2 = peer.task(conn, body=b'"b"', qos=2)
    replies = peer.replies(conn, 2)
    assert json.loads(replies[t1][1]) == {"echo": {"a": 1}, "qos": 1}
    assert json.loads(replies[t2][1]) == {"echo": "b", "qos": 2}
    assert replies[t1][0] == {"op": "reply", "task": t1, "context": "c", "sub": ["room"]}


def test_connect_and_close_tasks(peer: WorkerPeer, running: List[Worker]) -> None:
    def setup(app: Worker) -> None:
        app.connect(lambda r: r.accept(sub="x") if r.params.get("ok") else r.deny())

    start(peer, running, setup)
    conn = peer.conn()
    ok = peer.task(conn, "connect", params={"ok": "1"})
    no = peer.task(conn, "connect", params={})
    bye = peer.task(conn, "close", context="c")
    replies = peer.replies(conn, 3)
    assert replies[ok][0] == {"op": "reply", "task": ok, "accept": True, "sub": ["x"]}
    assert replies[no][0] == {"op": "reply", "task": no, "accept": False}
    assert replies[bye][0] == {"op": "reply", "task": bye}


def test_credits_bound_running_handlers_even_if_the_gateway_oversends(
    peer: WorkerPeer, running: List[Worker], caplog: pytest.LogCaptureFixture
) -> None:
    lock = threading.Lock()
    now = [0]
    peak = [0]

    def setup(app: Worker) -> None:
        @app.route(1)
        def slow(request: MessageRequest) -> int:
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            time.sleep(0.1)
            with lock:
                now[0] -= 1
            return 0

    start(peer, running, setup, credits=2)
    conn = peer.conn()
    assert conn.hello["credits"] == 2
    with caplog.at_level(logging.WARNING, "rainbow.worker"):
        ids = [peer.task(conn) for _ in range(7)]
        replies = peer.replies(conn, 7)
    assert sorted(replies) == sorted(ids)
    assert peak[0] == 2
    assert any("credit window of 2" in r.getMessage() for r in caplog.records)


def test_handler_errors_and_missing_handlers_are_error_replies(peer: WorkerPeer, running: List[Worker]) -> None:
    def setup(app: Worker) -> None:
        app.route(1)(lambda r: 1 / 0)

    start(peer, running, setup)
    conn = peer.conn()
    a = peer.task(conn, type=1)
    b = peer.task(conn, type=2)
    replies = peer.replies(conn, 2)
    assert replies[a][0]["error"] == "ZeroDivisionError: division by zero"
    assert replies[b][0]["error"] == "no handler for message type 2"


def test_api_calls_from_handlers_and_outside(peer: WorkerPeer, running: List[Worker]) -> None:
    results: List[Dict[str, Any]] = []

    def setup(app: Worker) -> None:
        @app.route(1)
        def h(request: MessageRequest) -> None:
            results.append(app.push({"hi": 1}, channel="room", msg_type=2, qos=1))
            results.append(request.push(b"raw", msg_type=3, qos=0))
            request.reply("done")

    app = start(peer, running, setup)
    conn = peer.conn()
    peer.task(conn)
    send, body = peer.next(conn, "send")
    assert {k: v for k, v in send.items() if k != "req"} == {"op": "send", "channel": "room", "type": 2, "qos": 1, "timeout": 10.0}
    assert body == b'{"hi":1}'
    push, body = peer.next(conn, "push")
    assert push["identity"] == "ab" * 32 and push["type"] == 3 and push["qos"] == 0 and body == b"raw"
    peer.next(conn, "reply")
    assert results[0]["status"] == 0 and results[0]["echo_op"] == "send" and "req" not in results[0]
    assert results[1]["echo_op"] == "push"

    assert app.sub("id1", "room", occupy=True)["echo_op"] == "sub"
    assert peer.next(conn, "sub")[0]["occupy"] is True
    assert app.unsub("id1", "room")["status"] == 0
    assert app.disconnect("id1", reason="bye")["echo_op"] == "close"
    close = peer.next(conn, "close")[0]
    assert close["identity"] == "id1" and close["reason"] == "bye"
    with pytest.raises(ValueError):
        app.push(1)
    with pytest.raises(ValueError):
        app.push(1, channel="a", identity="b")


def test_results_out_of_order(running: List[Worker]) -> None:
    held: List[Dict[str, Any]] = []
    p = WorkerPeer(TOKEN, on_call=lambda h, b: (held.append(h), None)[1])
    try:
        app = start(p, running)
        conn = p.conn()
        out: Dict[str, Any] = {}
        threads = [
            threading.Thread(target=lambda c=c: out.__setitem__(c, app.push(c, channel=c))) for c in ("a", "b", "c")
        ]
        for t in threads:
            t.start()
        wait_until(lambda: len(held) == 3)
        from rainbow.worker import encode_frame

        for h in reversed(held):
            p.run(conn.ws.send(encode_frame({"op": "result", "req": h["req"], "status": 0, "data": h["channel"]})))
        for t in threads:
            t.join(5)
        assert {c: r["data"] for c, r in out.items()} == {"a": "a", "b": "b", "c": "c"}
    finally:
        p.close()


def test_call_timeout_and_the_1024_limit(running: List[Worker], monkeypatch: pytest.MonkeyPatch) -> None:
    assert app_module.MAX_CALLS == 1024
    monkeypatch.setattr(app_module, "MAX_CALLS", 2)
    p = WorkerPeer(TOKEN, on_call=lambda h, b: None)  # never answers
    try:
        app = start(p, running, call_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(rainbow.TimeoutError, match="'sub'"):
            app.sub("i", "c")
        assert 0.4 < time.monotonic() - t0 < 2.5
        blockers = [threading.Thread(target=lambda: pytest.raises(rainbow.TimeoutError, app.sub, "i", "c")) for _ in range(2)]
        for t in blockers:
            t.start()
        time.sleep(0.1)
        with pytest.raises(rainbow.TimeoutError, match="2 API calls unanswered"):
            app._call("sub", {"identity": "i", "channel": "c"}, wait=0.2)
        for t in blockers:
            t.join(5)
    finally:
        p.close()


def test_drain_answers_in_flight_tasks_then_closes_1000(peer: WorkerPeer, running: List[Worker]) -> None:
    release = threading.Event()

    def setup(app: Worker) -> None:
        @app.route(1)
        def slow(request: MessageRequest) -> str:
            release.wait(5)
            return "late"

    app = start(peer, running, setup)
    conn = peer.conn()
    t = peer.task(conn)
    stopper = threading.Thread(target=app.stop)
    stopper.start()
    assert peer.next(conn, "drain")[0] == {"op": "drain"}
    assert stopper.is_alive()
    release.set()
    header, body = peer.next(conn, "reply")
    assert header["task"] == t and body == b'"late"'
    peer.wait_closed(conn)
    stopper.join(5)
    assert not stopper.is_alive()
    assert conn.close_code == 1000
    with pytest.raises(rainbow.ConnectionLost):
        app.sub("i", "c")


def test_reconnect_with_fresh_signature_and_lost_calls_fail(running: List[Worker]) -> None:
    p = WorkerPeer(TOKEN, on_call=lambda h, b: None)
    try:
        app = start(p, running, call_timeout=5)
        first = p.conn(0)
        errors: List[BaseException] = []
        caller = threading.Thread(target=lambda: errors.append(pytest.raises(rainbow.ConnectionLost, app.sub, "i", "c").value))
        caller.start()
        p.next(first, "sub")
        p.drop(first)
        caller.join(5)
        assert errors and "ended before the answer" in str(errors[0])
        second = p.conn(1)
        assert second.query["nonce"] != first.query["nonce"]
        wait_until(lambda: app.attached)
    finally:
        p.close()


def test_tasks_running_across_a_reconnect_shrink_the_new_window(peer: WorkerPeer, running: List[Worker]) -> None:
    release = threading.Event()

    def setup(app: Worker) -> None:
        @app.route(1)
        def slow(request: MessageRequest) -> str:
            release.wait(5)
            return "x"

    start(peer, running, setup, credits=2)
    first = peer.conn(0)
    peer.task(first)
    time.sleep(0.1)
    peer.drop(first)
    second = peer.conn(1)
    assert second.hello["credits"] == 1  # one thread is still busy with the old task
    release.set()
    assert peer.next(second, "credit")[0] == {"op": "credit", "credits": 2}
    time.sleep(0.2)
    assert not [h for h, _ in second.log if h["op"] == "reply"]  # not answered on the wrong connection


def test_set_credits(peer: WorkerPeer, running: List[Worker]) -> None:
    app = start(peer, running, credits=4)
    conn = peer.conn()
    app.set_credits(0)
    assert peer.next(conn, "credit")[0]["credits"] == 0
    app.set_credits(3)
    assert peer.next(conn, "credit")[0]["credits"] == 3
    with pytest.raises(ValueError):
        app.set_credits(5)


def test_bad_token_is_signature_refused(peer: WorkerPeer) -> None:
    app = Worker(peer.url, token="wrong")
    with pytest.raises(SignatureRefused, match="signature refused") as info:
        app.start(timeout=5)
    assert info.value.status == 401 and isinstance(info.value, rainbow.ConnectionRefused)
    assert "signature error" in str(info.value)


def test_missing_endpoint_is_named(peer: WorkerPeer) -> None:
    base = urlsplit(peer.url)
    app = Worker(f"ws://{base.netloc}/nope/", token=TOKEN)
    with pytest.raises(EndpointMissing, match="no worker endpoint"):
        app.start(timeout=5)


def test_unreachable_gateway() -> None:
    from backends.servers import free_port

    app = Worker(f"ws://127.0.0.1:{free_port()}/worker/", token=TOKEN, open_timeout=2)
    with pytest.raises(rainbow.ConnectionLost, match="could not reach"):
        app.start(timeout=5)


def test_signature_refusals_are_retried_and_logged_after_the_first_attach(
    peer: WorkerPeer, running: List[Worker], caplog: pytest.LogCaptureFixture
) -> None:
    start(peer, running)
    peer.refuse = (401, b'{"status": 1, "msg": "signature error"}')
    with caplog.at_level(logging.ERROR, "rainbow.worker"):
        peer.drop(peer.conn())
        wait_until(lambda: sum("signature refused" in r.getMessage() for r in caplog.records) >= 2)
    peer.refuse = None
    peer.conn(1)


@pytest.mark.parametrize(
    "evil, words",
    [
        ("text frame", "text message"),
        (b"\x00\x00\x00\x08{\"op\":1}", "no string 'op'"),
        (b'\x00\x00\x00\x0e{"op":"party"}', "unknown op 'party'"),
        (b'\x00\x00\x00\x10{"op":"welcome"}', "second welcome"),
    ],
)
def test_protocol_errors_close_1002_naming_the_problem_then_reconnect(
    peer: WorkerPeer, running: List[Worker], evil: Any, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    start(peer, running)
    conn = peer.conn()
    with caplog.at_level(logging.ERROR, "rainbow.worker"):
        peer.send_raw(conn, evil)
        peer.wait_closed(conn)
    assert conn.close_code == 1002 and words in conn.close_reason
    assert any(words in r.getMessage() for r in caplog.records)
    peer.conn(1)


def test_unsupported_welcome_version(peer: WorkerPeer) -> None:
    peer.welcome = {"op": "welcome", "version": 2, "node": "n"}
    app = Worker(peer.url, token=TOKEN)
    with pytest.raises(rainbow.worker.WorkerProtocolError, match="version 2"):
        app.start(timeout=5)


def test_api_call_without_a_running_worker() -> None:
    app = Worker("ws://127.0.0.1:9/worker/", token=TOKEN)
    with pytest.raises(rainbow.ConnectionLost, match="not running"):
        app.push(1, channel="c")


def test_context_manager_and_credits_zero_for_scripts(peer: WorkerPeer) -> None:
    with Worker(peer.url, token=TOKEN, credits=0) as app:
        assert peer.conn().hello["credits"] == 0
        assert app.push("tick", channel="clock", qos=0)["status"] == 0
    conn = peer.conn()
    peer.wait_closed(conn)
    assert conn.close_code == 1000


def test_api_calls_after_the_reply_still_work_while_draining(peer: WorkerPeer, running: List[Worker]) -> None:
    go = threading.Event()
    results: List[Any] = []

    def setup(app: Worker) -> None:
        @app.route(1)
        def h(request: MessageRequest) -> None:
            go.wait(5)
            request.reply("answered")  # the gateway may send 'drained' right after this
            time.sleep(0.2)
            try:
                results.append(app.push("after", channel="room"))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)

    app = start(peer, running, setup)
    conn = peer.conn()
    peer.task(conn)
    stopper = threading.Thread(target=app.stop)
    stopper.start()
    peer.next(conn, "drain")
    go.set()
    peer.next(conn, "reply")
    send, _ = peer.next(conn, "send")
    assert conn.drained_sent
    stopper.join(10)
    assert results and isinstance(results[0], dict) and results[0]["status"] == 0, results
    peer.wait_closed(conn)
    assert conn.close_code == 1000
