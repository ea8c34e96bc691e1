"""``POST /dingtalk/events`` through the Flask test client, and replay-failed.

Requests are sealed with the real cipher (as DingTalk would seal them) and
replies opened with it. Handlers are a test plugin that records what it
sees; the inbox is the real SQLite one under tmp_path.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from bot.config import Secret, Settings
from bot.dispatch import Plugin
from bot.eventflow import EventResponder, ReplaySummary, replay_failed
from bot.inbound.cipher import CallbackCipher
from bot.inbound.events import parse_event
from bot.inbox import LEASE, SQLiteInbox
from bot.services import Services
from bot.web import create_app
from tests.conftest import APP_KEY, APP_SECRET, make_settings

TOKEN = "eventTokenX9"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PLAINTEXT_MARKER = "plaintext-marker-5f3a"
REJECTION = {"error": "invalid callback"}

APP_ADD = {
    "EventType": "user_add_org", "EventTime": 1700000000000, "CorpId": "dingcorp",
    "eventId": "evt-add-1", "userId": ["u1", "u2"], "note": PLAINTEXT_MARKER,
}
LEGACY_ADD = {
    "EventType": "user_add_org", "TimeStamp": 43535463645,
    "UserId": ["user1", "user2"], "CorpId": "dingcorp",
}


class Recorder:
    """A plugin whose handlers record the events they get, thread-safely."""

    def __init__(self) -> None:
        self.plugin = Plugin("recorder")
        self.seen: list[tuple[str, str]] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        self.plugin.on_event("user_add_org", "bpms_*")(self.handle)

    def handle(self, ctx: Any) -> None:
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("handler broke on purpose")
            self.seen.append((ctx.event.type, ctx.event.id))


def event_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with event callbacks configured."""
    return make_settings(
        tmp_path, callback_token=Secret(TOKEN), callback_aes_key=Secret(AES_KEY),
        **overrides,
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(tmp_path: Path, recorder: Recorder) -> Iterator[Any]:
    services = Services(event_settings(tmp_path), [recorder.plugin])
    app = create_app(services=services)
    yield app
    app.extensions["dingbot.events"].close()
    services.pool.shutdown(wait=True)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def cipher() -> CallbackCipher:
    """DingTalk's side of the app's cipher (receive id: the app key)."""
    return CallbackCipher(TOKEN, AES_KEY, APP_KEY)


def sealed(cipher: CallbackCipher, plaintext: str) -> tuple[dict[str, str], bytes]:
    """Query and body of a push carrying ``plaintext``."""
    reply = cipher.seal(plaintext)
    query = {"msg_signature": reply["msg_signature"],
             "timeStamp": reply["timeStamp"], "nonce": reply["nonce"]}
    return query, json.dumps({"encrypt": reply["encrypt"]}).encode()


def signed(cipher: CallbackCipher, encrypt: str) -> tuple[dict[str, str], bytes]:
    """Query and body for an arbitrary ``encrypt`` string, correctly signed."""
    query = {"timestamp": "1700000000000", "nonce": "nonce123"}
    query["signature"] = cipher.signature(query["timestamp"], query["nonce"], encrypt)
    return query, json.dumps({"encrypt": encrypt}).encode()


def post(client, query: dict[str, str], body: bytes):
    return client.post("/dingtalk/events", query_string=query, data=body,
                       content_type="application/json")


def post_event(client, cipher: CallbackCipher, payload: dict | str):
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return post(client, *sealed(cipher, text))


def opens_to_success(cipher: CallbackCipher, response) -> bool:
    """Whether the reply is the signed, encrypted ``success``."""
    body = response.get_json()
    assert set(body) == {"msg_signature", "timeStamp", "nonce", "encrypt"}
    return cipher.open(signature=body["msg_signature"], timestamp=body["timeStamp"],
                       nonce=body["nonce"], encrypt=body["encrypt"]) == "success"


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def inbox_of(app) -> Any:
    return app.extensions["dingbot.events"].inbox


def wait_settled(app, event_id: str) -> str:
    """Wait until the event's record is no longer pending; return its state."""
    inbox = inbox_of(app)
    wait_for(lambda: inbox.get(event_id).state != "pending")
    return inbox.get(event_id).state


@pytest.mark.parametrize(
    "payload",
    [
        {"EventType": "check_url"},
        {"EventType": "check_create_suite_url", "Random": "r1", "TestSuiteKey": "k"},
        {"EventType": "check_update_suite_url", "Random": "r2", "TestSuiteKey": "k"},
    ],
    ids=lambda p: p["EventType"],
)
def test_url_checks_answer_the_encrypted_success(client, cipher, app, payload) -> None:
    """Each URL validation push gets the sealed success, and no inbox record."""
    response = post_event(client, cipher, payload)

    assert response.status_code == 200
    assert opens_to_success(cipher, response)


def test_a_subscribed_handler_runs_once_off_the_request(
    client, cipher, app, recorder
) -> None:
    """An event is acked with success and its handler runs on the pool."""
    response = post_event(client, cipher, APP_ADD)

    assert response.status_code == 200 and opens_to_success(cipher, response)
    assert wait_settled(app, "evt-add-1") == "done"
    assert recorder.seen == [("user_add_org", "evt-add-1")]


def test_glob_subscriptions_receive_matching_events(
    client, cipher, app, recorder
) -> None:
    """A ``bpms_*`` subscription gets bpms_task_change."""
    post_event(client, cipher, {"EventType": "bpms_task_change", "eventId": "b-1"})

    assert wait_settled(app, "b-1") == "done"
    assert recorder.seen == [("bpms_task_change", "b-1")]


def test_an_event_nobody_subscribes_to_is_acked_and_settled(
    client, cipher, app, recorder
) -> None:
    """An unsubscribed type is acked and recorded as done at once."""
    response = post_event(client, cipher, {"EventType": "org_change", "eventId": "o-1"})

    assert opens_to_success(cipher, response)
    assert inbox_of(app).get("o-1").state == "done"
    assert recorder.seen == []


@pytest.mark.parametrize("payload", [APP_ADD, LEGACY_ADD], ids=["eventId", "legacy"])
def test_a_redelivered_event_is_acked_but_handled_once(
    client, cipher, app, recorder, payload
) -> None:
    """The same eventId, or the same legacy payload, is handled only once."""
    first = post_event(client, cipher, payload)
    wait_for(lambda: len(recorder.seen) == 1)
    second = post_event(client, cipher, payload)
    third = post_event(client, cipher, dict(reversed(list(payload.items()))))

    for response in (first, second, third):
        assert response.status_code == 200 and opens_to_success(cipher, response)
    time.sleep(0.2)
    assert len(recorder.seen) == 1


def test_a_failing_handler_is_retried_by_the_sweeper(
    client, cipher, app, recorder, caplog
) -> None:
    """A handler error marks the event for retry; a later sweep runs it again."""
    recorder.fail_next = 1
    caplog.set_level(logging.INFO)
    post_event(client, cipher, APP_ADD)
    inbox = inbox_of(app)
    wait_for(lambda: inbox.get("evt-add-1").attempts == 1)

    # Stand in for the backoff passing: make the retry due now.
    inbox.defer("evt-add-1", 0.0)
    app.extensions["dingbot.events"].sweep()

    assert wait_settled(app, "evt-add-1") == "done"
    assert recorder.seen == [("user_add_org", "evt-add-1")]
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("event handler failed") for m in messages)


