"""Failed event deliveries, served by ``/call_back/get_call_back_failed_result``.

DingTalk removes failed events once they are fetched, so each call takes up
to 200 items off the front of the queue (protocol 1.8).
"""

import threading
from typing import Any

from bot.simulator.wire import ApiRequest, Reply, ok

PAGE_SIZE = 200


class FailedEvents:
    """A thread-safe queue of failed event deliveries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []

    def replace(self, items: list[dict[str, Any]]) -> None:
        """Make ``items`` the whole queue."""
        with self._lock:
            self._items = list(items)

    def snapshot(self) -> list[dict[str, Any]]:
        """The items not fetched yet."""
        with self._lock:
            return list(self._items)

    def take(self, request: ApiRequest) -> Reply:
        """Answer one fetch: up to 200 items, removed from the queue."""
        with self._lock:
            page = self._items[:PAGE_SIZE]
            del self._items[:PAGE_SIZE]
            has_more = bool(self._items)
        return ok(has_more=has_more, failed_list=page)
