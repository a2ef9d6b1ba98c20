"""Dispatching tasks to handlers (no IO) and the dedup stores."""

from __future__ import annotations

import base64
import json
import logging
import multiprocessing
import os
import threading
import time
from typing import Any, Dict, List

import pytest

from rainbow.worker import (
    CloseRequest,
    ConnectRequest,
    Deny,
    MemoryDedup,
    MessageRequest,
    Reply,
    SqliteDedup,
    Worker,
)

URL = "ws://127.0.0.1:9/worker/"


def make_app(**kwargs: Any) -> Worker:
    return Worker(URL, token="qwe123", **kwargs)


def task(kind: str = "message", **fields: Any) -> Dict[str, Any]:
    header: Dict[str, Any] = {"op": "task", "task": 1, "kind": kind, "identity": "ab" * 32, "key": "k1", "attempt": 1}
    if kind == "message":
        header.update(type=1, qos=1, context=None)
    elif kind == "connect":
        header.update(headers={"x-a": "1"}, params={"token": "abc"}, remote="127.0.0.1:4000")
    header.update(fields)
    return header


def dispatch(app: Worker, header: Dict[str, Any], body: bytes = b"") -> List[Reply]:
    sent: List[Reply] = []
    app._dispatch(header, body, sent.append)
    return sent


# -- messages --------------------------------------------------------------------


def test_reply_from_handler_and_request_fields() -> None:
    app = make_app()
    seen: List[MessageRequest] = []

    @app.route(1)
    def hello(request: MessageRequest) -> None:
        seen.append(request)
        request.reply({"got": request.json()}, context="c2", sub=["a", "b"], unsub="old")

    [reply] = dispatch(app, task(qos=2, context="c1", key="key-9", attempt=1), b'{"x": 1}')
    assert reply.header(1) == {"op": "reply", "task": 1, "context": "c2", "sub": ["a", "b"], "unsub": ["old"]}
    assert json.loads(reply.body) == {"got": {"x": 1}}
    r = seen[0]
    assert (r.identity, r.type, r.qos, r.context, r.data, r.key, r.attempt) == ("ab" * 32, 1, 2, "c1", b'{"x": 1}', "key-9", 1)
    assert r.replied and r.app is app


def test_return_value_is_the_reply() -> None:
    app = make_app()
    app.route(1)(lambda request: {"echo": request.text()})
    app.route(2)(lambda request: b"\x00raw")
    app.route(3)(lambda request: None)
    app.route(4)(lambda request: Reply(body=b"r", sub=["x"]))
    assert json.loads(dispatch(app, task(type=1), b"hi")[0].body) == {"echo": "hi"}
    assert dispatch(app, task(type=2))[0].body == b"\x00raw"
    assert dispatch(app, task(type=3))[0].body == b""
    assert dispatch(app, task(type=4))[0].header(1)["sub"] == ["x"]


def test_route_several_types() -> None:
    app = make_app()
    app.route(5, 6)(lambda request: request.type)
    assert [dispatch(app, task(type=t))[0].body for t in (5, 6)] == [b"5", b"6"]


def test_handler_exception_is_an_error_reply_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.route(1)
    def boom(request: MessageRequest) -> None:
        raise KeyError("nope")

    with caplog.at_level(logging.ERROR, "rainbow.worker"):
        [reply] = dispatch(app, task())
    assert reply.error == "KeyError: 'nope'" and reply.body == b""
    record = next(r for r in caplog.records if "boom" in r.getMessage())
    assert record.exc_info is not None


