"""Remembering handled task keys, to answer a redelivered task without running
its handler again (docs/worker-protocol.md §5).

When a worker dies holding tasks, the gateway delivers them again (same
``key``, ``attempt`` + 1) to another worker. A dedup store remembers the reply
given for each key, for a bounded time and number of keys; a redelivered task
whose key is known gets the remembered reply.

This narrows the window but cannot close it: the store is written after the
handler ran, so a worker that dies after the handler's side effect and before
the store's commit runs the handler again on redelivery. Effects that must
happen exactly once need the handler itself to be idempotent by
``request.key`` (for instance, record the key in the same database
transaction as the effect and skip when it is already there).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from typing import Optional, Tuple

from .requests import Reply

__all__ = ["DedupStore", "MemoryDedup", "SqliteDedup"]


class DedupStore:
    """Interface: ``get(key)`` → the remembered :class:`Reply` or ``None``; ``put(key, reply)``.

    Both are called from handler threads, concurrently.
    """

    def get(self, key: str) -> Optional[Reply]:  # pragma: no cover - interface
        raise NotImplementedError

    def put(self, key: str, reply: Reply) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryDedup(DedupStore):
    """In this process only: it helps when the gateway redelivers to the same
    process after a reconnect, not after a crash. Prefer :class:`SqliteDedup`."""

    def __init__(self, ttl: float = 3600.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: "OrderedDict[str, Tuple[float, Reply]]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[Reply]:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < time.time() - self.ttl:
                return None
            return item[1]

    def put(self, key: str, reply: Reply) -> None:
        now = time.time()
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (now, reply)
            while self._items:
                _, (at, _) = next(iter(self._items.items()))
                if len(self._items) <= self.max_entries and at >= now - self.ttl:
                    break
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class SqliteDedup(DedupStore):
    """A SQLite file shared by every worker process on the host.

    Keeps keys for ``ttl`` seconds (default one hour: longer than any
    redelivery takes) and at most about ``max_entries`` keys (oldest go
    first). Safe across processes (WAL mode, a busy timeout) and threads (one
    connection per process, behind a lock; reopened after ``fork``).
    """

    PRUNE_EVERY = 256

    def __init__(self, path: str, ttl: float = 3600.0, max_entries: int = 100_000, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self.ttl = ttl
        self.max_entries = max_entries
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db: Optional[sqlite3.Connection] = None
        self._pid = -1
        self._puts = 0
        # Fail early on a bad path, but keep no connection open: a connection
        # must not cross a fork (run() forks worker processes after this).
        db = self._open()
        self._prune(db)
        db.close()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS rainbow_dedup (key TEXT PRIMARY KEY, at REAL NOT NULL, reply TEXT NOT NULL)")
        db.execute("CREATE INDEX IF NOT EXISTS rainbow_dedup_at ON rainbow_dedup (at)")
        return db

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None and self._pid == os.getpid():
            return self._db
        db = self._open()
        self._db, self._pid = db, os.getpid()
        return db

    def get(self, key: str) -> Optional[Reply]:
        with self._lock:
            row = self._connect().execute(
                "SELECT reply FROM rainbow_dedup WHERE key = ? AND at >= ?", (key, time.time() - self.ttl)
            ).fetchone()
        return None if row is None else Reply.from_json(json.loads(row[0]))

    def put(self, key: str, reply: Reply) -> None:
        text = json.dumps(reply.to_json(), separators=(",", ":"))
        with self._lock:
            db = self._connect()
            db.execute("INSERT OR REPLACE INTO rainbow_dedup (key, at, reply) VALUES (?, ?, ?)", (key, time.time(), text))
            self._puts += 1
            if self._puts % self.PRUNE_EVERY == 0:
                self._prune(db)

    def prune(self) -> None:
        """Drops expired keys and, beyond ``max_entries``, the oldest ones."""
        with self._lock:
            self._prune(self._connect())

    def _prune(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM rainbow_dedup WHERE at < ?", (time.time() - self.ttl,))
        (count,) = db.execute("SELECT COUNT(*) FROM rainbow_dedup").fetchone()
        if count > self.max_entries:
            db.execute(
                "DELETE FROM rainbow_dedup WHERE key IN (SELECT key FROM rainbow_dedup ORDER BY at LIMIT ?)",
                (count - self.max_entries,),
            )

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._connect().execute("SELECT COUNT(*) FROM rainbow_dedup").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None
