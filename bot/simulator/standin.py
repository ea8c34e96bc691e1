"""``StandIn``: a local DingTalk open platform served over real HTTP.

Nothing in the project may call the real DingTalk; tests and benchmarks
point the client at ``standin.url`` instead. The stand-in serves both the
oapi paths and the v1.0 API paths from one base URL, records every call,
and has switches for the failures DingTalk produces (see ``faults``).

All state is guarded by locks, so calls and test controls may come from any
thread. ``clock`` (default ``time.time``) drives token, session, auth-code
and webhook-timestamp expiry and the rate windows; a test may pass a fake
one. ``Call.at`` always uses the real clock.
"""

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from bot.simulator.callbacks import FailedEvents
from bot.simulator.calls import Call, CallLog
from bot.simulator.contacts import Contacts
from bot.simulator.faults import Faults
from bot.simulator.notices import Notices, Task
from bot.simulator.openapi import RobotApi
from bot.simulator.org import Org
from bot.simulator.server import QuietRequestHandler, build_app
from bot.simulator.tokens import Tokens
from bot.simulator.webhooks import CustomRobots, Sessions

log = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StandIn:
    """A fake DingTalk for one app, serving on ``host``:``port`` once started.

    ``robot_code`` defaults to ``app_key`` (internal-app robots use their
    AppKey as robotCode). ``webhook_secrets`` maps a custom robot's
    ``access_token`` to its ``SEC…`` secret, or None for an unsigned robot.
    Raises ValueError for a non-loopback ``host`` unless ``allow_remote``.
    """

    def __init__(
        self,
        app_key: str = "dingtestkey",
        app_secret: str = "test-app-secret",
        agent_id: int = 1001,
        org: Org | None = None,
        qps_limit: int | None = None,
        webhook_secrets: dict[str, str | None] | None = None,
        *,
        robot_code: str | None = None,
        webhook_throttle_code: int = 130101,
        token_ttl: int = 7200,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ValueError(f"refusing to serve on non-loopback host {host!r}")
        self.app_key = app_key
        self.agent_id = agent_id
        self.org = org if org is not None else Org.small()
        self.robot_code = robot_code or app_key
        self._host = host
        self._port = port
        self._qps_limit = qps_limit
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url = ""

        self.call_log = CallLog()
        self.faults = Faults(qps_limit, clock)
        self.tokens = Tokens(app_key, app_secret, token_ttl, clock)
        self.notices = Notices(self.org, agent_id, clock)
        self.contacts = Contacts(self.org, clock)
        self.sessions = Sessions(clock)
        self.custom_robots = CustomRobots(
            webhook_secrets or {}, webhook_throttle_code, clock
        )
        self.robot_api = RobotApi(
            self.org, self.robot_code, self.notices.forbidden, lambda: self.url
        )
        self.failed = FailedEvents()

    def __repr__(self) -> str:
        # Deliberately leaves out the app secret and webhook secrets.
        return f"StandIn(url={self._url or 'not started'!r}, app_key={self.app_key!r})"

    # -- lifecycle -------------------------------------------------------

    def start(self) -> "StandIn":
        """Serve in a daemon thread and return self. Raises RuntimeError if running."""
        if self._server is not None:
            raise RuntimeError("the stand-in is already running")
        server = make_server(
            self._host,
            self._port,
            build_app(self),
            threaded=True,
            request_handler=QuietRequestHandler,
        )
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"http://{host}:{server.server_port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="dingtalk-standin",
            daemon=True,
        )
        self._thread.start()
        log.info("dingtalk stand-in serving on %s", self._url)
        return self

    def stop(self) -> None:
        """Stop serving; a no-op when not running. Recorded state is kept."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        self._server = self._thread = None
        log.info("dingtalk stand-in stopped")

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, for both oapi and v1.0 paths. Raises if not started."""
        if not self._url:
            raise RuntimeError("the stand-in has not been started")
        return self._url

    # -- recorded calls --------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every recorded call so far, oldest first (a snapshot)."""
        return self.call_log.snapshot()

    def calls_to(self, path: str) -> list[Call]:
        """Recorded calls whose path is exactly ``path``."""
        return self.call_log.snapshot(path)

    def clear_calls(self) -> None:
        """Forget the recorded calls."""
        self.call_log.clear()

    @property
    def token_fetches(self) -> int:
        """Token-endpoint calls that issued a token (same-token reissues count)."""
        return self.tokens.fetches

    # -- faults ----------------------------------------------------------

    def revoke_tokens(self) -> None:
        """Current tokens stop working: oapi 40014, v1.0 HTTP 401."""
        self.tokens.revoke()

    def fail(
        self,
        path: str | None,
        times: int,
        *,
        errcode: int | str | None = None,
        status: int | None = None,
        body: str | dict | None = None,
        code: str | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``path`` fail (None: any non-token path).

        ``errcode``: HTTP 200 (or ``status``) with that errcode, int or str.
        ``body``: that raw text (HTML if it starts with "<") or JSON object,
        with ``status`` (default 200). Otherwise HTTP ``status`` with a v1.0
        error body whose ``code`` defaults from the status.
        Raises ValueError for a fault that says nothing.
        """
        self.faults.fail(
            path, times, errcode=errcode, status=status, body=body, code=code
        )

    def delay(
        self, seconds: float, path: str | None = None, times: int | None = None
    ) -> None:
        """Add latency to matching calls.

        ``path`` None matches any path but the token endpoints; ``times`` None
        keeps the delay until ``reset()``.
        """
        self.faults.delay(seconds, path, times)

    def set_qps_limit(self, limit: int | None) -> None:
        """Per-path limit on accepted app-token calls per second; None lifts it.

        Over it: oapi errcode 90018; v1.0 HTTP 403
        ``Forbidden.AccessDenied.QpsLimitForAppkeyAndApi``.
        """
        self.faults.set_qps_limit(limit)

    def forbid(self, user_ids: list[str], code: int = 143105) -> None:
        """Flow-control these users in later work notices and robot batch sends."""
        self.notices.forbid(user_ids, code)

    def reset(self) -> None:
        """Drop faults, delays, forbidden users, rate windows and recorded calls.

        The QPS limit goes back to the one given at construction. Tokens,
        the org, tasks, sessions and failed events are kept.
        """
        self.faults.clear(self._qps_limit)
        self.notices.clear_forbidden()
        self.custom_robots.clear_windows()
        self.call_log.clear()

    # -- robot sessions and webhooks --------------------------------------

    def session_webhook(
        self, session: str = "s1", expires_in: float = 5400
    ) -> tuple[str, int]:
        """Open a session webhook; returns its URL and expiry in epoch ms."""
        expires_at_ms = self.sessions.create(session, expires_in)
        return f"{self.url}/robot/sendBySession?session={session}", expires_at_ms

    def expire_session(self, session: str) -> None:
        """Later posts to ``session`` get HTTP 500. Raises KeyError if unknown."""
        self.sessions.expire(session)

    def session_messages(self, session: str) -> list[dict]:
        """Bodies accepted on that session webhook, oldest first."""
        return self.sessions.messages(session)

    def webhook_messages(self, token: str) -> list[dict]:
        """Bodies accepted by the custom robot with that ``access_token``."""
        return self.custom_robots.messages(token)

    @property
    def group_messages(self) -> list[dict[str, Any]]:
        """Accepted v1.0 group sends, with ``msgParam`` parsed."""
        return self.robot_api.group_messages

    # -- notices, contacts, events ----------------------------------------

    @property
    def tasks(self) -> list[Task]:
        """Accepted work-notice tasks, oldest first."""
        return self.notices.tasks

    def mark_read(self, task_id: int, user_ids: list[str]) -> None:
        """Report these recipients of ``task_id`` as having read it."""
        self.notices.mark_read(task_id, user_ids)

    def auth_code(self, userid: str) -> str:
        """A single-use, 5-minute code for ``getuserinfo``; KeyError if unknown."""
        return self.contacts.auth_code(userid)

    @property
    def failed_events(self) -> list[dict[str, Any]]:
        """Failed deliveries not fetched yet; assign a list to replace them."""
        return self.failed.snapshot()

    @failed_events.setter
    def failed_events(self, items: list[dict[str, Any]]) -> None:
        self.failed.replace(items)
