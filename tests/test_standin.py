"""The DingTalk stand-in, exercised over real HTTP on 127.0.0.1."""

import concurrent.futures
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import requests

from bot import observe
from bot.simulator import Org, StandIn
from bot.simulator.webhooks import robot_sign

APP_SECRET = "test-app-secret"
HOOK_SECRET = "SECtestsecret"
NOTICE = "/topapi/message/corpconversation/"
H2_TIMESTAMP = 1577262236757
H2_SIGN = "1k/k1M3fRj7XwNQ2bXM74cujS/8uiygr8ao50v6pkzg="
TIMEOUT = 10


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_standin(**kwargs) -> StandIn:
    options = {"webhook_secrets": {"hooktoken": HOOK_SECRET, "plainhook": None}}
    return StandIn(**(options | kwargs))


@pytest.fixture
def standin():
    with make_standin() as running:
        yield running


@pytest.fixture
def clock():
    return FakeClock(H2_TIMESTAMP / 1000)


@pytest.fixture
def clocked(clock):
    with make_standin(clock=clock) as running:
        yield running


def oapi_token(standin: StandIn) -> str:
    params = {"appkey": standin.app_key, "appsecret": APP_SECRET}
    reply = requests.get(f"{standin.url}/gettoken", params=params, timeout=TIMEOUT)
    return reply.json()["access_token"]


def v1_token(standin: StandIn) -> str:
    body = {"appKey": standin.app_key, "appSecret": APP_SECRET}
    url = f"{standin.url}/v1.0/oauth2/accessToken"
    return requests.post(url, json=body, timeout=TIMEOUT).json()["accessToken"]


def oapi(standin: StandIn, path: str, body: dict, token: str | None = None) -> dict:
    params = {"access_token": token or oapi_token(standin)}
    reply = requests.post(standin.url + path, params=params, json=body, timeout=TIMEOUT)
    assert reply.status_code == 200
    return reply.json()


def v1(standin: StandIn, path: str, body: dict, token: str | None = None):
    headers = {"x-acs-dingtalk-access-token": token or v1_token(standin)}
    return requests.post(
        standin.url + path, headers=headers, json=body, timeout=TIMEOUT
    )


# -- tokens -------------------------------------------------------------


def test_gettoken_returns_the_same_token_while_valid_and_counts_each_fetch(standin):
    """Asking twice gives one token, 7200 s, and two counted fetches."""
    params = {"appkey": "dingtestkey", "appsecret": APP_SECRET}
    first = requests.get(
        f"{standin.url}/gettoken", params=params, timeout=TIMEOUT
    ).json()
    second = requests.get(
        f"{standin.url}/gettoken", params=params, timeout=TIMEOUT
    ).json()

    assert first["errcode"] == 0 and first["expires_in"] == 7200
    assert first["access_token"] == second["access_token"]
    assert standin.token_fetches == 2


def test_gettoken_with_a_wrong_secret_is_refused_with_40089(standin):
    """Bad credentials get errcode 40089 over HTTP 200 and are not counted."""
    params = {"appkey": "dingtestkey", "appsecret": "wrong"}
    reply = requests.get(f"{standin.url}/gettoken", params=params, timeout=TIMEOUT)

    assert reply.status_code == 200
    assert reply.json()["errcode"] == 40089
    assert "access_token" not in reply.json()
    assert standin.token_fetches == 0


def test_v1_access_token_refuses_bad_credentials_and_non_json_bodies(standin):
    """The v1.0 endpoint answers 400 for wrong creds and for a form body."""
    url = f"{standin.url}/v1.0/oauth2/accessToken"
    good = requests.post(url, json={"appKey": "dingtestkey", "appSecret": APP_SECRET})
    wrong = requests.post(url, json={"appKey": "dingtestkey", "appSecret": "nope"})
    form = requests.post(url, data={"appKey": "dingtestkey", "appSecret": APP_SECRET})

    assert good.status_code == 200 and good.json()["expireIn"] == 7200
    assert (
        wrong.status_code == 400 and wrong.json()["code"] == "invalidClientIdOrSecret"
    )
    assert form.status_code == 400
    assert standin.token_fetches == 1


