"""The robot sign check and message parsing (bot.inbound.robot)."""

from __future__ import annotations

import json

import pytest

from bot.errors import RequestRejected, SignatureError
from bot.inbound import robot
from bot.simulator.robot import robot_message

H1_TIMESTAMP = "1577262236757"
H1_SECRET = "this is a secret"
H1_SIGN = "DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CA="
H1_NOW = 1577262236.757


def test_sign_matches_protocol_vector_h1():
    """compute_sign reproduces vector H1 of the protocol reference."""
    assert robot.compute_sign(H1_TIMESTAMP, H1_SECRET) == H1_SIGN


def test_vector_h1_verifies_at_its_own_time():
    """A request carrying H1 passes when the clock reads its timestamp."""
    robot.verify_sign(H1_TIMESTAMP, H1_SIGN, [H1_SECRET], now=H1_NOW)


def test_any_secret_of_a_rotation_is_accepted():
    """During a rotation the old and the new secret both verify."""
    robot.verify_sign(H1_TIMESTAMP, H1_SIGN, ["new secret", H1_SECRET], now=H1_NOW)


@pytest.mark.parametrize(("timestamp", "sign"), [
    (None, H1_SIGN), (H1_TIMESTAMP, None), ("", H1_SIGN), (H1_TIMESTAMP, ""),
    ("12ab", H1_SIGN), ("-1577262236757", H1_SIGN), ("1" * 40, H1_SIGN),
    (H1_TIMESTAMP, "X" + H1_SIGN[1:]), (H1_TIMESTAMP, "not base64 at all"),
])
def test_missing_malformed_or_wrong_sign_is_rejected(timestamp, sign):
    """Missing, non-numeric or wrong values raise SignatureError."""
    with pytest.raises(SignatureError):
        robot.verify_sign(timestamp, sign, [H1_SECRET], now=H1_NOW)


@pytest.mark.parametrize("offset_s", [-7200, -3601, 3601, 7200])
def test_stale_and_future_timestamps_are_rejected(offset_s):
    """A correct sign outside the one-hour window, either side, fails."""
    with pytest.raises(SignatureError, match="window"):
        robot.verify_sign(H1_TIMESTAMP, H1_SIGN, [H1_SECRET], now=H1_NOW + offset_s)


def test_a_tighter_window_is_honoured():
    """A 60-second window rejects a two-minute-old request."""
    robot.verify_sign(H1_TIMESTAMP, H1_SIGN, [H1_SECRET], window=60, now=H1_NOW + 59)
    with pytest.raises(SignatureError):
        robot.verify_sign(H1_TIMESTAMP, H1_SIGN, [H1_SECRET], window=60,
                          now=H1_NOW + 120)


def _parse(body: dict) -> robot.Message:
    return robot.parse_message(json.dumps(body).encode())


def test_text_loses_the_mention_gap_and_full_width_spaces():
    """' deploy\\u3000api' in a group becomes 'deploy api'."""
    message = _parse(robot_message("deploy\u3000api  v1.4\u3000"))
    assert isinstance(message, robot.TextMessage)
    assert message.text == "deploy api  v1.4"
    assert message.is_group


def test_text_at_top_level_content_is_accepted():
    """The doc sample's top-level 'content' string is read as the text."""
    body = robot_message("x")
    del body["text"]
    body["content"] = " ping"
    assert _parse(body).text == "ping"


def test_rich_text_joins_its_text_parts_and_keeps_picture_codes():
    """richText text parts become the command line; pictures keep their codes."""
    body = robot_message(msgtype="richText", content={"richText": [
        {"text": "deploy"}, {"type": "picture", "downloadCode": "pic1"},
        {"text": "api"}, {"pictureDownloadCode": "pic2"},
    ]})
    message = _parse(body)
    assert isinstance(message, robot.RichTextMessage)
    assert message.text == "deploy api"
    assert message.download_codes == ("pic1", "pic2")


@pytest.mark.parametrize(("msgtype", "content", "cls", "checks"), [
    ("picture", {"downloadCode": "d1"}, robot.PictureMessage, {"download_code": "d1"}),
    ("audio", {"downloadCode": "d2", "duration": 4000, "recognition": "ping"},
     robot.AudioMessage, {"download_code": "d2", "duration_ms": 4000, "text": "ping"}),
    ("video", {"downloadCode": "d3", "duration": 9, "videoType": "mp4"},
     robot.VideoMessage, {"download_code": "d3", "video_type": "mp4"}),
    ("file", {"downloadCode": "d4", "fileName": "a.pdf"}, robot.FileMessage,
     {"download_code": "d4", "file_name": "a.pdf"}),
])
def test_every_media_type_parses_into_its_class(msgtype, content, cls, checks):
    """picture, audio, video and file each become their typed message."""
    message = _parse(robot_message(msgtype=msgtype, content=content,
                                   conversation_type="1"))
    assert type(message) is cls
    for name, value in checks.items():
        assert getattr(message, name) == value


def test_common_fields_are_read():
    """Sender, conversation, webhook and mentions come through."""
    body = robot_message("hi", sender_staff_id="u9", sender_nick="Bo",
                         session_webhook="https://x/robot/sendBySession?session=1",
                         session_webhook_expires_at=123,
                         atUsers=[{"dingtalkId": "$bot", "staffId": ""},
                                  {"dingtalkId": "$u", "staffId": "u2"}])
    message = _parse(body)
    assert (message.sender_staff_id, message.sender_nick) == ("u9", "Bo")
    assert message.session_webhook_expires_at == 123
    assert message.at_users[1] == robot.AtUser("$u", "u2")
    assert message.robot_code == "dingtestkey"


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty body"),
    (b"not json", "body is not JSON"),
    (b"\xff\xfe", "body is not JSON"),
    (b"[1, 2]", "body is not a JSON object"),
    (b"42", "body is not a JSON object"),
    (b'{"msgtype": "sticker", "msgId": "m", "conversationId": "c"}', "unknown msgtype"),
    (b'{"msgId": "m", "conversationId": "c"}', "missing msgtype"),
    (b'{"msgtype": "text", "msgId": "m", "conversationId": "c", "text": {"content": null}}',
     "text.content is not a string"),
    (b'{"msgtype": "text", "msgId": "m", "conversationId": "c", "text": {"content": 5}}',
     "text.content is not a string"),
    (b'{"msgtype": "text", "msgId": "m", "conversationId": "c", "text": "x"}',
     "text message without text.content"),
    (b'{"msgtype": "text", "conversationId": "c", "text": {"content": "x"}}',
     "missing msgId"),
    (b'{"msgtype": "text", "msgId": ["m"], "conversationId": "c", "text": {"content": "x"}}',
     "msgId is not a string"),
])
def test_malformed_bodies_are_rejected_with_a_reason(raw, reason):
    """Each malformed body raises RequestRejected with a short reason."""
    with pytest.raises(RequestRejected) as caught:
        robot.parse_message(raw)
    assert caught.value.reason == reason
    assert caught.value.status == 400
