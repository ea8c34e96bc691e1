"""The v1.0 robot API (protocol 2.2, 2.3 c): group and 1:1 sends, file download.

Errors are real HTTP statuses with ``{code, message, requestid}``: a missing
field gives 400 ``Missing<field>``, a malformed one or a wrong ``robotCode``
400 ``InvalidParameter``. Users marked with ``forbid()`` come back in
``flowControlledStaffIdList``.
"""

import json
import secrets
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from bot.simulator.org import Org
from bot.simulator.wire import (
    ApiRequest,
    Reply,
    invalid_parameter,
    missing_parameter,
)

MAX_PARAM_BYTES = 15_000
MAX_BATCH_USERS = 20
MSG_KEYS = frozenset(
    {
        "sampleText",
        "sampleMarkdown",
        "sampleImageMsg",
        "sampleLink",
        "sampleActionCard",
        "sampleActionCard2",
        "sampleActionCard3",
        "sampleActionCard4",
        "sampleActionCard5",
        "sampleActionCard6",
        "sampleAudio",
        "sampleFile",
        "sampleVideo",
    }
)


def _process_query_key() -> str:
    return secrets.token_urlsafe(24)


class RobotApi:
    """The enterprise robot's proactive-message endpoints.

    ``forbidden`` returns the current forbidden users (shared with work
    notices); ``base_url`` returns the stand-in's URL for download links.
    """

    def __init__(
        self,
        org: Org,
        robot_code: str,
        forbidden: Callable[[], dict[str, int]],
        base_url: Callable[[], str],
    ) -> None:
        self._org = org
        self._robot_code = robot_code
        self._forbidden = forbidden
        self._base_url = base_url
        self._lock = threading.Lock()
        self._group_messages: list[dict[str, Any]] = []

    @property
    def group_messages(self) -> list[dict[str, Any]]:
        """Accepted group sends, as sent but with ``msgParam`` parsed."""
        with self._lock:
            return list(self._group_messages)

    def _check(self, request: ApiRequest, required: tuple[str, ...]) -> Reply | None:
        body = request.json
        if not isinstance(body, dict):
            return invalid_parameter("body must be a JSON object")
        for name in required:
            if body.get(name) in (None, "", []):
                return missing_parameter(name)
        if body["robotCode"] != self._robot_code:
            return invalid_parameter("robotCode does not name a robot of this app")
        return None

    def _check_message(self, body: dict[str, Any]) -> Reply | None:
        if body["msgKey"] not in MSG_KEYS:
            return invalid_parameter("msgKey is not a known message template")
        param = body["msgParam"]
        if not isinstance(param, str):
            return invalid_parameter("msgParam must be a JSON string")
        if len(param.encode("utf-8")) > MAX_PARAM_BYTES:
            return invalid_parameter(f"msgParam is longer than {MAX_PARAM_BYTES} bytes")
        try:
            parsed = json.loads(param)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return invalid_parameter("msgParam must hold a JSON object")
        return None

    def group_send(self, request: ApiRequest) -> Reply:
        """``POST /v1.0/robot/groupMessages/send``."""
        required = ("robotCode", "openConversationId", "msgKey", "msgParam")
        refusal = self._check(request, required)
        body = request.json
        refusal = refusal or self._check_message(body)
        if refusal:
            return refusal
        with self._lock:
            self._group_messages.append(
                {**body, "msgParam": json.loads(body["msgParam"])}
            )
        return Reply(200, {"processQueryKey": _process_query_key()})

    def batch_send(self, request: ApiRequest) -> Reply:
        """``POST /v1.0/robot/oToMessages/batchSend`` to at most 20 userIds."""
        refusal = self._check(request, ("robotCode", "userIds", "msgKey", "msgParam"))
        body = request.json
        refusal = refusal or self._check_message(body)
        if refusal:
            return refusal
        user_ids = body["userIds"]
        if not isinstance(user_ids, list) or not all(
            isinstance(u, str) for u in user_ids
        ):
            return invalid_parameter("userIds must be a list of strings")
        if len(user_ids) > MAX_BATCH_USERS:
            return invalid_parameter(f"userIds has more than {MAX_BATCH_USERS} ids")

        forbidden = self._forbidden()
        reply = {
            "processQueryKey": _process_query_key(),
            "invalidStaffIdList": [u for u in user_ids if self._org.user(u) is None],
            "flowControlledStaffIdList": [u for u in user_ids if u in forbidden],
        }
        return Reply(200, reply)

    def download(self, request: ApiRequest) -> Reply:
        """``POST /v1.0/robot/messageFiles/download``: a URL on the stand-in itself."""
        refusal = self._check(request, ("downloadCode", "robotCode"))
        if refusal:
            return refusal
        code = quote(str(request.json["downloadCode"]), safe="")
        return Reply(200, {"downloadUrl": f"{self._base_url()}/_standin/files/{code}"})
