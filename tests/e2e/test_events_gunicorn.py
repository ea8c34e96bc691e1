"""Event callbacks end to end: gunicorn from the Procfile, a slow handler, a crash.

The bot runs as the Procfile's ``web:`` line with two workers, its DingTalk
is the stand-in, and its only event handler (``tests/e2e/slowplugin.py``)
takes 2 s and writes what it did to a file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from bot.inbound.cipher import CallbackCipher
from tests.conftest import APP_KEY, APP_SECRET
from tests.e2e.server import Gunicorn

pytestmark = pytest.mark.e2e

TOKEN = "e2eEventToken"
AES_KEY = "e2eKeyabcdefghijklmnopqrstuvwxyz0123456789A"


@pytest.fixture
def out_file(tmp_path: Path) -> Path:
    return tmp_path / "handled.txt"


@pytest.fixture
def bot_env(tmp_path: Path, standin, out_file: Path) -> dict[str, str]:
    standin.reset()
    return {
        "DINGTALK_APP_KEY": APP_KEY,
        "DINGTALK_APP_SECRET": APP_SECRET,
        "DINGTALK_AGENT_ID": "1001",
        "DINGTALK_OAPI_URL": standin.url,
        "DINGTALK_API_URL": standin.url,
        "DINGTALK_CALLBACK_TOKEN": TOKEN,
        "DINGTALK_CALLBACK_AES_KEY": AES_KEY,
        "DINGBOT_DATA_DIR": str(tmp_path / "data"),
        "DINGBOT_PLUGINS": "e2e.slowplugin",
        "SLOWPLUGIN_OUT": str(out_file),
        "SLOWPLUGIN_SECONDS": "2",
        "LOG_LEVEL": "INFO",
    }


CIPHER = CallbackCipher(TOKEN, AES_KEY, APP_KEY)


def push(url: str, payload: dict) -> tuple[requests.Response, float]:
    """POST ``payload`` as an encrypted event; return the response and its seconds."""
    sealed = CIPHER.seal(json.dumps(payload))
    query = {"msg_signature": sealed["msg_signature"],
             "timeStamp": sealed["timeStamp"], "nonce": sealed["nonce"]}
    started = time.perf_counter()
    response = requests.post(f"{url}/dingtalk/events", params=query,
                             json={"encrypt": sealed["encrypt"]}, timeout=10)
    return response, time.perf_counter() - started


def acked(response: requests.Response) -> bool:
    body = response.json()
    return response.status_code == 200 and CIPHER.open(
        signature=body["msg_signature"], timestamp=body["timeStamp"],
        nonce=body["nonce"], encrypt=body["encrypt"]) == "success"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for_line(path: Path, line: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while line not in lines(path):
        assert time.monotonic() < deadline, f"{line!r} never appeared"
        time.sleep(0.05)


def test_the_ack_comes_at_once_and_the_slow_handler_finishes_later(
    bot_env, tmp_path, out_file
) -> None:
    """The ack returns well under 1 s; the 2 s handler's effect shows after."""
    with Gunicorn(bot_env, tmp_path / "gunicorn.log") as bot:
        # Warm both workers (imports, first connections) with URL checks.
        for _ in range(4):
            assert acked(push(bot.url, {"EventType": "check_url"})[0])

        slow = {"EventType": "e2e_slow", "eventId": "slow-1"}
        response, seconds = push(bot.url, slow)
        assert acked(response)
        assert seconds < 1.0
        assert "done slow-1" not in lines(out_file)

        wait_for_line(out_file, "done slow-1")
        again, _ = push(bot.url, slow)
        assert acked(again)
        time.sleep(1.0)
    assert lines(out_file) == ["start slow-1", "done slow-1"]


def test_an_event_acked_just_before_a_crash_is_handled_once_after_restart(
    bot_env, tmp_path, out_file
) -> None:
    """SIGKILL right after the ack loses nothing: the restart runs it, once."""
    log = tmp_path / "gunicorn.log"
    first = Gunicorn(bot_env, log).start()
    try:
        response, _ = push(first.url, {"EventType": "e2e_slow", "eventId": "crash-1"})
        assert acked(response)
    finally:
        first.kill()
    assert "done crash-1" not in lines(out_file)

    with Gunicorn(bot_env, log):
        wait_for_line(out_file, "done crash-1")
        # Both new workers swept at start; give a second run time to show.
        time.sleep(3.0)
    assert lines(out_file).count("done crash-1") == 1
