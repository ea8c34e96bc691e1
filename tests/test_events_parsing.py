"""Event parsing, ``open_callback`` and the failed-push list.

Request bodies are sealed with the real cipher, so the same code DingTalk's
side would need to match is what the parser sees.
"""

import json
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import UpstreamError
from bot.inbound.cipher import CallbackCipher, CallbackRejectedError
from bot.inbound.events import (
    URL_CHECK_TYPES,
    Event,
    open_callback,
    parse_event,
    parse_failed_list_item,
)

TOKEN = "mryue"
AES_KEY = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"
RECEIVE_ID = "ding6ccabc44d2c8d38b"
V1_BODY = (
    b'{"encrypt":"0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XH'
    b"pP6u+oTTrd15NRPvNvmBKyDCYxxOK+HZeKju4yhELOFchzNukR+t8SB/qk4ROMu3"
    b'"}'
)
V1_SIGNATURE = "03044561471240d4a14bb09372dfcfd4fd0e40cb"
V1_QUERY = {
    "msg_signature": V1_SIGNATURE,
    "timeStamp": "1608001896814",
    "nonce": "WL4PK6yA",
}

LEGACY_ADD = {
    "EventType": "user_add_org",
    "TimeStamp": 43535463645,
    "UserId": ["user1", "user2"],
    "CorpId": "dingcorp",
}
APP_ADD = {
    "EventType": "user_add_org",
    "EventTime": 1663143335567,
    "CorpId": "dingcorp",
    "BizId": "166335567",
    "eventId": "c7c7120f2c07419ebdba0318c8",
    "timeStamp": "1685501863357",
    "userId": ["user1", "user2"],
}
BPMS_INSTANCE = {
    "EventType": "bpms_instance_change",
    "EventTime": 1700000000000,
    "CorpId": "dingcorp",
    "eventId": "evt-bpms-1",
    "processInstanceId": "proc-inst-1",
    "processCode": "PROC-DEPLOY",
    "type": "finish",
    "result": "agree",
    "title": "上线申请",
    "staffId": "manager1",
    "url": "https://aflow.dingtalk.com/x",
}


@pytest.fixture
def cipher() -> CallbackCipher:
    """The V1 app's cipher."""
    return CallbackCipher(TOKEN, AES_KEY, RECEIVE_ID)


def request_for(cipher: CallbackCipher, plaintext: str) -> tuple[dict, bytes]:
    """A DingTalk-style query and body carrying ``plaintext``."""
    reply = cipher.seal(plaintext)
    query = {
        "msg_signature": reply["msg_signature"],
        "timeStamp": reply["timeStamp"],
        "nonce": reply["nonce"],
    }
    return query, json.dumps({"encrypt": reply["encrypt"]}).encode()


def assert_uniform_rejection(error: pytest.ExceptionInfo) -> None:
    """Every failure must look the same to the caller and chain nothing."""
    assert type(error.value) is CallbackRejectedError
    assert error.value.reason == "invalid callback" == str(error.value)
    assert error.value.status == 401
    assert error.value.__context__ is None


def shuffled(payload: dict, seed: int) -> str:
    """``payload`` as JSON with its keys in a seeded random order."""
    items = list(payload.items())
    random.Random(seed).shuffle(items)
    return json.dumps(dict(items), ensure_ascii=False)


@pytest.mark.parametrize(
    "query",
    [
        {"msg_signature": V1_SIGNATURE, "timeStamp": "1608001896814"},
        {"signature": V1_SIGNATURE, "timestamp": "1608001896814"},
        {"signature": V1_SIGNATURE, "timeStamp": "1608001896814"},
    ],
    ids=["new-spelling", "old-spelling", "mixed"],
)
def test_both_spellings_of_the_query_open_v1(
    cipher: CallbackCipher, query: dict
) -> None:
    """V1 opens as a URL check whichever spelling the query parameters use."""
    event = open_callback(cipher, {**query, "nonce": "WL4PK6yA"}, V1_BODY)

    assert event.type == "check_url" and event.is_url_check
    assert event.legacy and event.data == {} and event.time is None


def test_url_check_types_are_the_three_validation_pushes() -> None:
    """Internal and suite URL checks are all recognised, nothing else."""
    assert URL_CHECK_TYPES == {
        "check_url",
        "check_create_suite_url",
        "check_update_suite_url",
    }
    assert not parse_event('{"EventType":"user_add_org"}').is_url_check


def test_legacy_and_app_user_add_org_agree_on_type_and_users(
    cipher: CallbackCipher,
) -> None:
    """Both formats of user_add_org give the same type and user ids."""
    legacy = open_callback(cipher, *request_for(cipher, json.dumps(LEGACY_ADD)))
    app = open_callback(cipher, *request_for(cipher, json.dumps(APP_ADD)))

    assert legacy.type == app.type == "user_add_org"
    assert legacy.user_ids == app.user_ids == ["user1", "user2"]
    assert legacy.corp_id == app.corp_id == "dingcorp"
    assert (legacy.legacy, app.legacy) == (True, False)


