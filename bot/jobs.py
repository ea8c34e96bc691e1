"""Background work: a bounded thread pool for handlers in the web process.

A handler runs here so that a slow one never holds a gunicorn thread
past the reply budget. The pool is bounded twice: ``threads`` run at
once and at most ``queue`` more wait; past that :meth:`JobPool.submit`
raises :class:`PoolFullError` at once, so a flood of slow commands gets
a "busy" answer instead of an unbounded backlog.

Pending work finishes when the process exits normally (gunicorn's
graceful SIGTERM): ``concurrent.futures`` joins its threads at exit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bot.errors import BotError


class PoolFullError(BotError):
    """Every handler thread is busy and the wait queue is full."""


class JobPool:
    """A thread pool with a bound on queued work, created lazily per process."""

    def __init__(self, threads: int, queue: int | None = None, name: str = "handler"):
        self.threads = threads
        self.capacity = threads + (queue if queue is not None else threads * 4)
        self.name = name
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        # A pool made before gunicorn forks has no threads in the child.
        if self._executor is None or self._pid != os.getpid():
            with self._lock:
                if self._executor is None or self._pid != os.getpid():
                    self._slots = threading.BoundedSemaphore(self.capacity)
                    self._executor = ThreadPoolExecutor(
                        self.threads, thread_name_prefix=self.name
                    )
                    self._pid = os.getpid()
        return self._executor

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` on the pool; raises PoolFullError when saturated."""
        pool = self._pool()
        if not self._slots.acquire(blocking=False):
            raise PoolFullError("all handler threads are busy")
        try:
            future = pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking work; with ``wait`` let running and queued jobs finish."""
        if self._executor is not None and self._pid == os.getpid():
            self._executor.shutdown(wait=wait)
            self._executor = None