def test_exception_after_reply_sends_nothing_more(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.route(1)
    def half(request: MessageRequest) -> None:
        request.reply("ok")
        raise RuntimeError("late")

    with caplog.at_level(logging.ERROR, "rainbow.worker"):
        replies = dispatch(app, task())
    assert [r.body for r in replies] == [b'"ok"']
    assert any("after answering" in r.getMessage() for r in caplog.records)


def test_replying_twice_raises_and_the_task_has_one_reply() -> None:
    app = make_app()
    errors: List[BaseException] = []

    @app.route(1)
    def twice(request: MessageRequest) -> None:
        request.reply(1)
        try:
            request.reply(2)
        except RuntimeError as exc:
            errors.append(exc)

    assert [r.body for r in dispatch(app, task())] == [b"1"]
    assert "already answered" in str(errors[0])


def test_missing_handler_is_an_error_reply_logged_once_per_type(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    with caplog.at_level(logging.ERROR, "rainbow.worker"):
        a = dispatch(app, task(type=9))
        b = dispatch(app, task(type=9))
        c = dispatch(app, task(type=10))
    assert a[0].error == "no handler for message type 9" and b[0].error == a[0].error
    assert c[0].error == "no handler for message type 10"
    logged = [r.getMessage() for r in caplog.records if "no handler" in r.getMessage()]
    assert len(logged) == 2


def test_base_exception_still_gets_one_reply() -> None:
    app = make_app()

    @app.route(1)
    def exits(request: MessageRequest) -> None:
        raise SystemExit(3)

    sent: List[Reply] = []
    with pytest.raises(SystemExit):
        app._dispatch(task(), b"", sent.append)
    assert [r.error for r in sent] == ["the handler did not complete"]


def test_unknown_kind() -> None:
    [reply] = dispatch(make_app(), task(kind="later"))
    assert reply.error == "unknown task kind 'later'"


def test_json_and_context_helpers() -> None:
    app = make_app()
    got: Dict[str, Any] = {}

    @app.route(1)
    def h(request: MessageRequest) -> None:
        got["json"] = request.json()
        got["ctx"] = request.context_data()
        try:
            request.json()
        except ValueError:
            pass

    cookie = base64.b64encode(b'{"user":"ann"}').decode()
    dispatch(app, task(context=cookie), b"[1]")
    assert got == {"json": [1], "ctx": {"user": "ann"}}
    assert MessageRequest(app, task(), b"", lambda r: None).json() is None
    with pytest.raises(ValueError):
        MessageRequest(app, task(), b"{", lambda r: None).json()


def test_async_handlers_are_refused() -> None:
    app = make_app()

    async def handler(request: Any) -> None:
        pass

    with pytest.raises(TypeError, match="plain functions"):
        app.route(1)(handler)
    with pytest.raises(ValueError):
        app.route(70000)


# -- connect and close -------------------------------------------------------------


def test_default_connect_accepts_and_close_acknowledges() -> None:
    app = make_app()
    assert dispatch(app, task("connect"))[0].header(1) == {"op": "reply", "task": 1, "accept": True}
    assert dispatch(app, task("close", context="c"))[0].header(1) == {"op": "reply", "task": 1}


def test_connect_accept_with_controls() -> None:
    app = make_app()
    seen: List[ConnectRequest] = []

    @app.connect
    def on_connect(request: ConnectRequest) -> Reply:
        seen.append(request)
        return request.accept(context={"user": request.params["token"]}, sub=["lobby"])

    [reply] = dispatch(app, task("connect"))
    header = reply.header(1)
    assert header["accept"] is True and header["sub"] == ["lobby"]
    assert json.loads(base64.b64decode(header["context"])) == {"user": "abc"}
    r = seen[0]
    assert (r.headers, r.params, r.remote) == ({"x-a": "1"}, {"token": "abc"}, "127.0.0.1:4000")


@pytest.mark.parametrize(
    "handler, accept",
    [
        (lambda r: r.deny(), False),
        (lambda r: False, False),
        (lambda r: True, True),
        (lambda r: None, True),
        (lambda r: Reply(sub="x"), True),
    ],
)
def test_connect_decisions(handler: Any, accept: bool) -> None:
    app = make_app()
    app.connect(handler)
    [reply] = dispatch(app, task("connect"))
    assert reply.accept is accept and reply.error is None


def test_connect_raise_deny_refuses_other_exceptions_fail() -> None:
    app = make_app()

    @app.connect
    def on_connect(request: ConnectRequest) -> None:
        if request.params.get("token") == "abc":
            raise Deny()
        raise ValueError("db down")

    assert dispatch(app, task("connect"))[0].accept is False
    failed = dispatch(app, task("connect", params={}))[0]
    assert failed.accept is None and failed.error == "ValueError: db down"


def test_close_handler_runs_and_its_exception_is_an_error() -> None:
    app = make_app()
    seen: List[CloseRequest] = []

    @app.close
    def on_close(request: CloseRequest) -> str:
        seen.append(request)
        if request.context == "bad":
            raise RuntimeError("x")
        return "ignored"

    assert dispatch(app, task("close", context="c"))[0].header(1) == {"op": "reply", "task": 1}
    assert dispatch(app, task("close", context="bad"))[0].error == "RuntimeError: x"
    assert seen[0].context == "c"


# -- dedup -----------------------------------------------------------------------


def test_redelivery_is_answered_from_the_store_without_running_the_handler(tmp_path: Any) -> None:
    store = SqliteDedup(str(tmp_path / "d.sqlite"))
    app = make_app(dedup=store)
    runs: List[str] = []

    @app.route(1)
    def h(request: MessageRequest) -> None:
        runs.append(request.key)
        request.reply({"n": len(runs)}, context="ctx", sub=["s"])

    first = dispatch(app, task(key="K", attempt=1))[0]
    again = dispatch(app, task(key="K", attempt=2))[0]
    assert runs == ["K"]
    assert again == first and again.header(1)["sub"] == ["s"] and json.loads(again.body) == {"n": 1}
    dispatch(app, task(key="other", attempt=2))  # unknown key: the handler runs
    assert runs == ["K", "other"]


def test_first_attempts_are_not_looked_up_and_errors_not_remembered() -> None:
    store = MemoryDedup()
    app = make_app(dedup=store)
    calls: List[int] = []

    @app.route(1)
    def h(request: MessageRequest) -> int:
        calls.append(request.attempt)
        if request.attempt == 1:
            raise RuntimeError("fail")
        return request.attempt

    assert dispatch(app, task(key="E"))[0].error
    assert store.get("E") is None
    assert dispatch(app, task(key="E", attempt=2))[0].body == b"2"
    assert calls == [1, 2]


def test_connect_replies_are_remembered_too() -> None:
    store = MemoryDedup()
    app = make_app(dedup=store)
    count = []
    app.connect(lambda r: count.append(1) or r.accept(sub="a"))
    dispatch(app, task("connect", key="C"))
    assert dispatch(app, task("connect", key="C", attempt=3))[0].header(1) == {
        "op": "reply", "task": 1, "accept": True, "sub": ["a"]
    }
    assert len(count) == 1


def test_a_failing_store_does_not_lose_the_reply(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryDedup):
        def get(self, key: str) -> Any:
            raise OSError("disk")

        def put(self, key: str, reply: Reply) -> None:
            raise OSError("disk")

    app = make_app(dedup=Broken())
    app.route(1)(lambda r: "ok")
    with caplog.at_level(logging.ERROR, "rainbow.worker"):
        assert dispatch(app, task(attempt=2))[0].body == b'"ok"'
    assert sum("dedup store" in r.getMessage() for r in caplog.records) == 2


def test_reply_json_round_trip_keeps_binary_bodies() -> None:
    reply = Reply(accept=True, context="c", sub=["a"], unsub=["b"], body=bytes(range(256)))
    assert Reply.from_json(json.loads(json.dumps(reply.to_json()))) == reply


def test_memory_dedup_bounds() -> None:
    store = MemoryDedup(ttl=1000, max_entries=3)
    for i in range(5):
        store.put(f"k{i}", Reply(body=str(i).encode()))
    assert len(store) == 3 and store.get("k0") is None and store.get("k4") == Reply(body=b"4")
    old = MemoryDedup(ttl=0.05)
    old.put("x", Reply())
    time.sleep(0.1)
    assert old.get("x") is None


def test_sqlite_dedup_ttl_and_size(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "d.sqlite")
    store = SqliteDedup(path, ttl=100, max_entries=10)
    store.PRUNE_EVERY = 5
    for i in range(23):
        store.put(f"k{i}", Reply(body=b"%d" % i))
    store.prune()
    assert len(store) == 10
    assert store.get("k0") is None and store.get("k22") == Reply(body=b"22")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 101)
    assert store.get("k22") is None
    store.prune()
    assert len(store) == 0


def test_sqlite_dedup_is_shared_between_instances_and_threads(tmp_path: Any) -> None:
    path = str(tmp_path / "d.sqlite")
    a, b = SqliteDedup(path), SqliteDedup(path)

    def put(i: int) -> None:
        for j in range(50):
            a.put(f"{i}-{j}", Reply(body=b"x"))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(b) == 200 and b.get("3-49") == Reply(body=b"x")


def _child_put(path: str) -> None:
    SqliteDedup(path).put("from-child", Reply(body=b"c", sub=["s"]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sqlite_dedup_across_processes_and_fork(tmp_path: Any) -> None:
    path = str(tmp_path / "d.sqlite")
    store = SqliteDedup(path)
    store.put("before-fork", Reply(body=b"p"))
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_child_put, args=(path,))
    proc.start()
    proc.join(20)
    assert proc.exitcode == 0
    assert store.get("from-child") == Reply(body=b"c", sub=["s"])

    def reuse_after_fork() -> None:  # the inherited instance reopens its connection
        store.put("forked", Reply(body=b"f"))

    proc = ctx.Process(target=reuse_after_fork)
    proc.start()
    proc.join(20)
    assert proc.exitcode == 0 and store.get("forked") == Reply(body=b"f")


def test_worker_validation() -> None:
    with pytest.raises(ValueError):
        Worker(URL, token="")
    with pytest.raises(ValueError):
        Worker(URL, token="t", credits=10001)
    with pytest.raises(ValueError):
        Worker(URL, token="t", name="x" * 65)
    with pytest.raises(ValueError):
        Worker("ftp://x/", token="t")
    Worker(URL, token="t", credits=0)


def test_same_key_runs_one_at_a_time_and_a_redelivery_waits_for_the_first() -> None:
    app = make_app(dedup=MemoryDedup())
    started = threading.Event()
    release = threading.Event()
    runs: List[int] = []

    @app.route(1)
    def slow(request: MessageRequest) -> int:
        runs.append(request.attempt)
        started.set()
        release.wait(5)
        return len(runs)

    first: List[Reply] = []
    again: List[Reply] = []
    t1 = threading.Thread(target=app._dispatch, args=(task(key="same"), b"", first.append))
    t1.start()
    assert started.wait(5)
    t2 = threading.Thread(target=app._dispatch, args=(task(key="same", attempt=2), b"", again.append))
    t2.start()
    time.sleep(0.2)
    assert not again, "the redelivery waits while the first delivery runs"
    release.set()
    t1.join(5)
    t2.join(5)
    assert runs == [1] and first[0].body == b"1" and again == first
    assert app._keys == {}