def test_revoked_tokens_are_refused_on_both_hosts_until_refetched(standin):
    """Revoked: oapi says 40014, v1.0 says 401; a new fetch gives a new token."""
    old_oapi, old_v1 = oapi_token(standin), v1_token(standin)
    standin.revoke_tokens()

    refused = oapi(standin, "/topapi/v2/user/get", {"userid": "lisi"}, old_oapi)
    denied = v1(standin, "/v1.0/robot/messageFiles/download", {}, old_v1)
    new_token = oapi_token(standin)

    assert refused["errcode"] == 40014
    assert (
        denied.status_code == 401 and denied.json()["code"] == "InvalidAuthentication"
    )
    assert new_token != old_oapi
    assert (
        oapi(standin, "/topapi/v2/user/get", {"userid": "lisi"}, new_token)["errcode"]
        == 0
    )


def test_a_missing_token_gives_41001_on_oapi_and_401_on_v1(standin):
    """No token at all: errcode 41001 on oapi, HTTP 401 on the v1.0 API."""
    bare = requests.post(f"{standin.url}/topapi/v2/user/get", json={"userid": "lisi"})
    v1_bare = requests.post(f"{standin.url}/v1.0/robot/groupMessages/send", json={})

    assert bare.status_code == 200 and bare.json()["errcode"] == 41001
    assert v1_bare.status_code == 401


def test_an_expired_token_gives_42001_and_a_fresh_one_is_issued(clocked, clock):
    """Past 7200 s the token is refused with 42001 and gettoken issues another."""
    token = oapi_token(clocked)
    clock.now += 7201

    assert (
        oapi(clocked, "/topapi/v2/user/get", {"userid": "lisi"}, token)["errcode"]
        == 42001
    )
    assert oapi_token(clocked) != token


def test_concurrent_token_fetches_all_get_one_token(standin):
    """Fifty parallel fetches are all answered with the same token and all counted."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        tokens = list(pool.map(lambda _: oapi_token(standin), range(50)))

    assert len(set(tokens)) == 1
    assert standin.token_fetches == 50


# -- work notices ---------------------------------------------------------


def test_work_notice_result_reports_invalid_forbidden_read_and_unread(standin):
    """A send resolves recipients; the result lists each kind of outcome."""
    standin.forbid(["wujiu"], code=143105)
    msg = {"msgtype": "text", "text": {"content": "deploy done"}}
    body = {
        "agent_id": 1001,
        "userid_list": "lisi,ghost,wujiu",
        "dept_id_list": "4",
        "msg": msg,
    }

    sent = oapi(standin, NOTICE + "asyncsend_v2", body)
    task_id = sent["task_id"]
    standin.mark_read(task_id, ["sunqi"])
    query = {"agent_id": 1001, "task_id": task_id}
    progress = oapi(standin, NOTICE + "getsendprogress", query)["progress"]
    result = oapi(standin, NOTICE + "getsendresult", query)["send_result"]

    assert sent["errcode"] == 0 and isinstance(task_id, int)
    assert progress == {"progress_in_percent": 100, "status": 2}
    assert result["invalid_user_id_list"] == ["ghost"]
    assert result["forbidden_user_id_list"] == ["wujiu"]
    assert result["forbidden_list"] == [{"code": 143105, "count": 1, "userid": "wujiu"}]
    assert result["read_user_id_list"] == ["sunqi"]
    assert sorted(result["unread_user_id_list"]) == ["lisi", "zhouba"]
    assert standin.tasks[0].msg == msg


def test_work_notice_accepts_a_form_body_with_msg_as_a_json_string(standin):
    """The doc's curl form (msg as a JSON string) is accepted like JSON."""
    token = oapi_token(standin)
    form = {
        "agent_id": "1001",
        "userid_list": "lisi",
        "msg": json.dumps({"msgtype": "text", "text": {"content": "hi"}}),
    }
    reply = requests.post(
        standin.url + NOTICE + "asyncsend_v2", params={"access_token": token}, data=form
    ).json()

    assert reply["errcode"] == 0
    assert standin.tasks[-1].userid_list == ["lisi"]


TEXT = {"msgtype": "text", "text": {"content": "x"}}


