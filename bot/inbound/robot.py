"""Robot callbacks: the sign check and the typed message.

DingTalk signs a robot callback with ``sign = base64(HMAC-SHA256(app
secret, timestamp + "\\n" + app secret))`` in the headers. The sign covers
the timestamp only, not the body: anyone who captures one signed request
can replay its headers with another body inside the time window. The
responder therefore also checks the ``robotCode``, drops repeated
``msgId`` values and only trusts session webhooks on DingTalk's host.

Nothing here knows Flask: callers pass header values and raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from bot.errors import RequestRejected, SignatureError

#: Characters DingTalk users type as spaces: full-width and no-break.
_SPACES = str.maketrans({"\u3000": " ", "\u00a0": " "})

MESSAGE_TYPES = ("text", "richText", "picture", "audio", "video", "file")


def compute_sign(timestamp: str, secret: str) -> str:
    """The ``sign`` header DingTalk sends for ``timestamp`` under ``secret``."""
    message = f"{timestamp}\n{secret}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_sign(
    timestamp: str | None,
    sign: str | None,
    secrets: Iterable[str],
    *,
    window: float = 3600.0,
    now: float | None = None,
) -> None:
    """Check the callback's timestamp and sign; raise SignatureError if bad.

    The timestamp (milliseconds) must lie within ``window`` seconds of now
    in either direction. The sign may match any of ``secrets`` (rotation).
    Comparison is constant-time; every secret is tried, so the time taken
    does not reveal which one matched.
    """
    if not timestamp or not sign:
        raise SignatureError("missing timestamp or sign header")
    if not timestamp.isdigit() or len(timestamp) > 16:
        raise SignatureError("timestamp is not a number of milliseconds")

    now_ms = (time.time() if now is None else now) * 1000
    if abs(now_ms - int(timestamp)) > window * 1000:
        raise SignatureError("timestamp outside the allowed window")

    given = sign.encode()
    matched = False
    for secret in secrets:
        expected = compute_sign(timestamp, secret).encode()
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise SignatureError("sign does not match")


def normalise(text: str) -> str:
    """Full-width and no-break spaces made plain; the @mention's gap stripped."""
    return text.translate(_SPACES).strip()


@dataclass(frozen=True)
class AtUser:
    """Someone @mentioned in the message (``staff_id`` is empty for outsiders)."""

    dingtalk_id: str
    staff_id: str = ""


@dataclass(frozen=True)
class Message:
    """One robot callback, typed. Subclasses add what their msgtype carries.

    ``text`` is what dispatch reads as the command line: the typed text
    for text and richText, the speech transcript for audio, else "".
    """

    msg_id: str
    msgtype: str
    conversation_id: str
    conversation_type: str
    sender_nick: str
    sender_staff_id: str
    robot_code: str
    conversation_title: str = ""
    sender_id: str = ""
    sender_corp_id: str = ""
    is_admin: bool = False
    at_users: tuple[AtUser, ...] = ()
    session_webhook: str = ""
    session_webhook_expires_at: int = 0
    create_at: int = 0
    text: str = ""

    @property
    def is_group(self) -> bool:
        """True in a group chat, False in a one-to-one chat with the bot."""
        return self.conversation_type == "2"


@dataclass(frozen=True)
class TextMessage(Message):
    """A plain text message."""


@dataclass(frozen=True)
class RichTextMessage(Message):
    """Text mixed with pictures; ``download_codes`` are the pictures'."""

    download_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PictureMessage(Message):
    """A picture; fetch it with the robot file-download API."""

    download_code: str = ""


@dataclass(frozen=True)
class AudioMessage(Message):
    """A voice message (direct chats only); ``text`` is the transcript."""

    download_code: str = ""
    duration_ms: int = 0


@dataclass(frozen=True)
class VideoMessage(Message):
    """A video (direct chats only)."""

    download_code: str = ""
    duration_ms: int = 0
    video_type: str = ""


@dataclass(frozen=True)
class FileMessage(Message):
    """A file (direct chats only)."""

    download_code: str = ""
    file_name: str = ""