def test_the_sweeper_runs_events_left_by_a_dead_process(
    tmp_path: Path, recorder, cipher
) -> None:
    """An event recorded but never handled is run by a new responder's first sweep."""
    settings = event_settings(tmp_path)
    clock_now = [time.time()]
    inbox = SQLiteInbox(settings.data_dir / "inbox.sqlite3", clock=lambda: clock_now[0])
    inbox.add(parse_event(json.dumps(APP_ADD)))
    clock_now[0] += LEASE + 1  # as if the process that added it is long gone

    services = Services(settings, [recorder.plugin])
    responder = EventResponder(services, inbox=inbox, sweep_interval=3600)
    try:
        wait_for(lambda: inbox.get("evt-add-1").state == "done")
    finally:
        responder.close()
        services.pool.shutdown(wait=True)
    assert recorder.seen == [("user_add_org", "evt-add-1")]


def aes_encrypt(raw: bytes) -> str:
    """Encrypt ``raw`` (already block-aligned) with the app's key, no padding added."""
    key = base64.b64decode(AES_KEY + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(raw) + encryptor.finalize()).decode()


def framed(message: bytes, receive_id: bytes = APP_KEY.encode()) -> bytes:
    """The plaintext layout before padding: prefix, length, message, receive id."""
    return b"A" * 16 + len(message).to_bytes(4, "big") + message + receive_id


