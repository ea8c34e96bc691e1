"""The long-lived parts of one bot process, built once from Settings.

Everything here is created lazily and per process: gunicorn forks its
workers after the app object exists, and connections, thread pools and
HTTP sessions must not cross a fork.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.dispatch import Dispatcher, Plugin
from bot.jobs import JobPool
from bot.state import Store, open_store

if TYPE_CHECKING:
    from bot.dingtalk import DingTalkClient


class Services:
    """Settings, plugins, state store, job pool and DingTalk client of a process."""

    def __init__(self, settings: Settings, plugins: list[Plugin]) -> None:
        self.settings = settings
        self.dispatcher = Dispatcher(plugins, admins=frozenset(settings.admins))
        self.pool = JobPool(settings.handler_threads)
        self._lock = threading.Lock()

    @cached_property
    def store(self) -> Store:
        """The shared state backend (SQLite, or Redis when REDIS_URL is set)."""
        return open_store(self.settings.redis_url or None, self.settings.data_dir)

    @cached_property
    def client(self) -> DingTalkClient:
        """The one DingTalk client every outbound call goes through."""
        from bot.dingtalk import DingTalkClient

        settings = self.settings
        return DingTalkClient(
            app_key=settings.app_key,
            app_secret=settings.app_secret.reveal(),
            agent_id=settings.agent_id,
            robot_code=settings.robot_code,
            oapi_url=settings.oapi_url,
            api_url=settings.api_url,
            store=self.store,
            qps=settings.api_qps,
        )

    def trusts_webhook(self, url: str) -> bool:
        """Whether ``url`` is a session webhook on the configured DingTalk host.

        The robot sign does not cover the body, so a replayed request could
        carry any URL; posting only to DingTalk's own host stops the bot from
        being turned into a proxy.
        """
        return url.startswith(self.settings.oapi_url + "/robot/sendBySession?")
