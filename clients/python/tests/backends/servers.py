"""Starting the real framework servers on loopback, each in a thread.

- Django: ``ThreadedWSGIServer`` from ``django.core.servers.basehttp`` (what
  ``runserver`` uses), with the CSRF middleware on.
- Flask: werkzeug's threaded server (what ``flask run`` uses).
- FastAPI: uvicorn.

Each serves the hooks under ``/rainbow/`` and returns a :class:`Backend`.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Optional

from rainbow.backend import Hooks, RainbowAPI, RainbowRequest

from .scenario import DJANGO, Scenario


def free_port() -> int:
    """A port free on all interfaces, chosen below Linux's ephemeral range
    (32768+) so outgoing connections do not grab it before the server binds."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    name: str
    port: int
    scenario: Scenario
    stop: Callable[[], None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def point_at(self, gateway_url: str, token: str) -> None:
        """Makes the backend's API calls go to this gateway."""
        if self.name == "django":
            from django.conf import settings

            settings.RAINBOW_SERVER_URL = gateway_url
            settings.RAINBOW_TOKEN = token
        else:
            api = RainbowAPI(gateway_url, token)
            self.scenario.send = api.send
            self.scenario.subscribe = api.subscribe


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"backend on port {port} did not start listening")


def start(name: str, token: str) -> Backend:
    return {"django": start_django, "flask": start_flask, "fastapi": start_fastapi}[name](token)


def register(hooks: Hooks, scenario: Scenario, async_echo: bool = False) -> None:
    hooks.connect(scenario.connect)
    hooks.close(scenario.close)
    for msg_type, handler in scenario.handlers().items():
        if not (async_echo and msg_type == 1):
            hooks.message(msg_type)(handler)
    if async_echo:

        async def echo(request: RainbowRequest) -> Any:
            return scenario.echo(request)

        hooks.message(1)(echo)


_django_configured = False


def start_django(token: str) -> Backend:
    global _django_configured
    import django
    from django.conf import settings

    if not _django_configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="rainbow-tests",
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            ROOT_URLCONF="backends.django_urls",
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "backends.djangoapp"],
            MIDDLEWARE=["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"],
            DATABASES={},
            USE_TZ=True,
            RAINBOW_TOKEN=token,
            RAINBOW_SERVER_URL="http://127.0.0.1:9",
            RAINBOW_DATA_FORMAT="json",
            LOGGING_CONFIG=None,
        )
        django.setup()
        _django_configured = True
    settings.RAINBOW_TOKEN = token
    import rainbow.django

    # The handlers call the gateway through rainbow-django's helpers (settings-driven).
    DJANGO.send = rainbow.django.send
    DJANGO.subscribe = rainbow.django.subscribe

    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    port = free_port()
    httpd = ThreadedWSGIServer(("127.0.0.1", port), QuietHandler)
    httpd.daemon_threads = True
    httpd.set_app(WSGIHandler())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    wait_listening(port)

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    return Backend("django", port, DJANGO, stop)


def start_flask(token: str) -> Backend:
    from flask import Flask
    from werkzeug.serving import make_server

    from rainbow.flask import create_blueprint

    scenario = Scenario("flask")
    hooks = Hooks(token=token)
    register(hooks, scenario)
    app = Flask("rainbow_flask_backend")
    app.register_blueprint(create_blueprint(hooks), url_prefix="/rainbow")
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    wait_listening(port)

    def stop() -> None:
        server.shutdown()

    return Backend("flask", port, scenario, stop)


def start_fastapi(token: str) -> Backend:
    import uvicorn
    from fastapi import FastAPI

    from rainbow.asgi import RainbowASGI

    scenario = Scenario("fastapi")
    hooks = Hooks(token=token)
    register(hooks, scenario, async_echo=True)
    app = FastAPI()

    @app.get("/")
    def index() -> Any:
        return {"app": "rainbow test backend"}

    app.mount("/rainbow", RainbowASGI(hooks))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return Backend("fastapi", port, scenario, stop)


def http(method: str, url: str, headers: Optional[dict] = None, body: Optional[bytes] = None) -> Any:
    """A plain HTTP call; returns ``(status, headers, body)`` even for errors."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
