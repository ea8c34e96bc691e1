"""The two robot webhooks: session webhooks and custom group robots.

Session webhook (protocol 2.3 b): a known, unexpired session answers
``{"errcode":0}``; an expired one answers HTTP 500 as observed in the wild;
an unknown one answers errcode 300001 (our choice: DingTalk's answer for a
made-up session is not documented).

Custom robot (protocol 3): checks the webhook token (400101), the 加签
timestamp and sign (310000 "invalid timestamp" / "sign not match"), the
Content-Type (43004) and body, then at most 20 accepted messages in any 60 s
per token. Only accepted messages count toward that limit, and DingTalk's
10-minute penalty after going over is not modelled.
"""

import base64
import hashlib
import hmac
import threading
from collections.abc import Callable

from bot.simulator.faults import SlidingWindow
from bot.simulator.wire import ApiRequest, Reply, as_int, oapi_error, ok

ROBOT_TYPES = frozenset({"text", "markdown", "link", "actionCard", "feedCard"})
WEBHOOK_LIMIT = 20
WEBHOOK_SPAN = 60.0
SIGN_WINDOW_MS = 3_600_000


def robot_sign(timestamp: str, secret: str) -> str:
    """base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")), not URL-encoded."""
    message = f"{timestamp}\n{secret}".encode("utf-8")
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _check_message(request: ApiRequest) -> Reply | None:
    """None for a JSON robot message of a supported type, else the refusal."""
    if request.content_type != "application/json":
        return oapi_error(43004, "无效的HTTP HEADER Content-Type")
    body = request.json
    if not isinstance(body, dict):
        return oapi_error(40035, "缺少参数 json")
    msgtype = body.get("msgtype")
    if msgtype not in ROBOT_TYPES:
        return oapi_error(400105, "不支持的消息类型")
    if not isinstance(body.get(msgtype), dict):
        return oapi_error(40035, f"缺少参数 {msgtype}")
    return None


class Sessions:
    """Session webhooks created by tests and the messages posted to them."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # session -> expires_at_ms
        self._expiry: dict[str, int] = {}
        self._messages: dict[str, list[dict]] = {}

    def create(self, session: str, expires_in: float) -> int:
        """Open (or reopen) ``session`` for ``expires_in`` s; its expiry in epoch ms."""
        expires_at_ms = int((self._clock() + expires_in) * 1000)
        with self._lock:
            self._expiry[session] = expires_at_ms
            self._messages.setdefault(session, [])
        return expires_at_ms

    def expire(self, session: str) -> None:
        """Make further posts to ``session`` fail. Raises KeyError if unknown."""
        with self._lock:
            if session not in self._expiry:
                raise KeyError(session)
            self._expiry[session] = 0

    def messages(self, session: str) -> list[dict]:
        """A copy of the bodies accepted on ``session`` ([] if unknown)."""
        with self._lock:
            return list(self._messages.get(session, []))

    def post(self, request: ApiRequest) -> Reply:
        """``POST /robot/sendBySession?session=``."""
        session = request.query.get("session", "")
        with self._lock:
            expires_at_ms = self._expiry.get(session)
        if expires_at_ms is None:
            return oapi_error(300001, "session不存在")
        if expires_at_ms <= self._clock() * 1000:
            return Reply(500, "Internal Server Error", "text/plain")

        refusal = _check_message(request)
        if refusal:
            return refusal
        with self._lock:
            self._messages[session].append(request.json)
        return ok()


class CustomRobots:
    """Custom group robots keyed by their webhook ``access_token``.

    ``secrets`` maps a token to its ``SEC…`` secret, or to None for a robot
    without 加签. ``throttle_code`` is the errcode for going over 20 a minute
    (130101 as observed; the doc table says 410100).
    """

    def __init__(
        self,
        secrets: dict[str, str | None],
        throttle_code: int,
        clock: Callable[[], float],
    ) -> None:
        self._secrets = dict(secrets)
        self._throttle_code = throttle_code
        self._clock = clock
        self._window = SlidingWindow(WEBHOOK_LIMIT, WEBHOOK_SPAN, clock)
        self._lock = threading.Lock()
        self._messages: dict[str, list[dict]] = {}

    def messages(self, token: str) -> list[dict]:
        """A copy of the bodies accepted for webhook ``token``."""
        with self._lock:
            return list(self._messages.get(token, []))

    def clear_windows(self) -> None:
        """Forget the per-minute counts (used by ``reset``)."""
        self._window.clear()

    def _check_sign(self, request: ApiRequest, secret: str) -> Reply | None:
        timestamp = request.query.get("timestamp", "")
        sent = as_int(timestamp)
        now_ms = self._clock() * 1000
        if sent is None or abs(now_ms - sent) > SIGN_WINDOW_MS:
            return oapi_error(310000, "invalid timestamp")
        # The query was URL-decoded already; an unencoded "+" arrives as " ".
        expected = robot_sign(timestamp, secret)
        sign = request.query.get("sign", "")
        if not hmac.compare_digest(sign.encode(), expected.encode()):
            return oapi_error(310000, "sign not match")
        return None

    def post(self, request: ApiRequest) -> Reply:
        """``POST /robot/send?access_token=&timestamp=&sign=``."""
        token = request.query.get("access_token", "")
        if token not in self._secrets:
            return oapi_error(400101, "token is not exist")
        secret = self._secrets[token]
        if secret is not None:
            refusal = self._check_sign(request, secret)
            if refusal:
                return refusal

        refusal = _check_message(request)
        if refusal:
            return refusal
        if not self._window.admit(token):
            return oapi_error(
                self._throttle_code, "send too fast, exceed 20 times per minute"
            )
        with self._lock:
            self._messages.setdefault(token, []).append(request.json)
        return ok()