@pytest.mark.parametrize(
    "change",
    [
        {"agent_id": 9999},
        {"userid_list": ",".join(f"u{n}" for n in range(101))},
        {"userid_list": "", "dept_id_list": ",".join(str(n) for n in range(21))},
        {"userid_list": ""},
        {"msg": {"msgtype": "text", "text": {"content": "x" * 2100}}},
        {"msg": {"msgtype": "sms", "sms": {}}},
        {"userid_list": ["lisi"]},
    ],
    ids=["agent", "101-users", "21-depts", "no-one", "msg-too-big", "msgtype", "list"],
)
def test_work_notice_with_a_bad_field_is_refused_with_40035(standin, change):
    """Each broken field of asyncsend_v2 gets errcode 40035 and no task."""
    body = {"agent_id": 1001, "userid_list": "lisi", "msg": TEXT} | change

    assert oapi(standin, NOTICE + "asyncsend_v2", body)["errcode"] == 40035
    assert standin.tasks == []


def test_recall_of_an_unknown_task_gives_400002(standin):
    """Recall works on a sent task and answers 400002 for an unknown one."""
    token = oapi_token(standin)
    body = {"agent_id": 1001, "userid_list": "lisi", "msg": TEXT}
    task_id = oapi(standin, NOTICE + "asyncsend_v2", body, token)["task_id"]

    known = oapi(
        standin, NOTICE + "recall", {"agent_id": 1001, "msg_task_id": task_id}, token
    )
    unknown = oapi(
        standin, NOTICE + "recall", {"agent_id": 1001, "msg_task_id": 1}, token
    )

    assert known["errcode"] == 0 and standin.tasks[0].recalled
    assert unknown["errcode"] == 400002


# -- robots -----------------------------------------------------------------


def test_session_webhook_records_messages_until_it_expires(standin):
    """Posts are recorded; an expired session answers 500 and an unknown one 300001."""
    url, expires_at = standin.session_webhook("s1", expires_in=5400)
    message = {"msgtype": "text", "text": {"content": "pong"}}

    accepted = requests.post(url, json=message, timeout=TIMEOUT)
    wrong_type = requests.post(url, data=json.dumps(message), timeout=TIMEOUT)
    standin.expire_session("s1")
    expired = requests.post(url, json=message, timeout=TIMEOUT)
    unknown = requests.post(url.replace("s1", "nope"), json=message, timeout=TIMEOUT)

    assert expires_at > time.time() * 1000
    assert accepted.json() == {"errcode": 0, "errmsg": "ok", "request_id": ANY_ID}
    assert wrong_type.json()["errcode"] == 43004
    assert expired.status_code == 500
    assert unknown.json()["errcode"] == 300001
    assert standin.session_messages("s1") == [message]


class _AnyId:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and len(other) > 0


ANY_ID = _AnyId()


def test_group_send_checks_robot_code_and_msg_param(standin):
    """groupMessages/send accepts a good call and answers 400 for bad fields."""
    token = v1_token(standin)
    good = {
        "robotCode": "dingtestkey",
        "openConversationId": "cid123",
        "msgKey": "sampleText",
        "msgParam": json.dumps({"content": "hello"}),
    }
    path = "/v1.0/robot/groupMessages/send"

    sent = v1(standin, path, good, token)
    wrong_robot = v1(standin, path, good | {"robotCode": "other"}, token)
    too_big = v1(
        standin, path, good | {"msgParam": json.dumps({"content": "x" * 15000})}, token
    )
    not_string = v1(standin, path, good | {"msgParam": {"content": "hello"}}, token)
    missing = v1(standin, path, {k: v for k, v in good.items() if k != "msgKey"}, token)

    assert sent.status_code == 200 and sent.json()["processQueryKey"]
    assert [r.status_code for r in (wrong_robot, too_big, not_string, missing)] == [
        400
    ] * 4
    assert missing.json()["code"] == "MissingmsgKey"
    assert standin.group_messages[0]["msgParam"] == {"content": "hello"}


