"""Test kit: robot callbacks signed exactly as DingTalk signs them.

For our tests and for plugin authors::

    from bot.simulator.robot import robot_message, signed_request

    headers, body = signed_request("app secret", robot_message("ping"))
    response = flask_client.post("/dingtalk/robot", headers=headers, data=body)
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from bot.inbound.robot import compute_sign


def sign_headers(secret: str, timestamp_ms: int | None = None) -> dict[str, str]:
    """The ``timestamp`` and ``sign`` headers of a callback sent now (or then)."""
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    return {
        "timestamp": timestamp,
        "sign": compute_sign(timestamp, secret),
        "Content-Type": "application/json; charset=utf-8",
    }


def robot_message(
    text: str = "ping",
    *,
    msgtype: str = "text",
    msg_id: str | None = None,
    robot_code: str = "dingtestkey",
    conversation_id: str = "cidGroup1",
    conversation_type: str = "2",
    conversation_title: str = "ops",
    sender_staff_id: str = "user001",
    sender_nick: str = "Alice",
    session_webhook: str = "",
    session_webhook_expires_at: int | None = None,
    content: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A callback body as DingTalk sends it; each call gets a fresh ``msgId``.

    In a group the text starts with the space the @mention leaves behind.
    Non-text message types take their fields from ``content``.
    """
    now_ms = int(time.time() * 1000)
    body: dict[str, Any] = {
        "msgtype": msgtype,
        "msgId": msg_id or f"msg{uuid.uuid4().hex}",
        "createAt": now_ms,
        "conversationType": conversation_type,
        "conversationId": conversation_id,
        "senderId": "$:LWCP_v1:$" + uuid.uuid5(uuid.NAMESPACE_OID, sender_staff_id).hex,
        "senderNick": sender_nick,
        "senderStaffId": sender_staff_id,
        "senderCorpId": "dingcorp",
        "chatbotUserId": "$:LWCP_v1:$bot",
        "robotCode": robot_code,
        "isAdmin": False,
        "isInAtList": True,
        "sessionWebhook": session_webhook,
        "sessionWebhookExpiredTime": (
            session_webhook_expires_at
            if session_webhook_expires_at is not None else now_ms + 5_400_000
        ),
    }
    if conversation_type == "2":
        body["conversationTitle"] = conversation_title
    if msgtype == "text":
        body["text"] = {"content": (" " if conversation_type == "2" else "") + text}
    else:
        body["content"] = content or {}
    body.update(extra)
    return body


def signed_request(
    secret: str, body: dict[str, Any] | bytes, timestamp_ms: int | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and raw body of a callback signed with ``secret``."""
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return sign_headers(secret, timestamp_ms), raw
