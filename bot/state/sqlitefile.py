"""One SQLite file shared by the processes and threads of one machine.

Both SQLite users (the state store and the event inbox) open their file
the same way, so that logic lives here once:

- One connection per process, opened lazily and shared by its threads
  behind a lock (:meth:`SQLiteFile.use`). Measured under gunicorn's
  threaded workers: one connection per thread made every dedupe claim cost
  about 48 µs of CPU, as the threads' connections contended for SQLite's
  write lock and busy-waited; one serialised connection costs about 27 µs
  (statements take microseconds, so threads barely wait on the lock).
- SQLite forbids using a connection across ``fork()``: the child would
  share the parent's file locks and page cache and could corrupt the file.
  A connection made before a fork is therefore left untouched in the child,
  not even closed, and kept referenced so garbage collection cannot close
  it either; the child opens its own.
- The first connection switches the file to WAL and runs the schema, one
  process at a time (see :meth:`SQLiteFile._prepare_file`).
- Every connection uses ``synchronous=NORMAL`` and a busy timeout, and is
  in autocommit mode: callers issue ``BEGIN IMMEDIATE`` where they need a
  transaction.
"""

from __future__ import annotations

import fcntl
import functools
from contextlib import contextmanager
from collections.abc import Iterator
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

from bot.state import StateUnavailableError

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds a statement waits for another connection's write lock.
BUSY_TIMEOUT = 5.0

# Files alive in this process, so the fork hook below can reset them.
_files: weakref.WeakSet[SQLiteFile] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for file in list(_files):
        file._forget_parent_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


def translate_errors(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator turning SQLite and OS failures into :class:`StateUnavailableError`.

    ``what`` names the file in the message, e.g. "the SQLite state file".
    The message names DINGBOT_DATA_DIR and SQLite's own description of the
    failure ("database is locked", a path), never a stored value.
    """

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(*args, **kwargs)
            except (sqlite3.DatabaseError, OSError) as exc:
                raise StateUnavailableError(
                    f"{what} in DINGBOT_DATA_DIR could not be used ({exc}); "
                    f"check that the directory is writable and not full"
                ) from exc

        return wrapper

    return decorate


class SQLiteFile:
    """The SQLite file at ``path``, with ``schema`` run once on first open.

    Nothing is opened until :meth:`use` is first entered; the parent
    directory is created then if missing. ``schema`` statements must be
    idempotent (``CREATE ... IF NOT EXISTS``): every instance runs them
    on its first open. Opening raises :class:`sqlite3.Error` or
    :class:`OSError`; callers translate them with :func:`translate_errors`.
    """

    def __init__(self, path: Path, schema: Sequence[str]) -> None:
        self.path = Path(path)
        self._schema = tuple(schema)
        # Reentrant: a caller holding use() may call a helper that enters it.
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        # Connections inherited across fork: kept referenced, never closed,
        # because garbage collection would close them from the child.
        self._inherited: list[sqlite3.Connection] = []
        self._file_ready = False
        _files.add(self)

    def __repr__(self) -> str:
        return f"SQLiteFile({str(self.path)!r})"

    @contextmanager
    def use(self) -> Iterator[sqlite3.Connection]:
        """This process's connection, held exclusively inside the block.

        The connection is in autocommit mode; a ``BEGIN IMMEDIATE`` ...
        ``COMMIT`` inside one block is one transaction, since no other
        thread of this process can use the connection meanwhile. Raises
        :class:`sqlite3.Error` or :class:`OSError` when the file cannot be
        opened or prepared. Do not sleep inside the block.
        """
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                self._open()
            yield self._conn

    def close(self) -> None:
        """Close this process's connection; later use reopens.

        A connection inherited from a parent process stays open: closing
        it here could disturb the parent's locks on the file.
        """
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            if self._pid == os.getpid():
                conn.close()
            else:
                self._inherited.append(conn)

    def _open(self) -> None:
        if self._conn is not None:
            # A fork the hook missed (a fork() from C code, say).
            self._inherited.append(self._conn)
            self._conn = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            # Shared by this process's threads, one at a time (see use()).
            check_same_thread=False,
        )
        try:
            if not self._file_ready:
                self._prepare_file(conn)
                self._file_ready = True
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        logger.debug("opened SQLite connection to %s", self.path)

    def _prepare_file(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL and run the schema, one process at a time.

        Workers starting together on a new file would otherwise race to
        switch it to WAL, and SQLite answers the losers "database is
        locked" at once instead of waiting out the busy timeout. An flock
        on a side file serialises them; it is released even if the holder
        dies.
        """
        guard = self.path.with_name(self.path.name + ".init-lock")
        with open(guard, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            conn.execute("PRAGMA journal_mode = WAL")
            for statement in self._schema:
                conn.execute(statement)

    def _forget_parent_connections(self) -> None:
        """Called in a forked child: set aside the parent's connection."""
        # The parent's lock may have been held by a thread that does not
        # exist in the child; a fresh one cannot deadlock.
        self._lock = threading.RLock()
        if self._conn is not None:
            self._inherited.append(self._conn)
            self._conn = None
