"""The shared DingTalk client: the only code that calls DingTalk's APIs.

``DingTalkClient`` is the entry point; the errors are here for ``except``
clauses. Layers, bottom up: ``http`` (errors, pacing, retries), ``tokens``
(token cache and authenticated calls), then ``notices``, ``robot`` and
``contacts``.
"""

from bot.dingtalk.client import DingTalkClient
from bot.dingtalk.contacts import AuthUser, Department, User
from bot.dingtalk.http import (
    BannedError,
    CallerError,
    DingTalkError,
    QuotaExhaustedError,
    ThrottledError,
    TokenError,
    TransportError,
    WebhookThrottledError,
)
from bot.dingtalk.notices import SendProgress, SendResult
from bot.dingtalk.robot import GroupWebhook, SessionExpiredError

__all__ = [
    "AuthUser",
    "BannedError",
    "CallerError",
    "Department",
    "DingTalkClient",
    "DingTalkError",
    "GroupWebhook",
    "QuotaExhaustedError",
    "SendProgress",
    "SendResult",
    "SessionExpiredError",
    "ThrottledError",
    "TokenError",
    "TransportError",
    "User",
    "WebhookThrottledError",
]
