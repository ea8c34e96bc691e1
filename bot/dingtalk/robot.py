"""Robot sends: session webhooks, the robot OpenAPI, and custom group robots.

- :class:`RobotSender` answers the conversation a message came from: through
  its ``sessionWebhook`` while that is valid (about 90 min, protocol 2.3b),
  then through the robot OpenAPI (2.3c).
- :class:`GroupWebhook` posts to a custom group robot (自定义机器人,
  protocol 3), signing every request and keeping to 20 messages a minute.

Session webhook URLs and custom robot tokens are credentials: they appear in
no log line, error or store key (a robot token is hashed for its key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, quote_plus, urlsplit

from bot.dingtalk.http import (
    Budget,
    CallerError,
    Transport,
    WebhookThrottledError,
)
from bot.dingtalk.tokens import OpenApi
from bot.messages import Message, as_message
from bot.state import Store

logger = logging.getLogger(__name__)

GROUP_SEND = "/v1.0/robot/groupMessages/send"
BATCH_SEND = "/v1.0/robot/oToMessages/batchSend"
USERS_PER_BATCH = 20
# Treat a session webhook as expired a little early: the post itself takes time.
SESSION_MARGIN_MS = 5_000


class SessionExpiredError(CallerError):
    """The conversation's session webhook has expired; use the robot OpenAPI."""


@dataclass(frozen=True)
class BatchSendResult:
    """What one ``oToMessages/batchSend`` call reported."""

    process_query_key: str
    invalid: tuple[str, ...] = ()
    flow_controlled: tuple[str, ...] = ()


class RobotSender:
    """Sends as the app's robot (``robot_code``) into chats."""

    def __init__(self, openapi: OpenApi, robot_code: str,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.openapi = openapi
        self.robot_code = robot_code
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))

    def __repr__(self) -> str:
        return f"RobotSender(robot_code={self.robot_code!r})"

    def send_session(self, message: str | Message, session_webhook: str,
                     expires_at_ms: int) -> None:
        """POST ``message`` to a conversation's session webhook.

        Raises :class:`SessionExpiredError` without calling when
        ``expires_at_ms`` has passed (or is about to), and
        ``DingTalkError`` when the post fails.
        """
        if self.clock_ms() >= expires_at_ms - SESSION_MARGIN_MS:
            raise SessionExpiredError(
                urlsplit(session_webhook).path or "/robot/sendBySession",
                "the session webhook has expired; reply through the robot OpenAPI")
        body = as_message(message).to_webhook()
        self.openapi.transport.request("POST", session_webhook, style="oapi", body=body)

    def send_group(self, message: str | Message, conversation_id: str) -> str:
        """Post ``message`` to a group (openConversationId); return its query key."""
        msg_key, msg_param = as_message(message).to_openapi()
        reply = self.openapi.api("POST", GROUP_SEND, body={
            "robotCode": self.robot_code, "openConversationId": conversation_id,
            "msgKey": msg_key, "msgParam": msg_param})
        return str(reply.get("processQueryKey", ""))

    def send_to_users(self, message: str | Message,
                      user_ids: Sequence[str]) -> list[BatchSendResult]:
        """Send ``message`` one-to-one to users, 20 per call; one result per call.

        A failure mid-way raises; the batches already sent stay sent.
        """
        msg_key, msg_param = as_message(message).to_openapi()
        results = []
        for start in range(0, len(user_ids), USERS_PER_BATCH):
            batch = list(user_ids[start:start + USERS_PER_BATCH])
            reply = self.openapi.api("POST", BATCH_SEND, body={
                "robotCode": self.robot_code, "userIds": batch,
                "msgKey": msg_key, "msgParam": msg_param})
            results.append(BatchSendResult(
                str(reply.get("processQueryKey", "")),
                tuple(reply.get("invalidStaffIdList") or ()),
                tuple(reply.get("flowControlledStaffIdList") or ())))
        return results

    def reply(
        self,
        message: str | Message,
        *,
        session_webhook: str | None,
        expires_at_ms: int | None,
        conversation_id: str,
        conversation_type: str,
        staff_id: str | None,
    ) -> None:
        """Answer a conversation: session webhook while valid, else the OpenAPI.

        After expiry a group (``conversation_type`` "2") gets a group send and
        a direct chat ("1") a one-to-one send to ``staff_id``. Raises
        ``CallerError`` when neither route is possible (for example a direct
        chat with an external user, who has no staff id).
        """
        now = self.clock_ms()
        valid_until = (expires_at_ms or 0) - SESSION_MARGIN_MS
        if session_webhook and now < valid_until:
            self.send_session(message, session_webhook, expires_at_ms)
            return

        if conversation_type == "2":
            self.send_group(message, conversation_id)
        elif conversation_type == "1" and staff_id:
            self.send_to_users(message, [staff_id])
        else:
            raise CallerError(
                BATCH_SEND, "session webhook expired and the sender has no staff id "
                "(conversation type %s); cannot reply" % conversation_type)


