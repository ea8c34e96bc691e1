"""The durable event inbox, on both backends: dedupe, leases, retries, reclaim.

SQLite runs on a file in tmp_path; Redis on the real server's database 15
(``REDIS_TEST_URL``) under a key prefix of its own per test, so tests in
other files flushing or sharing that database cannot interfere. Time is an
injected clock; "a process that died" is a real subprocess that exited.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bot.inbound.events import Event, parse_event
from bot.inbox import (
    BACKOFF,
    KEEP_DONE,
    LEASE,
    MAX_ATTEMPTS,
    RedisInbox,
    SQLiteInbox,
    backoff_delay,
    owner_is_gone,
    process_owner,
)

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def redis_or_skip() -> redis.Redis:
    """A client on the test database, or skip when no server answers."""
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis server answers at REDIS_TEST_URL")
    return client


@pytest.fixture(params=["sqlite", "redis"])
def spec(request, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """How to open an inbox on one backend (several may share it)."""
    if request.param == "sqlite":
        yield {"kind": "sqlite", "path": tmp_path / "inbox.sqlite3"}
        return

    client = redis_or_skip()
    prefix = f"test-inbox-{uuid.uuid4().hex}:"
    yield {"kind": "redis", "prefix": prefix}
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)


def open_one(spec: dict[str, Any], clock: FakeClock, **options: Any):
    """An inbox on the backend of ``spec``."""
    if spec["kind"] == "sqlite":
        return SQLiteInbox(spec["path"], clock=clock, **options)
    return RedisInbox(REDIS_TEST_URL, prefix=spec["prefix"], clock=clock, **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def inbox(spec: dict[str, Any], clock: FakeClock):
    box = open_one(spec, clock)
    yield box
    box.close()


def make_event(event_id: str = "evt-1", **data: Any) -> Event:
    """An app-level user_add_org event with ``event_id``."""
    return Event("user_add_org", event_id, 1700000000000, "dingcorp",
                 {"userId": ["u1"], **data}, legacy=False)


def test_first_add_is_new_and_second_is_a_duplicate(inbox) -> None:
    """The insert is the dedupe: the same id again is refused."""
    assert inbox.add(make_event("evt-1")) is True
    assert inbox.add(make_event("evt-1")) is False
    assert inbox.add(make_event("evt-2")) is True


def test_duplicates_are_seen_across_inbox_instances(spec, clock) -> None:
    """Two workers' inboxes on one backend agree on what is a duplicate."""
    first, second = open_one(spec, clock), open_one(spec, clock)

    assert first.add(make_event("evt-x")) is True
    assert second.add(make_event("evt-x")) is False


