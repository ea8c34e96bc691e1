"""The durable event inbox: every accepted event, recorded before it is acked.

One record per event id does two jobs at once. Its insert is the dedupe
check (a second ``add`` of the same id, from any worker, finds it and says
so) and the durable record that lets a crash lose nothing: a new record is
``pending`` and *leased* to the process that added it. That process runs
the handlers and marks it ``done``, or ``failed`` (retried with backoff,
up to ``max_attempts``, then ``dead`` with an ERROR line). :meth:`reclaim`
hands out pending records whose lease ran out or whose owner process, on
this host, is gone; each web process's sweeper calls it, which is how an
event acked just before a SIGKILL is handled after the restart.

Done records are kept ``keep_done`` seconds (7 days) to keep deduplicating
late redeliveries, dead ones ``keep_dead`` (30 days) for inspection.

Two backends, chosen by :func:`open_inbox` as the state store is:

- SQLite (default): a table in ``inbox.sqlite3`` under ``DINGBOT_DATA_DIR``,
  WAL mode, one connection per process, opened by
  :class:`bot.state.sqlitefile.SQLiteFile` as the state store's are. A
  committed insert survives the process dying at once (WAL with
  ``synchronous=NORMAL`` loses nothing to a process crash, only possibly
  to a power cut).
- Redis (``REDIS_URL`` set): a hash per record plus one sorted set of
  pending ids scored by lease end, changed only by Lua scripts.

Why not RQ on Redis, as DESIGN.md first planned: RQ needs a separate
``worker`` process the Procfile does not run; its dedupe and its enqueue
are two writes, so a crash between them loses the event or a redelivery
enqueues it twice; and a job whose worker is SIGKILLed goes to RQ's failed
registry instead of running again. The record-plus-lease structure keeps
one contract on both backends, and any process (web or CLI) can serve it.

Times come from the caller's clock (injectable for tests), also on Redis:
leases last minutes, so clock skew of a few seconds between machines only
shifts when an abandoned event is picked up.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.config import Settings
from bot.errors import ConfigError
from bot.inbound.events import Event
from bot.state import StateUnavailableError
from bot.state.sqlitefile import SQLiteFile, translate_errors

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

#: A record stays leased this long to the process that took it. A handler
#: still running past it may be run a second time by another process.
LEASE = 600.0
MAX_ATTEMPTS = 5
#: Delay before the first retry, doubled per attempt up to BACKOFF_CAP.
BACKOFF = 30.0
BACKOFF_CAP = 3600.0
KEEP_DONE = 7 * 86_400.0
KEEP_DEAD = 30 * 86_400.0

PENDING, DONE, DEAD = "pending", "done", "dead"


@dataclass(frozen=True)
class InboxRecord:
    """What the inbox knows about one event id (for inspection and tests)."""

    id: str
    state: str
    attempts: int
    owner: str


class Inbox(Protocol):
    """The contract both backends keep; see the module docstring."""

    def add(self, event: Event) -> bool:
        """Record ``event`` as pending, leased to this process.

        True for a new event; False when its id is already recorded (in any
        state), which is the dedupe answer. Atomic across processes.
        Raises :class:`StateUnavailableError` when the backend fails.
        """

    def done(self, event_id: str) -> None:
        """Mark the event handled; its record stays for dedupe, sans payload."""

    def failed(self, event_id: str) -> bool:
        """Count a failed attempt; True if it will be retried, False if dead.

        A dead event is logged at ERROR with its type and id.
        """

    def defer(self, event_id: str, delay: float) -> None:
        """Give up the lease without counting an attempt; due again after ``delay``."""

    def reclaim(self, limit: int = 100) -> list[Event]:
        """Take over pending events whose lease ran out or whose owner died.

        Each returned event is leased to this process, so concurrent
        reclaims in several processes never return the same event.
        """

    def purge(self) -> int:
        """Delete done and dead records past their keep time; return how many."""

    def get(self, event_id: str) -> InboxRecord | None:
        """The record of ``event_id``, or None."""

    def close(self) -> None:
        """Release connections."""


def open_inbox(settings: Settings, clock: Clock = time.time) -> Inbox:
    """The Redis inbox when ``settings.redis_url`` is set, else SQLite.

    Opens nothing yet; raises ConfigError for a malformed Redis URL.
    """
    if settings.redis_url:
        return RedisInbox(settings.redis_url, clock=clock)
    return SQLiteInbox(settings.data_dir / "inbox.sqlite3", clock=clock)


def backoff_delay(attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1-based): 30 s doubling to 1 h."""
    return min(BACKOFF * 2 ** (attempts - 1), BACKOFF_CAP)


