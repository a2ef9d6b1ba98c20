"""``Worker.run(workers=N)``: a supervisor process and N worker processes.

- SIGTERM / SIGINT: every worker drains (answers its tasks, waits for
  ``drained``) and exits; the supervisor exits once they all have.
- SIGHUP: graceful restart. A new generation of N workers starts; the old
  workers are sent SIGTERM (drain) only once every new worker has attached to
  the gateway, so there is never a moment with no worker attached. A new
  generation that cannot attach (broken code, gateway away) keeps being
  restarted while the old one keeps serving.
- A worker that dies unexpectedly is restarted, with backoff when it dies
  young again and again.

Workers tell the supervisor they attached by writing to a pipe. The
supervisor itself runs no threads and no event loop (it forks).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .app import Worker

__all__ = ["run_supervisor", "CHILD_ENV", "PARENT_ENV"]

log = logging.getLogger("rainbow.worker")

#: Set in re-executed worker processes: the fd of their readiness pipe.
CHILD_ENV = "RAINBOWSDK_WORKER_FD"
#: ... and the supervisor's pid.
PARENT_ENV = "RAINBOWSDK_WORKER_PARENT"

#: A worker that lived shorter than this "died young": its restart backs off.
YOUNG = 10.0
#: Restart delays: first, most.
RESTART_BACKOFF = (0.5, 30.0)


@dataclass(eq=False)
class _Child:
    pid: int
    slot: int
    generation: int
    ready_fd: Optional[int]
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    retiring: bool = False
    killed: bool = False


def _reexec_argv() -> Optional[List[str]]:
    """The command that runs this program again, or ``None`` when it cannot be
    re-run (interactive session, ``-c``)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if not path or not os.path.exists(path) or not sys.executable:
        return None
    orig = getattr(sys, "orig_argv", None)  # Python 3.10+: the exact command line
    if orig:
        return [sys.executable, *orig[1:]]
    if spec is not None and getattr(spec, "name", None):
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [sys.executable, "-m", name, *sys.argv[1:]]
    return [sys.executable, path, *sys.argv[1:]]


