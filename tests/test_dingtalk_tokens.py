"""Token cache: memory, Store, one fetcher, refresh ahead of expiry, invalidation."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from bot.dingtalk import DingTalkClient, TokenError
from bot.dingtalk.tokens import CachedToken, TokenCache
from bot.state.sqlite import SQLiteStore
from tests.dingtalk_kit import (
    AGENT_ID,
    APP_KEY,
    APP_SECRET,
    make_client,
    standin,
    store,
)


class Issuer:
    """Issues numbered tokens like DingTalk would, counting the fetches."""

    def __init__(self, pause: float = 0.0, lifetime: float = 7200.0) -> None:
        self.fetches = 0
        self.pause = pause
        self.lifetime = lifetime
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, float]:
        time.sleep(self.pause)
        with self._lock:
            self.fetches += 1
            return f"tok-{self.fetches}", self.lifetime


class Clock:
    """A settable clock starting now."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make_cache(store: SQLiteStore, issuer: Issuer, clock: Clock | None = None
               ) -> TokenCache:
    return TokenCache(kind="legacy", app_key="dingtestkey", store=store, fetch=issuer,
                      clock=clock or time.time)


def test_token_is_fetched_once_and_then_served_from_memory(store):
    """Repeated gets reuse the first token without asking DingTalk again."""
    issuer = Issuer()
    cache = make_cache(store, issuer)

    tokens = {cache.get() for _ in range(50)}

    assert tokens == {"tok-1"}
    assert issuer.fetches == 1


def test_token_is_stored_as_json_under_its_app_key(store):
    """The Store holds the token with its expiry, keyed by kind and app key."""
    cache = make_cache(store, Issuer())
    before = time.time()

    cache.get()

    stored = json.loads(store.get("token:legacy:dingtestkey"))
    assert stored["token"] == "tok-1"
    assert before + 7199 <= stored["expires_at"] <= time.time() + 7201
    # Refreshed 5 to 10 minutes early.
    assert 300 <= stored["expires_at"] - stored["refresh_at"] <= 600


def test_other_process_reuses_the_stored_token(store):
    """A second cache on the same Store (another worker) fetches nothing."""
    issuer = Issuer()
    make_cache(store, issuer).get()

    token = make_cache(store, issuer).get()

    assert token == "tok-1"
    assert issuer.fetches == 1


def test_token_is_refreshed_ahead_of_expiry(store):
    """Within ten minutes of expiry the next get fetches a fresh token."""
    issuer, clock = Issuer(), Clock()
    cache = make_cache(store, issuer, clock)
    cache.get()

    clock.now += 7200 - 601
    assert cache.get() == "tok-1"
    clock.now += 301
    assert cache.get() == "tok-2"
    assert issuer.fetches == 2


def test_invalidate_drops_the_failed_token_everywhere(store):
    """Dropping the token that failed makes every worker fetch a new one."""
    issuer = Issuer()
    worker_a, worker_b = make_cache(store, issuer), make_cache(store, issuer)
    worker_a.get()
    worker_b.get()

    worker_a.invalidate("tok-1")

    assert store.get("token:legacy:dingtestkey") is None
    assert worker_a.get() == "tok-2"
    assert worker_b.get() == "tok-1"  # its memory copy until it fails too
    worker_b.invalidate("tok-1")
    assert worker_b.get() == "tok-2"
    assert issuer.fetches == 2


def test_invalidating_a_stale_token_keeps_the_newer_one(store):
    """Many workers failing on one token cause a single refetch."""
    issuer = Issuer()
    workers = [make_cache(store, issuer) for _ in range(5)]
    for worker in workers:
        worker.get()

    for worker in workers:
        worker.invalidate("tok-1")
        assert worker.get() == "tok-2"

    assert issuer.fetches == 2


def test_concurrent_first_gets_fetch_one_token(store):
    """Twenty workers starting together with an empty cache fetch exactly once."""
    issuer = Issuer(pause=0.2)
    workers = [make_cache(store, issuer) for _ in range(20)]
    results: list[str] = []
    threads = [threading.Thread(target=lambda w=w: results.append(w.get()))
               for w in workers]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert results == ["tok-1"] * 20
    assert issuer.fetches == 1