def encode_event(event: Event) -> str:
    """The event as the JSON text stored in a record."""
    return json.dumps(
        {
            "type": event.type,
            "id": event.id,
            "time": event.time,
            "corp_id": event.corp_id,
            "data": event.data,
            "legacy": event.legacy,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_event(text: str) -> Event:
    """The Event stored by :func:`encode_event`."""
    fields = json.loads(text)
    return Event(
        fields["type"],
        fields["id"],
        fields["time"],
        fields["corp_id"],
        fields["data"],
        legacy=fields["legacy"],
    )


# -- process identity --------------------------------------------------------

_owner_cache: tuple[int, str] = (0, "")


def process_owner() -> str:
    """``host:pid:start`` naming this process; start is its boot-relative start time.

    The start time tells a dead owner from a new process that got the same
    pid. Recomputed after a fork.
    """
    global _owner_cache
    pid = os.getpid()
    if _owner_cache[0] != pid:
        _owner_cache = (pid, f"{socket.gethostname()}:{pid}:{_start_time(pid)}")
    return _owner_cache[1]


def owner_is_gone(owner: str) -> bool:
    """Whether ``owner`` names a process on this host that no longer runs.

    Owners on other hosts, or unreadable ones, count as alive: only their
    lease running out frees their records. A zombie counts as gone.
    """
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid_text, start = parts
    if host != socket.gethostname():
        return False

    pid = int(pid_text)
    if pid == os.getpid():
        return start != _start_time(pid)
    stat = _read_stat(pid)
    if stat is None:
        return _pid_missing(pid)
    state, started = stat
    return state in ("Z", "X") or started != start


def _start_time(pid: int) -> str:
    stat = _read_stat(pid)
    return stat[1] if stat is not None else "0"


def _read_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) from ``/proc/<pid>/stat``; None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after its last ")". Then state is field 3 and starttime field 22.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def _pid_missing(pid: int) -> bool:
    if Path("/proc/self/stat").exists():
        return True  # Linux: no /proc entry means no such process.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


# -- SQLite ------------------------------------------------------------------

_SCHEMA = (
    # ``due``: for pending rows the end of the lease (or of the retry
    # delay); for done and dead rows the time they may be purged. One
    # index on (state, due) then serves both reclaim and purge.
    """CREATE TABLE IF NOT EXISTS inbox (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        owner TEXT NOT NULL,
        due REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS inbox_state_due ON inbox (state, due)",
)
_ADD = """
    INSERT INTO inbox (id, state, payload, attempts, owner, due)
    VALUES (?, 'pending', ?, 0, ?, ?) ON CONFLICT (id) DO NOTHING
"""
_DONE = """
    UPDATE inbox SET state = 'done', payload = '', owner = '', due = ?
    WHERE id = ? AND state = 'pending'
"""
_DEFER = """
    UPDATE inbox SET owner = '', due = ? WHERE id = ? AND state = 'pending'
"""
_DUE = """
    SELECT id, owner, due, payload FROM inbox
    WHERE state = 'pending' AND due <= ? ORDER BY due LIMIT ?
"""
_LEASED_HERE = """
    SELECT id, owner, due, payload FROM inbox
    WHERE state = 'pending' AND due > ? AND substr(owner, 1, ?) = ?
"""
_TAKE = """
    UPDATE inbox SET owner = ?, due = ?
    WHERE id = ? AND state = 'pending' AND owner = ? AND due = ?
"""
_PURGE = "DELETE FROM inbox WHERE state IN ('done', 'dead') AND due <= ?"
_GET = "SELECT id, state, attempts, owner FROM inbox WHERE id = ?"


_sqlite_errors = translate_errors("the SQLite event inbox")


class SQLiteInbox:
    """:class:`Inbox` in a SQLite file shared by the processes of one machine.

    Every method raises :class:`StateUnavailableError` when the file cannot
    be used (unwritable, full, locked past the busy timeout).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock = time.time,
        lease: float = LEASE,
        max_attempts: int = MAX_ATTEMPTS,
        keep_done: float = KEEP_DONE,
        keep_dead: float = KEEP_DEAD,
    ) -> None:
        self._db = SQLiteFile(Path(path), _SCHEMA)
        self._clock = clock
        self.lease = lease
        self.max_attempts = max_attempts
        self.keep_done = keep_done
        self.keep_dead = keep_dead

    def __repr__(self) -> str:
        return f"SQLiteInbox({str(self._db.path)!r})"

    @_sqlite_errors
    def add(self, event: Event) -> bool:
        """See :meth:`Inbox.add`: one INSERT ... ON CONFLICT DO NOTHING."""
        due = self._clock() + self.lease
        params = (event.id, encode_event(event), process_owner(), due)
        with self._db.use() as conn:
            return conn.execute(_ADD, params).rowcount == 1

    @_sqlite_errors
    def done(self, event_id: str) -> None:
        """See :meth:`Inbox.done`."""
        purge_at = self._clock() + self.keep_done
        with self._db.use() as conn:
            conn.execute(_DONE, (purge_at, event_id))

    @_sqlite_errors
    def failed(self, event_id: str) -> bool:
        """See :meth:`Inbox.failed`."""
        with self._db.use() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT attempts, payload FROM inbox WHERE id = ? AND state = ?",
                    (event_id, PENDING),
                ).fetchone()
                if row is None:
                    conn.execute("COMMIT")
                    return False
                attempts = row[0] + 1
                retry = attempts < self.max_attempts
                state, due = self._after_failure(attempts, retry)
                conn.execute(
                    "UPDATE inbox SET state = ?, attempts = ?, owner = '', due = ? "
                    "WHERE id = ?",
                    (state, attempts, due, event_id),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        if not retry:
            _log_dead(decode_event(row[1]), attempts)
        return retry

    @_sqlite_errors
    def defer(self, event_id: str, delay: float) -> None:
        """See :meth:`Inbox.defer`."""
        with self._db.use() as conn:
            conn.execute(_DEFER, (self._clock() + delay, event_id))

    @_sqlite_errors
    def reclaim(self, limit: int = 100) -> list[Event]:
        """See :meth:`Inbox.reclaim`. One write transaction per call."""
        me = process_owner()
        host = me.rsplit(":", 2)[0] + ":"
        with self._db.use() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock()
                rows = conn.execute(_DUE, (now, limit)).fetchall()
                leased = conn.execute(_LEASED_HERE, (now, len(host), host)).fetchall()
                rows += [r for r in leased if r[1] != me and owner_is_gone(r[1])]
                taken = []
                for event_id, owner, due, payload in rows[:limit]:
                    params = (me, now + self.lease, event_id, owner, due)
                    if conn.execute(_TAKE, params).rowcount == 1:
                        taken.append(payload)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return [decode_event(payload) for payload in taken]

    @_sqlite_errors
    def purge(self) -> int:
        """See :meth:`Inbox.purge`."""
        with self._db.use() as conn:
            return conn.execute(_PURGE, (self._clock(),)).rowcount

    @_sqlite_errors
    def get(self, event_id: str) -> InboxRecord | None:
        """See :meth:`Inbox.get`."""
        with self._db.use() as conn:
            row = conn.execute(_GET, (event_id,)).fetchone()
        return None if row is None else InboxRecord(*row)

    def close(self) -> None:
        """See :meth:`Inbox.close`."""
        self._db.close()

    def _after_failure(self, attempts: int, retry: bool) -> tuple[str, float]:
        now = self._clock()
        if retry:
            return PENDING, now + backoff_delay(attempts)
        return DEAD, now + self.keep_dead


def _log_dead(event: Event, attempts: int) -> None:
    # Nothing is dropped silently: a dead event is an ERROR line, and its
    # record (with the payload) stays for keep_dead for a manual replay.
    logger.error(
        "event given up after %s failed attempts",
        attempts,
        extra={"event_type": event.type, "event_id": event.id, "outcome": DEAD},
    )


# -- Redis -------------------------------------------------------------------

# KEYS[1] record hash, KEYS[2] pending zset
# ARGV[1] payload, ARGV[2] owner, ARGV[3] lease end, ARGV[4] id
_ADD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'payload', ARGV[1],
           'attempts', 0, 'owner', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# ARGV[1] keep ms, ARGV[2] id
_DONE_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'owner', '')
redis.call('HDEL', KEYS[1], 'payload')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# ARGV[1] max attempts, ARGV[2] now, ARGV[3] backoff base, ARGV[4] cap,
# ARGV[5] keep_dead ms, ARGV[6] id. Returns {state, attempts, payload}.
_FAILED_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return false end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'owner', '')
local payload = redis.call('HGET', KEYS[1], 'payload')
if attempts >= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'state', 'dead')
    redis.call('ZREM', KEYS[2], ARGV[6])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return {'dead', attempts, payload}