def sign(secret: str, timestamp_ms: int) -> str:
    """The URL-encoded ``sign`` of a custom robot request (protocol 3.2, vector H2)."""
    return quote_plus(signature(secret, timestamp_ms))


def signature(secret: str, timestamp_ms: int) -> str:
    """The plain base64 ``sign`` value, before URL encoding."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


# Protocol 3.2: 310000 means a security check failed; errmsg names which one.
_REFUSAL_CAUSES = (
    ("keyword", "the text contains none of the robot's keywords"),
    ("sign", "the signature does not match: check the robot's SEC secret"),
    ("timestamp", "the timestamp is outside DingTalk's one-hour window: check "
                  "this server's clock"),
    ("whitelist", "this server's IP is not in the robot's IP allowlist"),
)


def _refusal_cause(errmsg: str) -> str:
    lowered = errmsg.lower()
    for keyword, cause in _REFUSAL_CAUSES:
        if keyword in lowered:
            return cause
    return "a security setting refused the message"


class GroupWebhook:
    """A custom group robot: signed posts, 20 a minute per robot across processes.

    ``url_or_token`` is the robot's full webhook URL or just its
    ``access_token``; ``secret`` the ``SEC…`` string when 加签 is on.
    """

    def __init__(
        self,
        url_or_token: str,
        secret: str | None = None,
        *,
        store: Store,
        transport: Transport | None = None,
        oapi_url: str = "https://oapi.dingtalk.com",
        penalty_seconds: float = 60.0,
        penalty_retries: int = 1,
        sleep: Callable[[float], None] = time.sleep,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.url, self._token = _split_webhook(url_or_token, oapi_url)
        self._secret = secret
        self.store = store
        self.transport = transport or Transport(app_key="", store=store)
        self.penalty_seconds = penalty_seconds
        self.penalty_retries = penalty_retries
        self.sleep = sleep
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.token_hash = hashlib.sha256(self._token.encode()).hexdigest()[:16]
        # Protocol 3.4: over 20 a minute the robot is throttled for 10 minutes.
        self.budget = Budget(f"hook:{self.token_hash}", 20, 60.0)

    def __repr__(self) -> str:
        return f"GroupWebhook(token_hash={self.token_hash!r})"

    def send(self, message: str | Message) -> None:
        """Post ``message`` to the group; may sleep for the rate budget or a penalty.

        One ``msgUuid`` is reused by every retry so DingTalk drops duplicates.
        Raises ``CallerError`` naming the cause for 310000 (keywords, sign,
        timestamp, IP allowlist), ``WebhookThrottledError`` when throttled
        beyond ``penalty_retries`` waits, other ``DingTalkError`` as usual.
        """
        body = {**as_message(message).to_webhook(), "msgUuid": uuid.uuid4().hex}
        for penalties in range(self.penalty_retries + 1):
            try:
                self._post(body)
                return
            except WebhookThrottledError:
                if penalties == self.penalty_retries:
                    raise
                logger.warning("custom robot throttled, waiting: robot=%s pause=%s",
                               self.token_hash, self.penalty_seconds)
                self.sleep(self.penalty_seconds)

    def _post(self, body: dict) -> None:
        try:
            self.transport.request("POST", self.url, style="oapi", query=self._query,
                                   body=body, budget=self.budget)
            return
        except CallerError as err:
            if err.errcode != 310000:
                raise
            cause = _refusal_cause(err.errmsg)
            refused = CallerError(
                err.api, f"custom robot refused the message: {cause}",
                errcode=err.errcode, request_id=err.request_id)
        raise refused

    def _query(self) -> dict[str, str | int]:
        # Signed afresh for every attempt: DingTalk allows one hour of skew.
        query: dict[str, str | int] = {"access_token": self._token}
        if self._secret:
            timestamp = self.clock_ms()
            query["timestamp"] = timestamp
            # Plain base64: requests URL-encodes query values exactly like
            # quote_plus, giving the wire form of vector H2.
            query["sign"] = signature(self._secret, timestamp)
        return query


def _split_webhook(url_or_token: str, oapi_url: str) -> tuple[str, str]:
    if "://" not in url_or_token:
        return f"{oapi_url.rstrip('/')}/robot/send", url_or_token
    parts = urlsplit(url_or_token)
    token = (parse_qs(parts.query).get("access_token") or [""])[0]
    if not token:
        raise CallerError(parts.path or "/robot/send",
                          "custom robot URL has no access_token parameter")
    return f"{parts.scheme}://{parts.netloc}{parts.path}", token
