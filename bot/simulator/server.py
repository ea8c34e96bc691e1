"""The stand-in's web layer: one Flask app serving the oapi and v1.0 paths.

Every API call runs the same steps, in this order: find the route, add any
injected delay, answer any injected fault, check the access token, count the
call against the QPS limit, and run the endpoint. Calls are recorded with
their answer. The QPS limit applies only to calls made with an app access
token (topapi, call_back, v1.0 robot); the token endpoints and the two robot
webhooks are exempt, and a call refused for any reason is not counted.

Routes under ``/_standin/`` drive the stand-in from other processes and are
not recorded.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler

from bot.simulator.calls import Call
from bot.simulator.control import register_controls
from bot.simulator.wire import ApiRequest, Reply, is_openapi_path, openapi_error

if TYPE_CHECKING:
    from bot.simulator.standin import StandIn

log = logging.getLogger(__name__)

API_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


class QuietRequestHandler(WSGIRequestHandler):
    """A request handler that never logs.

    werkzeug's default logs each request line, and oapi request lines carry
    ``access_token`` in the query string.
    """

    def log(self, type: str, message: str, *args: Any) -> None:
        """Drop the message: any of them may quote a request line."""


@dataclass(frozen=True)
class Route:
    """An endpoint: allowed methods, handler, and how it is authenticated.

    ``auth`` is "app" (an app access token is required and the QPS limit
    applies) or "own" (token endpoints and webhooks check for themselves).
    """

    methods: frozenset[str]
    handler: Callable[[ApiRequest], Reply]
    auth: str = "app"


def build_routes(standin: "StandIn") -> dict[str, Route]:
    """The path table; paths are exactly DingTalk's."""
    get, post = frozenset({"GET"}), frozenset({"POST"})
    notice = "/topapi/message/corpconversation/"
    return {
        "/gettoken": Route(get, standin.tokens.gettoken, "own"),
        "/v1.0/oauth2/accessToken": Route(post, standin.tokens.access_token, "own"),
        "/robot/sendBySession": Route(post, standin.sessions.post, "own"),
        "/robot/send": Route(post, standin.custom_robots.post, "own"),
        notice + "asyncsend_v2": Route(post, standin.notices.send),
        notice + "getsendprogress": Route(post, standin.notices.progress),
        notice + "getsendresult": Route(post, standin.notices.result),
        notice + "recall": Route(post, standin.notices.recall),
        "/topapi/v2/department/listsub": Route(post, standin.contacts.listsub),
        "/topapi/v2/department/listsubid": Route(post, standin.contacts.listsubid),
        "/topapi/v2/department/get": Route(post, standin.contacts.department),
        "/topapi/v2/user/list": Route(post, standin.contacts.user_list),
        "/topapi/v2/user/get": Route(post, standin.contacts.user),
        "/topapi/v2/user/getuserinfo": Route(post, standin.contacts.user_info),
        "/topapi/user/listid": Route(post, standin.contacts.user_ids),
        "/call_back/get_call_back_failed_result": Route(get, standin.failed.take),
        "/v1.0/robot/groupMessages/send": Route(post, standin.robot_api.group_send),
        "/v1.0/robot/oToMessages/batchSend": Route(post, standin.robot_api.batch_send),
        "/v1.0/robot/messageFiles/download": Route(post, standin.robot_api.download),
    }


def _not_routed(path: str, status: int) -> Reply:
    message = "no such API in the stand-in" if status == 404 else "method not allowed"
    if is_openapi_path(path):
        return openapi_error(
            status, "NotFound" if status == 404 else "MethodNotAllowed", message
        )
    return Reply(status, {"errcode": status, "errmsg": message})


def answer(standin: "StandIn", routes: dict[str, Route], call: ApiRequest) -> Reply:
    """Run one API call through delay, fault, token, QPS and the endpoint."""
    route = routes.get(call.path)
    if route is None:
        return _not_routed(call.path, 404)
    if call.method not in route.methods:
        return _not_routed(call.path, 405)

    delay = standin.faults.take_delay(call.path)
    if delay > 0:
        time.sleep(delay)

    fault = standin.faults.take_fault(call.path)
    if fault is not None:
        return fault

    if route.auth == "app":
        refusal = standin.tokens.authorize(call) or standin.faults.admit(call.path)
        if refusal is not None:
            return refusal
    return route.handler(call)


def build_app(standin: "StandIn") -> Flask:
    """The Flask app answering the API paths and the ``/_standin/`` controls."""
    app = Flask(__name__)
    routes = build_routes(standin)

    def serve_api(path: str) -> Response:
        arrived = time.time()
        call = ApiRequest.build(
            request.method,
            request.path,
            request.args.to_dict(),
            dict(request.headers),
            request.get_data(),
        )
        reply = answer(standin, routes, call)
        standin.call_log.record(
            Call(
                method=call.method,
                path=call.path,
                query=call.query,
                headers=call.headers,
                body=call.body,
                status=reply.status,
                response=reply.payload,
                at=arrived,
            )
        )
        return Response(
            reply.encode(), status=reply.status, content_type=reply.content_type
        )

    app.add_url_rule(
        "/", "api_root", serve_api, defaults={"path": ""}, methods=API_METHODS
    )
    app.add_url_rule("/<path:path>", "api", serve_api, methods=API_METHODS)
    register_controls(app, standin)
    return app
