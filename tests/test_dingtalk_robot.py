"""Robot sends: session webhook, robot OpenAPI fallback, custom group webhooks."""

from __future__ import annotations

import hashlib
import logging
import time

import pytest

from bot.dingtalk import (
    CallerError,
    DingTalkClient,
    GroupWebhook,
    SessionExpiredError,
    WebhookThrottledError,
)
from bot.dingtalk.http import Transport
from bot.dingtalk.robot import sign
from bot.messages import markdown, text
from tests.dingtalk_kit import APP_KEY, make_client, open_standin, store

ROBOT_CODE = "dingtestkey"
HOOK_TOKEN, HOOK_SECRET = "hooktoken", "SECtestsecret"
GROUP_SEND = "/v1.0/robot/groupMessages/send"
BATCH_SEND = "/v1.0/robot/oToMessages/batchSend"


@pytest.fixture(scope="module")
def standin():
    with open_standin(webhook_secrets={HOOK_TOKEN: HOOK_SECRET}) as server:
        yield server


@pytest.fixture
def client(standin, store):
    standin.reset()
    return make_client(standin, store, robot_code=ROBOT_CODE, timeout=(2.0, 2.0),
                       max_attempts=3)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_custom_robot_sign_matches_vector_h2():
    """The URL-encoded sign for ts 1577262236757 and SECtestsecret is pinned (H2)."""
    assert sign("SECtestsecret", 1577262236757) == (
        "1k%2Fk1M3fRj7XwNQ2bXM74cujS%2F8uiygr8ao50v6pkzg%3D")


def test_session_webhook_reply_posts_the_webhook_body(client, standin):
    """A valid session webhook receives the message's webhook shape."""
    url, expires_at_ms = standin.session_webhook("s-ok", expires_in=5400)

    client.robot.send_session(text("deploy done"), url, expires_at_ms)

    assert standin.session_messages("s-ok") == [
        {"msgtype": "text", "text": {"content": "deploy done"}}]


def test_expired_session_raises_without_calling(client, standin):
    """A past expiry raises SessionExpiredError and sends nothing."""
    url, _ = standin.session_webhook("s-old", expires_in=5400)

    with pytest.raises(SessionExpiredError):
        client.robot.send_session("late", url, now_ms() - 1)

    assert standin.session_messages("s-old") == []
    assert standin.calls == []


def test_reply_uses_the_session_webhook_while_valid(client, standin):
    """reply() goes through the session webhook and not the OpenAPI when it can."""
    url, expires_at_ms = standin.session_webhook("s-valid", expires_in=5400)

    client.robot.reply("pong", session_webhook=url, expires_at_ms=expires_at_ms,
                       conversation_id="cidGroup", conversation_type="2",
                       staff_id="u1")

    assert len(standin.session_messages("s-valid")) == 1
    assert standin.calls_to(GROUP_SEND) == []


def test_reply_falls_back_to_group_send_after_expiry(client, standin):
    """An expired webhook in a group falls back to groupMessages/send."""
    url, _ = standin.session_webhook("s-exp-group", expires_in=5400)

    client.robot.reply(markdown("Deploy", "**done**"), session_webhook=url,
                       expires_at_ms=now_ms() - 1000, conversation_id="cidGroup",
                       conversation_type="2", staff_id="u1")

    (call,) = standin.calls_to(GROUP_SEND)
    assert call.body["robotCode"] == ROBOT_CODE
    assert call.body["openConversationId"] == "cidGroup"
    assert call.body["msgKey"] == "sampleMarkdown"
    assert standin.session_messages("s-exp-group") == []


def test_reply_falls_back_to_one_to_one_send_in_a_direct_chat(client, standin):
    """An expired webhook in a direct chat sends to the sender by staff id."""
    client.robot.reply("pong", session_webhook=None, expires_at_ms=None,
                       conversation_id="cidDirect", conversation_type="1",
                       staff_id="manager01")

    (call,) = standin.calls_to(BATCH_SEND)
    assert call.body["userIds"] == ["manager01"]
    assert call.body["msgKey"] == "sampleText"


def test_direct_reply_without_staff_id_fails_clearly(client, standin):
    """With no webhook and no staff id there is no route; the error says so."""
    with pytest.raises(CallerError, match="staff id"):
        client.robot.reply("pong", session_webhook=None, expires_at_ms=None,
                           conversation_id="cidDirect", conversation_type="1",
                           staff_id="")


