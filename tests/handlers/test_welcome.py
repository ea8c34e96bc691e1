"""The welcome handler, loaded as a built-in, against the stand-in over HTTP.

Events arrive as real encrypted callbacks through the Flask app; the work
notice goes to the stand-in's asyncsend_v2.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot.config import Secret
from bot.inbound.cipher import CallbackCipher
from bot.inbound.events import parse_event
from bot.plugins import load_plugins
from bot.web import create_app
from tests.conftest import APP_KEY, make_settings

SEND = "/topapi/message/corpconversation/asyncsend_v2"
TOKEN = "welcomeToken1"
AES_KEY = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
WELCOME = "欢迎加入! Welcome aboard."

APP_ADD = {"EventType": "user_add_org", "EventTime": 1700000000000,
           "CorpId": "dingcorp", "eventId": "evt-join-1",
           "userId": ["user001", "user002"]}
LEGACY_ADD = {"EventType": "user_add_org", "TimeStamp": 43535463645,
              "UserId": ["user001", "user002"], "CorpId": "dingcorp"}


def events_app(tmp_path, standin, welcome_text: str) -> Iterator[Any]:
    standin.reset()
    settings = make_settings(
        tmp_path, oapi_url=standin.url, api_url=standin.url,
        callback_token=Secret(TOKEN), callback_aes_key=Secret(AES_KEY),
        welcome_text=welcome_text,
    )
    app = create_app(settings)
    yield app
    app.extensions["dingbot.events"].close()
    app.extensions["dingbot"].pool.shutdown(wait=True)


@pytest.fixture
def welcoming_app(tmp_path, standin) -> Iterator[Any]:
    yield from events_app(tmp_path, standin, WELCOME)


@pytest.fixture
def silent_app(tmp_path, standin) -> Iterator[Any]:
    yield from events_app(tmp_path, standin, "")


def deliver(app, payload: dict) -> str:
    """Push ``payload`` as DingTalk would; wait until handled; return its state."""
    reply = CallbackCipher(TOKEN, AES_KEY, APP_KEY).seal(json.dumps(payload))
    response = app.test_client().post(
        "/dingtalk/events",
        query_string={"msg_signature": reply["msg_signature"],
                      "timeStamp": reply["timeStamp"], "nonce": reply["nonce"]},
        json={"encrypt": reply["encrypt"]},
    )
    assert response.status_code == 200

    inbox = app.extensions["dingbot.events"].inbox
    event_id = parse_event(json.dumps(payload)).id
    deadline = time.monotonic() + 20
    while inbox.get(event_id).state == "pending":
        assert time.monotonic() < deadline, "the event was not handled in time"
        time.sleep(0.02)
    return inbox.get(event_id).state


def test_welcome_is_a_built_in_plugin() -> None:
    """The welcome plugin loads without being named in DINGBOT_PLUGINS."""
    assert "welcome" in [plugin.name for plugin in load_plugins(entry_point_group=None)]


@pytest.mark.parametrize("payload", [APP_ADD, LEGACY_ADD], ids=["app-level", "legacy"])
def test_new_members_get_one_work_notice_with_the_welcome_text(
    welcoming_app, standin, payload
) -> None:
    """One asyncsend_v2 call carries the text to exactly the members who joined."""
    assert deliver(welcoming_app, payload) == "done"

    calls = standin.calls_to(SEND)
    assert len(calls) == 1
    body = calls[0].body
    assert body["agent_id"] == 1001
    assert body["userid_list"] == "user001,user002"
    assert body["msg"] == {"msgtype": "text", "text": {"content": WELCOME}}


def test_no_notice_is_sent_when_no_welcome_text_is_set(silent_app, standin) -> None:
    """Without DINGBOT_WELCOME_TEXT a join event is handled and nothing is sent."""
    assert deliver(silent_app, APP_ADD) == "done"

    assert standin.calls_to(SEND) == []


def test_a_join_event_naming_nobody_sends_nothing(welcoming_app, standin) -> None:
    """An event with no user ids is handled without a call."""
    payload = {**APP_ADD, "eventId": "evt-empty", "userId": []}

    assert deliver(welcoming_app, payload) == "done"
    assert standin.calls_to(SEND) == []
