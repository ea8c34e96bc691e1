"""POST /dingtalk/robot through Flask: checks, answers, dedupe, failures."""

from __future__ import annotations

import json
import logging
import time

import pytest

from bot.dispatch import Plugin
from bot.services import Services
from bot.simulator.robot import robot_message, signed_request
from tests.conftest import APP_SECRET, answer_text, make_settings, post_robot


def test_ping_answers_pong_in_the_response(client):
    """A signed 'ping' is answered synchronously with 'pong'."""
    response = post_robot(client, "ping")
    assert response.status_code == 200
    assert json.loads(response.data) == {"msgtype": "text", "text": {"content": "pong"}}


def test_whoami_reports_sender_conversation_and_role(client):
    """whoami names the nick, staff id, conversation and admin status."""
    text = answer_text(post_robot(client, "whoami", sender_staff_id="admin001",
                                  sender_nick="Root", conversation_id="cidX"))
    assert "Root" in text and "admin001" in text and "cidX" in text
    assert "admin." in text
    assert "not an admin" in answer_text(post_robot(client, "whoami"))


def test_help_lists_builtin_commands(client):
    """help answers in markdown with ping, whoami and help itself."""
    text = answer_text(post_robot(client, "help"))
    for name in ("`ping`", "`whoami`", "`help [command]`"):
        assert name in text


def test_help_for_one_command_and_for_an_unknown_one(client):
    """'help ping' describes ping; 'help nope' says there is no such command."""
    assert "Check that the bot is alive" in answer_text(post_robot(client, "help ping"))
    assert "No command `nope`" in answer_text(post_robot(client, "help nope"))


def test_unknown_command_gets_did_you_mean(client):
    """'pnig' is answered with a suggestion of 'ping'."""
    assert "Did you mean `ping`?" in answer_text(post_robot(client, "pnig"))


def test_full_width_spaces_and_mention_gap_do_not_break_commands(client):
    """'\\u3000ping\\u3000' still routes to ping."""
    assert answer_text(post_robot(client, "\u3000ping\u3000")) == "pong"


def test_repeated_msg_id_is_answered_once(client):
    """A redelivered msgId gets an empty answer and runs nothing."""
    first = post_robot(client, "ping", msg_id="dup-1")
    second = post_robot(client, "ping", msg_id="dup-1")
    assert answer_text(first) == "pong"
    assert json.loads(second.data) == {"msgtype": "empty"}


def test_wrong_robot_code_is_refused_with_403(client):
    """A message for another robot (sign valid, robotCode not ours) is refused."""
    response = post_robot(client, "ping", robot_code="someone-else")
    assert response.status_code == 403
    assert json.loads(response.data) == {"error": "robotCode does not match this bot"}


def test_previous_secret_still_verifies_during_rotation(tmp_path):
    """With a previous secret configured, callbacks signed by it still pass."""
    from bot.config import Secret
    from bot.web import create_app

    settings = make_settings(tmp_path, app_secret=Secret("new-secret-xyz"),
                             previous_app_secrets=(Secret(APP_SECRET),))
    client = create_app(settings).test_client()
    assert answer_text(post_robot(client, "ping", secret=APP_SECRET)) == "pong"
    assert answer_text(post_robot(client, "ping", secret="new-secret-xyz")) == "pong"
    assert post_robot(client, "ping", secret="unrelated").status_code == 401


BAD_REQUESTS = {
    "no headers": lambda c: c.post("/dingtalk/robot", data=b"{}"),
    "non-numeric timestamp": lambda c: post_robot(c, timestamp_ms="abc"),
    "two hours old": lambda c: post_robot(c, timestamp_ms=int(time.time() * 1000) - 7_200_000),
    "future": lambda c: post_robot(c, timestamp_ms=int(time.time() * 1000) + 7_200_000),
    "wrong sign": lambda c: post_robot(c, secret="not-the-secret"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_signatures_get_401_and_reach_no_handler(client, case, caplog):
    """Each bad header case answers 401 with a short reason, no secret logged."""
    caplog.set_level(logging.DEBUG)
    response = BAD_REQUESTS[case](client)
    assert response.status_code == 401
    assert set(json.loads(response.data)) == {"error"}
    assert APP_SECRET not in caplog.text


def _signed_raw(client, raw: bytes):
    headers, raw = signed_request(APP_SECRET, raw)
    return client.post("/dingtalk/robot", headers=headers, data=raw)


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[1,2,3]", b'"text"',
    json.dumps(robot_message(msgtype="sticker")).encode(),
    json.dumps({**robot_message(), "text": {"content": None}}).encode(),
    json.dumps({**robot_message(), "text": {"content": ["x"]}}).encode(),
])
def test_bad_bodies_get_400_with_a_reason(client, raw):
    """Empty, non-JSON, arrays and malformed messages answer 400."""
    response = _signed_raw(client, raw)
    assert response.status_code == 400
    assert json.loads(response.data)["error"]


def test_body_over_one_megabyte_gets_413(client):
    """A body over 1 MB is refused before it is read."""
    raw = json.dumps(robot_message("x" * (1024 * 1024 + 10))).encode()
    response = _signed_raw(client, raw)
    assert response.status_code == 413
    assert json.loads(response.data) == {"error": "body too large"}


def _services_with(tmp_path, plugin: Plugin, **overrides) -> Services:
    from bot.plugins import load_plugins

    settings = make_settings(tmp_path, **overrides)
    return Services(settings, [*load_plugins(entry_point_group=None), plugin])


def test_handler_that_raises_gets_an_apology_with_trace_id(tmp_path, caplog):
    """A crashing handler answers 200 with an apology; the log has the traceback."""
    from bot.web import create_app

    plugin = Plugin("broken")

    @plugin.command("boom")
    def handle_boom(ctx):
        raise RuntimeError("kaboom")

    client = create_app(services=_services_with(tmp_path, plugin)).test_client()
    response = post_robot(client, "boom")
    assert response.status_code == 200
    text = answer_text(response)
    assert text.startswith("Sorry, that failed on my side (trace ")
    trace_id = text.rsplit(" ", 1)[1].rstrip(").")
    failures = [r for r in caplog.records if r.getMessage() == "handler failed"]
    assert failures and "kaboom" in failures[0].exc_text
    assert trace_id and "kaboom" not in text


def test_usage_error_tells_the_user_the_usage(tmp_path):
    """Wrong argument count answers with the command's usage line."""
    from bot.web import create_app

    plugin = Plugin("ops")
    plugin.command("deploy", usage="deploy <service> <version>")(
        lambda ctx, service, version: "ok")
    client = create_app(services=_services_with(tmp_path, plugin)).test_client()
    assert answer_text(post_robot(client, "deploy api")) == (
        "Usage: `deploy <service> <version>`")


def test_healthz_and_readyz(client):
    """healthz says ok; readyz reaches the state store and says ready."""
    assert json.loads(client.get("/healthz").data) == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and json.loads(ready.data) == {"status": "ready"}


def test_readyz_is_503_when_the_state_store_is_unreachable(tmp_path):
    """With Redis configured but not answering, readyz says 503."""
    from bot.web import create_app

    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")
    response = create_app(settings).test_client().get("/readyz")
    assert response.status_code == 503
    assert json.loads(response.data)["status"] == "unavailable"


def test_metrics_count_callbacks(client):
    """/metrics exposes the callback counter in Prometheus text format."""
    post_robot(client, "ping")
    body = client.get("/metrics").data.decode()
    assert 'dingbot_callbacks_total{outcome="answered",route="robot"}' in body
