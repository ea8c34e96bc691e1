"""The shared SQLite file: one connection per process, setup, fork, errors.

Real SQLite files in ``tmp_path``; forks are real ``os.fork()`` children
that report through their exit code. Whether a connection is closed is
read from ``in_transaction``, which raises on a closed connection without
touching the file, or in a forked child from its descriptors in /proc.
"""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

from bot.state import StateUnavailableError
from bot.state.sqlitefile import SQLiteFile, translate_errors

SCHEMA = ("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT)",)


def is_closed(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` was closed."""
    try:
        conn.in_transaction
    except sqlite3.ProgrammingError:
        return True
    return False


def open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    fds = Path("/proc/self/fd")
    target = os.path.realpath(path)
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == target)


def connection_of(file: SQLiteFile) -> sqlite3.Connection:
    """The connection ``file`` hands out in this process."""
    with file.use() as conn:
        return conn


def connection_in_thread(file: SQLiteFile) -> sqlite3.Connection:
    """The connection ``file`` gives a new thread, which then ends."""
    got: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: got.append(connection_of(file)))
    thread.start()
    thread.join(timeout=30)
    return got[0]


@pytest.fixture
def file(tmp_path: Path):
    opened = SQLiteFile(tmp_path / "data" / "test.sqlite3", SCHEMA)
    yield opened
    opened.close()


def test_nothing_is_created_until_first_use(tmp_path: Path) -> None:
    """The file and its directory appear only when a connection is asked for."""
    file = SQLiteFile(tmp_path / "data" / "test.sqlite3", SCHEMA)
    assert not (tmp_path / "data").exists()

    with file.use() as conn:
        conn.execute("INSERT INTO t VALUES ('a', '1')")

    assert (tmp_path / "data" / "test.sqlite3").is_file()
    file.close()


def test_connection_is_wal_normal_sync_autocommit_with_busy_timeout(
    file: SQLiteFile,
) -> None:
    """The connection has WAL, synchronous=NORMAL, a busy timeout, autocommit."""
    with file.use() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert conn.isolation_level is None


def test_threads_of_a_process_share_one_connection(file: SQLiteFile) -> None:
    """Every thread of the process is handed the same connection."""
    assert connection_in_thread(file) is connection_of(file)


def test_use_is_exclusive_between_threads(file: SQLiteFile) -> None:
    """While one thread holds use(), another waits: a transaction is not split."""
    entered = threading.Event()
    order: list[str] = []

    def other() -> None:
        with file.use():
            order.append("other")

    with file.use() as conn:
        conn.execute("BEGIN IMMEDIATE")
        thread = threading.Thread(target=lambda: (entered.set(), other()))
        thread.start()
        entered.wait(10)
        thread.join(timeout=0.3)
        order.append("first")
        conn.execute("INSERT INTO t VALUES ('x', '1')")
        conn.execute("COMMIT")
    thread.join(timeout=30)
    assert order == ["first", "other"]


def test_close_closes_the_connection_and_later_use_reopens(file: SQLiteFile) -> None:
    """close() closes this process's connection; the next use opens a new one."""
    first = connection_of(file)

    file.close()

    assert is_closed(first)
    with file.use() as reopened:
        assert reopened is not first and not is_closed(reopened)
        reopened.execute("INSERT INTO t VALUES ('b', '2')")


def test_forked_child_opens_its_own_and_leaves_the_parents_open(
    file: SQLiteFile,
) -> None:
    """A child never uses nor closes a connection made before the fork."""
    parent = connection_of(file)
    parent.execute("INSERT INTO t VALUES ('parent', '1')")

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child = connection_of(file)
            child.execute("INSERT INTO t VALUES ('child', '1')")
            fresh = child is not parent
            # Only the file may keep the parent's connection alive now:
            # were it dropped, garbage collection would close it here.
            del parent, child
            file.close()
            gc.collect()
            code = 0 if fresh and open_descriptors(file.path) > 0 else 2
        finally:
            os._exit(code)

    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert connection_of(file) is parent
    rows = parent.execute("SELECT k FROM t ORDER BY k").fetchall()
    assert rows == [("child",), ("parent",)]


def _create_and_write(barrier: object, path: str, index: int) -> None:
    file = SQLiteFile(Path(path), SCHEMA)
    barrier.wait(timeout=60)  # type: ignore[attr-defined]
    with file.use() as conn:
        conn.execute("INSERT INTO t VALUES (?, 'x')", (str(index),))
    file.close()


def test_processes_preparing_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """Eight processes opening a new file at once all get a working connection."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        # Racing to switch a new file to WAL fails the losers at once unless
        # the setup is serialised; a few rounds make the race likely.
        path = str(tmp_path / f"run{attempt}" / "new.sqlite3")
        barrier = ctx.Barrier(8)
        processes = [
            ctx.Process(target=_create_and_write, args=(barrier, path, i))
            for i in range(8)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=90)

        assert [process.exitcode for process in processes] == [0] * 8
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (8,)


def _open_and_write(path: str) -> None:
    file = SQLiteFile(Path(path), SCHEMA)
    with file.use() as conn:
        conn.execute("INSERT INTO t VALUES ('alone', 'x')")
    file.close()


def test_setup_waits_while_another_process_holds_the_init_lock(
    tmp_path: Path,
) -> None:
    """A new file is not set up while another process holds its init lock."""
    path = tmp_path / "new.sqlite3"
    ctx = multiprocessing.get_context("fork")
    with open(tmp_path / "new.sqlite3.init-lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        process = ctx.Process(target=_open_and_write, args=(str(path),))
        process.start()
        process.join(timeout=1.0)
        still_waiting = process.is_alive()
        # Unlock explicitly: the child shares this open file, so closing
        # our descriptor alone would not release the lock.
        fcntl.flock(guard, fcntl.LOCK_UN)

    process.join(timeout=60)
    assert still_waiting, "the file was set up while the init lock was held"
    assert process.exitcode == 0


def test_translated_error_names_the_file_and_setting_not_the_value(
    file: SQLiteFile,
) -> None:
    """A SQLite failure becomes StateUnavailableError naming what failed."""

    @translate_errors("the SQLite test file")
    def put(key: str, value: str) -> None:
        """Insert a row."""
        with file.use() as conn:
            conn.execute("INSERT INTO t VALUES (?, ?)", (key, value))

    put("k", "secret-value-1")
    with pytest.raises(StateUnavailableError) as caught:
        put("k", "secret-value-2")

    message = str(caught.value)
    assert message.startswith("the SQLite test file in DINGBOT_DATA_DIR")
    assert "UNIQUE constraint failed" in message
    assert "secret-value" not in message
    assert put.__name__ == "put" and put.__doc__ == "Insert a row."


def test_unusable_directory_is_unavailable(tmp_path: Path) -> None:
    """A path under a regular file (OSError) is translated too."""
    (tmp_path / "plain").write_text("not a directory")
    file = SQLiteFile(tmp_path / "plain" / "test.sqlite3", SCHEMA)

    with pytest.raises(StateUnavailableError, match="writable and not full"):
        translate_errors("the SQLite test file")(connection_of)(file)


def test_other_errors_pass_through_untranslated() -> None:
    """Only SQLite and OS failures are translated; a ValueError stays one."""

    @translate_errors("the SQLite test file")
    def fail() -> None:
        raise ValueError("bad argument")

    with pytest.raises(ValueError, match="bad argument"):
        fail()
