"""Small shared state: dedupe records, cached values, locks and rate budgets.

Every gunicorn worker (and, with Redis, every machine) sees the same state,
so a ``msgId`` claimed in one worker is a duplicate in all the others, one
process fetches the token while the others wait on its lock, and all of
them draw on one rate budget.

Two backends implement :class:`Store`: SQLite under ``DINGBOT_DATA_DIR``
(the default; shared by the processes of one machine) and Redis when
``REDIS_URL`` is set.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from bot.errors import UpstreamError


class LockTimeout(Exception):
    """The lock stayed held by someone else for longer than we could wait."""


class StateUnavailableError(UpstreamError):
    """The state backend cannot be reached or used right now.

    Retryable: the server may come back or the file lock may clear. The
    message names the setting (``REDIS_URL``, ``DINGBOT_DATA_DIR``), never
    its value, since a Redis URL may carry a password.
    """

    retryable = True


class Store(Protocol):
    """What the rest of the bot may ask of the state backend.

    Keys are short strings chosen by the caller, namespaced by a prefix
    such as ``"dedupe:robot:"`` or ``"token:legacy:"``. Times are seconds.
    """

    def claim(self, key: str, ttl: float) -> bool:
        """Record ``key`` for ``ttl`` seconds unless it is already recorded.

        True when this call recorded it (first sighting), False when it
        was already there. Atomic across processes: of many concurrent
        claims of one key exactly one returns True.
        """

    def get(self, key: str) -> str | None:
        """The value stored under ``key``, or None if absent or expired."""

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds if given."""

    def delete(self, key: str) -> None:
        """Forget ``key``; no error if it is absent."""

    def lock(self, name: str, ttl: float, wait: float) -> AbstractContextManager[None]:
        """Hold the named cross-process lock inside a ``with`` block.

        The lock expires after ``ttl`` seconds even if its holder dies.
        Raises :class:`LockTimeout` after ``wait`` seconds without it.
        """

    def reserve(self, bucket: str, limit: int, window: float) -> float:
        """Reserve one call slot in a sliding window shared by all processes.

        At most ``limit`` reserved slots fall in any ``window`` seconds.
        Returns how many seconds the caller must sleep before its slot
        (0.0 when it may go at once). The slot is taken either way, so
        concurrent callers queue up instead of racing.
        """

    def ping(self) -> None:
        """Raise if the backend cannot be reached (used by ``/readyz``)."""

    def close(self) -> None:
        """Release connections and file handles."""


def open_store(redis_url: str | None, data_dir: Path) -> Store:
    """The Redis store when ``redis_url`` is given, else SQLite in ``data_dir``.

    Opens nothing yet: connections are made on first use in each process,
    so the store may be built before gunicorn forks its workers. Raises
    :class:`~bot.errors.ConfigError` when ``redis_url`` is malformed.
    """
    # Imported here so that a SQLite-only deployment never loads redis-py.
    if redis_url:
        from bot.state.redisstore import RedisStore

        return RedisStore(redis_url)

    from bot.state.sqlite import SQLiteStore

    return SQLiteStore(data_dir / "state.sqlite3")


@contextmanager
def poll_lock(
    try_acquire: Callable[[], bool],
    release: Callable[[], None],
    wait: float,
) -> Iterator[None]:
    """Poll ``try_acquire`` until it succeeds, hold, then ``release``.

    Shared by the backends' ``lock`` methods. Raises :class:`LockTimeout`
    once ``wait`` seconds pass without success; ``wait=0`` tries once.
    """
    deadline = time.monotonic() + wait
    while not try_acquire():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockTimeout(f"lock still held by another owner after {wait:g} s")
        # Jitter keeps contending processes from polling in lockstep.
        time.sleep(min(remaining, random.uniform(0.02, 0.05)))

    try:
        yield
    finally:
        release()