def test_batch_send_reports_invalid_and_flow_controlled_users(standin):
    """oToMessages/batchSend lists unknown and forbidden ids and caps at 20 users."""
    standin.forbid(["lisi"])
    body = {
        "robotCode": "dingtestkey",
        "msgKey": "sampleText",
        "msgParam": '{"content":"x"}',
    }
    path = "/v1.0/robot/oToMessages/batchSend"

    sent = v1(standin, path, body | {"userIds": ["lisi", "ghost", "wangwu"]}).json()
    too_many = v1(standin, path, body | {"userIds": [f"u{n}" for n in range(21)]})

    assert sent["invalidStaffIdList"] == ["ghost"]
    assert sent["flowControlledStaffIdList"] == ["lisi"]
    assert too_many.status_code == 400


def test_file_download_answers_a_url_on_the_standin(standin):
    """messageFiles/download returns a URL the stand-in itself serves."""
    body = {"downloadCode": "abc/1", "robotCode": "dingtestkey"}
    url = v1(standin, "/v1.0/robot/messageFiles/download", body).json()["downloadUrl"]

    assert url.startswith(standin.url)
    assert requests.get(url, timeout=TIMEOUT).content == b"stand-in file abc/1"


def hook(standin: StandIn, timestamp: int, sign: str, token: str = "hooktoken", **kw):
    url = (
        f"{standin.url}/robot/send?access_token={token}"
        f"&timestamp={timestamp}&sign={quote_plus(sign)}"
    )
    body = kw.pop("json", {"msgtype": "text", "text": {"content": "page"}})
    return requests.post(url, json=body, timeout=TIMEOUT, **kw).json()


def test_custom_robot_accepts_the_h2_vector_sign(clocked):
    """Protocol vector H2 (URL-encoded in the query) is accepted."""
    assert robot_sign(str(H2_TIMESTAMP), HOOK_SECRET) == H2_SIGN
    assert hook(clocked, H2_TIMESTAMP, H2_SIGN)["errcode"] == 0
    assert len(clocked.webhook_messages("hooktoken")) == 1


def test_custom_robot_refusals_name_their_cause(clocked):
    """Bad sign, stale timestamp, unknown token and bad Content-Type get their codes."""
    stale = H2_TIMESTAMP - 3_600_001
    bad_sign = hook(clocked, H2_TIMESTAMP, "AAAA" + H2_SIGN[4:])
    stale_time = hook(clocked, stale, robot_sign(str(stale), HOOK_SECRET))
    unknown = hook(clocked, H2_TIMESTAMP, H2_SIGN, token="nosuch")
    url = f"{clocked.url}/robot/send?access_token=plainhook"
    as_text = requests.post(
        url, data="{}", headers={"Content-Type": "text/plain"}
    ).json()

    assert (bad_sign["errcode"], bad_sign["errmsg"]) == (310000, "sign not match")
    assert (stale_time["errcode"], stale_time["errmsg"]) == (
        310000,
        "invalid timestamp",
    )
    assert unknown["errcode"] == 400101
    assert as_text["errcode"] == 43004


@pytest.mark.parametrize("throttle_code", [130101, 410100])
def test_custom_robot_allows_20_messages_a_minute(clock, throttle_code):
    """The 21st message in 60 s is throttled; a minute later sends work again."""
    with make_standin(clock=clock, webhook_throttle_code=throttle_code) as standin:
        replies = [hook(standin, H2_TIMESTAMP, H2_SIGN)["errcode"] for _ in range(21)]
        clock.now += 61
        later = robot_sign(str(int(clock.now * 1000)), HOOK_SECRET)
        after_a_minute = hook(standin, int(clock.now * 1000), later)

    assert replies == [0] * 20 + [throttle_code]
    assert after_a_minute["errcode"] == 0


# -- contacts ---------------------------------------------------------------


def test_small_org_has_a_nested_department_and_a_user_in_two():
    """Org.small() has the shape tests rely on."""
    org = Org.small()

    assert [d.dept_id for d in org.children(1)] == [2, 3]
    assert [d.dept_id for d in org.children(2)] == [4]
    assert org.user("wangwu").dept_id_list == (2, 3)


def test_generated_org_is_deterministic():
    """Two orgs generated with the same arguments are identical."""
    first, second = Org.generate(users=500, departments=10), Org.generate(500, 10)

    assert first.users == second.users and len(first.users) == 500
    assert len(first.departments) == 10


