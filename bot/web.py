"""The web layer: the two callback endpoints and the Flask app around them.

This is the only module that imports Flask. Each callback endpoint reads
the raw request, hands plain values to its responder, and turns the
answer, or a RequestRejected, into a response. Client errors get a short
JSON reason; anything unexpected is logged with its traceback and
answered with a bare 500 carrying the trace id.

The callback endpoints are plain WSGI in front of Flask: they are the hot
path (every chat message and event), and Flask's per-request machinery
(request context, URL map, response object) cost more CPU than all of the
bot's own checks together. Health, readiness and metrics stay in Flask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from bot import observe
from bot.config import Settings, load_settings
from bot.errors import RequestRejected
from bot.plugins import load_plugins
from bot.responder import RobotResponder
from bot.services import Services

log = logging.getLogger(__name__)

#: DingTalk's callbacks are small; anything larger is refused with 413.
MAX_BODY = 1024 * 1024


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the WSGI app from Settings (read from file and environment if None).

    Raises ConfigError when the settings or the plugins are unusable.
    """
    if services is None:
        settings = settings or load_settings()
        services = Services(settings, load_plugins(settings.plugins))
    settings = services.settings
    observe.configure(settings.log_level, settings.secret_values())
    observe.init_sentry(settings.sentry_dsn)

    app = Flask("dingbot")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["dingbot"] = services
    robot = RobotResponder(services)
    events = _event_responder(services)
    app.extensions["dingbot.events"] = events

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        try:
            services.store.ping()
        except Exception as exc:
            log.warning("not ready: state store unreachable (%s)", type(exc).__name__)
            return jsonify(status="unavailable", reason="state store unreachable"), 503
        return jsonify(status="ready"), 200

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = observe.render_metrics()
        return Response(body, content_type=content_type)

    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    app.wsgi_app = CallbackEndpoints(app.wsgi_app, robot, events)
    return app


def _event_responder(services: Services):  # -> EventResponder | None
    """The event callback responder, when event credentials are configured."""
    if not services.settings.events_enabled:
        return None
    from bot.eventflow import EventResponder

    return EventResponder(services)


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    reason = "body too large" if status == 413 else (exc.name or "error").lower()
    if status >= 400:
        log.warning("request refused: %s", reason, extra={"status": status})
    return jsonify(error=reason), status


def _unexpected(exc: Exception) -> tuple[Response, int]:
    trace_id = observe.trace_id_var.get()
    log.exception("unhandled error in request")
    return jsonify(error="internal error", trace_id=trace_id), 500


class CallbackEndpoints:
    """Serves ``POST /dingtalk/robot`` and ``POST /dingtalk/events``; passes
    every other request to the wrapped Flask app."""

    def __init__(self, fallback: Callable, robot: RobotResponder, events: Any) -> None:
        self.fallback = fallback
        self.routes = {
            "/dingtalk/robot": self._robot,
            "/dingtalk/events": self._events,
        }
        self.robot = robot
        self.events = events

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        handler = self.routes.get(environ.get("PATH_INFO", ""))
        if handler is None:
            return self.fallback(environ, start_response)

        observe.bind_trace_id()
        try:
            if environ.get("REQUEST_METHOD") != "POST":
                raise RequestRejected("method not allowed", status=405)
            status, payload = 200, handler(environ, _read_body(environ))
        except RequestRejected as exc:
            status, payload = exc.status, {"error": exc.reason}
            _log_rejection(environ, exc)
        except Exception:
            log.exception("unhandled error in callback")
            status = 500
            payload = {"error": "internal error", "trace_id": observe.trace_id_var.get()}
        return _json_response(start_response, status, payload)

    def _robot(self, environ: dict, body: bytes) -> dict:
        return self.robot.handle(
            environ.get("HTTP_TIMESTAMP"), environ.get("HTTP_SIGN"), body
        )

    def _events(self, environ: dict, body: bytes) -> dict:
        if self.events is None:
            raise RequestRejected("event callbacks are not configured", status=404)
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        return self.events.handle(query, body)


def _read_body(environ: dict) -> bytes:
    """The request body; RequestRejected(413) past MAX_BODY, unread if declared so."""
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared:
        if not declared.isdigit():
            raise RequestRejected("bad Content-Length")
        if int(declared) > MAX_BODY:
            raise RequestRejected("body too large", status=413)
        return environ["wsgi.input"].read(int(declared))
    # No length (chunked): read one byte past the limit to detect overflow.
    body = environ["wsgi.input"].read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise RequestRejected("body too large", status=413)
    return body


def _json_response(start_response: Callable, status: int, payload: Any) -> list[bytes]:
    data = orjson.dumps(payload)
    start_response(f"{status} {HTTPStatus(status).phrase}", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
    ])
    return [data]


def _log_rejection(environ: dict, exc: RequestRejected) -> None:
    route = environ.get("PATH_INFO", "").rsplit("/", 1)[-1]
    observe.count_callback(route, "rejected")
    log.warning("request rejected: %s", exc.reason,
                extra={"status": exc.status, "reason": exc.reason})