def parse_message(body: bytes) -> Message:
    """Turn a callback body into a typed Message.

    Raises RequestRejected (400) with a short reason when the body is not
    a JSON object, lacks a field every message has, or has an unknown
    ``msgtype``. Never echoes the body in the reason.
    """
    data = _json_object(body)
    msgtype = _string(data, "msgtype", required=True)
    if msgtype not in MESSAGE_TYPES:
        raise RequestRejected("unknown msgtype")

    common = _common_fields(data)
    content = data.get("content")
    content = content if isinstance(content, dict) else {}
    build = _BUILDERS[msgtype]
    return build(data, content, common)


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise RequestRejected("empty body")
    try:
        data = orjson.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestRejected("body is not JSON") from None
    if not isinstance(data, dict):
        raise RequestRejected("body is not a JSON object")
    return data


def _string(data: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key)
    if type(value) is str and value:  # the usual case, checked first
        return value
    if value is None or value == "":
        if required:
            raise RequestRejected(f"missing {key}")
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise RequestRejected(f"{key} is not a string")
    return str(value)


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _common_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "msg_id": _string(data, "msgId", required=True),
        "msgtype": data["msgtype"],
        "conversation_id": _string(data, "conversationId", required=True),
        "conversation_type": _string(data, "conversationType") or "1",
        "conversation_title": _string(data, "conversationTitle"),
        "sender_nick": _string(data, "senderNick"),
        "sender_staff_id": _string(data, "senderStaffId"),
        "sender_id": _string(data, "senderId"),
        "sender_corp_id": _string(data, "senderCorpId"),
        "robot_code": _string(data, "robotCode"),
        "is_admin": data.get("isAdmin") is True,
        "at_users": _at_users(data.get("atUsers")),
        "session_webhook": _string(data, "sessionWebhook"),
        "session_webhook_expires_at": _int(data, "sessionWebhookExpiredTime"),
        "create_at": _int(data, "createAt"),
    }


def _at_users(value: Any) -> tuple[AtUser, ...]:
    if not isinstance(value, list):
        return ()
    users = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("dingtalkId"), str):
            staff_id = item.get("staffId")
            users.append(AtUser(item["dingtalkId"], staff_id if isinstance(staff_id, str) else ""))
    return tuple(users)


def _build_text(data: dict[str, Any], content: dict[str, Any], common: dict) -> Message:
    text = data.get("text")
    if isinstance(text, dict):
        if "content" not in text or not isinstance(text["content"], str):
            raise RequestRejected("text.content is not a string")
        raw = text["content"]
    elif isinstance(data.get("content"), str):
        # One official sample puts the text at the top level (protocol 2.2).
        raw = data["content"]
    else:
        raise RequestRejected("text message without text.content")
    return TextMessage(**common, text=normalise(raw))


def _build_rich_text(data: dict[str, Any], content: dict[str, Any], common: dict) -> Message:
    parts = content.get("richText")
    if not isinstance(parts, list):
        raise RequestRejected("richText message without content.richText")
    texts, codes = [], []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        code = part.get("downloadCode") or part.get("pictureDownloadCode")
        if isinstance(code, str):
            codes.append(code)
    return RichTextMessage(
        **common, text=normalise(" ".join(texts)), download_codes=tuple(codes)
    )


def _build_picture(data: dict[str, Any], content: dict[str, Any], common: dict) -> Message:
    return PictureMessage(**common, download_code=_string(content, "downloadCode"))


def _build_audio(data: dict[str, Any], content: dict[str, Any], common: dict) -> Message:
    return AudioMessage(
        **common,
        text=normalise(_string(content, "recognition")),
        download_code=_string(content, "downloadCode"),
        duration_ms=_int(content, "duration"),
    )


def _build_video(data: dict[str, Any], content: dict[str, Any], common: dict) -> Message:
    return VideoMessage(
        **common,
        download_code=_string(content, "downloadCode"),
        duration_ms=_int(content, "duration"),
        video_type=_string(content, "videoType"),
    )


def _build_file(data: dict[str, Any], content: dict[str, Any], common: dict) -> Message:
    return FileMessage(
        **common,
        download_code=_string(content, "downloadCode"),
        file_name=_string(content, "fileName"),
    )


_BUILDERS = {
    "text": _build_text,
    "richText": _build_rich_text,
    "picture": _build_picture,
    "audio": _build_audio,
    "video": _build_video,
    "file": _build_file,
}
