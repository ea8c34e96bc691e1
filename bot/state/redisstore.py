"""The shared state store on Redis, used when ``REDIS_URL`` is set.

Every web and worker process, on any number of machines, sees the same
dedupe records, locks and rate budgets. Keys are prefixed ``dingbot:``
and split by kind (``kv:``, ``lock:``, ``rate:``) so the bot keeps tidy in
a shared Redis and a value key can never collide with a lock.

The module is not named ``redis.py`` so that ``import redis`` always means
redis-py, whatever ends up on ``sys.path``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ParamSpec, TypeVar

import redis
from redis.commands.core import Script

from bot.errors import ConfigError
from bot.state import StateUnavailableError, poll_lock

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

PREFIX = "dingbot:"

_TIMEOUT = 5.0

# Delete the lock only while it still holds our token: after our ttl ran
# out, someone else may own it now.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# The sliding-window reservation of SQLiteStore.reserve, in one atomic
# script. The clock is Redis's own TIME, not the caller's: web processes
# on several machines share a bucket, and their clocks may disagree by
# more than a window, while the returned delay is relative and so needs
# no client clock at all.
#
# KEYS[1] the bucket's sorted set (member: unique id, score: slot time)
# ARGV[1] limit, ARGV[2] window in seconds, ARGV[3] a unique member id
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local fmt = '%.6f'

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format(fmt, now - window))

local slot = now
local nth = redis.call('ZREVRANGE', KEYS[1], limit - 1, limit - 1, 'WITHSCORES')
if nth[2] then
    slot = math.max(now, tonumber(nth[2]) + window)
end
slot = tonumber(string.format(fmt, slot))
redis.call('ZADD', KEYS[1], string.format(fmt, slot), ARGV[3])

-- Expire a window after the newest slot, which may lie in the future
-- and is not always the one just added.
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local ttl_ms = math.ceil((tonumber(newest[2]) - now + window) * 1000)
redis.call('PEXPIRE', KEYS[1], math.max(ttl_ms, 1))
return string.format(fmt, slot - now)
"""


def _translate_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn Redis connection failures into :class:`StateUnavailableError`."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Name the setting, not its value: the URL may hold a password.
            # redis-py's own messages name host and port only.
            raise StateUnavailableError(
                f"the Redis server at REDIS_URL could not be reached "
                f"({type(exc).__name__}); check that it runs and that "
                f"REDIS_URL points at it"
            ) from exc

    return wrapper


class _ProcessClient:
    """One process's redis-py client and its registered scripts."""

    def __init__(self, url: str) -> None:
        self.pid = os.getpid()
        self.redis: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=_TIMEOUT,
            socket_connect_timeout=_TIMEOUT,
            health_check_interval=30,
        )
        self.release: Script = self.redis.register_script(_RELEASE_LUA)
        self.reserve: Script = self.redis.register_script(_RESERVE_LUA)


class RedisStore:
    """:class:`~bot.state.Store` kept in the Redis server at ``url``.

    Nothing connects until first use; each process then builds its own
    connection pool, since sockets shared across ``fork()`` would mix
    replies. Every method raises :class:`StateUnavailableError` when the
    server cannot be reached. Raises :class:`ConfigError` at once when
    ``url`` is not a Redis URL.
    """

    def __init__(self, url: str) -> None:
        try:
            redis.connection.parse_url(url)
        except ValueError:
            raise ConfigError(
                "REDIS_URL",
                "is not a Redis URL",
                "use redis://[:password@]host:port/db, rediss:// or unix://",
            ) from None
        self._url = url
        self._client: _ProcessClient | None = None

    def __repr__(self) -> str:
        # Never the URL: it may carry a password.
        return "RedisStore(<REDIS_URL>)"

    @_translate_errors
    def claim(self, key: str, ttl: float) -> bool:
        """See :meth:`bot.state.Store.claim`. ``ttl`` must be positive."""
        px = _ms("ttl", ttl)
        done = self._redis().set(PREFIX + "kv:" + key, "1", nx=True, px=px)
        return bool(done)

    @_translate_errors
    def get(self, key: str) -> str | None:
        """See :meth:`bot.state.Store.get`."""
        value: str | None = self._redis().get(PREFIX + "kv:" + key)
        return value

    @_translate_errors
    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        """See :meth:`bot.state.Store.put`. ``ttl``, if given, must be positive."""
        px = None if ttl is None else _ms("ttl", ttl)
        self._redis().set(PREFIX + "kv:" + key, value, px=px)

    @_translate_errors
    def delete(self, key: str) -> None:
        """See :meth:`bot.state.Store.delete`."""
        self._redis().delete(PREFIX + "kv:" + key)

    def lock(self, name: str, ttl: float, wait: float) -> AbstractContextManager[None]:
        """See :meth:`bot.state.Store.lock`.

        Polls every 20-50 ms. On exit the lock is released only if this
        holder still owns it: after its ``ttl`` ran out someone else may
        have taken it over, and their lock must stand.
        """
        key = PREFIX + "lock:" + name
        owner = secrets.token_hex(8)
        px = _ms("ttl", ttl)
        return poll_lock(
            lambda: self._take_lock(key, owner, px),
            lambda: self._release_lock(key, owner),
            wait,
        )

    @_translate_errors
    def reserve(self, bucket: str, limit: int, window: float) -> float:
        """See :meth:`bot.state.Store.reserve`.

        One Lua script per call, so concurrent callers anywhere queue up.
        Slot times come from the Redis server's clock.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if not window > 0:
            raise ValueError(f"window must be positive, got {window!r}")
        client = self._process_client()
        member = secrets.token_hex(8)
        args: list[Any] = [limit, repr(float(window)), member]
        delay = client.reserve(keys=[PREFIX + "rate:" + bucket], args=args)
        return float(delay)

    @_translate_errors
    def ping(self) -> None:
        """Raise :class:`StateUnavailableError` if the server does not answer."""
        self._redis().ping()

    def close(self) -> None:
        """Close this process's connections; later use reconnects."""
        client, self._client = self._client, None
        if client is not None and client.pid == os.getpid():
            client.redis.close()

    def _process_client(self) -> _ProcessClient:
        client = self._client
        if client is None or client.pid != os.getpid():
            # A pool made before fork is dropped, not closed: closing it
            # here would shut sockets the parent still uses. Two threads
            # racing here each build one; the loser is simply dropped.
            client = self._client = _ProcessClient(self._url)
        return client

    def _redis(self) -> redis.Redis:
        return self._process_client().redis

    @_translate_errors
    def _take_lock(self, key: str, owner: str, px: int) -> bool:
        return bool(self._redis().set(key, owner, nx=True, px=px))

    @_translate_errors
    def _release_lock(self, key: str, owner: str) -> None:
        self._process_client().release(keys=[key], args=[owner])


def _ms(name: str, seconds: float) -> int:
    """Whole milliseconds for PX, rounded up so a short ttl never becomes 0."""
    if not seconds > 0:
        raise ValueError(f"{name} must be positive, got {seconds!r}")
    return max(1, math.ceil(seconds * 1000))