def test_short_lived_token_is_refreshed_before_half_its_life(store):
    """A token living less than the refresh margin is still refreshed early."""
    issuer, clock = Issuer(lifetime=60.0), Clock()
    cache = make_cache(store, issuer, clock)
    cache.get()

    clock.now += 31

    assert cache.get() == "tok-2"


def test_cached_token_repr_hides_the_token():
    """The repr of a cached token shows its expiry, never the token."""
    cached = CachedToken("very-secret-token", 1.0e9, 1.0e9 - 300)

    assert "very-secret-token" not in repr(cached)
    assert CachedToken.loads(cached.dumps()) == cached
    assert CachedToken.loads("{not json") is None


# -- against the stand-in, over real HTTP ---------------------------------------

def test_revoked_v1_token_is_refetched_once(standin, store):
    """HTTP 401 InvalidAuthentication drops the v1.0 token and retries once."""
    standin.reset()
    client = make_client(standin, store)
    client.robot.send_group("first", "cidGroup")
    fetches = standin.token_fetches
    standin.revoke_tokens()

    client.robot.send_group("second", "cidGroup")

    statuses = [c.status for c in standin.calls_to("/v1.0/robot/groupMessages/send")]
    assert statuses == [200, 401, 200]
    assert standin.token_fetches == fetches + 1


def test_token_refused_twice_is_raised(standin, store):
    """When the fresh token is refused too, the TokenError reaches the caller."""
    standin.reset()
    client = make_client(standin, store)
    standin.fail("/topapi/v2/user/get", 2, errcode=40014)

    with pytest.raises(TokenError):
        client.contacts.user("zhangsan")

    assert len(standin.calls_to("/topapi/v2/user/get")) == 2


def test_many_threads_with_an_empty_cache_fetch_one_token(standin, tmp_path):
    """Eight workers (own clients, one Store) starting at once fetch one token."""
    standin.reset()
    store = SQLiteStore(tmp_path / "shared.sqlite3")
    before = standin.token_fetches
    standin.delay(0.2, path="/gettoken")
    clients = [DingTalkClient(
        app_key=APP_KEY, app_secret=APP_SECRET, agent_id=AGENT_ID, robot_code=APP_KEY,
        oapi_url=standin.url, api_url=standin.url, store=store) for _ in range(8)]
    failures: list[BaseException] = []

    def work(client: DingTalkClient) -> None:
        try:
            for _ in range(3):
                client.contacts.user("zhangsan")
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    assert standin.token_fetches - before == 1
    assert len(standin.calls_to("/topapi/v2/user/get")) == 24


def _worker_process(url: str, store_path: str, redis_url: str | None) -> None:
    """Body of one spawned worker: build a client on the shared Store, call once."""
    from bot.state.redisstore import RedisStore

    store = RedisStore(redis_url) if redis_url else SQLiteStore(Path(store_path))
    client = DingTalkClient(
        app_key=APP_KEY, app_secret=APP_SECRET, agent_id=AGENT_ID, robot_code=APP_KEY,
        oapi_url=url, api_url=url, store=store)
    client.contacts.user("zhangsan")


def redis_url_or_skip() -> str:
    from bot.state.redisstore import RedisStore

    url = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
    store = RedisStore(url)
    try:
        store.ping()
    except Exception as exc:  # any failure means: no usable server here
        pytest.skip(f"no Redis server answers at REDIS_TEST_URL ({type(exc).__name__})")
    store.delete(f"token:legacy:{APP_KEY}")
    return url


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_worker_processes_share_one_token_fetch(standin, tmp_path, backend):
    """Four spawned worker processes on one Store fetch a single token."""
    redis_url = redis_url_or_skip() if backend == "redis" else None
    standin.reset()
    standin.delay(0.3, path="/gettoken")  # keep the first fetch in flight a while
    before = standin.token_fetches
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_worker_process,
                             args=(standin.url, str(tmp_path / "s.sqlite3"), redis_url))
               for _ in range(4)]

    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert standin.token_fetches - before == 1
    assert len(standin.calls_to("/topapi/v2/user/get")) == 4