def test_concurrent_adds_of_one_event_admit_exactly_one(spec, clock) -> None:
    """Of many threads adding one id at once, exactly one wins."""
    boxes = [open_one(spec, clock) for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(boxes))

    def add(box) -> None:
        barrier.wait()
        results.append(box.add(make_event("evt-race")))

    threads = [threading.Thread(target=add, args=(box,)) for box in boxes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(results) == [False] * 7 + [True]


def test_a_new_record_is_pending_and_leased_to_this_process(inbox) -> None:
    """add() leaves the record pending with this process as owner."""
    inbox.add(make_event("evt-1"))

    record = inbox.get("evt-1")
    assert record.state == "pending" and record.attempts == 0
    assert record.owner == process_owner()
    assert inbox.get("evt-unknown") is None


def test_a_live_lease_is_not_reclaimed(inbox, clock) -> None:
    """While its lease runs and its owner lives, nobody takes the event."""
    inbox.add(make_event("evt-1"))
    clock.advance(LEASE - 1)

    assert inbox.reclaim() == []


def test_an_expired_lease_is_reclaimed_with_the_whole_event(inbox, clock) -> None:
    """After the lease, reclaim hands the event back exactly as added."""
    event = parse_event(
        '{"EventType":"user_add_org","TimeStamp":43535463645,'
        '"UserId":["user1","用户2"],"CorpId":"dingcorp"}'
    )
    inbox.add(event)
    clock.advance(LEASE + 1)

    assert inbox.reclaim() == [event]
    assert inbox.reclaim() == [], "the reclaim renewed the lease"


def test_reclaim_by_two_processes_hands_an_event_to_one(spec, clock) -> None:
    """Concurrent reclaims never both take the same event."""
    first, second = open_one(spec, clock), open_one(spec, clock)
    first.add(make_event("evt-1"))
    clock.advance(LEASE + 1)

    taken = first.reclaim() + second.reclaim()

    assert [event.id for event in taken] == ["evt-1"]


def test_an_event_of_a_dead_process_is_reclaimed_at_once(spec, clock) -> None:
    """A record leased to a process that has exited is taken without waiting."""
    if spec["kind"] == "sqlite":
        opener = f"SQLiteInbox({str(spec['path'])!r})"
    else:
        opener = f"RedisInbox({REDIS_TEST_URL!r}, prefix={spec['prefix']!r})"
    script = (
        "from bot.inbox import SQLiteInbox, RedisInbox\n"
        "from bot.inbound.events import Event\n"
        f"box = {opener}\n"
        "box.add(Event('user_add_org', 'evt-dead', None, None, {}, legacy=False))\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
    box = open_one(spec, FakeClock(clock.now))

    assert box.get("evt-dead").owner != process_owner()
    assert [event.id for event in box.reclaim()] == ["evt-dead"]
    assert box.get("evt-dead").owner == process_owner()


def test_owner_liveness_checks_pid_and_start_time() -> None:
    """This process is alive; a reused pid, a vanished pid or junk is judged safely."""
    me = process_owner()
    host, pid, start = me.rsplit(":", 2)

    assert not owner_is_gone(me)
    assert owner_is_gone(f"{host}:{pid}:{int(start) + 1}")
    assert owner_is_gone(f"{host}:{2**22 + 12345}:1")
    assert not owner_is_gone(f"some-other-host:{pid}:1")
    assert not owner_is_gone("garbage")


def test_done_events_stay_duplicates_until_purged(inbox, clock) -> None:
    """A done record keeps deduplicating for a week, then goes."""
    inbox.add(make_event("evt-1"))
    inbox.done("evt-1")
    clock.advance(LEASE + 1)

    assert inbox.get("evt-1").state == "done"
    assert inbox.reclaim() == []
    assert inbox.add(make_event("evt-1")) is False

    clock.advance(KEEP_DONE)
    inbox.purge()
    if isinstance(inbox, SQLiteInbox):
        assert inbox.get("evt-1") is None
        assert inbox.add(make_event("evt-1")) is True


def test_redis_done_record_expires_by_ttl(clock) -> None:
    """On Redis a done record carries a TTL of about keep_done, payload dropped."""
    client = redis_or_skip()
    prefix = f"test-inbox-{uuid.uuid4().hex}:"
    box = RedisInbox(REDIS_TEST_URL, prefix=prefix, clock=clock)
    box.add(make_event("evt-1"))
    box.done("evt-1")

    key = prefix + "rec:evt-1"
    try:
        assert 0 < client.pttl(key) <= KEEP_DONE * 1000
        assert client.hget(key, "payload") is None
        assert not client.zscore(prefix + "pending", "evt-1")
    finally:
        client.delete(key, prefix + "pending")


def test_a_failed_event_is_retried_after_a_backoff(inbox, clock) -> None:
    """failed() frees the event only once the backoff has passed."""
    inbox.add(make_event("evt-1"))

    assert inbox.failed("evt-1") is True
    assert inbox.get("evt-1").attempts == 1
    clock.advance(BACKOFF - 1)
    assert inbox.reclaim() == []
    clock.advance(2)
    assert [event.id for event in inbox.reclaim()] == ["evt-1"]


def test_backoff_doubles_up_to_its_cap() -> None:
    """Retry delays double from 30 s and stop at an hour."""
    assert [backoff_delay(n) for n in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert backoff_delay(20) == 3600.0


def test_an_event_failing_every_attempt_dies_with_an_error_line(
    inbox, clock, caplog
) -> None:
    """After max_attempts failures the event is dead, logged at ERROR, kept."""
    inbox.add(make_event("evt-1", secretField="private-payload-marker"))
    caplog.set_level(logging.INFO)

    retries = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        retries.append(inbox.failed("evt-1"))
        clock.advance(backoff_delay(attempt) + 1)
        if attempt < MAX_ATTEMPTS:
            assert len(inbox.reclaim()) == 1

    assert retries == [True] * (MAX_ATTEMPTS - 1) + [False]
    record = inbox.get("evt-1")
    assert record.state == "dead" and record.attempts == MAX_ATTEMPTS
    assert inbox.reclaim() == []
    assert inbox.add(make_event("evt-1")) is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].event_id == "evt-1"
    assert "private-payload-marker" not in caplog.text


def test_deferring_frees_the_event_without_counting_an_attempt(inbox, clock) -> None:
    """defer() makes the event due after the delay, attempts unchanged."""
    inbox.add(make_event("evt-1"))
    inbox.defer("evt-1", 5.0)

    assert inbox.reclaim() == []
    clock.advance(6)
    assert [event.id for event in inbox.reclaim()] == ["evt-1"]
    assert inbox.get("evt-1").attempts == 0


def test_marking_an_unknown_event_changes_nothing(inbox) -> None:
    """done, failed and defer on an unknown id create no record."""
    inbox.done("nope")
    assert inbox.failed("nope") is False
    inbox.defer("nope", 1.0)

    assert inbox.get("nope") is None
    assert inbox.reclaim() == []


def test_reclaim_respects_its_limit(inbox, clock) -> None:
    """One reclaim takes at most ``limit`` events; the rest wait for the next."""
    for number in range(5):
        inbox.add(make_event(f"evt-{number}"))
    clock.advance(LEASE + 1)

    assert len(inbox.reclaim(limit=3)) == 3
    assert len(inbox.reclaim(limit=3)) == 2


def test_sqlite_records_survive_reopening_the_file(tmp_path: Path) -> None:
    """A recorded event is in the file, not only in the connection."""
    clock = FakeClock()
    path = tmp_path / "inbox.sqlite3"
    SQLiteInbox(path, clock=clock).add(make_event("evt-1"))

    reopened = SQLiteInbox(path, clock=clock)
    assert reopened.add(make_event("evt-1")) is False
    assert reopened.get("evt-1").state == "pending"


def test_repr_names_no_redis_url() -> None:
    """The Redis inbox's repr leaves out the URL, which may hold a password."""
    box = RedisInbox("redis://:hunter2-password@127.0.0.1:6379/15")

    assert "hunter2" not in repr(box)