def test_app_event_takes_its_id_time_and_envelope_apart() -> None:
    """eventId is the id, EventTime the time, and envelope keys leave data."""
    event = parse_event(json.dumps(APP_ADD))

    assert event.id == "c7c7120f2c07419ebdba0318c8"
    assert event.time == 1663143335567
    assert event.data == {"timeStamp": "1685501863357", "userId": ["user1", "user2"]}


def test_legacy_id_is_a_sha256_stable_across_key_order() -> None:
    """Reordered keys give the same legacy id; it is 64 hex characters."""
    ids = {parse_event(shuffled(LEGACY_ADD, seed)).id for seed in range(8)}

    assert len(ids) == 1
    (only,) = ids
    assert len(only) == 64 and int(only, 16) >= 0


def test_legacy_id_is_stable_across_nested_key_order() -> None:
    """Key order inside nested objects does not change the legacy id either."""
    first = '{"EventType":"user_modify_org","diffInfo":{"prev":1,"curr":2}}'
    second = '{"diffInfo":{"curr":2,"prev":1},"EventType":"user_modify_org"}'

    assert parse_event(first).id == parse_event(second).id


@pytest.mark.parametrize(
    "change",
    [
        {"UserId": ["user1", "user3"]},
        {"TimeStamp": 43535463646},
        {"EventType": "user_leave_org"},
        {"CorpId": "dingother"},
        {"Extra": None},
    ],
)
def test_legacy_id_changes_when_the_payload_changes(change: dict) -> None:
    """Any change of type, time, corp or business field gives a new id."""
    base = parse_event(json.dumps(LEGACY_ADD)).id

    assert parse_event(json.dumps({**LEGACY_ADD, **change})).id != base


@settings(max_examples=50, deadline=None)
@given(
    fields=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.integers(), st.text(max_size=8), st.lists(st.text(max_size=4))),
        max_size=6,
    ),
    seed=st.integers(0, 1000),
)
def test_legacy_id_ignores_key_order_for_any_payload(fields: dict, seed: int) -> None:
    """Whatever the business fields, shuffling them keeps the id."""
    payload = {**fields, "EventType": "org_change", "TimeStamp": 1}

    expected = parse_event(json.dumps(payload)).id

    assert parse_event(shuffled(payload, seed)).id == expected


def test_time_comes_from_numeric_strings_and_is_none_when_odd() -> None:
    """Times may be ints or digit strings; anything else leaves time unset."""
    assert parse_event('{"EventType":"x","TimeStamp":"1608001896814"}').time == (
        1608001896814
    )
    assert parse_event('{"EventType":"x","timeStamp":"17"}').time == 17
    assert parse_event('{"EventType":"x","EventTime":"soon"}').time is None
    assert parse_event('{"EventType":"x","TimeStamp":true}').time is None
    assert parse_event('{"EventType":"x","TimeStamp":"' + "9" * 50 + '"}').time is None


def test_bpms_instance_fields_are_reachable_through_data() -> None:
    """Approval fields stay under their original keys in data and via get()."""
    event = parse_event(json.dumps(BPMS_INSTANCE, ensure_ascii=False))

    assert event.type == "bpms_instance_change" and event.id == "evt-bpms-1"
    assert event.data["processInstanceId"] == "proc-inst-1"
    assert event.data["result"] == "agree" and event.data["title"] == "上线申请"
    assert event.get("PROCESSCODE") == "PROC-DEPLOY"
    assert "EventType" not in event.data and "CorpId" not in event.data


def test_get_prefers_the_exact_key_and_falls_back_to_any_case() -> None:
    """Exact keys win over case-insensitive matches; misses give the default."""
    event = parse_event('{"EventType":"x","userId":"a","USERID":"b","Name":"n"}')

    assert event.get("USERID") == "b"
    assert event.get("name") == "n"
    assert event.get("missing", "dflt") == "dflt"
    assert event.user_ids in (["a"], ["b"])


def test_event_is_hashable_and_its_repr_leaves_out_the_data() -> None:
    """Events can key sets and are safe to log without their content."""
    event = parse_event(json.dumps(BPMS_INSTANCE, ensure_ascii=False))

    assert event in {event}
    assert "上线申请" not in repr(event) and "evt-bpms-1" in repr(event)


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param("not json", id="text"),
        pytest.param("[]", id="empty-array"),
        pytest.param('["EventType"]', id="array"),
        pytest.param("42", id="number"),
        pytest.param('"check_url"', id="string"),
        pytest.param("{}", id="no-type"),
        pytest.param('{"EventType":7}', id="int-type"),
        pytest.param('{"EventType":""}', id="empty-type"),
        pytest.param("[" * 100_000, id="deep-nesting"),
    ],
)
def test_plaintext_that_is_no_event_is_rejected(
    cipher: CallbackCipher, plaintext: str
) -> None:
    """A correctly sealed plaintext that is not an event object is refused."""
    with pytest.raises(CallbackRejectedError) as error:
        open_callback(cipher, *request_for(cipher, plaintext))
    assert_uniform_rejection(error)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="text"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'["encrypt"]', id="array-of-key"),
        pytest.param(b"{}", id="no-encrypt"),
        pytest.param(b'{"encrypt":42}', id="int-encrypt"),
        pytest.param(b'{"encrypt":null}', id="null-encrypt"),
        pytest.param(b'{"encrypt":["x"]}', id="list-encrypt"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b"{" * 100_000, id="deep-nesting"),
    ],
)
def test_body_without_a_string_encrypt_is_rejected(
    cipher: CallbackCipher, body: bytes
) -> None:
    """The body must be a JSON object with a string encrypt, or it is refused."""
    with pytest.raises(CallbackRejectedError) as error:
        open_callback(cipher, V1_QUERY, body)
    assert_uniform_rejection(error)


