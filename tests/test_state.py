"""The state store, on both backends: dedupe claims, values, locks, rate slots.

Every behaviour runs against a fresh SQLite file in ``tmp_path`` and against
the real Redis server's database 15 (``REDIS_TEST_URL``), flushed first.
Cross-process tests fork real processes that each open their own store.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import sqlite3
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.errors import ConfigError, UpstreamError
from bot.state import LockTimeout, StateUnavailableError, Store, open_store
from bot.state.redisstore import RedisStore
from bot.state.sqlite import SQLiteStore

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")

# (backend, where): picklable, so a child process can open its own store.
Spec = tuple[str, str]


def open_spec(spec: Spec) -> SQLiteStore | RedisStore:
    """A new store for ``spec``; nothing connects until first use."""
    backend, where = spec
    return SQLiteStore(Path(where)) if backend == "sqlite" else RedisStore(where)


def flushed_redis_or_skip() -> None:
    """Empty the Redis test database, or skip when no server answers."""
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.ConnectionError:
        pytest.skip("no Redis server answers at REDIS_TEST_URL")
    finally:
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Spec:
    """Where a test's store lives: a new SQLite file, or Redis db 15 emptied."""
    if request.param == "sqlite":
        # A directory that does not exist yet: the store must create it.
        return ("sqlite", str(tmp_path / "data" / "state.sqlite3"))
    flushed_redis_or_skip()
    return ("redis", REDIS_TEST_URL)


@pytest.fixture
def store(spec: Spec) -> Iterator[SQLiteStore | RedisStore]:
    """A store opened on ``spec``, closed after the test."""
    store = open_spec(spec)
    yield store
    store.close()


# --- claims and values ------------------------------------------------------


def test_first_claim_wins_and_repeat_claims_lose(store: Store) -> None:
    """Only the first claim of a key returns True."""
    assert store.claim("dedupe:robot:m1", 60) is True
    assert store.claim("dedupe:robot:m1", 60) is False
    assert store.claim("dedupe:robot:m1", 60) is False
    assert store.claim("dedupe:robot:m2", 60) is True


def test_key_can_be_claimed_again_after_its_ttl(store: Store) -> None:
    """A claim expires after its ttl, and the next claim wins again."""
    assert store.claim("dedupe:robot:m1", 0.2)
    time.sleep(0.4)
    assert store.claim("dedupe:robot:m1", 60) is True
    assert store.claim("dedupe:robot:m1", 60) is False


def test_put_value_is_read_back_until_deleted(store: Store) -> None:
    """get returns what put stored; delete forgets it, even twice."""
    assert store.get("token:legacy:app") is None
    store.put("token:legacy:app", "value-1")
    store.put("token:legacy:app", "value-2")
    assert store.get("token:legacy:app") == "value-2"

    store.delete("token:legacy:app")
    store.delete("token:legacy:app")
    assert store.get("token:legacy:app") is None


def test_value_with_ttl_expires(store: Store) -> None:
    """A value put with a ttl reads as absent once the ttl has passed."""
    store.put("short", "v", ttl=0.2)
    store.put("long", "v", ttl=60)
    assert store.get("short") == "v"
    time.sleep(0.4)
    assert store.get("short") is None
    assert store.get("long") == "v"


def test_put_without_ttl_removes_earlier_expiry(store: Store) -> None:
    """Overwriting a value without a ttl makes it permanent."""
    store.put("k", "old", ttl=0.2)
    store.put("k", "new")
    time.sleep(0.4)
    assert store.get("k") == "new"


def test_live_put_value_blocks_a_claim_of_the_same_key(store: Store) -> None:
    """Claims and values share one key space."""
    store.put("k", "v", ttl=60)
    assert store.claim("k", 60) is False


@pytest.mark.parametrize("ttl", [0, -1.0])
def test_non_positive_ttl_is_refused(store: Store, ttl: float) -> None:
    """A ttl of zero or less is a caller bug, refused with ValueError."""
    with pytest.raises(ValueError):
        store.claim("k", ttl)
    with pytest.raises(ValueError):
        store.put("k", "v", ttl=ttl)


