"""The embedded state store: one SQLite file shared by a machine's processes.

Every gunicorn worker opens the same file, so dedupe records, locks and
rate budgets are common to them all. SQLite runs in WAL mode, so readers
never wait for the writer and each write is a short transaction.

Connections (one per process and thread, never reused across ``fork()``)
and the one-time WAL and schema setup come from
:class:`bot.state.sqlitefile.SQLiteFile`.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

from bot.state import poll_lock
from bot.state.sqlitefile import SQLiteFile, translate_errors

_SCHEMA = (
    # WITHOUT ROWID: the key is the only lookup path, so one b-tree suffices.
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL
    ) WITHOUT ROWID""",
    # No index on kv.expires: every robot callback inserts a dedupe row, and
    # an index costs each insert a second B-tree write (about a third of the
    # claim); the purge that would use it runs once a minute per process.
    "DROP INDEX IF EXISTS kv_expires",
    """CREATE TABLE IF NOT EXISTS locks (
        name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS slots (
        bucket TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS slots_bucket_at ON slots (bucket, at)",
)

# One statement both records a new key and revives an expired one; the
# conditional DO UPDATE leaves a live record alone, so changes() is 1 for
# a first sighting and 0 for a duplicate.
_CLAIM = """
    INSERT INTO kv (key, value, expires) VALUES (?1, '1', ?2)
    ON CONFLICT (key) DO UPDATE SET value = '1', expires = ?2
    WHERE kv.expires <= ?3
"""
_GET = "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)"
_PUT = """
    INSERT INTO kv (key, value, expires) VALUES (?1, ?2, ?3)
    ON CONFLICT (key) DO UPDATE SET value = ?2, expires = ?3
"""
_DELETE = "DELETE FROM kv WHERE key = ?"
_TAKE_LOCK = """
    INSERT INTO locks (name, owner, expires) VALUES (?1, ?2, ?3)
    ON CONFLICT (name) DO UPDATE SET owner = ?2, expires = ?3
    WHERE locks.expires <= ?4
"""
_RELEASE_LOCK = "DELETE FROM locks WHERE name = ? AND owner = ?"
_DROP_OLD_SLOTS = "DELETE FROM slots WHERE bucket = ? AND at <= ?"
_NTH_NEWEST_SLOT = """
    SELECT at FROM slots WHERE bucket = ? ORDER BY at DESC LIMIT 1 OFFSET ?
"""
_ADD_SLOT = "INSERT INTO slots (bucket, at, expires) VALUES (?, ?, ?)"

_translate_errors = translate_errors("the SQLite state file")


class SQLiteStore:
    """:class:`~bot.state.Store` kept in one SQLite file at ``path``.

    Nothing is opened until first use; the parent directory is created
    then if missing. Every method raises :class:`StateUnavailableError`
    when the file cannot be opened or stays locked past the busy timeout.
    Expired rows are ignored on read; each process deletes them on its
    first write after every ``purge_interval`` seconds.
    """

    def __init__(self, path: Path, purge_interval: float = 60.0) -> None:
        self._file = SQLiteFile(Path(path), _SCHEMA)
        self._purge_interval = purge_interval
        self._next_purge = 0.0

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self._file.path)!r})"

    @_translate_errors
    def claim(self, key: str, ttl: float) -> bool:
        """See :meth:`bot.state.Store.claim`. ``ttl`` must be positive."""
        _check_positive("ttl", ttl)
        with self._file.use() as conn:
            now = time.time()
            self._purge_if_due(conn, now)
            return conn.execute(_CLAIM, (key, now + ttl, now)).rowcount == 1

    @_translate_errors
    def get(self, key: str) -> str | None:
        """See :meth:`bot.state.Store.get`."""
        with self._file.use() as conn:
            row = conn.execute(_GET, (key, time.time())).fetchone()
        return None if row is None else row[0]

    @_translate_errors
    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        """See :meth:`bot.state.Store.put`. ``ttl``, if given, must be positive."""
        now = time.time()
        expires = None
        if ttl is not None:
            _check_positive("ttl", ttl)
            expires = now + ttl

        with self._file.use() as conn:
            self._purge_if_due(conn, now)
            conn.execute(_PUT, (key, value, expires))

    @_translate_errors
    def delete(self, key: str) -> None:
        """See :meth:`bot.state.Store.delete`."""
        with self._file.use() as conn:
            conn.execute(_DELETE, (key,))

    def lock(self, name: str, ttl: float, wait: float) -> AbstractContextManager[None]:
        """See :meth:`bot.state.Store.lock`.

        Polls every 20-50 ms. On exit the lock is released only if this
        holder still owns it: after its ``ttl`` ran out someone else may
        have taken it over, and their lock must stand.
        """
        _check_positive("ttl", ttl)
        owner = secrets.token_hex(8)
        return poll_lock(
            lambda: self._take_lock(name, owner, ttl),
            lambda: self._release_lock(name, owner),
            wait,
        )

    @_translate_errors
    def reserve(self, bucket: str, limit: int, window: float) -> float:
        """See :meth:`bot.state.Store.reserve`.

        Runs in one ``BEGIN IMMEDIATE`` transaction, so concurrent callers
        in any process queue up one after another.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        _check_positive("window", window)
        with self._file.use() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Read the clock only once we hold the write lock, so slots
                # are handed out in the order the clock says.
                now = time.time()
                slot = _next_slot(conn, bucket, limit, window, now)
                conn.execute(_ADD_SLOT, (bucket, slot, slot + window))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return slot - now

    @_translate_errors
    def ping(self) -> None:
        """Raise :class:`StateUnavailableError` if the file cannot be read."""
        with self._file.use() as conn:
            conn.execute("SELECT 1 FROM kv LIMIT 1").fetchall()

    def close(self) -> None:
        """Close this process's connection; later use reopens.

        A connection inherited from a parent process stays open: closing
        it here could disturb the parent's locks on the file.
        """
        self._file.close()

    def _connection(self) -> sqlite3.Connection:
        """This process's connection, opened on first use (for the fork test)."""
        with self._file.use() as conn:
            return conn

    @_translate_errors
    def _take_lock(self, name: str, owner: str, ttl: float) -> bool:
        with self._file.use() as conn:
            now = time.time()
            self._purge_if_due(conn, now)
            return conn.execute(_TAKE_LOCK, (name, owner, now + ttl, now)).rowcount == 1

    @_translate_errors
    def _release_lock(self, name: str, owner: str) -> None:
        with self._file.use() as conn:
            conn.execute(_RELEASE_LOCK, (name, owner))

    def _purge_if_due(self, conn: sqlite3.Connection, now: float) -> None:
        # Called inside use(), so one thread of this process purges at a time.
        if now < self._next_purge:
            return
        self._next_purge = now + self._purge_interval
        conn.execute("DELETE FROM kv WHERE expires <= ?", (now,))
        conn.execute("DELETE FROM locks WHERE expires <= ?", (now,))
        conn.execute("DELETE FROM slots WHERE expires <= ?", (now,))


def _next_slot(
    conn: sqlite3.Connection, bucket: str, limit: int, window: float, now: float
) -> float:
    """The earliest time at which one more slot keeps every window within limit.

    Slots at or before ``now - window`` no longer count and are dropped.
    If ``limit`` or more remain, the new slot must come a full window after
    the ``limit``-th newest, so that no window holds more than ``limit``.
    """
    conn.execute(_DROP_OLD_SLOTS, (bucket, now - window))
    row = conn.execute(_NTH_NEWEST_SLOT, (bucket, limit - 1)).fetchone()
    return now if row is None else max(now, row[0] + window)


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
