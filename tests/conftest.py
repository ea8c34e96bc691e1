"""Shared fixtures: settings, the Flask app, signed robot requests, the stand-in."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Secret, Settings

APP_KEY = "dingtestkey"
APP_SECRET = "test-app-secret-0123456789"
REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: fixed credentials, state under ``data_dir``."""
    values: dict[str, Any] = {
        "app_key": APP_KEY,
        "app_secret": Secret(APP_SECRET),
        "agent_id": 1001,
        "data_dir": data_dir,
        "admins": ("admin001",),
        "reply_budget": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings):
    from bot.web import create_app

    app = create_app(settings)
    yield app
    app.extensions["dingbot"].pool.shutdown(wait=True)


@pytest.fixture
def client(app):
    return app.test_client()


def post_robot(client, text: str = "ping", *, secret: str = APP_SECRET,
               timestamp_ms: int | None = None, body: Any = None, **fields: Any):
    """POST a signed robot callback through the Flask test client."""
    from bot.simulator.robot import robot_message, signed_request

    message = body if body is not None else robot_message(text, **fields)
    headers, raw = signed_request(secret, message, timestamp_ms)
    return client.post("/dingtalk/robot", headers=headers, data=raw)


def answer_text(response) -> str:
    """The text of a synchronous answer (text or markdown)."""
    data = json.loads(response.data)
    kind = data["msgtype"]
    return data[kind]["content"] if kind == "text" else data[kind]["text"]


@pytest.fixture(scope="session")
def standin() -> Iterator[Any]:
    """The local stand-in for DingTalk's open platform, over real HTTP."""
    from bot.simulator import StandIn

    server = StandIn(app_key=APP_KEY, app_secret=APP_SECRET, agent_id=1001)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_settings(tmp_path: Path, standin) -> Settings:
    """Settings whose DingTalk URLs point at the stand-in."""
    standin.reset()
    return make_settings(tmp_path, oapi_url=standin.url, api_url=standin.url)


@pytest.fixture
def live_client(live_settings):
    """A Flask test client of a bot whose DingTalk is the stand-in."""
    from bot.web import create_app

    app = create_app(live_settings)
    yield app.test_client()
    app.extensions["dingbot"].pool.shutdown(wait=True)


@pytest.fixture(autouse=True)
def _flush_batched_log_lines():
    """Write out batched log lines at the end of each test, into its own capture.

    Without this they would wait for the timer or for the end of the run,
    and land in another test's output or on the terminal after the summary.
    """
    yield
    from bot import observe

    observe.flush_logs()
