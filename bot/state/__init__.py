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

from contextlib import AbstractContextManager
from typing import Protocol


class LockTimeout(Exception):
    """The lock stayed held by someone else for longer than we could wait."""


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