def flipped(encrypt: str, index: int) -> str:
    raw = bytearray(base64.b64decode(encrypt))
    raw[index % len(raw)] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def bad_requests(cipher: CallbackCipher) -> dict[str, tuple[dict, bytes]]:
    """One request for every kind of bad input the issue lists."""
    good_query, good_body = sealed(cipher, json.dumps(APP_ADD))
    good_encrypt = json.loads(good_body)["encrypt"]
    content = framed(json.dumps(APP_ADD).encode())
    pad = 32 - len(content) % 32
    other = CallbackCipher(TOKEN, AES_KEY, "dingotherapp")

    return {
        "forged signature": ({**good_query, "msg_signature": "0" * 40}, good_body),
        "tampered ciphertext": (good_query, json.dumps(
            {"encrypt": flipped(good_encrypt, 40)}).encode()),
        "tampered and re-signed": signed(cipher, flipped(good_encrypt, 40)),
        "pad byte zero": signed(cipher, aes_encrypt(content + b"\0" * pad)),
        "pad bytes disagree": signed(
            cipher, aes_encrypt(content + bytes([pad - 1]) + bytes([pad]) * (pad - 1))),
        "pad byte over 32": signed(cipher, aes_encrypt(content + b"\x21" * pad)),
        "wrong receive id": sealed(other, json.dumps(APP_ADD)),
        "not base64": signed(cipher, "this is *not* base64!!"),
        "body not json": (good_query, b"encrypt=" + good_body),
        "no encrypt": (good_query, b'{"crypt": "x"}'),
        "plaintext a json list": sealed(cipher, json.dumps([APP_ADD])),
        "plaintext not json": sealed(cipher, PLAINTEXT_MARKER),
        "no signature": ({"timestamp": "1", "nonce": "n"}, good_body),
    }


def test_every_bad_input_gets_the_same_401_and_reaches_no_handler(
    client, cipher, app, recorder, caplog
) -> None:
    """All listed malformed requests look alike to the caller; nothing runs."""
    caplog.set_level(logging.DEBUG)
    for name, (query, body) in bad_requests(cipher).items():
        response = post(client, query, body)
        assert (response.status_code, response.get_json()) == (401, REJECTION), name

    time.sleep(0.2)
    assert recorder.seen == []
    assert inbox_of(app).get("evt-add-1") is None


def test_logs_hold_no_token_key_or_plaintext(client, cipher, app, caplog) -> None:
    """Accepted and rejected callbacks log types and ids, never secrets or content."""
    caplog.set_level(logging.DEBUG)
    post_event(client, cipher, APP_ADD)
    wait_settled(app, "evt-add-1")
    for query, body in bad_requests(cipher).values():
        post(client, query, body)

    logged = caplog.text + "".join(
        repr(record.__dict__) for record in caplog.records)
    for secret in (TOKEN, AES_KEY, PLAINTEXT_MARKER, "u1", "dingcorp"):
        assert secret not in logged
    lines = [r for r in caplog.records if r.getMessage() == "event callback"]
    assert [(r.event_type, r.event_id, r.outcome) for r in lines] == [
        ("user_add_org", "evt-add-1", "accepted")]


def test_the_responder_refuses_to_be_built_with_a_bad_key(tmp_path: Path) -> None:
    """A malformed AES key never reaches a request: create_app fails."""
    from bot.errors import ConfigError

    settings = make_settings(tmp_path, callback_token=Secret(TOKEN),
                             callback_aes_key=Secret(AES_KEY))
    object.__setattr__(settings, "callback_aes_key", Secret("short"))
    with pytest.raises(ConfigError) as caught:
        create_app(settings)
    assert "short" not in str(caught.value)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory) -> Iterator[Any]:
    """One app for the whole property test (rejections leave no state)."""
    recorder = Recorder()
    services = Services(event_settings(tmp_path_factory.mktemp("fuzz")),
                        [recorder.plugin])
    app = create_app(services=services)
    yield app, recorder
    app.extensions["dingbot.events"].close()
    services.pool.shutdown(wait=True)


_CHECK_URL = CallbackCipher(TOKEN, AES_KEY, APP_KEY).seal('{"EventType":"check_url"}')


@hsettings(max_examples=150, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutation=st.one_of(
        st.binary(max_size=200).map(lambda raw: ("random", raw)),
        st.integers(min_value=0, max_value=10_000).map(lambda i: ("flip", i)),
        st.text(max_size=80).map(lambda text: ("text", text)),
    ),
    resign=st.booleans(),
)
def test_random_and_bit_flipped_ciphertexts_only_get_401(
    fuzz_app, mutation, resign
) -> None:
    """Garbage or a one-bit change to a valid URL check never passes, never 500s."""
    app, recorder = fuzz_app
    cipher = CallbackCipher(TOKEN, AES_KEY, APP_KEY)
    kind, value = mutation
    if kind == "random":
        encrypt = base64.b64encode(value).decode()
    elif kind == "flip":
        encrypt = flipped(_CHECK_URL["encrypt"], value)
    else:
        encrypt = value

    if resign:
        query, body = signed(cipher, encrypt)
    else:
        query = {"msg_signature": _CHECK_URL["msg_signature"],
                 "timeStamp": _CHECK_URL["timeStamp"], "nonce": _CHECK_URL["nonce"]}
        body = json.dumps({"encrypt": encrypt}).encode()
    response = post(app.test_client(), query, body)

    assert (response.status_code, response.get_json()) == (401, REJECTION)
    assert recorder.seen == []


