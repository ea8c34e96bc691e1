"""The HTTP control API under ``/_standin/``: the Python API for other processes.

JSON in, JSON out. A bad argument answers HTTP 400 ``{"error": …}``. These
routes are not recorded as calls and have no QPS limit or faults.
"""

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request

if TYPE_CHECKING:
    from bot.simulator.standin import StandIn


def _payload() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def register_controls(app: Flask, standin: "StandIn") -> None:
    """Add the ``/_standin/`` routes for ``standin`` to ``app``."""

    def calls() -> Any:
        path = request.args.get("path")
        found = standin.calls_to(path) if path else standin.calls
        return {"calls": [call.to_dict() for call in found]}

    def stats() -> Any:
        return {
            "token_fetches": standin.token_fetches,
            "calls": standin.call_log.counts(),
            "tasks": len(standin.tasks),
            "qps_limit": standin.faults.qps_limit,
        }

    def fail() -> Any:
        body = _payload()
        standin.fail(
            body.get("path"),
            body.get("times", 1),
            errcode=body.get("errcode"),
            status=body.get("status"),
            body=body.get("body"),
            code=body.get("code"),
        )
        return {"ok": True}

    def delay() -> Any:
        body = _payload()
        standin.delay(float(body["seconds"]), body.get("path"), body.get("times"))
        return {"ok": True}

    def qps() -> Any:
        standin.set_qps_limit(_payload().get("limit"))
        return {"ok": True}

    def session() -> Any:
        body = _payload()
        url, expires_at = standin.session_webhook(
            body.get("session", "s1"), body.get("expires_in", 5400)
        )
        return {"url": url, "expires_at": expires_at}

    def expire_session() -> Any:
        standin.expire_session(_payload()["session"])
        return {"ok": True}

    def session_messages() -> Any:
        return {"messages": standin.session_messages(request.args["session"])}

    def forbid() -> Any:
        body = _payload()
        standin.forbid(list(body["user_ids"]), code=int(body.get("code", 143105)))
        return {"ok": True}

    def auth_code() -> Any:
        return {"code": standin.auth_code(_payload()["userid"])}

    def failed_events() -> Any:
        if request.method == "POST":
            standin.failed_events = list(_payload()["events"])
        return {"events": standin.failed_events}

    def tasks() -> Any:
        return {"tasks": [_task_dict(task) for task in standin.tasks]}

    def revoke() -> Any:
        standin.revoke_tokens()
        return {"ok": True}

    def reset() -> Any:
        standin.reset()
        return {"ok": True}

    def clear_calls() -> Any:
        standin.clear_calls()
        return {"ok": True}

    actions = {
        "calls": (calls, ["GET"]),
        "stats": (stats, ["GET"]),
        "fail": (fail, ["POST"]),
        "delay": (delay, ["POST"]),
        "qps": (qps, ["POST"]),
        "session": (session, ["POST"]),
        "expire_session": (expire_session, ["POST"]),
        "session_messages": (session_messages, ["GET"]),
        "forbid": (forbid, ["POST"]),
        "auth_code": (auth_code, ["POST"]),
        "failed_events": (failed_events, ["GET", "POST"]),
        "tasks": (tasks, ["GET"]),
        "revoke": (revoke, ["POST"]),
        "reset": (reset, ["POST"]),
        "clear_calls": (clear_calls, ["POST"]),
    }
    for name, (view, methods) in actions.items():
        rule = f"/_standin/{name}"
        app.add_url_rule(rule, f"standin_{name}", _guarded(view), methods=methods)

    def download(code: str) -> Response:
        return Response(
            f"stand-in file {code}".encode(), mimetype="application/octet-stream"
        )

    app.add_url_rule(
        "/_standin/files/<path:code>", "standin_files", download, methods=["GET"]
    )


def _guarded(view: Any) -> Any:
    """Wrap a control view so a bad argument answers 400 instead of 500."""

    def wrapped() -> Any:
        try:
            return view()
        except (KeyError, TypeError, ValueError) as exc:
            response = jsonify(error=f"{type(exc).__name__}: {exc}")
            response.status_code = 400
            return response

    return wrapped


def _task_dict(task: Any) -> dict[str, Any]:
    data = asdict(task)
    data["read"] = sorted(task.read)
    return data
