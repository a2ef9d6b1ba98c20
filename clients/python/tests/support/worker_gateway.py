"""The real gateway configured for workers, and worker programs as subprocesses.

- :func:`start_worker_gateway`: ``rainbow-server`` with a ``[workers]``
  section (docs/configuration.md) on a free loopback port.
- :func:`has_worker_endpoint`: whether a gateway binary has ``/worker/`` at all.
- :class:`WorkerProgram`: tests/support/worker_app.py run with ``Worker.run``
  in its own process group (killed as a whole at teardown).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from backends.servers import free_port
from support.gateway import TOKEN, Gateway, launch

APP = Path(__file__).resolve().parent / "worker_app.py"


def start_worker_gateway(
    binary: Path,
    workdir: Path,
    token: str = TOKEN,
    workers: Optional[Dict[str, str]] = None,
    main: Optional[Dict[str, str]] = None,
    port: Optional[int] = None,
) -> Gateway:
    """Starts the gateway with every event routed to workers (``worker_route =
    workers``) unless ``workers`` says otherwise; ``main`` adds ``[main]`` keys.
    The webhook URLs point at a closed port: nothing may reach them."""
    workdir.mkdir(parents=True, exist_ok=True)
    dead = f"http://127.0.0.1:{free_port()}"
    main_keys = {
        "security_token": token,
        "connect_url": f"{dead}/connect/",
        "close_url": f"{dead}/close/",
        "forward_url": f"{dead}/message/{{message_type}}/",
        "forward_timeout": "10s",
        "hook_timeout": "10s",
        # close tasks left without a worker at the end of a test must not hold the gateway's exit
        "shutdown_timeout": "2s",
    }
    main_keys.update(main or {})
    worker_keys = {"worker_route": "workers", "worker_queue_timeout": "10s"}
    worker_keys.update(workers or {})
    ini = workdir / "rainbow.ini"
    text = "[main]\n" + "".join(f"{k} = {v}\n" for k, v in main_keys.items())
    if worker_keys:
        text += "\n[workers]\n" + "".join(f"{k} = {v}\n" for k, v in worker_keys.items())
    ini.write_text(text)
    return launch(binary, workdir, ini, token, port, rust_log="info")


def start_plain_gateway(binary: Path, workdir: Path, token: str = TOKEN) -> Gateway:
    """The gateway with no ``[workers]`` section (any binary reads this)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ini = workdir / "rainbow.ini"
    ini.write_text(f"[main]\nsecurity_token = {token}\n")
    return launch(binary, workdir, ini, token, rust_log="info")


def has_worker_endpoint(binary: Path, workdir: Path) -> bool:
    """Whether ``binary`` serves ``/worker/``: ``False`` only when a correctly
    signed worker handshake is answered 404."""
    from rainbow.worker import EndpointMissing, Worker

    gateway = start_plain_gateway(binary, workdir)
    try:
        probe = Worker(f"{gateway.ws_url}/worker/", token=TOKEN, credits=0, name="probe")
        try:
            probe.start(timeout=10)
        except EndpointMissing:
            return False
        probe.stop(timeout=10)
        return True
    finally:
        gateway.stop()


class WorkerProgram:
    """tests/support/worker_app.py under ``Worker.run(workers=N)``."""

    def __init__(self, gateway: Gateway, workdir: Path, *args: str, token: Optional[str] = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"worker-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(APP), f"{gateway.ws_url}/worker/", token or gateway.token, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> List[int]:
        """The worker processes (Linux /proc)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def attached_lines(self) -> int:
        return self.log_text().count(" attached to ")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self) -> str:
        return self.log_text()[-5000:]

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def kill_all(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