def test_batch_send_splits_into_twenties(client, standin):
    """45 users take three batchSend calls of at most 20 ids each."""
    users = [f"user{i:03d}" for i in range(45)]

    results = client.robot.send_to_users("hello", users)

    calls = standin.calls_to(BATCH_SEND)
    assert [len(c.body["userIds"]) for c in calls] == [20, 20, 5]
    assert [u for c in calls for u in c.body["userIds"]] == users
    assert len(results) == 3


def hook(client: DingTalkClient, **kwargs) -> GroupWebhook:
    return client.group_webhook(HOOK_TOKEN, HOOK_SECRET, **kwargs)


def test_group_webhook_signs_each_request(client, standin):
    """Each post carries a fresh timestamp and a sign the stand-in accepts."""
    webhook = hook(client)

    webhook.send("one")
    time.sleep(0.01)
    webhook.send("two")

    calls = standin.calls_to("/robot/send")
    assert [c.response["errcode"] for c in calls] == [0, 0]
    assert calls[0].query["timestamp"] != calls[1].query["timestamp"]
    assert all(c.body["msgUuid"] for c in calls)


def test_group_webhook_accepts_a_full_url(client, standin, store):
    """A full webhook URL works the same as a bare token."""
    webhook = GroupWebhook(f"{standin.url}/robot/send?access_token={HOOK_TOKEN}",
                           HOOK_SECRET, store=store)

    webhook.send("via url")

    assert standin.calls_to("/robot/send")[0].response["errcode"] == 0


def test_group_webhook_budget_key_hides_the_token(client):
    """The shared minute budget is keyed by a hash, never the token itself."""
    webhook = hook(client)

    assert webhook.budget.bucket == "hook:" + hashlib.sha256(
        HOOK_TOKEN.encode()).hexdigest()[:16]
    assert (webhook.budget.limit, webhook.budget.window) == (20, 60.0)
    assert HOOK_TOKEN not in repr(webhook) and HOOK_SECRET not in repr(webhook)


def test_bad_secret_is_reported_as_a_sign_problem(client, standin, caplog):
    """310000 becomes a CallerError naming the cause, without the secret."""
    webhook = client.group_webhook(HOOK_TOKEN, "SECwrongsecret")
    caplog.set_level(logging.DEBUG)

    with pytest.raises(CallerError, match="signature does not match") as caught:
        webhook.send("hello")

    assert caught.value.errcode == 310000
    assert len(standin.calls_to("/robot/send")) == 1  # not retried
    for secret in ("SECwrongsecret", HOOK_TOKEN):
        assert secret not in str(caught.value) and secret not in caplog.text


def test_throttled_webhook_waits_the_penalty_and_keeps_its_msg_uuid(client, standin):
    """130101 waits the penalty once, then resends with the same msgUuid."""
    standin.fail("/robot/send", 1, errcode=130101)
    webhook = hook(client, penalty_seconds=0.05)
    started = time.monotonic()

    webhook.send("page the oncall")

    calls = standin.calls_to("/robot/send")
    assert [c.response["errcode"] for c in calls] == [130101, 0]
    assert calls[0].body["msgUuid"] == calls[1].body["msgUuid"]
    assert time.monotonic() - started >= 0.05


def test_webhook_throttled_beyond_the_retries_raises(client, standin):
    """A robot still throttled after its penalty wait raises WebhookThrottledError."""
    standin.fail("/robot/send", 2, errcode=410100)
    webhook = hook(client, penalty_seconds=0.01)

    with pytest.raises(WebhookThrottledError):
        webhook.send("page the oncall")

    assert len(standin.calls_to("/robot/send")) == 2


def test_webhook_minute_budget_is_shared_between_processes(store):
    """Two senders on one Store share 20 a minute: the 21st waits about a minute."""
    with open_standin(webhook_secrets={"hook2": HOOK_SECRET}) as server:
        pauses: list[float] = []
        transport = Transport(app_key=APP_KEY, store=store, sleep=pauses.append)
        senders = [GroupWebhook("hook2", HOOK_SECRET, store=store, transport=transport,
                                oapi_url=server.url, penalty_retries=0)
                   for _ in range(2)]
        for n in range(20):
            senders[n % 2].send(f"message {n}")
        assert pauses == []

        # The pause is only recorded, so the stand-in sees a 21st message
        # within the minute and throttles it, as DingTalk would.
        with pytest.raises(WebhookThrottledError):
            senders[0].send("one too many")

    assert len(pauses) == 1 and 55.0 < pauses[0] <= 60.0
