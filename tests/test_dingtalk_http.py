"""HTTP layer: error classification, retries, timeouts, pacing, no leaked secrets."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from bot.dingtalk import DingTalkClient
from bot.dingtalk.http import (
    BannedError,
    CallerError,
    DingTalkError,
    QuotaExhaustedError,
    RetryPolicy,
    ThrottledError,
    TokenError,
    Transport,
    TransportError,
    WebhookThrottledError,
    classify_api,
    classify_oapi,
)
from bot.errors import UpstreamError
from bot.state.sqlite import SQLiteStore
from tests.dingtalk_kit import APP_KEY, APP_SECRET, make_client, standin, store

SEND = "/topapi/message/corpconversation/asyncsend_v2"


@pytest.mark.parametrize(("body", "expected"), [
    ({"errcode": 0, "errmsg": "ok"}, None),
    ({"errcode": "0", "errmsg": "ok"}, None),
    ({"errcode": 40014, "errmsg": "不合法的access_token"}, TokenError),
    ({"errcode": "40014", "errmsg": "不合法的access_token"}, TokenError),
    ({"errcode": 42001}, TokenError),
    ({"errcode": 41001}, TokenError),
    ({"errcode": 88, "sub_code": "40014"}, TokenError),
    ({"errcode": 88, "subCode": "40014"}, TokenError),
    ({"errcode": 88, "sub_code": ""}, TransportError),
    ({"errcode": 88, "subCode": "60011"}, CallerError),
    ({"errcode": 90018}, ThrottledError),
    ({"errcode": 90002}, ThrottledError),
    ({"errcode": 143103}, ThrottledError),
    ({"errcode": 130101}, WebhookThrottledError),
    ({"errcode": 410100}, WebhookThrottledError),
    ({"errcode": -1}, TransportError),
    ({"errcode": 15}, TransportError),
    ({"errcode": 90020}, QuotaExhaustedError),
    ({"errcode": 90005}, BannedError),
    ({"status": 1111, "wait": 5, "punish": "deny"}, BannedError),
    ({"errcode": 40035, "errmsg": "缺少参数"}, CallerError),
    ({"errcode": 60011}, CallerError),
    ({"errcode": 310000}, CallerError),
    ({"errcode": 424242}, CallerError),
    (None, BannedError),
])
def test_oapi_replies_map_to_what_the_caller_should_do(body, expected):
    """Each oapi errcode becomes the error class its retry rule needs."""
    error = classify_oapi("/x", 200, body)

    assert type(error) is expected if expected else error is None


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, {"processQueryKey": "k"}, None),
    (401, {"code": "InvalidAuthentication"}, TokenError),
    (400, {"code": "InvalidAuthentication"}, TokenError),
    (403, {"code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"}, ThrottledError),
    (403, {"code": "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi"}, ThrottledError),
    (429, {"code": "system.busy"}, ThrottledError),
    (400, {"code": "send.too.fast"}, ThrottledError),
    (403, {"code": "Forbidden.AccessDenied.ApiCountLimitForOrg"}, QuotaExhaustedError),
    (400, {"code": "invalidClientIdOrSecret"}, CallerError),
    (503, {"code": "ServiceUnavailable"}, TransportError),
    (502, None, TransportError),
    (403, None, BannedError),
])
def test_v1_replies_map_by_status_and_code(status, body, expected):
    """v1.0 replies are classified by HTTP status and error code."""
    error = classify_api("/v1.0/x", status, body)

    assert type(error) is expected if expected else error is None


def test_errors_carry_context_and_share_one_root():
    """Every error is an UpstreamError carrying errcode, errmsg, request id and api."""
    error = classify_oapi("/topapi/v2/user/get", 200,
                          {"errcode": "60121", "errmsg": "找不到该用户", "request_id": "r1"})

    assert isinstance(error, DingTalkError) and isinstance(error, UpstreamError)
    assert (error.errcode, error.errmsg, error.request_id, error.api) == (
        60121, "找不到该用户", "r1", "/topapi/v2/user/get")
    assert not error.retryable
    assert "60121" in str(error) and "/topapi/v2/user/get" in str(error)


def test_backoff_uses_full_jitter_within_the_cap():
    """Pauses fall in [0, min(cap, base * 2**attempt)], throttling waits a floor."""
    policy = RetryPolicy(base=0.5, cap=4.0, throttle_pause=1.0)
    busy = TransportError("/x", "busy")
    throttled = ThrottledError("/x", "slow down")

    pauses = [policy.delay(attempt, busy) for attempt in range(6) for _ in range(50)]

    assert all(0 <= p <= 4.0 for p in pauses)
    assert max(policy.delay(0, busy) for _ in range(50)) <= 0.5
    assert len({round(p, 6) for p in pauses}) > 100  # jittered, not fixed
    assert all(1.0 <= policy.delay(0, throttled) <= 1.0 for _ in range(20))


def test_connection_error_is_retried_then_reported_without_the_url(tmp_path, caplog):
    """A refused connection is retried, then raised with no secret-bearing URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    store = SQLiteStore(tmp_path / "s.sqlite3")
    pauses: list[float] = []
    transport = Transport(app_key=APP_KEY, store=store, sleep=pauses.append,
                          retry=RetryPolicy(max_attempts=3, base=0.01))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(TransportError) as caught:
        transport.request("GET", f"http://127.0.0.1:{port}/gettoken", style="oapi",
                          query={"appkey": APP_KEY, "appsecret": APP_SECRET})

    assert len(pauses) == 2
    assert caught.value.api == "/gettoken"
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert APP_SECRET not in str(caught.value) and APP_SECRET not in caplog.text
    assert [r.levelname for r in caplog.records if r.name == "bot.dingtalk.http"] == [
        "WARNING", "WARNING", "ERROR"]


