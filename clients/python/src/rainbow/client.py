"""The blocking client, for scripts, tests and threaded programs.

:class:`Client` runs an :class:`~rainbow.aio.AsyncClient` on a private event
loop in a background thread, so it has exactly the same protocol behaviour
(QoS, DUP retransmission, qos-2 dedup, reconnect) behind a blocking API::

    with Client("ws://localhost:1984", device_id="dev-1", os="linux") as client:
        rsp_type, content = client.send(1, {"id": 100}, qos=1, timeout=10)

User code never runs on the event loop thread: ``on_message`` handlers,
``on_connect`` and ``send_async`` callbacks run one at a time on a single
callback thread, so they may call ``client.send()`` themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from typing import Any, Callable, Coroutine, Iterator, Mapping, Optional, Tuple, TypeVar

from .aio import AsyncClient, Message, MessageHandler, SendCallback
from .errors import ClientClosed, RainbowError

__all__ = ["Client"]

log = logging.getLogger("rainbow.client")

R = TypeVar("R")
_Job = Tuple["concurrent.futures.Future[Any]", Callable[..., Any], Tuple[Any, ...]]


class _CallbackThread:
    """One thread running user callbacks in order, fed by a bounded queue."""

    def __init__(self, maxsize: int, name: str) -> None:
        self._queue: "queue.Queue[Optional[_Job]]" = queue.Queue(maxsize)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, fn: Callable[..., Any], *args: Any) -> "concurrent.futures.Future[Any]":
        """Queues ``fn(*args)``; raises :class:`queue.Full` if the queue is full."""
        future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        self._queue.put_nowait((future, fn, args))
        return future

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def stop(self) -> None:
        """Stops after the callback running now; queued ones are dropped."""
        self._stopping.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the thread sees _stopping after its current callback
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)


class Client:
    """A blocking client of a Rainbow gateway.

    The constructor connects (unless ``connect=False``) and raises
    :class:`rainbow.ConnectionRefused` (401: the backend's connect hook
    denied; 503: backend down or gateway full) or
    :class:`rainbow.ConnectionLost` (gateway unreachable).

    Arguments are those of :class:`~rainbow.aio.AsyncClient`; ``on_message``
    and ``on_connect`` are plain functions here, run on the callback thread.
    ``max_pending`` bounds the ``send_async`` calls awaiting their callback.
    """

    def __init__(
        self,
        url: str,
        device_id: Optional[str] = None,
        os: str = "python",
        params: Optional[Mapping[str, Any]] = None,
        headers: bool = True,
        *,
        on_message: Optional[MessageHandler] = None,
        on_connect: Optional[Callable[[], Any]] = None,
        connect: bool = True,
        max_pending: int = 1024,
        **options: Any,
    ) -> None:
        self._max_pending = max_pending
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._closed = False
        self._callbacks = _CallbackThread(max_pending + 2, "rainbow-callbacks")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rainbow-client-loop", daemon=True)
        self._thread.start()

        async_on_message = None
        if on_message is not None:
            user_handler = on_message

            async def async_on_message(msg_type: int, data: Any) -> Any:
                # Runs the user's handler on the callback thread; the loop stays free.
                return await asyncio.wrap_future(self._callbacks.submit(user_handler, msg_type, data))

        async_on_connect = None
        if on_connect is not None:
            user_on_connect = on_connect

            def async_on_connect() -> None:
                try:
                    self._callbacks.submit(user_on_connect)
                except queue.Full:
                    log.error("callback queue full; on_connect skipped")

        self._async = AsyncClient(
            url,
            device_id,
            os,
            params,
            headers,
            on_message=async_on_message,
            on_connect=async_on_connect,
            max_pending=max_pending,
            **options,
        )
        if connect:
            try:
                self.connect()
            except BaseException:
                self._shutdown()
                raise

    # ----------------------------------------------------------------- basics

    @property
    def device_id(self) -> str:
        return self._async.device_id

    @property
    def connected(self) -> bool:
        """Whether a connection to the gateway is up right now."""
        return self._async.connected

    @property
    def async_client(self) -> AsyncClient:
        """The :class:`AsyncClient` doing the work (lives on the client's loop)."""
        return self._async

    def _run(self, coro: "Coroutine[Any, Any, R]") -> R:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking Client methods cannot be called from the client's own event loop")
        if self._closed:
            coro.close()
            raise ClientClosed("the client was closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def connect(self) -> None:
        """Connects (the constructor does it unless ``connect=False``)."""
        self._run(self._async.connect())

    def close(self) -> None:
        """Closes the connection, stops the loop and the callback threads. Idempotent."""
        if self._closed:
            return
        try:
            if threading.current_thread() is not self._thread:
                asyncio.run_coroutine_threadsafe(self._async.close(), self._loop).result(timeout=30)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
            if not self._thread.is_alive() and not self._loop.is_closed():
                self._loop.close()
        self._callbacks.stop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- sending

    def send(self, msg_type: int, data: Any = None, qos: int = 1, timeout: float = 10.0) -> Tuple[int, Any]:
        """Sends and waits: returns ``(rsp_type, content)`` (see
        :meth:`AsyncClient.send`); raises :class:`rainbow.TimeoutError` or
        :class:`rainbow.ConnectionLost`."""
        return self._run(self._async.send(msg_type, data, qos=qos, timeout=timeout))

    def send_async(
        self,
        msg_type: int,
        data: Any = None,
        qos: int = 1,
        timeout: float = 10.0,
        callback: Optional[SendCallback] = None,
    ) -> "concurrent.futures.Future[Tuple[int, Any]]":
        """Sends without waiting. ``callback(rsp_type, content)`` runs on the
        callback thread when the answer comes, or ``callback(exception)`` if
        the send failed. Returns a :class:`concurrent.futures.Future` too."""
        if self._closed:
            raise ClientClosed("the client was closed")
        with self._pending_lock:
            if self._pending >= self._max_pending:
                raise RainbowError(f"{self._pending} send_async calls are still pending (max_pending)")
            self._pending += 1
        future = asyncio.run_coroutine_threadsafe(
            self._async.send(msg_type, data, qos=qos, timeout=timeout), self._loop
        )

        def done(fut: "concurrent.futures.Future[Tuple[int, Any]]") -> None:
            if callback is None:
                self._release()
                return
            try:
                self._callbacks.submit(self._run_callback, callback, fut)
            except queue.Full:  # cannot happen: the queue holds max_pending + 2
                self._release()
                log.error("callback queue full; callback for type %d dropped", msg_type)

        future.add_done_callback(done)
        return future

    def _run_callback(self, callback: SendCallback, fut: "concurrent.futures.Future[Tuple[int, Any]]") -> None:
        try:
            if fut.cancelled():
                callback(ClientClosed("the send was cancelled"))
            elif fut.exception() is not None:
                callback(fut.exception())
            else:
                callback(*fut.result())
        except Exception:
            log.exception("send_async callback %r raised", callback)
        finally:
            self._release()

    def _release(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    # -------------------------------------------------------------- receiving

    def receive(self, timeout: Optional[float] = None) -> Message:
        """The next pushed message (without an ``on_message`` handler); see
        :meth:`AsyncClient.receive`."""
        return self._run(self._async.receive(timeout))

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.receive()
            except ClientClosed:
                return
