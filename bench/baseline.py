"""The bare Flask endpoints the bot is measured against (``baseline:app``).

Served by the same gunicorn command as the bot (the Procfile's ``web:``
line with ``bot.wsgi:app`` swapped for ``baseline:app``), so the worker
class, threads, worker count and config module are the same. Each route
parses the same JSON the bot parses and returns a fixed answer of the
same shape; nothing is checked, stored, dispatched or logged.
"""

from __future__ import annotations

import json

from flask import Flask, Response, jsonify, request

app = Flask("baseline")

PONG = {"msgtype": "text", "text": {"content": "pong"}}

# Same shape as the bot's encrypted "success" (values are placeholders).
ACK = {
    "msg_signature": "0" * 40,
    "timeStamp": "1700000000000",
    "nonce": "benchnonce",
    "encrypt": "A" * 108,
}


@app.post("/dingtalk/robot")
def robot() -> Response:
    """Parse the robot callback body and answer pong."""
    data = json.loads(request.get_data(cache=False))
    if not isinstance(data, dict):
        return jsonify(error="body is not a JSON object"), 400
    return jsonify(PONG)


@app.post("/dingtalk/events")
def events() -> Response:
    """Parse the event callback body and answer a fixed acknowledgement."""
    data = json.loads(request.get_data(cache=False))
    if not isinstance(data, dict) or "encrypt" not in data:
        return jsonify(error="no encrypt"), 400
    return jsonify(ACK)


@app.get("/healthz")
def healthz() -> Response:
    """Up."""
    return jsonify(status="ok")
