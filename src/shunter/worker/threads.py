"""The thread pool that runs sync handlers, owned by the worker (threads are its own).

Why not ``concurrent.futures.ThreadPoolExecutor``: a sync handler that ignores
``job.cancelled`` cannot be stopped, only abandoned, and it keeps its thread. In a fixed
pool, a few abandoned handlers would take every thread, and new sync jobs would sit in the
pool's queue while their timeout ran down, to be timed out without ever running. Here the
pool keeps ``size`` threads for live work *plus one per abandoned handler*: abandoning a
handler adds a thread, and when the abandoned handler finally returns, one thread retires.

Work that was cancelled before a thread took it never starts
(:meth:`concurrent.futures.Future.set_running_or_notify_cancel`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["HandlerThreads"]

_Item = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]]


class HandlerThreads:
    """``size`` threads for live handlers, plus one for each abandoned handler still running.
    Threads are daemons: a process that exits does not wait for an abandoned handler."""

    def __init__(self, size: int, name: str = "shunter-sync") -> None:
        self.size = size
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._pending = 0
        self._abandoned = 0
        self._closed = False

    @property
    def abandoned(self) -> int:
        """Abandoned handlers whose thread has not returned yet."""
        return self._abandoned

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` in a pool thread; cancelling the future before a thread takes
        it means it never runs."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the handler thread pool is shut down")
            self._pending += 1
            self._grow()
        self._queue.put((future, fn, args))
        return future

    def abandon(self, future: Future[Any]) -> None:
        """The handler behind ``future`` was given up on but still holds its thread: add a
        thread for live work until it returns."""
        with self._lock:
            self._abandoned += 1
            self._grow()
        future.add_done_callback(self._returned)

    def _returned(self, _: Future[Any]) -> None:
        with self._lock:
            self._abandoned -= 1

    def _grow(self) -> None:  # with the lock held
        while self._pending > self._idle and self._threads < self.size + self._abandoned:
            self._threads += 1
            self._idle += 1  # counted idle until it takes an item, so we do not over-spawn
            threading.Thread(target=self._work, name=f"{self._name}-{self._threads}",
                             daemon=True).start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._pending -= 1
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future  # do not keep the last job alive while idle
            with self._lock:
                if self._closed or self._threads > self.size + self._abandoned:
                    self._threads -= 1  # a thread added for an abandoned handler retires
                    return
                self._idle += 1

    def shutdown(self) -> None:
        """Cancel work no thread has taken and let idle threads exit; running handlers
        (abandoned ones included) are not waited for."""
        with self._lock:
            self._closed = True
            idle = self._idle
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(idle):
            self._queue.put(None)
