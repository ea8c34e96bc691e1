"""The Flask app: routes, and the translation between HTTP and the bot.

This is the only module that imports Flask. Each route reads the raw
request, hands plain values to the responder, and turns its answer, or
its RequestRejected, into a response. Client errors get a short JSON
reason; anything unexpected is logged with its traceback and answered
with a bare 500 carrying the trace id.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
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

    @app.before_request
    def bind_trace_id() -> None:
        observe.bind_trace_id()

    @app.post("/dingtalk/robot")
    def robot_callback() -> Response:
        answer = robot.handle(
            request.headers.get("timestamp"), request.headers.get("sign"),
            request.get_data(cache=False),
        )
        return jsonify(answer)

    @app.post("/dingtalk/events")
    def event_callback() -> Response:
        if events is None:
            raise RequestRejected("event callbacks are not configured", status=404)
        return jsonify(events.handle(request.args, request.get_data(cache=False)))

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

    app.register_error_handler(RequestRejected, _rejected)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app


def _event_responder(services: Services):  # -> EventResponder | None
    """The event callback responder, when event credentials are configured."""
    if not services.settings.events_enabled:
        return None
    from bot.eventflow import EventResponder

    return EventResponder(services)


def _rejected(exc: RequestRejected) -> tuple[Response, int]:
    observe.CALLBACKS.labels(request.path.rsplit("/", 1)[-1], "rejected").inc()
    log.warning("request rejected: %s", exc.reason, extra={
        "status": exc.status, "reason": exc.reason})
    return jsonify(error=exc.reason), exc.status


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