def test_threads_sharing_a_store_claim_each_key_once(store: Store) -> None:
    """Threads of one process, each on its own connection, never both win."""
    wins: list[str] = []
    start = threading.Barrier(4)

    def claim_all() -> None:
        start.wait(timeout=30)
        keys = [f"k{i}" for i in range(40)]
        random.shuffle(keys)
        wins.extend(key for key in keys if store.claim(key, 60))

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(wins) == sorted(f"k{i}" for i in range(40))


def test_store_reopens_after_close(store: Store) -> None:
    """close releases connections, and the next call opens new ones."""
    store.put("k", "v")
    store.close()
    assert store.get("k") == "v"
    store.ping()


# --- locks ------------------------------------------------------------------


def test_held_lock_makes_second_holder_time_out(store: Store) -> None:
    """A second taker waits ``wait`` seconds, then gets LockTimeout."""
    with store.lock("token", ttl=30, wait=0):
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            with store.lock("token", ttl=30, wait=0.3):
                pytest.fail("two holders of one lock")
        assert time.monotonic() - started >= 0.3

    with store.lock("token", ttl=30, wait=0):
        pass


def test_lock_is_released_when_its_block_raises(store: Store) -> None:
    """An exception inside the block still frees the lock."""
    with pytest.raises(RuntimeError):
        with store.lock("token", ttl=30, wait=0):
            raise RuntimeError("handler failed")

    with store.lock("token", ttl=30, wait=0):
        pass


def test_waiting_taker_gets_lock_once_it_is_released(store: Store) -> None:
    """A taker polling within ``wait`` gets the lock when the holder leaves."""
    held = threading.Event()

    def hold_briefly() -> None:
        with store.lock("token", ttl=30, wait=0):
            held.set()
            time.sleep(0.2)

    holder = threading.Thread(target=hold_briefly)
    holder.start()
    assert held.wait(timeout=30)
    with store.lock("token", ttl=30, wait=30):
        pass
    holder.join(timeout=30)


def test_expired_lock_can_be_taken_over(store: Store) -> None:
    """A lock whose holder outlived its ttl is free for the next taker."""
    with store.lock("token", ttl=0.2, wait=0):
        time.sleep(0.4)
        with store.lock("token", ttl=30, wait=0):
            pass


def test_former_owner_does_not_release_a_taken_over_lock(store: Store) -> None:
    """Leaving an expired, taken-over lock leaves the new owner's lock held."""
    with store.lock("token", ttl=0.2, wait=0):
        time.sleep(0.4)
        new_owner = store.lock("token", ttl=30, wait=0)
        new_owner.__enter__()

    with pytest.raises(LockTimeout):
        with store.lock("token", ttl=30, wait=0):
            pass
    new_owner.__exit__(None, None, None)


# --- rate slots -------------------------------------------------------------


Timed = tuple[float, float, float]


def reserve_timed(store: Store, bucket: str, limit: int, window: float) -> Timed:
    """(before, after, wait): the slot lies in [before + wait, after + wait]."""
    before = time.time()
    wait = store.reserve(bucket, limit, window)
    return before, time.time(), wait


def assert_at_most_limit_per_window(
    records: list[Timed], limit: int, window: float
) -> None:
    """Fail if the reserved slots provably put more than ``limit`` in a window.

    Each slot is known only within the span of its call, so the check counts
    the slots certainly inside [lo, lo + window) for every slot's lower bound
    lo; it also requires the schedule to be as long as ``limit`` allows.
    """
    eps = 1e-5
    bounds = sorted((before + wait, after + wait) for before, after, wait in records)
    for start, _ in bounds:
        inside = [lo for lo, hi in bounds if lo >= start and hi < start + window - eps]
        assert len(inside) <= limit, f"{len(inside)} slots within one window"

    span = max(hi for _, hi in bounds) - min(lo for lo, _ in bounds)
    assert span >= (len(bounds) - 1) // limit * window - eps


