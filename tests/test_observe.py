"""Logging, redaction and Sentry scrubbing (bot.observe)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot import observe
from bot.linewriter import LineWriter
from bot.dispatch import Plugin
from bot.plugins import load_plugins
from bot.services import Services
from tests.conftest import APP_SECRET, make_settings, post_robot


def _json_handler() -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(observe.JSONFormatter())
    handler.addFilter(observe.RedactingFilter())
    return handler, stream


@pytest.fixture
def json_log():
    handler, stream = _json_handler()
    logger = logging.getLogger("test.observe")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)


def test_registered_secrets_and_url_tokens_are_scrubbed(json_log):
    """A secret passed as an argument or inside a URL never reaches the line."""
    logger, stream = json_log
    observe.add_secrets(["super-secret-token-1"])
    logger.warning("calling %s with %s",
                   "https://oapi.example/x?access_token=abc123def&x=1",
                   "super-secret-token-1")
    line = json.loads(stream.getvalue())
    assert "abc123def" not in line["event"]
    assert "super-secret-token-1" not in line["event"]
    assert "access_token=********" in line["event"]


def test_tracebacks_are_scrubbed_too(json_log):
    """An exception message carrying a secret is masked in the traceback field."""
    logger, stream = json_log
    observe.add_secrets(["trace-secret-42"])
    try:
        raise RuntimeError("boom trace-secret-42")
    except RuntimeError:
        logger.exception("failed")
    line = json.loads(stream.getvalue())
    assert "boom ********" in line["traceback"]
    assert "trace-secret-42" not in stream.getvalue()


def test_lines_carry_trace_id_and_allowed_fields(json_log):
    """The JSON line has event, level, trace_id and the extra fields given."""
    logger, stream = json_log
    observe.bind_trace_id("abc123")
    logger.info("robot callback", extra={"msg_id": "m1", "outcome": "answered"})
    line = json.loads(stream.getvalue())
    assert line["event"] == "robot callback"
    assert (line["trace_id"], line["msg_id"], line["outcome"]) == ("abc123", "m1", "answered")


class _SentryInbox(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_sentry_events_are_scrubbed_of_secrets(tmp_path):
    """A handler error carrying the app secret reaches Sentry without it."""
    import sentry_sdk

    server = ThreadingHTTPServer(("127.0.0.1", 0), _SentryInbox)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dsn = f"http://publickey1234@127.0.0.1:{server.server_port}/1"
    plugin = Plugin("leaky")

    @plugin.command("leak")
    def handle_leak(ctx):
        raise RuntimeError(f"could not use {APP_SECRET}")

    from bot.web import create_app

    settings = make_settings(tmp_path, sentry_dsn=dsn)
    services = Services(settings, [*load_plugins(entry_point_group=None), plugin])
    try:
        client = create_app(services=services).test_client()
        assert "Sorry" in post_robot(client, "leak").get_data(as_text=True)
        sentry_sdk.flush(timeout=5)
        deadline = time.monotonic() + 10
        while not _SentryInbox.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sentry_sdk.get_client().close(timeout=2)
        sentry_sdk.init(dsn=None)
        server.shutdown()
    sent = b"".join(_SentryInbox.received).decode("utf-8", "replace")
    assert "could not use ********" in sent
    assert APP_SECRET not in sent
    assert "publickey1234" not in sent.split("\n", 1)[1]  # not in the event itself


def _isolated_logger(monkeypatch, name: str = "isolated.fast"):
    """A logger outside the logging tree whose only handler is a JSONLineHandler."""
    stream = io.StringIO()
    handler = observe.JSONLineHandler(LineWriter(stream, interval=60))
    logger = logging.Logger(name, logging.INFO)
    logger.addHandler(handler)
    monkeypatch.setattr(observe, "_handler", handler)
    return logger, handler, stream


def test_fast_callback_line_matches_the_logging_path(monkeypatch):
    """log_fields writes the same JSON object logger.info(extra=...) would."""
    logger, handler, stream = _isolated_logger(monkeypatch)
    observe.bind_trace_id("feedbeef0001")
    fields = {"msg_id": "m1", "command": "ping", "outcome": "answered",
              "conversation_id": "cid1", "duration_ms": 3, "reason": None}
    observe.log_fields(logger, "robot callback", fields)
    logger.info("robot callback", extra=fields)
    handler.flush()

    fast, slow = (json.loads(line) for line in stream.getvalue().splitlines())
    assert abs(fast.pop("time") - slow.pop("time")) < 1
    assert fast == slow
    assert fast["trace_id"] == "feedbeef0001" and "reason" not in fast


def test_fast_callback_line_scrubs_secrets_in_fields(monkeypatch):
    logger, handler, stream = _isolated_logger(monkeypatch)
    observe.add_secrets(["fields-secret-77"])
    observe.log_fields(logger, "robot callback", {"msg_id": "x-fields-secret-77"})
    handler.flush()
    assert "fields-secret-77" not in stream.getvalue()
    assert json.loads(stream.getvalue())["msg_id"] == "x-********"


def test_callback_line_goes_through_logging_when_other_handlers_listen(monkeypatch):
    """A team's own handler (here a second one) still receives the record."""
    logger, handler, stream = _isolated_logger(monkeypatch)
    seen: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = seen.append
    logger.addHandler(extra)
    observe.log_fields(logger, "robot callback", {"outcome": "answered"})
    handler.flush()
    assert [r.outcome for r in seen] == ["answered"]
    assert json.loads(stream.getvalue())["outcome"] == "answered"


def test_callback_line_respects_the_level(monkeypatch):
    logger, handler, stream = _isolated_logger(monkeypatch)
    logger.setLevel(logging.WARNING)
    observe.log_fields(logger, "robot callback", {"outcome": "answered"})
    handler.flush()
    assert stream.getvalue() == ""


def test_warnings_are_written_at_once_info_lines_in_batches(monkeypatch):
    logger, handler, stream = _isolated_logger(monkeypatch)
    logger.info("queued")
    assert stream.getvalue() == ""
    logger.warning("urgent")
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["queued", "urgent"]