def test_listsub_returns_direct_children_and_60003_for_an_unknown_dept(standin):
    """listsub lists one level only; an unknown department is 60003."""
    token = oapi_token(standin)
    root = oapi(standin, "/topapi/v2/department/listsub", {}, token)["result"]
    unknown = oapi(standin, "/topapi/v2/department/listsub", {"dept_id": 99}, token)

    assert [d["dept_id"] for d in root] == [2, 3]
    assert unknown["errcode"] == 60003


def test_user_list_pages_through_a_department_with_cursors(clock):
    """Paging with next_cursor visits every direct member exactly once."""
    org = Org.generate(users=1000, departments=4)
    expected = [user.userid for user in org.members(2)]
    with make_standin(org=org) as standin:
        token, cursor, seen, pages = oapi_token(standin), 0, [], 0
        while True:
            body = {"dept_id": 2, "cursor": cursor, "size": 100}
            result = oapi(standin, "/topapi/v2/user/list", body, token)["result"]
            seen += [user["userid"] for user in result["list"]]
            pages += 1
            if not result["has_more"]:
                break
            cursor = result["next_cursor"]
        too_big = oapi(
            standin, "/topapi/v2/user/list", {"dept_id": 2, "size": 101}, token
        )

    assert seen == expected and pages == 3
    assert "next_cursor" not in result
    assert too_big["errcode"] == 40035


def test_user_get_and_listid_answer_from_the_org(standin):
    """user/get knows the org's users (60121 otherwise); listid lists a department."""
    token = oapi_token(standin)
    known = oapi(standin, "/topapi/v2/user/get", {"userid": "wangwu"}, token)
    unknown = oapi(standin, "/topapi/v2/user/get", {"userid": "ghost"}, token)
    listid = oapi(standin, "/topapi/user/listid", {"dept_id": 4}, token)

    assert known["result"]["dept_id_list"] == [2, 3]
    assert unknown["errcode"] == 60121
    assert listid["result"]["userid_list"] == ["sunqi", "zhouba"]


def test_auth_codes_are_single_use_and_expire(clocked, clock):
    """getuserinfo trades a code once; a reused or 5-minute-old code is 40078."""
    token = oapi_token(clocked)
    code, stale = clocked.auth_code("zhangsan"), clocked.auth_code("lisi")
    path = "/topapi/v2/user/getuserinfo"

    first = oapi(clocked, path, {"code": code}, token)
    again = oapi(clocked, path, {"code": code}, token)
    clock.now += 301
    expired = oapi(clocked, path, {"code": stale}, oapi_token(clocked))

    assert first["result"]["userid"] == "zhangsan" and first["result"]["sys_level"] == 1
    assert again["errcode"] == 40078
    assert expired["errcode"] == 40078


def test_failed_events_are_served_200_at_a_time_and_removed(standin):
    """450 failed events come back as 200, 200, 50, then nothing."""
    standin.failed_events = [
        {"call_back_tag": "user_add_org", "n": n} for n in range(450)
    ]
    token = oapi_token(standin)
    url = f"{standin.url}/call_back/get_call_back_failed_result"

    pages = [
        requests.get(url, params={"access_token": token}, timeout=TIMEOUT).json()
        for _ in range(4)
    ]

    assert [len(page["failed_list"]) for page in pages] == [200, 200, 50, 0]
    assert [page["has_more"] for page in pages] == [True, True, False, False]
    assert pages[2]["failed_list"][-1]["n"] == 449
    assert standin.failed_events == []


# -- faults -----------------------------------------------------------------


def test_fail_answers_the_errcode_n_times_then_recovers(standin):
    """Two injected -1 errors, then the real answer; the token endpoint is untouched."""
    standin.fail(None, 2, errcode=-1)
    token = oapi_token(standin)
    codes = [
        oapi(standin, "/topapi/v2/user/get", {"userid": "lisi"}, token)["errcode"]
        for _ in range(3)
    ]

    assert codes == [-1, -1, 0]