def test_reserve_gives_limit_free_slots_then_spaces_the_rest(store: Store) -> None:
    """The first ``limit`` calls go at once; later ones wait window by window."""
    records = [reserve_timed(store, "api:send", 3, 1.0) for _ in range(10)]
    waits = [wait for _, _, wait in records]

    assert waits[:3] == [0.0, 0.0, 0.0]
    assert all(wait > 0 for wait in waits[3:])
    for index, wait in enumerate(waits):
        assert wait <= index // 3 * 1.0 + 1e-5, "waited longer than needed"
    assert_at_most_limit_per_window(records, 3, 1.0)


def test_reserve_frees_slots_once_the_window_has_passed(store: Store) -> None:
    """After a quiet window, the bucket lets ``limit`` calls through again."""
    assert [store.reserve("b", 2, 0.2) for _ in range(2)] == [0.0, 0.0]
    time.sleep(0.4)
    assert [store.reserve("b", 2, 0.2) for _ in range(2)] == [0.0, 0.0]


def test_reserve_buckets_are_independent(store: Store) -> None:
    """Filling one bucket does not delay another."""
    store.reserve("a", 1, 10.0)
    assert store.reserve("a", 1, 10.0) > 0
    assert store.reserve("b", 1, 10.0) == 0.0


# --- processes --------------------------------------------------------------


def _child(
    target: Callable[..., Any], barrier: Any, results: Any, index: int, args: tuple
) -> None:
    try:
        barrier.wait(timeout=60)
        results.put((index, "ok", target(index, *args)))
    except BaseException:
        results.put((index, "error", traceback.format_exc()))


def run_in_processes(count: int, target: Callable[..., Any], *args: Any) -> list:
    """Run ``target(index, *args)`` in ``count`` forked processes at once."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    processes = [
        ctx.Process(target=_child, args=(target, barrier, results, i, args))
        for i in range(count)
    ]
    for process in processes:
        process.start()

    outcomes = sorted(results.get(timeout=90) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    errors = [detail for _, status, detail in outcomes if status != "ok"]
    assert not errors, errors[0]
    return [value for _, _, value in outcomes]


def _claim_shuffled_keys(index: int, spec: Spec) -> list[str]:
    store = open_spec(spec)
    keys = [f"dedupe:robot:m{i}" for i in range(50)]
    random.Random(index).shuffle(keys)
    return [key for key in keys if store.claim(key, 60)]


def _hold_lock_repeatedly(index: int, spec: Spec) -> list[tuple[float, float]]:
    store = open_spec(spec)
    held = []
    for _ in range(5):
        with store.lock("token:legacy", ttl=30, wait=60):
            entered = time.monotonic()
            time.sleep(0.01)
            held.append((entered, time.monotonic()))
    return held


def _reserve_repeatedly(index: int, spec: Spec) -> list[Timed]:
    store = open_spec(spec)
    return [reserve_timed(store, "api:notice", 5, 0.5) for _ in range(10)]


def test_processes_claim_each_key_exactly_once(spec: Spec) -> None:
    """8 processes claiming the same 50 keys win each key exactly once overall."""
    winners = run_in_processes(8, _claim_shuffled_keys, spec)

    counts = Counter(key for won in winners for key in won)
    assert set(counts) == {f"dedupe:robot:m{i}" for i in range(50)}
    assert set(counts.values()) == {1}


def test_processes_never_hold_a_lock_together(spec: Spec) -> None:
    """Lock holdings in 4 contending processes never overlap in time."""
    runs = run_in_processes(4, _hold_lock_repeatedly, spec)
    holdings = sorted(holding for held in runs for holding in held)

    assert len(holdings) == 20
    for (_, left), (entered, _) in zip(holdings, holdings[1:]):
        assert entered >= left, "two processes held the lock at once"


def test_processes_reserving_together_keep_to_the_limit(spec: Spec) -> None:
    """Slots reserved concurrently by 4 processes put ≤ limit in any window."""
    runs = run_in_processes(4, _reserve_repeatedly, spec)
    records = [record for run in runs for record in run]

    assert sum(wait == 0.0 for _, _, wait in records) >= 5
    assert_at_most_limit_per_window(records, 5, 0.5)


def _connection_of(store: SQLiteStore | RedisStore) -> object:
    # White-box on purpose: whether the child reuses the parent's connection
    # has no other reliable symptom until the file or a reply gets mixed up.
    return store._connection() if isinstance(store, SQLiteStore) else store._redis()


def test_connection_opened_before_fork_is_not_reused_in_child(
    store: SQLiteStore | RedisStore,
) -> None:
    """A forked child opens its own connection and works alongside the parent."""
    assert store.claim("before-fork", 60)
    parent_connection = _connection_of(store)

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fresh = _connection_of(store) is not parent_connection
            claimed = store.claim("from-child", 60)
            worked = claimed and not store.claim("before-fork", 60)
            code = 0 if fresh and worked else 2
        finally:
            os._exit(code)

    assert store.claim("from-parent", 60)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.claim("from-child", 60) is False
    assert _connection_of(store) is parent_connection


# --- backend choice and failures --------------------------------------------


def test_open_store_uses_sqlite_in_data_dir_without_redis_url(tmp_path: Path) -> None:
    """Without a Redis URL the store is a SQLite file created in the data dir."""
    store = open_store(None, tmp_path / "missing" / "dir")
    assert isinstance(store, SQLiteStore)
    store.ping()
    assert (tmp_path / "missing" / "dir" / "state.sqlite3").is_file()
    store.close()


def test_open_store_uses_redis_when_a_url_is_given(tmp_path: Path) -> None:
    """A Redis URL selects the Redis store, without connecting yet."""
    store = open_store("redis://:pw@127.0.0.1:1/0", tmp_path)
    assert isinstance(store, RedisStore)
    assert not list(tmp_path.iterdir())


def test_unreachable_redis_is_unavailable_without_showing_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead Redis raises StateUnavailableError that never shows the URL."""
    caplog.set_level(logging.DEBUG)
    store = RedisStore("redis://:hunter2-secret@127.0.0.1:1/0")

    with pytest.raises(StateUnavailableError) as caught:
        store.claim("k", 60)

    assert isinstance(caught.value, UpstreamError) and caught.value.retryable
    assert "REDIS_URL" in str(caught.value)
    shown = "".join(traceback.format_exception(caught.value)) + caplog.text
    assert "hunter2-secret" not in shown + repr(store)


