"""v2 signatures against the REAL gateway binary (spec §7): the SDK signs its
API calls and worker handshakes v2; ``signature="v1"`` is there for old
gateways, and a gateway set to ``api_signature = v2`` refuses it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

import rainbow
from rainbow.backend import RainbowAPI
from rainbow.worker import SignatureRefused, Worker
from support.gateway import TOKEN, Gateway, GatewayStartError, launch


def start(binary: Path, workdir: Path, extra: str) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    ini = workdir / "rainbow.ini"
    ini.write_text(f"[main]\nsecurity_token = {TOKEN}\nbind = 127.0.0.1\n{extra}\n")
    try:
        return launch(binary, workdir, ini, TOKEN, rust_log="warn")
    except GatewayStartError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def v2_only(gateway_binary: Path, tmp_path: Path) -> Iterator[Gateway]:
    gw = start(gateway_binary, tmp_path / "v2", "api_signature = v2")
    yield gw
    gw.stop()


def test_v2_only_gateway_takes_the_sdk_and_refuses_v1(v2_only: Gateway) -> None:
    api = RainbowAPI(v2_only.url, TOKEN)
    assert api.send("room 1", 1001, {"n": 1}, qos=1, timeout=1) == (0, None)
    api.unsubscribe("room 1", "0" * 64)
    with pytest.raises(rainbow.RainbowAPIError) as caught:
        RainbowAPI(v2_only.url, TOKEN, signature="v1").send("room 1", 1001, {"n": 1})
    assert caught.value.msg == "signature error"
    deadline = time.monotonic() + 5
    while "api_signature = v2" not in v2_only.log_tail():
        assert time.monotonic() < deadline, v2_only.log_tail()
        time.sleep(0.05)


def test_v2_only_gateway_attaches_a_v2_worker_and_refuses_a_v1_one(v2_only: Gateway) -> None:
    app = Worker(f"{v2_only.ws_url}/worker/", token=TOKEN, credits=1, name="v2 worker")
    app.start(timeout=10)
    try:
        assert app.attached
    finally:
        app.stop()
    old = Worker(f"{v2_only.ws_url}/worker/", token=TOKEN, credits=1, signature="v1")
    with pytest.raises(SignatureRefused) as refused:
        old.start(timeout=10)
    assert refused.value.status == 401


def test_the_default_gateway_takes_both(gateway_binary: Path, tmp_path: Path) -> None:
    gw = start(gateway_binary, tmp_path / "any", "")
    try:
        for signature in ("v2", "v1"):
            api = RainbowAPI(gw.url, TOKEN, signature=signature)
            assert api.send("room", 1, {"via": signature}, qos=1, timeout=1) == (0, None)
    finally:
        gw.stop()


def test_django_helpers_sign_as_RAINBOW_SIGNATURE_says(v2_only: Gateway) -> None:
    from backends import servers

    backend = servers.start("django", TOKEN)  # configures Django's settings
    from django.conf import settings

    import rainbow.django

    before = settings.RAINBOW_SERVER_URL
    try:
        settings.RAINBOW_SERVER_URL = v2_only.url
        assert rainbow.django.send("room", 1, {"n": 1}) == (None, None)
        settings.RAINBOW_SIGNATURE = "v1"
        with pytest.raises(rainbow.RainbowAPIError) as caught:
            rainbow.django.send("room", 1, {"n": 1})
        assert caught.value.msg == "signature error"
    finally:
        settings.RAINBOW_SERVER_URL = before
        if hasattr(settings, "RAINBOW_SIGNATURE"):
            del settings.RAINBOW_SIGNATURE
        backend.stop()