@pytest.mark.parametrize("missing", ["msg_signature", "timeStamp", "nonce"])
def test_missing_or_empty_query_parameter_is_rejected(
    cipher: CallbackCipher, missing: str
) -> None:
    """Each of signature, timestamp and nonce is required and non-empty."""
    absent = {k: v for k, v in V1_QUERY.items() if k != missing}
    for query in (absent, {**V1_QUERY, missing: ""}):
        with pytest.raises(CallbackRejectedError) as error:
            open_callback(cipher, query, V1_BODY)
        assert_uniform_rejection(error)


def test_cipher_rejections_reach_the_caller_unchanged(cipher: CallbackCipher) -> None:
    """A forged signature through open_callback is the same uniform error."""
    query = {"signature": "f" * 40, "timestamp": "1608001896814", "nonce": "WL4PK6yA"}

    with pytest.raises(CallbackRejectedError) as error:
        open_callback(cipher, query, V1_BODY)
    assert_uniform_rejection(error)


@settings(max_examples=150, deadline=None)
@given(
    query=st.dictionaries(
        st.sampled_from(
            ["msg_signature", "signature", "timeStamp", "timestamp", "nonce", "x"]
        ),
        st.one_of(st.text(max_size=50), st.just(V1_SIGNATURE)),
    ),
    body=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda text: json.dumps({"encrypt": text}).encode(),
            st.text(alphabet="ABCDEFabcdef0123456789+/=", max_size=120),
        ),
    ),
)
def test_random_requests_raise_nothing_but_the_uniform_rejection(
    query: dict, body: bytes
) -> None:
    """No random query or body makes open_callback raise another exception."""
    cipher = CallbackCipher(TOKEN, AES_KEY, RECEIVE_ID)

    with pytest.raises(CallbackRejectedError) as error:
        open_callback(cipher, query, body)
    assert_uniform_rejection(error)


def test_rejected_callback_logs_no_secret_or_plaintext(
    cipher: CallbackCipher, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, a plaintext rejected after decryption is not logged."""
    secret_text = '["confidential-payroll-9931"]'
    query, body = request_for(cipher, secret_text)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(CallbackRejectedError):
        open_callback(cipher, query, body)

    assert "plaintext_json" in caplog.text
    secrets = ("confidential-payroll-9931", TOKEN, AES_KEY, query["msg_signature"])
    for secret in secrets:
        assert secret not in caplog.text


def test_failed_list_item_gets_the_live_legacy_id() -> None:
    """A failed-list user_add_org hashes like its live legacy push."""
    item = {
        "call_back_tag": "user_add_org",
        "event_time": 43535463645,
        "user_add_org": {"userid": ["user1", "user2"], "corpid": "dingcorp"},
    }

    replayed = parse_failed_list_item(item)
    live = parse_event(json.dumps(LEGACY_ADD))

    assert replayed.id == live.id and replayed.legacy
    assert replayed.type == "user_add_org" and replayed.time == 43535463645
    assert replayed.corp_id == "dingcorp" and replayed.user_ids == ["user1", "user2"]


def test_failed_list_item_uses_an_inner_event_id() -> None:
    """An inner eventId becomes the id, matching the app-level live push."""
    inner = {k: v for k, v in APP_ADD.items() if k != "EventType"}
    item = {"call_back_tag": "user_add_org", "event_time": 1, "user_add_org": inner}

    event = parse_failed_list_item(item)

    assert event.id == APP_ADD["eventId"] and not event.legacy


def test_failed_list_item_survives_a_java_map_string() -> None:
    """The '{corpid=…}' string DingTalk has been seen to send still parses."""
    item = {
        "call_back_tag": "user_modify_org",
        "event_time": 1535028105000,
        "user_modify_org": "{corpid=dingb40b8a19b6ded94235c2f4657eb6378f}",
    }

    event = parse_failed_list_item(item)

    assert event.corp_id == "dingb40b8a19b6ded94235c2f4657eb6378f"
    assert event.time == 1535028105000 and event.data == {} and event.legacy


def test_failed_list_item_without_a_tag_is_an_upstream_error() -> None:
    """An item with no call_back_tag cannot be turned into an event."""
    with pytest.raises(UpstreamError):
        parse_failed_list_item({"event_time": 1})


def test_event_compares_by_value() -> None:
    """Two parses of one payload are equal events."""
    text = json.dumps(LEGACY_ADD)

    assert parse_event(text) == parse_event(text)
    assert isinstance(parse_event(text), Event)