def test_malformed_redis_url_is_a_config_error_that_hides_it() -> None:
    """A URL with the wrong scheme is refused at once, without echoing it."""
    with pytest.raises(ConfigError) as caught:
        RedisStore("http://user:hunter2-secret@example")
    assert caught.value.setting == "REDIS_URL"
    assert "hunter2-secret" not in str(caught.value)


def test_unusable_data_dir_is_unavailable(tmp_path: Path) -> None:
    """A data dir that cannot be created raises StateUnavailableError."""
    (tmp_path / "file").write_text("not a directory")
    store = SQLiteStore(tmp_path / "file" / "state.sqlite3")
    with pytest.raises(StateUnavailableError, match="DINGBOT_DATA_DIR"):
        store.ping()


def test_expired_rows_are_purged_from_the_file(tmp_path: Path) -> None:
    """A write after the purge interval deletes expired rows from SQLite."""
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path, purge_interval=0.1)
    for i in range(20):
        store.claim(f"k{i}", 0.1)
    time.sleep(0.3)
    store.claim("fresh", 60)
    store.close()

    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("SELECT key FROM kv").fetchall() == [("fresh",)]


def _open_and_claim(index: int, path: str) -> bool:
    return SQLiteStore(Path(path)).claim(f"k{index}", 60)


def test_processes_creating_the_file_together_all_succeed(tmp_path: Path) -> None:
    """Workers starting at once on a new data dir all get a working store."""
    for attempt in range(5):
        path = str(tmp_path / f"run{attempt}" / "state.sqlite3")
        assert run_in_processes(8, _open_and_claim, path) == [True] * 8
