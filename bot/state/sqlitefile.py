"""One SQLite file shared by the processes and threads of one machine.

Both SQLite users (the state store and the event inbox) open their file
the same way, so that logic lives here once:

- Connections are opened lazily, one per process and thread.
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

_Opened = tuple[int, "weakref.ref[threading.Thread]", sqlite3.Connection]

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

    Nothing is opened until :meth:`connection` is first called; the parent
    directory is created then if missing. ``schema`` statements must be
    idempotent (``CREATE ... IF NOT EXISTS``): every instance runs them
    on its first open. Opening raises :class:`sqlite3.Error` or
    :class:`OSError`; callers translate them with :func:`translate_errors`.
    """

    def __init__(self, path: Path, schema: Sequence[str]) -> None:
        self.path = Path(path)
        self._schema = tuple(schema)
        # Holds (pid, conn) for the calling thread; replaced on close().
        self._local = threading.local()
        self._lock = threading.Lock()
        # (owner pid, owner thread, connection) for every connection opened
        # here, so close() can reach other threads' connections.
        self._opened: list[_Opened] = []
        # Connections inherited across fork: kept referenced, never closed,
        # because garbage collection would close them from the child.
        self._inherited: list[sqlite3.Connection] = []
        self._file_ready = False
        _files.add(self)

    def __repr__(self) -> str:
        return f"SQLiteFile({str(self.path)!r})"

    def connection(self) -> sqlite3.Connection:
        """This thread's connection in this process, opened on first use.

        The connection is in autocommit mode and may be used by the calling
        thread only. Raises :class:`sqlite3.Error` or :class:`OSError` when
        the file cannot be opened or prepared.
        """
        # The hot path: one thread-local read and one pid comparison.
        local = self._local
        if getattr(local, "pid", 0) == os.getpid():
            return local.conn
        return self._open()

    def close(self) -> None:
        """Close every connection this process opened; later use reopens.

        Connections inherited from a parent process stay open: closing
        them here could disturb the parent's locks on the file.
        """
        pid = os.getpid()
        with self._lock:
            opened, self._opened = self._opened, []
            # A fresh thread-local makes every thread reopen on next use.
            self._local = threading.local()
        for owner_pid, _thread, conn in opened:
            if owner_pid == pid:
                conn.close()
            else:
                self._inherited.append(conn)

    def _open(self) -> sqlite3.Connection:
        with self._lock:
            self._close_dead_threads_connections()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                # close() may run in another thread than the one that opened
                # it; each connection is otherwise used by one thread only.
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

            pid = os.getpid()
            self._opened.append((pid, weakref.ref(threading.current_thread()), conn))
            # Set under the lock, so a concurrent close() either sees this
            # connection in _opened or replaces the local after it is set.
            self._local.conn = conn
            self._local.pid = pid
            logger.debug("opened SQLite connection to %s", self.path)
            return conn

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

    def _close_dead_threads_connections(self) -> None:
        # Threads come and go (a pool may replace its workers); without
        # this their connections would pile up until close().
        pid = os.getpid()
        kept = []
        for entry in self._opened:
            owner_pid, thread_ref, conn = entry
            thread = thread_ref()
            if owner_pid != pid:
                # A fork the hook missed (a fork() from C code, say).
                self._inherited.append(conn)
            elif thread is not None and thread.is_alive():
                kept.append(entry)
            else:
                conn.close()
        self._opened = kept

    def _forget_parent_connections(self) -> None:
        """Called in a forked child: set aside the parent's connections."""
        # The parent's lock may have been held by a thread that does not
        # exist in the child; a fresh one cannot deadlock.
        self._lock = threading.Lock()
        self._inherited.extend(conn for _pid, _thread, conn in self._opened)
        self._opened = []
        self._local = threading.local()
