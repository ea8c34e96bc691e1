"""The notice command against the stand-in over HTTP."""

from __future__ import annotations

from tests.conftest import answer_text, post_robot

SEND = "/topapi/message/corpconversation/asyncsend_v2"


def test_admin_notice_sends_one_work_notice_and_answers_the_task_id(live_client, standin):
    """An admin's notice reaches asyncsend_v2 once with agent id, users and text."""
    response = post_robot(live_client, "notice user001,user002 deploy finished",
                          sender_staff_id="admin001")
    calls = standin.calls_to(SEND)
    assert len(calls) == 1
    body = calls[0].body
    assert body["agent_id"] == 1001
    assert body["userid_list"] == "user001,user002"
    assert body["msg"] == {"msgtype": "text", "text": {"content": "deploy finished"}}
    task_id = calls[0].response["task_id"]
    assert answer_text(response) == f"Work notice sent to 2 people (task id {task_id})."


def test_non_admin_is_refused_and_nothing_is_sent(live_client, standin):
    """Anyone not in DINGBOT_ADMINS gets a polite refusal; no call is made."""
    text = answer_text(post_robot(live_client, "notice user002 hi",
                                  sender_staff_id="user001"))
    assert text == "Sorry, `notice` is not available to you here."
    assert standin.calls_to(SEND) == []


def test_notice_without_text_answers_usage(live_client, standin):
    """A recipient list with no text answers with the usage line."""
    text = answer_text(post_robot(live_client, "notice user002",
                                  sender_staff_id="admin001"))
    assert text == "Usage: `notice <userid,userid…> <text>`"
    assert standin.calls_to(SEND) == []


def test_dingtalk_refusal_is_reported_to_the_admin(live_client, standin):
    """A caller error from DingTalk is answered clearly, not as a crash."""
    standin.fail(SEND, 1, errcode=40035)
    text = answer_text(post_robot(live_client, "notice user002 hi",
                                  sender_staff_id="admin001"))
    assert text.startswith("DingTalk refused the notice:")
    assert "40035" in text