def test_retries_stop_when_the_time_budget_is_spent(tmp_path):
    """The total time bound ends the loop before the attempts run out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = SQLiteStore(tmp_path / "s.sqlite3")
    pauses: list[float] = []
    policy = RetryPolicy(max_attempts=50, max_seconds=0.0, base=1.0)
    transport = Transport(app_key=APP_KEY, store=store, sleep=pauses.append,
                          retry=policy)

    with pytest.raises(TransportError):
        transport.request("GET", f"http://127.0.0.1:{port}/x", style="oapi")

    assert pauses == []


def test_rate_budget_window_has_a_safety_margin(tmp_path):
    """The per-API budget is qps calls per slightly more than a second."""
    transport = Transport(app_key=APP_KEY, store=SQLiteStore(tmp_path / "s.sqlite3"),
                          qps=20)

    budget = transport.budget("/topapi/v2/user/get")

    assert budget.bucket == "rate:dingtestkey:/topapi/v2/user/get"
    assert budget.limit == 20 and 1.05 <= budget.window <= 1.3


# -- against the stand-in, over real HTTP ---------------------------------------

BAN_PAGE = "<html><body><h1>访问被拒绝</h1>too many requests from your IP</body></html>"


@pytest.fixture
def client(standin, store):
    standin.reset()
    return make_client(standin, store, timeout=(1.0, 0.5), max_attempts=4)


def send_notice(client: DingTalkClient) -> list[int]:
    return client.notices.send("hello", user_ids=["zhangsan"])


def outcomes(standin, path: str = SEND) -> list:
    """errcode of each oapi call to ``path``, or its HTTP status when not 200."""
    return [c.response.get("errcode") if c.status == 200 else c.status
            for c in standin.calls_to(path)]


def test_throttling_twice_then_success(client, standin):
    """Two 90018 replies are retried; the third call goes through."""
    standin.fail(SEND, 2, errcode=90018)

    assert len(send_notice(client)) == 1

    assert outcomes(standin) == [90018, 90018, 0]


def test_bad_gateway_then_success(client, standin):
    """A 502 is retried and the next call succeeds."""
    standin.fail(SEND, 1, status=502)

    send_notice(client)

    assert outcomes(standin) == [502, 0]


def test_timeout_then_success(client, standin):
    """A reply slower than the read timeout is retried; the retry succeeds."""
    client.legacy_token.get()
    standin.delay(1.5, path=SEND, times=1)

    started = time.monotonic()
    send_notice(client)

    assert time.monotonic() - started < 1.5  # did not wait for the slow reply
    # The slow call is recorded only when the stand-in finishes it.
    deadline = time.monotonic() + 10
    while len(standin.calls_to(SEND)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(standin.calls_to(SEND)) == 2


def test_busy_v1_api_is_retried(client, standin):
    """A v1.0 503 is retried like any transport error."""
    standin.fail("/v1.0/robot/groupMessages/send", 1, status=503)

    client.robot.send_group("hi", "cidGroup")

    calls = standin.calls_to("/v1.0/robot/groupMessages/send")
    assert [c.status for c in calls] == [503, 200]


def test_ban_page_becomes_a_clear_error(client, standin):
    """A non-JSON HTML ban page raises BannedError, not a JSON decode error."""
    standin.fail(SEND, 1, status=403, body=BAN_PAGE)

    with pytest.raises(BannedError, match="ban") as caught:
        send_notice(client)

    assert caught.value.retry_after >= 300
    assert len(standin.calls_to(SEND)) == 1


def test_errcode_as_a_string_is_understood(client, standin):
    """"0" counts as success and "40014" as a token error that is refetched."""
    client.legacy_token.get()
    fetches = standin.token_fetches
    standin.fail(SEND, 1, errcode="40014")

    send_notice(client)

    assert standin.token_fetches == fetches + 1
    standin.fail(SEND, 1, errcode="0")
    assert send_notice(client) == [0]


def test_transient_errors_give_up_after_max_attempts(client, standin):
    """-1 on every call ends in TransportError after the configured attempts."""
    standin.fail(SEND, 10, errcode=-1)

    with pytest.raises(TransportError) as caught:
        send_notice(client)

    assert caught.value.errcode == -1
    assert len(standin.calls_to(SEND)) == 4


def test_no_secret_or_token_in_logs_or_errors(client, standin, caplog):
    """Across token fetches, retries and failures nothing secret is logged or raised."""
    caplog.set_level(logging.DEBUG)
    raised: list[str] = []
    standin.fail(SEND, 1, status=502)
    send_notice(client)
    standin.revoke_tokens()
    client.robot.send_group("hi", "cidGroup")
    standin.fail(SEND, 10, errcode=90018)
    with pytest.raises(ThrottledError) as caught:
        send_notice(client)
    raised.append(repr(caught.value) + str(caught.value))
    url, _ = standin.session_webhook("s-secret", expires_in=60)
    standin.fail("/robot/sendBySession", 10, status=500)
    with pytest.raises(TransportError) as caught:
        client.robot.send_session("x", url, expires_at_ms=2**62)
    raised.append(repr(caught.value) + str(caught.value))

    tokens = {c.query.get("access_token") for c in standin.calls if c.query}
    tokens |= {c.headers.get("x-acs-dingtalk-access-token") for c in standin.calls}
    secrets = {t for t in tokens if t} | {APP_SECRET, url.split("session=")[1]}
    assert len(secrets) >= 4  # two legacy tokens, a v1.0 token, the secret, ...
    text = caplog.text + "".join(raised) + repr(client) + repr(client.transport)
    text += "".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in text


def test_failed_events_are_read_page_by_page(client, standin):
    """failed_events() follows has_more until DingTalk's list is drained."""
    standin.failed_events = [
        {"call_back_tag": "user_add_org", "event_time": n,
         "user_add_org": {"userid": [f"u{n}"], "corpid": "dingcorp"}}
        for n in range(250)]

    events = list(client.failed_events())

    assert [e["event_time"] for e in events] == list(range(250))
    assert len(standin.calls_to("/call_back/get_call_back_failed_result")) == 2
