"""Shared setup for the DingTalk client tests: test app, stand-in, Store, client.

Test modules import what they use, fixtures included (``from tests.dingtalk_kit
import standin, store``); an imported fixture is registered in the importing
module, so this ``standin`` (module-scoped, small org) takes the place of the
session-wide one in ``tests/conftest.py``, which knows a different app secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.dingtalk import DingTalkClient
from bot.simulator import Org, StandIn
from bot.state.sqlite import SQLiteStore

APP_KEY, APP_SECRET, AGENT_ID = "dingtestkey", "test-app-secret", 1001


def open_standin(org: Org | None = None, **options: Any) -> StandIn:
    """A stand-in that knows the test app; use it as a context manager to run it.

    ``org`` defaults to a fresh ``Org.small()``; ``options`` go to ``StandIn``
    unchanged (for example ``webhook_secrets``).
    """
    return StandIn(app_key=APP_KEY, app_secret=APP_SECRET, agent_id=AGENT_ID,
                   org=org if org is not None else Org.small(), **options)


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    """One running stand-in with the small org per test module; tests reset it."""
    with open_standin() as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """A SQLite Store in the test's own directory, closed after the test."""
    store = SQLiteStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


def make_client(server: StandIn, store: SQLiteStore, **options: Any) -> DingTalkClient:
    """A client of the test app talking to ``server``, built fresh on each call.

    Retry pauses are cut to hundredths of a second so that failure paths run
    fast; ``options`` override any ``DingTalkClient`` keyword (``timeout``,
    ``max_attempts``, ``agent_id``...). The stand-in is not reset here.
    """
    arguments: dict[str, Any] = dict(
        app_key=APP_KEY, app_secret=APP_SECRET, agent_id=AGENT_ID, robot_code=APP_KEY,
        oapi_url=server.url, api_url=server.url, store=store,
        backoff_base=0.01, backoff_cap=0.05, throttle_pause=0.01)
    arguments.update(options)
    return DingTalkClient(**arguments)
