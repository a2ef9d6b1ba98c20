"""A worker application run as a real program by the worker tests.

    python worker_app.py URL TOKEN --workers N [--effects DB] [--dedup DB] [--slow S] [--fork]

Handlers (what the tests check):

- connect: ``params.token == "bad"`` → deny (401), ``"boom"`` → raises (503); otherwise accept with
  context ``{"user": params.user}`` and ``sub`` = ``params.sub`` (if given).
- type 1, echo: replies ``{"echo": <payload JSON>, "pid": ..., "attempt": ..., "context": ...}``.
- type 2, effect: the idempotent-by-key pattern. In one SQLite transaction it
  records ``request.key`` and applies the effect (adds a row to
  ``effects``); a redelivered key changes nothing. Every run is logged in
  ``runs``. Sleeps ``--slow`` seconds, half before and half after the commit
  (windows for the tests to kill the process mid-task). Replies
  ``{"seq": <payload seq>, "pid": ..., "identity": ..., "again": <key seen before>}``.
- type 3, controls: the payload ``{"context"?, "sub"?, "unsub"?}`` becomes the reply's controls.
- type 4, push: ``app.push(payload.data, channel=payload.channel, msg_type=payload.type, qos=1)``;
  replies the API answer.
- type 5, push-to-self then reply.
- type 6 raises; ``params.token == "boom"`` makes the connect handler raise.
- close: recorded in ``closes`` when ``--effects`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import time
from typing import Any, Dict

from rainbow.worker import ConnectRequest, MessageRequest, SqliteDedup, Worker

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("token")
parser.add_argument("--workers", type=int, default=1)
parser.add_argument("--credits", type=int, default=4)
parser.add_argument("--effects")
parser.add_argument("--dedup")
parser.add_argument("--slow", type=float, default=0.0)
parser.add_argument("--fork", action="store_true", help="fork workers instead of re-running this program")
parser.add_argument("--drain-timeout", type=float, default=20.0)
args = parser.parse_args()

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
)

app = Worker(
    args.url,
    token=args.token,
    credits=args.credits,
    name="test-app",
    dedup=SqliteDedup(args.dedup) if args.dedup else None,
    drain_timeout=args.drain_timeout,
    backoff=(0.1, 1.0),
)


def db() -> sqlite3.Connection:
    conn = sqlite3.connect(args.effects, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS handled (key TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT, seq INTEGER, pid INTEGER, attempt INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT, seq INTEGER, pid INTEGER, attempt INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS closes (identity TEXT, context TEXT)")
    return conn


@app.connect
def on_connect(request: ConnectRequest) -> Any:
    if request.params.get("token") == "bad":
        return request.deny()
    if request.params.get("token") == "boom":
        raise RuntimeError("connect handler failed")
    sub = request.params.get("sub")
    return request.accept(context={"user": request.params.get("user", "")}, sub=[sub] if sub else None)


@app.route(1)
def echo(request: MessageRequest) -> Dict[str, Any]:
    return {
        "echo": request.json(),
        "pid": os.getpid(),
        "attempt": request.attempt,
        "context": request.context,
        "identity": request.identity,
    }


@app.route(2)
def effect(request: MessageRequest) -> Dict[str, Any]:
    payload = request.json()
    conn = db()
    try:
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?)", (request.key, payload["seq"], os.getpid(), request.attempt))
        if args.slow:
            time.sleep(args.slow / 2)  # a kill here: nothing committed, the redelivery does the effect
        # The idempotent-by-key pattern: the key and the effect commit together.
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("INSERT OR IGNORE INTO handled VALUES (?)", (request.key,)).rowcount == 0
            if not done:
                conn.execute(
                    "INSERT INTO effects VALUES (?, ?, ?, ?)", (request.key, payload["seq"], os.getpid(), request.attempt)
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if args.slow:
            time.sleep(args.slow / 2)  # a kill here: committed but unanswered, the redelivery must not redo it
    finally:
        conn.close()
    return {"seq": payload["seq"], "pid": os.getpid(), "identity": request.identity, "again": done}


@app.route(3)
def controls(request: MessageRequest) -> None:
    payload = request.json()
    request.reply(
        {"context_was": request.context},
        context=payload.get("context"),
        sub=payload.get("sub"),
        unsub=payload.get("unsub"),
    )


@app.route(4)
def push(request: MessageRequest) -> Dict[str, Any]:
    payload = request.json()
    return app.push(payload["data"], channel=payload["channel"], msg_type=payload.get("type", 2), qos=1)


@app.route(5)
def push_self(request: MessageRequest) -> Dict[str, Any]:
    return request.push({"to": "you"}, msg_type=7, qos=1)


@app.route(6)
def broken(request: MessageRequest) -> None:
    raise RuntimeError(f"broken handler, attempt {request.attempt}")


@app.close
def on_close(request: Any) -> None:
    if args.effects:
        conn = db()
        try:
            conn.execute("INSERT INTO closes VALUES (?, ?)", (request.identity, request.context))
        finally:
            conn.close()


if __name__ == "__main__":
    if args.effects:
        db().close()
    app.run(workers=args.workers, reexec=False if args.fork else None)
