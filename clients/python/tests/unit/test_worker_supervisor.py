"""Worker.run(workers=N): the supervisor's process management, against the
stand-in endpoint (tests/support/worker_peer.py) so it is tested without the
gateway: N processes attach; SIGHUP attaches a new generation before draining
the old one; a killed worker is restarted; SIGTERM drains all and exits 0.
The same against the real gateway is in tests/integration/test_worker_gateway.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from support.worker_peer import PeerConn, WorkerPeer

TOKEN = "qwe123"
APP = Path(__file__).resolve().parents[1] / "support" / "worker_app.py"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="Worker.run needs fork")


@pytest.fixture
def peer() -> Iterator[WorkerPeer]:
    p = WorkerPeer(TOKEN)
    yield p
    p.close()


class App:
    def __init__(self, peer: WorkerPeer, tmp: Path, *extra: str) -> None:
        self.log = tmp / "worker.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP), peer.url, TOKEN, *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown kills the workers too
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)


@pytest.fixture
def apps() -> Iterator[List[App]]:
    started: List[App] = []
    yield started
    for app in started:
        app.stop()


def live(peer: WorkerPeer) -> List[PeerConn]:
    return [c for c in peer.conns if not c.closed.is_set()]


def wait_until(condition: Any, timeout: float = 10.0, what: str = "condition", app: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never became true" + (f"\n{app.tail()}" if app else ""))
        time.sleep(0.02)


def pid_of(peer: WorkerPeer, conn: PeerConn) -> int:
    task = peer.task(conn, body=b'"who"', type=1)
    header, body = peer.next(conn, "reply", timeout=10)
    assert header["task"] == task
    return int(json.loads(body)["pid"])


@pytest.mark.parametrize("mode", ["reexec", "fork"])
def test_two_workers_hup_kill_and_term(peer: WorkerPeer, apps: List[App], tmp_path: Path, mode: str) -> None:
    app = App(peer, tmp_path, "--workers", "2", *(["--fork"] if mode == "fork" else []))
    apps.append(app)
    wait_until(lambda: len(live(peer)) == 2, what="two workers attached", app=app)
    first = live(peer)
    pids = {pid_of(peer, c) for c in first}
    assert len(pids) == 2 and app.proc.pid not in pids

    # SIGHUP: two fresh workers attach, and only then are the old ones drained.
    app.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(peer.conns) == 4, what="new generation attached", app=app)
    for old in first:
        header, _ = peer.next(old, "drain", timeout=10)
        # at the moment the old worker asked to drain, both new ones had said hello
        assert all(c.hello for c in peer.conns[2:])
        peer.wait_closed(old, timeout=10)
        assert old.close_code == 1000
    second = live(peer)
    assert len(second) == 2
    new_pids = {pid_of(peer, c) for c in second}
    assert not new_pids & pids

    # SIGKILL one worker: the supervisor starts another.
    victim = second[0]
    os.kill(pid_of(peer, victim), signal.SIGKILL)
    peer.wait_closed(victim, timeout=10)
    wait_until(lambda: len(live(peer)) == 2, what="killed worker replaced", app=app)

    # SIGTERM: every worker drains, the supervisor exits 0.
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(20) == 0, app.tail()
    for conn in peer.conns:
        peer.wait_closed(conn, timeout=5)
    drained = [c for c in peer.conns if c.close_code == 1000]
    assert len(drained) == 4  # two retired by HUP, two at TERM
    assert all(any(h["op"] == "drain" for h, _ in c.log) for c in drained)


def test_workers_follow_a_dead_supervisor(peer: WorkerPeer, apps: List[App], tmp_path: Path) -> None:
    app = App(peer, tmp_path, "--workers", "1")
    apps.append(app)
    wait_until(lambda: len(live(peer)) == 1, what="worker attached", app=app)
    conn = live(peer)[0]
    app.proc.kill()
    app.proc.wait(5)
    peer.next(conn, "drain", timeout=10)
    peer.wait_closed(conn, timeout=10)
    assert conn.close_code == 1000


def test_a_new_generation_that_cannot_attach_leaves_the_old_one_serving(
    peer: WorkerPeer, apps: List[App], tmp_path: Path
) -> None:
    app = App(peer, tmp_path, "--workers", "1")
    apps.append(app)
    wait_until(lambda: len(live(peer)) == 1, what="worker attached", app=app)
    old = live(peer)[0]
    peer.refuse = (503, b"busy")  # new workers cannot attach
    app.proc.send_signal(signal.SIGHUP)
    time.sleep(2.0)
    assert not old.closed.is_set() and not any(h["op"] == "drain" for h, _ in old.log)
    assert pid_of(peer, old) > 0
    peer.refuse = None
    peer.next(old, "drain", timeout=15)
    assert len(live(peer)) >= 1
    app.proc.send_signal(signal.SIGTERM)
    assert app.proc.wait(20) == 0, app.tail()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_serve_drains_on_term_hup_int(peer: WorkerPeer, tmp_path: Path, sig: int) -> None:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO);"
        "from rainbow.worker import Worker;"
        f"app = Worker({peer.url!r}, token={TOKEN!r}, credits=1);"
        "app.route(1)(lambda r: 'ok');"
        "app.serve(); print('served', flush=True)"
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(peer.conns) == 1, what="serve() attached")
        conn = peer.conns[0]
        proc.send_signal(sig)
        peer.next(conn, "drain", timeout=10)
        assert proc.wait(15) == 0
        peer.wait_closed(conn)
        assert conn.close_code == 1000
        assert "served" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