FAILED_ITEMS = [
    {"call_back_tag": "user_add_org", "event_time": 1700000000001,
     "user_add_org": {"userid": ["n1"], "corpid": "dingcorp"}},
    {"call_back_tag": "bpms_instance_change", "event_time": 1700000000002,
     "bpms_instance_change": {"eventId": "bp-1", "type": "finish"}},
    {"event_time": 1},
    {"call_back_tag": "check_url", "check_url": {}},
]


@pytest.fixture
def live_services(tmp_path: Path, standin, recorder) -> Iterator[Services]:
    standin.reset()
    settings = make_settings(tmp_path, oapi_url=standin.url, api_url=standin.url)
    services = Services(settings, [recorder.plugin])
    yield services
    services.pool.shutdown(wait=True)


def test_replay_failed_runs_new_events_and_a_second_run_is_harmless(
    live_services, standin, recorder
) -> None:
    """Failed pushes go through the handlers once, however often replayed."""
    standin.failed_events = FAILED_ITEMS
    first = replay_failed(live_services)
    standin.failed_events = FAILED_ITEMS
    second = replay_failed(live_services)

    assert first == ReplaySummary(new=2, unparseable=1, skipped=1)
    assert second == ReplaySummary(duplicate=2, unparseable=1, skipped=1)
    assert sorted(t for t, _ in recorder.seen) == [
        "bpms_instance_change", "user_add_org"]


def test_replay_failed_counts_a_handler_failure_and_leaves_it_to_retry(
    live_services, standin, recorder
) -> None:
    """A failing handler is counted; the event stays pending for a retry."""
    standin.failed_events = FAILED_ITEMS[1:2]
    recorder.fail_next = 1

    summary = replay_failed(live_services)

    assert summary == ReplaySummary(new=1, failed=1)
    inbox = SQLiteInbox(live_services.settings.data_dir / "inbox.sqlite3")
    assert inbox.get("bp-1").state == "pending" and inbox.get("bp-1").attempts == 1


def test_the_cli_replays_failed_events(tmp_path: Path, standin, monkeypatch) -> None:
    """``dingbot events replay-failed`` prints the counts and exits 0."""
    from bot.cli import main

    standin.reset()
    standin.failed_events = FAILED_ITEMS[:1]
    env = {
        "DINGTALK_APP_KEY": APP_KEY, "DINGTALK_APP_SECRET": APP_SECRET,
        "DINGTALK_AGENT_ID": "1001", "DINGTALK_OAPI_URL": standin.url,
        "DINGTALK_API_URL": standin.url, "DINGBOT_DATA_DIR": str(tmp_path),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DINGBOT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(main, ["events", "replay-failed"])

    assert result.exit_code == 0, result.output
    assert "new: 1, duplicate: 0" in result.output


def test_two_workers_on_redis_handle_a_redelivered_event_once(
    tmp_path: Path, cipher
) -> None:
    """With REDIS_URL set, a second worker acks the same event without handling it."""
    import redis

    from tests.conftest import REDIS_TEST_URL

    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        pytest.skip("no Redis server answers at REDIS_TEST_URL")
    recorder = Recorder()
    event_id = f"evt-redis-{time.time_ns()}"
    apps = []
    for worker in ("w1", "w2"):
        settings = event_settings(tmp_path / worker, redis_url=REDIS_TEST_URL)
        apps.append(create_app(services=Services(settings, [recorder.plugin])))
    try:
        for app in apps:
            response = post_event(app.test_client(), cipher,
                                  {**APP_ADD, "eventId": event_id})
            assert response.status_code == 200 and opens_to_success(cipher, response)
        assert wait_settled(apps[0], event_id) == "done"
        time.sleep(0.2)
        assert recorder.seen == [("user_add_org", event_id)]
    finally:
        for app in apps:
            app.extensions["dingbot.events"].close()
            app.extensions["dingbot"].pool.shutdown(wait=True)
        redis.Redis.from_url(REDIS_TEST_URL).delete(f"dingbot:inbox:rec:{event_id}")
