"""Work notices: batching, size check, results, recall, token errors, fan-out pace."""

from __future__ import annotations

import threading

import pytest

from bot.dingtalk import CallerError, DingTalkClient, ThrottledError
from bot.messages import MessageError, markdown, text
from bot.simulator import StandIn
from bot.state.sqlite import SQLiteStore
from tests.dingtalk_kit import AGENT_ID, make_client, standin, store

SEND = "/topapi/message/corpconversation/asyncsend_v2"


def notices_client(server: StandIn, store: SQLiteStore, **options) -> DingTalkClient:
    """A client with this file's timeout and retry count; ``options`` override."""
    return make_client(server, store, timeout=(2.0, 5.0), max_attempts=4, **options)


@pytest.fixture
def client(standin, store):
    standin.reset()
    return notices_client(standin, store)


def ok_sends(server: StandIn) -> list:
    return [c for c in server.calls_to(SEND) if c.response.get("errcode") == 0]


def test_users_are_sent_in_batches_of_100_with_progress(client, standin):
    """250 users take three calls; progress reports users done of the total."""
    users = [f"user{i:03d}" for i in range(250)]
    seen: list[tuple[int, int]] = []

    task_ids = client.notices.send(
        "maintenance at 22:00", user_ids=users,
        progress=lambda done, total: seen.append((done, total)))

    calls = standin.calls_to(SEND)
    assert [len(c.body["userid_list"].split(",")) for c in calls] == [100, 100, 50]
    assert seen == [(100, 250), (200, 250), (250, 250)]
    assert len(task_ids) == 3 and all(isinstance(t, int) for t in task_ids)
    assert calls[0].body["agent_id"] == AGENT_ID
    assert calls[0].body["msg"] == {"msgtype": "text",
                                    "text": {"content": "maintenance at 22:00"}}


def test_departments_are_sent_in_batches_of_20(client, standin):
    """45 departments take three calls of at most 20 ids."""
    client.notices.send("all hands", dept_ids=list(range(1, 46)))

    calls = standin.calls_to(SEND)
    assert [len(c.body["dept_id_list"].split(",")) for c in calls] == [20, 20, 5]


def test_everyone_is_one_call(client, standin):
    """to_all sends one call with to_all_user set."""
    (task_id,) = client.notices.send(markdown("Notice", "**hello**"), to_all=True)

    (call,) = standin.calls_to(SEND)
    assert call.body["to_all_user"] is True
    assert call.response["task_id"] == task_id


def test_oversized_msg_is_refused_before_sending(client, standin):
    """A msg over 2048 bytes raises MessageError and nothing is sent."""
    with pytest.raises(MessageError):
        client.notices.send("字" * 700, user_ids=["zhangsan"])

    assert standin.calls == []


def test_no_recipients_is_a_caller_error(client, standin):
    """Sending to nobody raises instead of calling DingTalk."""
    with pytest.raises(CallerError, match="no recipients"):
        client.notices.send("hello")


def test_bad_agent_id_is_reported_once_and_not_retried(standin, store):
    """A wrong agent id (40035) raises CallerError after a single call."""
    standin.reset()
    client = notices_client(standin, store, agent_id=999)

    with pytest.raises(CallerError) as caught:
        client.notices.send("hello", user_ids=["zhangsan"])

    assert caught.value.errcode == 40035
    assert caught.value.api == SEND
    assert len(standin.calls_to(SEND)) == 1


def test_result_surfaces_invalid_forbidden_and_unread_users(client, standin):
    """getsendresult's lists come back as a SendResult."""
    standin.forbid(["lisi"], code=143105)
    (task_id,) = client.notices.send("hi", user_ids=["zhangsan", "lisi", "ghost"])

    result = client.notices.result(task_id)

    assert "ghost" in result.invalid
    assert "lisi" in result.flow_controlled
    assert [(f.user_id, f.code) for f in result.forbidden] == [("lisi", 143105)]
    assert "zhangsan" in result.read + result.unread
    assert result.undelivered


def test_progress_and_recall(client, standin):
    """A task's progress can be read and the task recalled; unknown tasks fail."""
    (task_id,) = client.notices.send("oops", user_ids=["zhangsan"])

    assert client.notices.progress(task_id).done
    client.notices.recall(task_id)
    with pytest.raises(CallerError) as caught:
        client.notices.recall(123456789)
    assert caught.value.errcode == 400002


def test_revoked_token_is_refetched_once_and_notice_sent_once(client, standin):
    """After revocation one refetch happens and the notice goes out exactly once."""
    client.notices.send("warm up", user_ids=["zhangsan"])
    fetches = standin.token_fetches
    standin.clear_calls()
    standin.revoke_tokens()

    client.notices.send("after revoke", user_ids=["zhangsan"])

    assert standin.token_fetches == fetches + 1
    assert [c.response["errcode"] for c in standin.calls_to(SEND)] == [40014, 0]


def test_fan_out_under_concurrency_stays_within_the_rate_limit(client, standin):
    """3 threads x 1000 users at qps 20: no throttling reaches callers, <= 20/s."""
    standin.set_qps_limit(20)
    errors: list[BaseException] = []
    client.notices.send("warm up", user_ids=["zhangsan"])  # token fetched once

    def fan_out(offset: int) -> None:
        users = [f"user{offset + i:05d}" for i in range(1000)]
        try:
            client.notices.send(text(f"batch {offset}"), user_ids=users)
        except ThrottledError as exc:  # pragma: no cover - the failure we look for
            errors.append(exc)

    threads = [threading.Thread(target=fan_out, args=(n * 1000,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    arrivals = sorted(c.at for c in standin.calls_to(SEND))
    assert errors == []
    assert len(ok_sends(standin)) == 31
    # Pacing, not the stand-in's refusals, kept the rate: every arrival counts.
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0)
                  for start in arrivals)
    assert busiest <= 20
    assert outcomes_other_than_ok(standin) == []


def outcomes_other_than_ok(server: StandIn) -> list:
    return [c.response.get("errcode") for c in server.calls_to(SEND)
            if c.response.get("errcode") != 0]
