"""One token fetch for a whole deployment (issue 3), through real gunicorn workers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bot.simulator.robot import robot_message, signed_request
from tests.conftest import APP_KEY, APP_SECRET, REDIS_TEST_URL
from tests.e2e.server import Gunicorn

pytestmark = pytest.mark.e2e

SEND = "/topapi/message/corpconversation/asyncsend_v2"


def _env(standin, tmp_path, **extra: str) -> dict[str, str]:
    return {
        "DINGTALK_APP_KEY": APP_KEY, "DINGTALK_APP_SECRET": APP_SECRET,
        "DINGTALK_AGENT_ID": "1001", "DINGBOT_ADMINS": "admin001",
        "DINGTALK_OAPI_URL": standin.url, "DINGTALK_API_URL": standin.url,
        "DINGBOT_DATA_DIR": str(tmp_path / "data"), "DINGBOT_REPLY_BUDGET": "10",
        **extra,
    }


def _fire(urls: list[str], count: int) -> list[dict]:
    """``count`` concurrent admin `notice` callbacks, spread over ``urls``."""
    def one(i: int) -> dict:
        body = robot_message(f"notice user00{i % 8 + 1} hello {i}",
                             sender_staff_id="admin001")
        headers, raw = signed_request(APP_SECRET, body)
        return requests.post(f"{urls[i % len(urls)]}/dingtalk/robot", headers=headers,
                             data=raw, timeout=30).json()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def _assert_all_sent(answers: list[dict], standin, count: int) -> None:
    texts = [a["text"]["content"] for a in answers]
    assert all(t.startswith("Work notice sent to 1 person") for t in texts), texts
    assert len(standin.calls_to(SEND)) == count


def test_fifty_callbacks_over_four_workers_fetch_one_token_sqlite(standin, tmp_path):
    """SQLite state: 50 concurrent notices across 4 workers, one /gettoken."""
    standin.reset()
    standin.revoke_tokens()  # the next fetch really issues a new token
    before = standin.token_fetches
    with Gunicorn(_env(standin, tmp_path), tmp_path / "g.log", workers=4) as bot:
        answers = _fire([bot.url], 50)
    _assert_all_sent(answers, standin, 50)
    assert standin.token_fetches - before == 1


@pytest.mark.redis
def test_two_deployments_sharing_redis_fetch_one_token(standin, tmp_path):
    """Redis state: two gunicorn masters (2 workers each) share one token."""
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=1).flushdb()
    except redis.RedisError:
        pytest.skip("no Redis server answers at REDIS_TEST_URL")
    standin.reset()
    standin.revoke_tokens()
    before = standin.token_fetches
    env = _env(standin, tmp_path, REDIS_URL=REDIS_TEST_URL)
    with Gunicorn(env, tmp_path / "a.log", workers=2) as first, \
         Gunicorn(dict(env, DINGBOT_DATA_DIR=str(tmp_path / "other")), tmp_path / "b.log",
                  workers=2) as second:
        answers = _fire([first.url, second.url], 50)
    _assert_all_sent(answers, standin, 50)
    assert standin.token_fetches - before == 1