def test_fail_can_send_errcode_as_a_string(standin):
    """An errcode given as a string is answered as a JSON string."""
    standin.fail("/topapi/v2/user/get", 1, errcode="-1")

    assert oapi(standin, "/topapi/v2/user/get", {"userid": "lisi"})["errcode"] == "-1"


def test_fail_with_a_status_gives_a_v1_error_body(standin):
    """A status fault answers that status with {code, message, requestid}."""
    standin.fail(
        "/v1.0/robot/groupMessages/send", 1, status=503, code="ServiceUnavailable"
    )
    reply = v1(standin, "/v1.0/robot/groupMessages/send", {})

    assert reply.status_code == 503
    assert reply.json()["code"] == "ServiceUnavailable" and reply.json()["requestid"]


def test_fail_with_a_raw_body_serves_the_ban_page(standin):
    """A raw HTML body fault is served verbatim, not as JSON."""
    page = "<html><body>访问被拒绝</body></html>"
    standin.fail("/topapi/v2/user/get", 1, body=page, status=403)
    reply = requests.post(
        f"{standin.url}/topapi/v2/user/get", params={"access_token": "x"}, json={}
    )

    assert reply.status_code == 403
    assert reply.text == page and reply.headers["Content-Type"].startswith("text/html")


def test_a_fault_that_says_nothing_is_refused(standin):
    """fail() without errcode, status or body raises ValueError."""
    with pytest.raises(ValueError):
        standin.fail(None, 1)


def test_delay_makes_a_short_client_timeout_fire(standin):
    """A 2 s delay trips a 0.3 s client timeout; the next call is not delayed."""
    token = oapi_token(standin)
    standin.delay(2.0, "/topapi/v2/user/get", times=1)
    url = f"{standin.url}/topapi/v2/user/get"

    with pytest.raises(requests.Timeout):
        requests.post(
            url, params={"access_token": token}, json={"userid": "lisi"}, timeout=0.3
        )
    started = time.monotonic()
    after = requests.post(url, params={"access_token": token}, json={"userid": "lisi"})

    assert after.json()["errcode"] == 0
    assert time.monotonic() - started < 1.9


def test_qps_limit_throttles_each_path_with_90018_and_403(clocked, clock):
    """Over the limit oapi says 90018 and v1.0 403; a second later calls pass again."""
    clocked.set_qps_limit(2)
    token, v1_tok = oapi_token(clocked), v1_token(clocked)
    body = {"downloadCode": "c", "robotCode": "dingtestkey"}

    codes = [
        oapi(clocked, "/topapi/v2/user/get", {"userid": "lisi"}, token)["errcode"]
        for _ in range(3)
    ]
    statuses = [
        v1(clocked, "/v1.0/robot/messageFiles/download", body, v1_tok) for _ in range(3)
    ]
    other_path = oapi(clocked, "/topapi/user/listid", {"dept_id": 2}, token)
    clock.now += 1.01
    later = oapi(clocked, "/topapi/v2/user/get", {"userid": "lisi"}, token)

    assert codes == [0, 0, 90018]
    assert [r.status_code for r in statuses] == [200, 200, 403]
    assert (
        statuses[2].json()["code"] == "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"
    )
    assert other_path["errcode"] == 0 and later["errcode"] == 0
    assert clocked.token_fetches == 2


def test_reset_drops_faults_and_calls_but_keeps_tokens(standin):
    """reset() clears faults, limits and calls; the issued token still works."""
    token = oapi_token(standin)
    standin.fail(None, 5, errcode=-1)
    standin.set_qps_limit(1)
    standin.reset()

    replies = [
        oapi(standin, "/topapi/v2/user/get", {"userid": "lisi"}, token)
        for _ in range(3)
    ]

    assert [reply["errcode"] for reply in replies] == [0, 0, 0]
    assert len(standin.calls) == 3


# -- recording, control API, logging, process -----------------------------


def test_calls_are_recorded_with_their_answer(standin):
    """A call is recorded with query, lower-case headers, body, status and response."""
    token = oapi_token(standin)
    oapi(standin, "/topapi/v2/user/get", {"userid": "lisi"}, token)

    call = standin.calls_to("/topapi/v2/user/get")[0]

    assert (call.method, call.status) == ("POST", 200)
    assert call.query == {"access_token": token}
    assert call.headers["content-type"] == "application/json"
    assert call.body == {"userid": "lisi"}
    assert call.response["result"]["userid"] == "lisi"
    assert len(standin.calls) == 2
    assert token not in repr(call)


