"""Property tests: random bodies and headers never reach a handler or a 5xx."""

from __future__ import annotations

import json
import logging

from hypothesis import HealthCheck, given, settings, strategies as st

from bot.dispatch import Plugin
from bot.plugins import load_plugins
from bot.services import Services
from bot.simulator.robot import robot_message, sign_headers
from tests.conftest import APP_SECRET, make_settings

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)

# Bodies that look like robot messages but with any field replaced by junk.
mangled_messages = st.builds(
    lambda base, field, junk: {**base, field: junk},
    st.just(robot_message("ping")),
    st.sampled_from(["msgtype", "msgId", "text", "conversationId", "robotCode",
                     "conversationType", "sessionWebhook", "atUsers", "content"]),
    json_values,
)

bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    mangled_messages.map(lambda v: json.dumps(v).encode()),
)

header_values = st.one_of(st.none(), st.text(max_size=60), st.integers().map(str))


class _Probe:
    """A plugin whose fallback and commands record that they ran."""

    def __init__(self) -> None:
        self.ran = 0
        self.plugin = Plugin("probe")
        self.plugin.fallback(self._record)

    def _record(self, ctx):
        self.ran += 1


def _client(tmp_path_factory, probe: _Probe):
    from bot.web import create_app

    settings_ = make_settings(tmp_path_factory.mktemp("state"))
    services = Services(settings_, [*load_plugins(entry_point_group=None), probe.plugin])
    return create_app(services=services).test_client()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timestamp=header_values, sign=header_values, body=bodies)
def test_random_headers_never_pass_or_crash(tmp_path_factory, timestamp, sign, body):
    """Unsigned random requests answer 4xx and reach no handler."""
    probe = _Probe()
    client = _client(tmp_path_factory, probe)
    headers = {k: v for k, v in (("timestamp", timestamp), ("sign", sign))
               if v is not None and v.isprintable() and v.isascii()}
    response = client.post("/dingtalk/robot", headers=headers, data=body)
    assert 400 <= response.status_code < 500
    assert probe.ran == 0


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_signed_random_bodies_get_4xx_or_a_clean_answer(tmp_path_factory, body, caplog):
    """Correctly signed junk: a 4xx with a reason, or (if valid) a 200; never 5xx."""
    caplog.set_level(logging.DEBUG)
    probe = _Probe()
    client = _client(tmp_path_factory, probe)
    response = client.post("/dingtalk/robot", headers=sign_headers(APP_SECRET), data=body)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert probe.ran == 0
        assert set(json.loads(response.data)) == {"error"}
    assert APP_SECRET not in caplog.text