end
local delay = math.min(tonumber(ARGV[3]) * 2 ^ (attempts - 1), tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], string.format('%.6f', tonumber(ARGV[2]) + delay), ARGV[6])
return {'pending', attempts, payload}
"""

# ARGV[1] due time, ARGV[2] id
_DEFER_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'owner', '')
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] pending zset; ARGV[1] now, ARGV[2] new lease end, ARGV[3] owner,
# ARGV[4] limit, ARGV[5] record key prefix. Returns the payloads taken.
# Known limit: the record keys are built inside the script, which Redis
# Cluster forbids; a single server or a primary with replicas is fine.
_RECLAIM_DUE_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],
                       'LIMIT', 0, tonumber(ARGV[4]))
local taken = {}
for _, id in ipairs(ids) do
    local key = ARGV[5] .. id
    local payload = redis.call('HGET', key, 'payload')
    if payload and redis.call('HGET', key, 'state') == 'pending' then
        redis.call('HSET', key, 'owner', ARGV[3])
        redis.call('ZADD', KEYS[1], ARGV[2], id)
        table.insert(taken, payload)
    else
        -- A pending id without a pending record cannot be run: drop it.
        redis.call('ZREM', KEYS[1], id)
    end
end
return taken
"""

# KEYS[1] record, KEYS[2] pending zset; ARGV[1] expected owner, ARGV[2]
# new owner, ARGV[3] new lease end, ARGV[4] id. Compare-and-set.
_TAKE_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return false end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return redis.call('HGET', KEYS[1], 'payload')
"""

_REDIS_TIMEOUT = 5.0
#: How many leased records one reclaim inspects for a dead local owner.
_SCAN_LEASED = 1000


def _redis_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn Redis connection failures into :class:`StateUnavailableError`."""
    import redis

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Name the setting, not its value: the URL may hold a password.
            raise StateUnavailableError(
                f"the Redis server at REDIS_URL could not be reached for the "
                f"event inbox ({type(exc).__name__}); check that it runs"
            ) from exc

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class RedisInbox:
    """:class:`Inbox` on Redis, shared by every process on every machine.

    Keys: ``<prefix>rec:<id>`` hashes (state, payload, attempts, owner),
    and ``<prefix>pending``, a sorted set of pending ids scored by lease
    end or retry time. Done and dead records expire by Redis TTL. Raises
    ConfigError at once for a malformed URL, StateUnavailableError when
    the server cannot be reached. Durability across a Redis restart is the
    server's persistence setting (use AOF).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "dingbot:inbox:",
        clock: Clock = time.time,
        lease: float = LEASE,
        max_attempts: int = MAX_ATTEMPTS,
        keep_done: float = KEEP_DONE,
        keep_dead: float = KEEP_DEAD,
    ) -> None:
        import redis

        try:
            redis.connection.parse_url(url)
        except ValueError:
            raise ConfigError(
                "REDIS_URL", "is not a Redis URL",
                "use redis://[:password@]host:port/db, rediss:// or unix://",
            ) from None
        self._url = url
        self._prefix = prefix
        self._pending = prefix + "pending"
        self._clock = clock
        self.lease = lease
        self.max_attempts = max_attempts
        self.keep_done = keep_done
        self.keep_dead = keep_dead
        self._client: tuple[int, Any, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # Never the URL: it may carry a password.
        return f"RedisInbox(<REDIS_URL>, prefix={self._prefix!r})"

    @_redis_errors
    def add(self, event: Event) -> bool:
        """See :meth:`Inbox.add`: one Lua script (EXISTS, HSET, ZADD)."""
        due = self._clock() + self.lease
        args = [encode_event(event), process_owner(), _score(due), event.id]
        return bool(self._script("add")(keys=self._keys(event.id), args=args))

    @_redis_errors
    def done(self, event_id: str) -> None:
        """See :meth:`Inbox.done`."""
        args = [_ms(self.keep_done), event_id]
        self._script("done")(keys=self._keys(event_id), args=args)

    @_redis_errors
    def failed(self, event_id: str) -> bool:
        """See :meth:`Inbox.failed`."""
        args = [
            self.max_attempts, repr(self._clock()), repr(BACKOFF),
            repr(BACKOFF_CAP), _ms(self.keep_dead), event_id,
        ]
        reply = self._script("failed")(keys=self._keys(event_id), args=args)
        if not reply:
            return False
        state, attempts, payload = reply
        if state == DEAD:
            _log_dead(decode_event(payload), int(attempts))
            return False
        return True

    @_redis_errors
    def defer(self, event_id: str, delay: float) -> None:
        """See :meth:`Inbox.defer`."""
        args = [_score(self._clock() + delay), event_id]
        self._script("defer")(keys=self._keys(event_id), args=args)

    @_redis_errors
    def reclaim(self, limit: int = 100) -> list[Event]:
        """See :meth:`Inbox.reclaim`: expired leases, then dead local owners."""
        me = process_owner()
        now = self._clock()
        lease_end = _score(now + self.lease)
        args = [_score(now), lease_end, me, limit, self._prefix + "rec:"]
        taken = list(self._script("reclaim_due")(keys=[self._pending], args=args))

        for event_id, owner in self._leased_owners(now):
            if len(taken) >= limit:
                break
            if owner == me or not owner_is_gone(owner):
                continue
            args = [owner, me, lease_end, event_id]
            payload = self._script("take")(keys=self._keys(event_id), args=args)
            if payload:
                taken.append(payload)
        return [decode_event(payload) for payload in taken]

    @_redis_errors
    def purge(self) -> int:
        """See :meth:`Inbox.purge`: Redis expires records itself, so 0."""
        return 0

    @_redis_errors
    def get(self, event_id: str) -> InboxRecord | None:
        """See :meth:`Inbox.get`."""
        fields = self._redis().hmget(
            self._prefix + "rec:" + event_id, "state", "attempts", "owner"
        )
        if fields[0] is None:
            return None
        return InboxRecord(event_id, fields[0], int(fields[1] or 0), fields[2] or "")

    def close(self) -> None:
        """See :meth:`Inbox.close`."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None and client[0] == os.getpid():
            client[1].close()

    def _leased_owners(self, now: float) -> list[tuple[str, str]]:
        """(id, owner) of pending records whose lease has not run out yet."""
        redis = self._redis()
        ids = redis.zrangebyscore(
            self._pending, f"({_score(now)}", "+inf", start=0, num=_SCAN_LEASED
        )
        if not ids:
            return []
        pipe = redis.pipeline(transaction=False)
        for event_id in ids:
            pipe.hget(self._prefix + "rec:" + event_id, "owner")
        return [(i, o) for i, o in zip(ids, pipe.execute()) if o]

    def _keys(self, event_id: str) -> list[str]:
        return [self._prefix + "rec:" + event_id, self._pending]

    def _redis(self) -> Any:
        return self._connected()[1]

    def _script(self, name: str) -> Any:
        return self._connected()[2][name]

    def _connected(self) -> tuple[int, Any, dict[str, Any]]:
        # One client per process: sockets shared across fork mix replies.
        client = self._client
        if client is not None and client[0] == os.getpid():
            return client
        import redis

        with self._lock:
            conn = redis.Redis.from_url(
                self._url,
                decode_responses=True,
                socket_timeout=_REDIS_TIMEOUT,
                socket_connect_timeout=_REDIS_TIMEOUT,
                health_check_interval=30,
            )
            scripts = {
                "add": conn.register_script(_ADD_LUA),
                "done": conn.register_script(_DONE_LUA),
                "failed": conn.register_script(_FAILED_LUA),
                "defer": conn.register_script(_DEFER_LUA),
                "reclaim_due": conn.register_script(_RECLAIM_DUE_LUA),
                "take": conn.register_script(_TAKE_LUA),
            }
            self._client = (os.getpid(), conn, scripts)
            return self._client


def _score(seconds: float) -> str:
    return f"{seconds:.6f}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