def test_the_http_control_api_drives_the_standin(standin):
    """Faults, sessions, stats and reset work through /_standin/ as JSON."""
    control = f"{standin.url}/_standin"
    token = oapi_token(standin)
    requests.post(
        f"{control}/fail",
        json={"path": "/topapi/v2/user/get", "times": 1, "errcode": 90018},
    )
    failed = oapi(standin, "/topapi/v2/user/get", {"userid": "lisi"}, token)
    session = requests.post(f"{control}/session", json={"session": "abc"}).json()
    requests.post(session["url"], json={"msgtype": "text", "text": {"content": "hi"}})
    requests.post(f"{control}/expire_session", json={"session": "abc"})
    expired = requests.post(
        session["url"], json={"msgtype": "text", "text": {"content": "x"}}
    )
    stats = requests.get(f"{control}/stats").json()
    calls = requests.get(f"{control}/calls", params={"path": "/gettoken"}).json()[
        "calls"
    ]
    bad = requests.post(f"{control}/fail", json={"times": 0, "errcode": 1})
    requests.post(f"{control}/reset")

    assert failed["errcode"] == 90018
    assert expired.status_code == 500
    assert stats["token_fetches"] == 1 and stats["calls"]["/robot/sendBySession"] == 2
    assert len(calls) == 1 and calls[0]["query"]["appsecret"] == APP_SECRET
    assert bad.status_code == 400
    assert standin.calls == []
    assert standin.session_messages("abc")[0]["text"]["content"] == "hi"


def test_nothing_logged_or_printed_carries_a_token_or_secret(standin, caplog, capfd):
    """Serving token-bearing calls prints and logs no token, secret or sign."""
    caplog.set_level(logging.DEBUG)
    token = oapi_token(standin)
    oapi(standin, "/topapi/v2/user/get", {"userid": "lisi"}, token)
    requests.get(
        f"{standin.url}/gettoken?appkey=dingtestkey&appsecret=wrong-{APP_SECRET}"
    )
    hook(standin, H2_TIMESTAMP, H2_SIGN)
    v1(standin, "/v1.0/robot/messageFiles/download", {})

    # urllib3 on the client side logs its own URLs; only the stand-in is on trial.
    server_side = [r for r in caplog.records if not r.name.startswith("urllib3")]
    observe.flush_logs()  # lines our JSON handler may still hold in its batch
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in server_side) + out + err
    for secret in (token, APP_SECRET, HOOK_SECRET, "hooktoken", quote_plus(H2_SIGN)):
        assert secret not in logged
    assert APP_SECRET not in repr(standin)


def test_a_non_loopback_host_is_refused_unless_allowed():
    """Binding 0.0.0.0 needs allow_remote=True."""
    with pytest.raises(ValueError):
        StandIn(host="0.0.0.0")
    assert StandIn(host="0.0.0.0", allow_remote=True) is not None


def test_the_command_line_serves_until_sigterm(tmp_path):
    """`python -m bot.simulator` prints its URL, serves, and exits 0 on SIGTERM."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.simulator",
            "--port",
            "0",
            "--org-users",
            "300",
            "--qps",
            "20",
            "--app-key",
            "clikey",
            "--app-secret",
            "cli-secret",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        url = line.split()[-1]
        params = {"appkey": "clikey", "appsecret": "cli-secret"}
        token = requests.get(f"{url}/gettoken", params=params, timeout=TIMEOUT).json()
        users = requests.post(
            f"{url}/topapi/user/listid",
            params={"access_token": token["access_token"]},
            json={"dept_id": 1},
            timeout=TIMEOUT,
        ).json()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)

    assert url.startswith("http://127.0.0.1:")
    assert users["errcode"] == 0 and users["result"]["userid_list"][0] == "user00000"
    assert process.returncode == 0
    assert token["access_token"] not in out + err and "cli-secret" not in out + err
