"""Fault injection: canned failures, added latency and rate limits.

Faults are consumed in the order they were added. A fault or delay with
``path=None`` matches every path except the token endpoints, so a test can
break "the API" while the client can still fetch tokens; name a token path
explicitly to break token fetches.
"""

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bot.simulator.wire import (
    TOKEN_PATHS,
    Reply,
    is_openapi_path,
    oapi_error,
    openapi_error,
)

#: errmsg used for well-known errcodes; anything else gets "injected fault".
ERRMSGS: dict[int, str] = {
    -1: "系统繁忙",
    15: "isp.top-remote-connection-timeout",
    88: "鉴权异常",
    40001: "不合法的access_token",
    40014: "不合法的access_token",
    42001: "access_token超时",
    90002: "服务器处理能力不足,请稍后重试",
    90018: "当前企业所属的应用调用该接口超过每秒调用次数限制",
    90020: "当前企业调用该接口次数已经超过本月上限",
    143103: "当前应用每分钟接收人数超过上限",
    143104: "当前企业每分钟接收人数超过上限",
}

#: default v1.0 ``code`` for a status fault given without one.
STATUS_CODES: dict[int, str] = {
    400: "InvalidParameter",
    401: "InvalidAuthentication",
    403: "Forbidden.AccessDenied",
    404: "NotFound",
    429: "system.busy",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}

QPS_CODE = "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"


def _matches(rule_path: str | None, path: str) -> bool:
    if rule_path is None:
        return path not in TOKEN_PATHS
    return rule_path == path


@dataclass
class Fault:
    """A canned answer for the next ``remaining`` calls to ``path``."""

    path: str | None
    remaining: int
    errcode: int | str | None = None
    status: int | None = None
    body: str | dict | None = None
    code: str | None = None

    def reply(self) -> Reply:
        """The answer: errcode JSON, a raw body, or a v1.0 status error."""
        if self.errcode is not None:
            key = int(self.errcode) if str(self.errcode).lstrip("-").isdigit() else None
            errmsg = ERRMSGS.get(key, "injected fault")
            reply = oapi_error(self.errcode, errmsg)
            return Reply(self.status or 200, reply.payload)

        if self.body is not None:
            if isinstance(self.body, dict):
                return Reply(self.status or 200, self.body)
            looks_html = self.body.lstrip().startswith("<")
            content_type = "text/html;charset=UTF-8" if looks_html else "text/plain"
            return Reply(self.status or 200, self.body, content_type)

        status = self.status or 500
        code = self.code or STATUS_CODES.get(status, "Error")
        return openapi_error(status, code, "injected fault")


@dataclass
class Delay:
    """Extra latency for calls to ``path``; ``remaining`` None means forever."""

    seconds: float
    path: str | None
    remaining: int | None


class SlidingWindow:
    """Admits at most ``limit`` events per key in any ``span`` seconds.

    Only admitted events are counted, so a caller that is refused and backs
    off is not punished further.
    """

    def __init__(self, limit: int, span: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.span = span
        self._clock = clock
        self._lock = threading.Lock()
        self._events: dict[str, deque[float]] = {}

    def admit(self, key: str) -> bool:
        """Count one event for ``key`` if the window has room; say whether it did."""
        now = self._clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.span:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def clear(self) -> None:
        """Forget every counted event."""
        with self._lock:
            self._events.clear()


class Faults:
    """The fault switches of one stand-in, safe to flip from any thread."""

    def __init__(self, qps_limit: int | None, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._faults: list[Fault] = []
        self._delays: list[Delay] = []
        self._qps: SlidingWindow | None = None
        self.set_qps_limit(qps_limit)

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
        """Make the next ``times`` calls to ``path`` fail.

        Raises ValueError when ``times`` < 1, when none of errcode, status
        and body is given, or when ``code`` comes without a ``status``.
        """
        if not isinstance(times, int) or times < 1:
            raise ValueError("times must be a positive integer")
        if errcode is None and status is None and body is None:
            raise ValueError("give errcode, status or body")
        if code is not None and status is None:
            raise ValueError("a v1.0 error code needs an HTTP status")
        fault = Fault(path, times, errcode, status, body, code)
        with self._lock:
            self._faults.append(fault)

    def delay(
        self, seconds: float, path: str | None = None, times: int | None = None
    ) -> None:
        """Add ``seconds`` of latency to matching calls (``times`` None: forever)."""
        if seconds < 0 or (times is not None and times < 1):
            raise ValueError("seconds must be >= 0 and times, if given, >= 1")
        with self._lock:
            self._delays.append(Delay(seconds, path, times))

    def set_qps_limit(self, limit: int | None) -> None:
        """Allow ``limit`` accepted calls per API path per second; None lifts it."""
        if limit is not None and limit < 1:
            raise ValueError("qps limit must be >= 1 or None")
        window = None if limit is None else SlidingWindow(limit, 1.0, self._clock)
        with self._lock:
            self._qps = window

    @property
    def qps_limit(self) -> int | None:
        """The current per-path QPS limit, or None."""
        window = self._qps
        return None if window is None else window.limit

    def take_fault(self, path: str) -> Reply | None:
        """Consume the first fault matching ``path`` and return its answer."""
        with self._lock:
            for fault in self._faults:
                if _matches(fault.path, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault.reply()
        return None

    def take_delay(self, path: str) -> float:
        """Consume the first delay matching ``path``; 0.0 when none does."""
        with self._lock:
            for delay in self._delays:
                if _matches(delay.path, path):
                    if delay.remaining is not None:
                        delay.remaining -= 1
                        if delay.remaining == 0:
                            self._delays.remove(delay)
                    return delay.seconds
        return 0.0

    def admit(self, path: str) -> Reply | None:
        """Count one call against the QPS limit; the throttle reply if over it."""
        window = self._qps
        if window is None or window.admit(path):
            return None
        if is_openapi_path(path):
            return openapi_error(403, QPS_CODE, "请求频率超过限制")
        return oapi_error(90018, ERRMSGS[90018])

    def clear(self, qps_limit: int | None) -> None:
        """Drop every fault and delay and set the QPS limit back to ``qps_limit``."""
        with self._lock:
            self._faults.clear()
            self._delays.clear()
        self.set_qps_limit(qps_limit)
