"""Fixtures that run the REAL gateway binary against real backend servers.

The binary comes from ``$RAINBOW_BIN``, or is built with
``cargo build -q -p rainbow-gateway --bin rainbow-server`` in the workspace
root (clients/python/../..). A build failure fails these tests; they never
skip themselves.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from backends import servers
from support.gateway import TOKEN, Gateway, GatewayStartError, Stack, start_gateway

WORKSPACE = Path(__file__).resolve().parents[4]


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def gateway_binary() -> Path:
    explicit = os.environ.get("RAINBOW_BIN")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"RAINBOW_BIN={explicit} is not an executable file")
        return path
    if not (WORKSPACE / "Cargo.toml").is_file():
        pytest.fail(f"no Cargo workspace at {WORKSPACE}; set RAINBOW_BIN to a rainbow-server binary")
    build = subprocess.run(
        ["cargo", "build", "-q", "-p", "rainbow-gateway", "--bin", "rainbow-server"],
        cwd=WORKSPACE,
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"building the gateway failed (cargo exit {build.returncode}):\n{build.stderr[-4000:]}")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or WORKSPACE / "target")
    if not target.is_absolute():
        target = WORKSPACE / target
    return target / "debug" / "rainbow-server"


@pytest.fixture(scope="session")
def make_gateway(
    gateway_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Gateway]]:
    started: List[Gateway] = []

    def make(backend_url: str, token: str = TOKEN) -> Gateway:
        try:
            gateway = start_gateway(gateway_binary, tmp_path_factory.mktemp("gateway"), backend_url, token)
        except GatewayStartError as exc:
            pytest.fail(str(exc))
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session", params=["django", "flask", "fastapi"])
def stack(request: pytest.FixtureRequest, make_gateway: Callable[..., Gateway]) -> Iterator[Stack]:
    backend = servers.start(request.param, TOKEN)
    try:
        gateway = make_gateway(backend.url)
        backend.point_at(gateway.url, TOKEN)
        yield Stack(backend, gateway)
        if gateway.process.poll() is not None:
            pytest.fail(f"the gateway died during the {backend.name} tests:\n{gateway.log_tail()}")
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def flask_stack(make_gateway: Callable[..., Gateway]) -> Iterator[Stack]:
    """One more stack for tests that need only one backend."""
    backend = servers.start("flask", TOKEN)
    try:
        gateway = make_gateway(backend.url)
        backend.point_at(gateway.url, TOKEN)
        yield Stack(backend, gateway)
    finally:
        backend.stop()
