"""The example approvals plugin against the stand-in over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bot.eventflow import run_handlers
from bot.inbound.events import parse_event
from bot.plugins import load_plugins
from bot.services import Services
from tests.conftest import make_settings

SEND = "/topapi/message/corpconversation/asyncsend_v2"

FINISHED = {
    "EventType": "bpms_instance_change", "EventTime": 1700000000000,
    "CorpId": "dingcorp", "eventId": "evt-bpms-1", "processInstanceId": "pi-1",
    "processCode": "PROC-LEAVE", "type": "finish", "result": "agree",
    "title": "年假申请", "staffId": "user001",
}


@pytest.fixture
def services(tmp_path, standin) -> Iterator[Services]:
    standin.reset()
    settings = make_settings(tmp_path, oapi_url=standin.url, api_url=standin.url,
                             plugins=("handlers.approvals",))
    plugins = load_plugins(settings.plugins, entry_point_group=None)
    services = Services(settings, plugins)
    yield services
    services.pool.shutdown(wait=True)


def deliver(services: Services, **changes: object) -> None:
    """Run the handlers for a bpms_instance_change with ``changes`` applied."""
    run_handlers(services, parse_event(json.dumps({**FINISHED, **changes})))


def notice_texts(standin) -> list[tuple[str, str]]:
    return [(call.body["userid_list"], call.body["msg"]["text"]["content"])
            for call in standin.calls_to(SEND)]


def test_the_plugin_is_not_loaded_by_default() -> None:
    """Without DINGBOT_PLUGINS naming it, nobody listens to approvals."""
    names = [plugin.name for plugin in load_plugins(entry_point_group=None)]
    assert "approvals" not in names


@pytest.mark.parametrize(
    ("result", "word"), [("agree", "approved"), ("refuse", "refused")]
)
def test_the_originator_hears_the_result_of_a_finished_approval(
    services, standin, result, word
) -> None:
    """One work notice to staffId names the title and the outcome."""
    deliver(services, result=result)

    assert notice_texts(standin) == [("user001", f"“年假申请” was {word}.")]


@pytest.mark.parametrize("kind", ["start", "terminate", "delete"])
def test_unfinished_instances_send_nothing(services, standin, kind) -> None:
    """Only type finish is reported."""
    deliver(services, type=kind)

    assert standin.calls_to(SEND) == []


def test_an_event_without_an_originator_sends_nothing(services, standin) -> None:
    """No staffId, no recipient, no call."""
    deliver(services, staffId="")

    assert standin.calls_to(SEND) == []
