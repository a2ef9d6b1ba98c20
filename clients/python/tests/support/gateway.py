"""The real gateway as a subprocess: a spec §9 INI file, a free port, /hello/ polling."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from backends.servers import Backend, free_port
from rainbow.backend import RainbowAPI

TOKEN = "qwe123"


class GatewayStartError(RuntimeError):
    """The gateway binary exited or never answered /hello/."""


@dataclass
class Gateway:
    process: "subprocess.Popen[bytes]"
    port: int
    token: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def api(self, token: Optional[str] = None) -> RainbowAPI:
        return RainbowAPI(self.url, token or self.token)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_gateway(binary: Path, workdir: Path, backend_url: str, token: str = TOKEN) -> Gateway:
    """Writes a spec §9 rainbow.ini, starts ``rainbow-server -f ini -p PORT``
    and polls ``GET /hello/`` until it answers ``ok``."""
    workdir.mkdir(parents=True, exist_ok=True)
    ini = workdir / "rainbow.ini"
    ini.write_text(
        "[main]\n"
        f"security_token = {token}\n"
        f"connect_url = {backend_url}/rainbow/connect/\n"
        f"close_url = {backend_url}/rainbow/close/\n"
        f"forward_url = {backend_url}/rainbow/message/{{message_type}}/\n"
    )
    return launch(binary, workdir, ini, token)


def launch(
    binary: Path, workdir: Path, ini: Path, token: str, port: Optional[int] = None, rust_log: Optional[str] = None
) -> Gateway:
    """Starts ``rainbow-server -f ini -p PORT`` (a free port unless given),
    its output appended to ``workdir/gateway.log``, and polls ``GET /hello/``
    until it answers ``ok`` (30 s)."""
    port = port or free_port()
    log = workdir / "gateway.log"
    with open(log, "ab") as out:
        # The gateway reads RAINBOW_* variables as configuration: keep them
        # (RAINBOW_BIN included) away from it so the INI file is the whole config.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAINBOW_")}
        if rust_log:
            env.setdefault("RUST_LOG", rust_log)
        process = subprocess.Popen(
            [str(binary), "-f", str(ini), "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )
    gateway = Gateway(process, port, token, log)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise GatewayStartError(f"the gateway exited with {process.returncode} at startup:\n{gateway.log_tail()}")
        try:
            with opener.open(f"{gateway.url}/hello/", timeout=1) as rsp:
                if rsp.read().strip() == b"ok":
                    return gateway
        except OSError:
            pass
        if time.monotonic() > deadline:
            gateway.stop()
            raise GatewayStartError(f"the gateway never answered /hello/ on port {port}:\n{gateway.log_tail()}")
        time.sleep(0.05)


@dataclass
class Stack:
    """A real backend and a real gateway wired to each other."""

    backend: Backend
    gateway: Gateway

    @property
    def name(self) -> str:
        return self.backend.name