class _Supervisor:
    def __init__(self, app: "Worker", workers: int, argv: Optional[List[str]], stop_timeout: float) -> None:
        self.app = app
        self.workers = workers
        self.argv = argv
        self.stop_timeout = stop_timeout
        self.children: Dict[int, _Child] = {}
        self.generation = 0
        self.restarts: Dict[int, float] = {}  # slot -> when to restart it (current generation)
        self.young_deaths: Dict[int, int] = {}  # slot -> deaths in a row that came young
        self.signals: List[int] = []
        self.stopping_since: Optional[float] = None
        self.killed_any = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    # -- signals -----------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        try:
            os.write(self.wake_w, b"!")
        except OSError:
            pass

    def _install(self) -> Dict[int, object]:
        old: Dict[int, object] = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            old[sig] = signal.signal(sig, self._on_signal)
        return old

    # -- children ----------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        ready_r, ready_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker process
            status = 1
            try:
                os.close(ready_r)
                os.close(self.wake_r)
                os.close(self.wake_w)
                for child in self.children.values():
                    if child.ready_fd is not None:
                        os.close(child.ready_fd)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                if self.argv is not None:
                    os.set_inheritable(ready_w, True)
                    env = dict(os.environ)
                    env[CHILD_ENV] = str(ready_w)
                    env[PARENT_ENV] = str(parent)
                    os.execve(self.argv[0], self.argv, env)
                from .app import _child_main

                status = _child_main(self.app, ready_w, parent)
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self.children[pid] = _Child(pid, slot, self.generation, ready_r)
        log.info("supervisor pid %d: started worker pid %d (slot %d, generation %d)", parent, pid, slot, self.generation)

    def _start_generation(self) -> None:
        self.generation += 1
        self.restarts.clear()
        for slot in range(self.workers):
            self._spawn(slot)

    def _read_ready(self, child: _Child) -> None:
        if child.ready_fd is None:
            return
        try:
            data = os.read(child.ready_fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if b"R" in data and not child.ready:
            child.ready = True
            log.info("worker pid %d attached (slot %d, generation %d)", child.pid, child.slot, child.generation)
        if not data or child.ready:
            os.close(child.ready_fd)
            child.ready_fd = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if child.ready_fd is not None:
                self._read_ready(child)
                if child.ready_fd is not None:
                    os.close(child.ready_fd)
                    child.ready_fd = None
            code = os.waitstatus_to_exitcode(status)
            how = f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
            if self.stopping_since is not None or child.retiring:
                log.info("worker pid %d stopped (%s)", pid, how)
                continue
            if child.generation != self.generation:
                continue
            lived = time.monotonic() - child.started
            young = self.young_deaths.get(child.slot, 0) + 1 if lived < YOUNG else 0
            self.young_deaths[child.slot] = young
            first, most = RESTART_BACKOFF
            delay = 0.0 if young == 0 else min(most, first * 2 ** (young - 1))
            log.warning(
                "worker pid %d (slot %d) died (%s) after %.1f s; restarting in %.1f s", pid, child.slot, how, lived, delay
            )
            self.restarts[child.slot] = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self.restarts.items()):
            if when <= now:
                del self.restarts[slot]
                self._spawn(slot)

    def _retire_old(self) -> None:
        """Drains the previous generations once every slot of the newest one is attached."""
        old = [c for c in self.children.values() if c.generation != self.generation and not c.retiring]
        if not old:
            return
        ready_slots = {c.slot for c in self.children.values() if c.generation == self.generation and c.ready}
        if len(ready_slots) < self.workers:
            return
        for child in old:
            child.retiring = True
            log.info("draining old worker pid %d (generation %d)", child.pid, child.generation)
            self._kill(child, signal.SIGTERM)

    def _kill(self, child: _Child, sig: int) -> None:
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:
            pass

    # -- main loop ---------------------------------------------------------

    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                if self.stopping_since is None:
                    log.info("supervisor pid %d: %s, draining every worker", os.getpid(), signal.Signals(sig).name)
                    self.stopping_since = time.monotonic()
                    self.restarts.clear()
                    for child in self.children.values():
                        self._kill(child, signal.SIGTERM)
            elif sig == signal.SIGHUP and self.stopping_since is None:
                log.info("supervisor pid %d: SIGHUP, starting a new generation of %d worker(s)", os.getpid(), self.workers)
                self._start_generation()

    def run(self) -> int:
        old = self._install()
        try:
            self._start_generation()
            while True:
                fds = [self.wake_r] + [c.ready_fd for c in self.children.values() if c.ready_fd is not None]
                try:
                    readable, _, _ = select.select(fds, [], [], 0.25)
                except OSError as exc:  # a fd closed under us
                    if exc.errno not in (errno.EBADF, errno.EINTR):
                        raise
                    readable = []
                if self.wake_r in readable:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                for child in list(self.children.values()):
                    if child.ready_fd is not None and child.ready_fd in readable:
                        self._read_ready(child)
                self._handle_signals()
                self._reap()
                if self.stopping_since is not None:
                    if not self.children:
                        log.info("supervisor pid %d: every worker stopped", os.getpid())
                        return 1 if self.killed_any else 0
                    if time.monotonic() - self.stopping_since > self.stop_timeout:
                        for child in self.children.values():
                            if not child.killed:
                                log.error("worker pid %d did not stop in %g s: killing it", child.pid, self.stop_timeout)
                                child.killed = True
                                self.killed_any = True
                                self._kill(child, signal.SIGKILL)
                    continue
                self._restart_due()
                self._retire_old()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            for fd in (self.wake_r, self.wake_w):
                os.close(fd)


def run_supervisor(app: "Worker", workers: int, *, reexec: Optional[bool] = None, stop_timeout: Optional[float] = None) -> None:
    """See :meth:`rainbow.worker.Worker.run`."""
    fd = os.environ.pop(CHILD_ENV, None)
    if fd is not None:  # this process is a re-executed worker
        from .app import _child_main

        parent = int(os.environ.pop(PARENT_ENV, "0") or 0)
        status = _child_main(app, int(fd), parent or os.getppid())
        os._exit(status)
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if not hasattr(os, "fork"):
        raise RuntimeError("Worker.run() needs os.fork (POSIX); use Worker.serve() to run one worker in this process")
    argv = _reexec_argv() if reexec is not False else None
    if reexec and argv is None:
        raise RuntimeError("reexec=True, but this program cannot be run again (no script or module)")
    supervisor = _Supervisor(app, workers, argv, app.drain_timeout + 10.0 if stop_timeout is None else stop_timeout)
    status = supervisor.run()
    if status:
        raise SystemExit(status)
