"""The facade: one client per app, holding the transport, tokens and senders."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from bot.dingtalk.contacts import Contacts
from bot.dingtalk.http import RetryPolicy, Transport
from bot.dingtalk.notices import WorkNotices
from bot.dingtalk.robot import GroupWebhook, RobotSender
from bot.dingtalk.tokens import OpenApi, TokenCache, fetch_legacy, fetch_v1
from bot.state import Store

logger = logging.getLogger(__name__)

FAILED_EVENTS = "/call_back/get_call_back_failed_result"


class DingTalkClient:
    """Every outbound DingTalk call of the bot goes through one of these.

    ``client.notices`` sends work notices, ``client.robot`` answers chats,
    ``client.contacts`` reads the org chart and ``client.group_webhook()``
    builds custom-robot senders. Tokens, rate budgets and the custom robots'
    minute budgets are shared through ``store`` by every process using it.
    """

    def __init__(
        self,
        *,
        app_key: str,
        app_secret: str,
        agent_id: int | None,
        robot_code: str,
        oapi_url: str,
        api_url: str,
        store: Store,
        qps: int = 20,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_attempts: int = 5,
        max_retry_seconds: float = 30.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        throttle_pause: float = 1.0,
        rate_margin: float = 0.05,
    ) -> None:
        self.app_key = app_key
        self.agent_id = agent_id
        self.oapi_url = oapi_url.rstrip("/")
        self.store = store
        retry = RetryPolicy(max_attempts=max_attempts, max_seconds=max_retry_seconds,
                            base=backoff_base, cap=backoff_cap,
                            throttle_pause=throttle_pause)
        self.transport = Transport(app_key=app_key, store=store, qps=qps,
                                   timeout=timeout, retry=retry,
                                   rate_margin=rate_margin)

        transport, api_base = self.transport, api_url.rstrip("/")
        self.legacy_token = TokenCache(
            kind="legacy", app_key=app_key, store=store,
            fetch=lambda: fetch_legacy(transport, self.oapi_url, app_key, app_secret))
        self.v1_token = TokenCache(
            kind="v1", app_key=app_key, store=store,
            fetch=lambda: fetch_v1(transport, api_base, app_key, app_secret))
        self.openapi = OpenApi(transport=transport, oapi_url=self.oapi_url,
                               api_url=api_base, legacy=self.legacy_token,
                               v1=self.v1_token)

        self.notices = WorkNotices(self.openapi, agent_id)
        self.robot = RobotSender(self.openapi, robot_code)
        self.contacts = Contacts(self.openapi)

    def __repr__(self) -> str:
        return f"DingTalkClient(app_key={self.app_key!r}, agent_id={self.agent_id!r})"

    def group_webhook(self, url_or_token: str, secret: str | None = None, *,
                      penalty_seconds: float = 60.0) -> GroupWebhook:
        """A sender for one custom group robot, sharing this client's transport."""
        return GroupWebhook(url_or_token, secret, store=self.store,
                            transport=self.transport, oapi_url=self.oapi_url,
                            penalty_seconds=penalty_seconds)

    def failed_events(self) -> Iterator[dict[str, Any]]:
        """Event pushes DingTalk failed to deliver, page by page (up to 200 each).

        DingTalk removes what it hands out, so every item is yielded once;
        an item abandoned mid-iteration is gone.
        """
        while True:
            reply = self.openapi.oapi("GET", FAILED_EVENTS)
            yield from reply.get("failed_list") or []
            if not reply.get("has_more"):
                return
