"""The robot route end to end: gunicorn from the Procfile, the stand-in over HTTP."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bot.simulator.robot import robot_message, signed_request
from tests.conftest import APP_KEY, APP_SECRET
from tests.e2e.server import ROOT, Gunicorn, procfile_web_command

pytestmark = pytest.mark.e2e


@pytest.fixture
def bot_env(tmp_path, standin) -> dict[str, str]:
    standin.reset()
    return {
        "DINGTALK_APP_KEY": APP_KEY,
        "DINGTALK_APP_SECRET": APP_SECRET,
        "DINGTALK_AGENT_ID": "1001",
        "DINGTALK_OAPI_URL": standin.url,
        "DINGTALK_API_URL": standin.url,
        "DINGBOT_DATA_DIR": str(tmp_path / "data"),
        "DINGBOT_PLUGINS": "e2e.robotplugin",
        "DINGBOT_REPLY_BUDGET": "0.5",
        "LOG_LEVEL": "INFO",
    }


def send(url: str, text: str, **fields) -> requests.Response:
    headers, raw = signed_request(APP_SECRET, robot_message(text, **fields))
    return requests.post(f"{url}/dingtalk/robot", headers=headers, data=raw, timeout=10)


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_ping_through_gunicorn_answers_pong(bot_env, tmp_path):
    """The Procfile's gunicorn answers a signed ping with pong."""
    with Gunicorn(bot_env, tmp_path / "gunicorn.log") as bot:
        response = send(bot.url, "ping")
        assert response.status_code == 200
        assert response.json() == {"msgtype": "text", "text": {"content": "pong"}}


def test_one_msg_id_is_answered_once_across_workers(bot_env, tmp_path):
    """20 concurrent copies of one msgId over 2 workers: exactly one pong."""
    body = robot_message("ping", msg_id="same-message-everywhere")
    headers, raw = signed_request(APP_SECRET, body)
    with Gunicorn(bot_env, tmp_path / "gunicorn.log", workers=2) as bot:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(
                lambda _: requests.post(f"{bot.url}/dingtalk/robot", headers=headers,
                                        data=raw, timeout=10).json(),
                range(20)))
    pongs = [a for a in answers if a.get("msgtype") == "text"]
    assert len(pongs) == 1
    assert answers.count({"msgtype": "empty"}) == 19


def test_slow_handler_answers_later_through_the_session_webhook(bot_env, tmp_path, standin):
    """A 2 s handler gets 'empty' at once and its answer via the session webhook."""
    url, expires = standin.session_webhook("slow-1")
    with Gunicorn(bot_env, tmp_path / "gunicorn.log") as bot:
        started = time.monotonic()
        response = send(bot.url, "slow 2", session_webhook=url,
                        session_webhook_expires_at=expires)
        elapsed = time.monotonic() - started
        assert response.json() == {"msgtype": "empty"}
        assert elapsed < 1.9  # returned before the handler finished
        messages = wait_for(lambda: standin.session_messages("slow-1"))
    assert messages == [{"msgtype": "text", "text": {"content": "done after 2s"}}]


def test_sigterm_lets_an_in_flight_handler_deliver_its_answer(bot_env, tmp_path, standin):
    """Graceful shutdown waits for the pool: the late answer still goes out."""
    url, expires = standin.session_webhook("term-1")
    bot = Gunicorn(bot_env, tmp_path / "gunicorn.log").start()
    try:
        assert send(bot.url, "slow 2", session_webhook=url,
                    session_webhook_expires_at=expires).json() == {"msgtype": "empty"}
        assert bot.stop() == 0
    finally:
        bot.kill()
    assert standin.session_messages("term-1") == [
        {"msgtype": "text", "text": {"content": "done after 2s"}}]
    assert "Logging error" not in bot.output()


def test_expired_session_webhook_falls_back_to_the_robot_openapi(bot_env, tmp_path, standin):
    """With the webhook expired, the late answer goes through groupMessages/send."""
    url, _ = standin.session_webhook("old-1")
    with Gunicorn(bot_env, tmp_path / "gunicorn.log") as bot:
        send(bot.url, "slow 1", session_webhook=url,
             session_webhook_expires_at=int(time.time() * 1000) - 1000,
             conversation_id="cidOps")
        calls = wait_for(lambda: standin.calls_to("/v1.0/robot/groupMessages/send"))
    assert len(calls) == 1
    assert calls[0].body["openConversationId"] == "cidOps"
    assert standin.session_messages("old-1") == []


def test_missing_secret_stops_gunicorn_with_one_line(bot_env, tmp_path):
    """Without DINGTALK_APP_SECRET gunicorn exits at once naming the setting."""
    env = dict(Gunicorn(bot_env, tmp_path / "x.log").env, DINGTALK_APP_SECRET="")
    result = subprocess.run(["bash", "-c", "exec " + procfile_web_command()], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "dingbot:" in line]
    assert errors == [
        "dingbot: configuration error: DINGTALK_APP_SECRET is empty; set it in the "
        "service environment (or dingtalk.app_secret in the config file) and restart"]
    assert "Traceback" not in result.stderr


def test_no_secret_reaches_the_logs(bot_env, tmp_path, standin):
    """After good and bad traffic, the log holds no app secret or signature."""
    log_path = tmp_path / "gunicorn.log"
    headers, raw = signed_request(APP_SECRET, robot_message("ping"))
    with Gunicorn(bot_env, log_path) as bot:
        requests.post(f"{bot.url}/dingtalk/robot", headers=headers, data=raw, timeout=10)
        send(bot.url, "whoami")
        bad = dict(headers, sign="A" * 44)
        assert requests.post(f"{bot.url}/dingtalk/robot", headers=bad, data=raw,
                             timeout=10).status_code == 401
    text = log_path.read_text()
    assert APP_SECRET not in text
    assert headers["sign"] not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line.get("outcome") == "answered" for line in lines)
