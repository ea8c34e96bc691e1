"""HTTP to DingTalk: typed errors, pacing against the rate budget, retries.

Everything here is token-agnostic: :mod:`bot.dingtalk.tokens` adds the token
and handles token errors; this module sends one logical request, paces it
against a rate budget shared through the :class:`~bot.state.Store`, turns
DingTalk's two reply styles into a dict or a :class:`DingTalkError`, and
retries what is worth retrying.

Two reply styles (protocol 7.2): ``oapi`` answers HTTP 200 with an
``errcode`` (sometimes a string); the v1.0 ``api`` answers with real HTTP
statuses and ``{"code", "message", "requestid"}`` on errors.

Nothing here logs or raises with a URL's query, a body, or requests'
own exception text: those carry tokens, the app secret or a session key.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from bot.errors import UpstreamError
from bot.state import Store

logger = logging.getLogger(__name__)

Style = Literal["oapi", "api"]


# -- errors ---------------------------------------------------------------------


class DingTalkError(UpstreamError):
    """A DingTalk call failed; the subclass says what the caller should do.

    ``api`` is the URL path without its query (it is safe to show), and the
    message never holds a token, a secret or a request body.
    """

    retryable = False

    def __init__(
        self,
        api: str,
        errmsg: str,
        *,
        errcode: int | str | None = None,
        request_id: str | None = None,
        status: int | None = None,
    ) -> None:
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg
        self.request_id = request_id
        self.status = status
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"DingTalk {self.api} failed"]
        if self.errcode is not None:
            parts.append(f"errcode {self.errcode}")
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        text = ", ".join(parts) + f": {self.errmsg}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text


class ThrottledError(DingTalkError):
    """DingTalk's rate limit refused the call; it is retried with backoff."""

    retryable = True


class WebhookThrottledError(ThrottledError):
    """A custom robot exceeded 20 messages a minute (130101 / 410100).

    Not retried by the backoff loop: DingTalk's penalty lasts one to ten
    minutes, so :class:`~bot.dingtalk.robot.GroupWebhook` waits it out.
    """


class TokenError(DingTalkError):
    """The access token was refused; the caller refetches it and retries once."""

    retryable = True


class CallerError(DingTalkError):
    """The request itself is wrong (parameters, permissions, ids); never retried."""


class QuotaExhaustedError(DingTalkError):
    """The org's monthly API quota is used up (90020); retrying will not help."""


class BannedError(DingTalkError):
    """DingTalk banned this source IP or app for a while; stop calling.

    ``retry_after`` is the pause DingTalk asks for, in seconds.
    """

    retryable = True

    def __init__(self, api: str, errmsg: str, *, retry_after: float = 300.0,
                 **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(api, errmsg, **kwargs)


class TransportError(DingTalkError):
    """No usable answer: timeout, connection error, 5xx, -1 or an auth timeout."""

    retryable = True


# Protocol 4.5 and 7.3: codes meaning "refetch the token and retry once".
TOKEN_ERRCODES = frozenset({40014, 42001, 40001, 33001, 41001})
THROTTLE_ERRCODES = frozenset({90018, 90002, 143103, 143104})
WEBHOOK_THROTTLE_ERRCODES = frozenset({130101, 410100})
TRANSPORT_ERRCODES = frozenset({-1, 15})
QUOTA_ERRCODES = frozenset({90020})
BAN_ERRCODES = frozenset({*range(90001, 90015), 90017})
# Protocol 2.3(c): robot OpenAPI throttling arrives as HTTP 400 with these codes.
API_THROTTLE_CODES = frozenset(
    {"send.too.fast", "send.byToken.tooFast", "too.many.group", "too.many.people"}
)


def classify_oapi(api: str, status: int, body: Any) -> DingTalkError | None:
    """The error an oapi-style reply stands for, or None when it succeeded."""
    if not isinstance(body, dict):
        return _non_json(api, status)
    if body.get("status") == 1111:
        return BannedError(api, "per-IP ban reply (status 1111)", status=status,
                           retry_after=_ban_wait(body))
    if status >= 500:
        return TransportError(api, "server error", status=status,
                              request_id=body.get("request_id"))

    try:
        errcode = int(body.get("errcode", 0))
    except (TypeError, ValueError):
        return TransportError(api, "unreadable errcode in reply", status=status)
    if errcode == 0:
        return None

    errmsg = str(body.get("errmsg", ""))
    kwargs: dict[str, Any] = {"errcode": errcode, "request_id": body.get("request_id")}
    return _oapi_error_class(errcode, body)(api, errmsg, **kwargs)


def _oapi_error_class(errcode: int, body: dict) -> type[DingTalkError]:
    if errcode == 88:
        return _auth_error_class(body)
    if errcode in TOKEN_ERRCODES:
        return TokenError
    if errcode in THROTTLE_ERRCODES:
        return ThrottledError
    if errcode in WEBHOOK_THROTTLE_ERRCODES:
        return WebhookThrottledError
    if errcode in TRANSPORT_ERRCODES:
        return TransportError
    if errcode in QUOTA_ERRCODES:
        return QuotaExhaustedError
    if errcode in BAN_ERRCODES:
        return BannedError
    # Unknown codes are not retried: retrying a bad request only burns quota.
    return CallerError


def _auth_error_class(body: dict) -> type[DingTalkError]:
    # The key spelling of 88's sub code is UNCONFIRMED (protocol 4.5): accept both.
    # An empty sub code means DingTalk's auth service timed out (retryable).
    sub = str(body.get("sub_code") or body.get("subCode") or "").strip()
    if not sub:
        return TransportError
    if sub.isdigit() and int(sub) in TOKEN_ERRCODES:
        return TokenError
    return CallerError


def classify_api(api: str, status: int, body: Any) -> DingTalkError | None:
    """The error a v1.0-style reply stands for, or None when it succeeded."""
    if 200 <= status < 300 and isinstance(body, dict):
        return None
    if not isinstance(body, dict):
        return _non_json(api, status)
    if body.get("status") == 1111:
        return BannedError(api, "per-IP ban reply (status 1111)", status=status,
                           retry_after=_ban_wait(body))

    code = str(body.get("code", ""))
    errmsg = str(body.get("message", "")) or code or "error reply"
    kwargs: dict[str, Any] = {"errcode": code or None, "status": status,
                              "request_id": body.get("requestid")}
    return _api_error_class(status, code)(api, errmsg, **kwargs)


def _api_error_class(status: int, code: str) -> type[DingTalkError]:
    if status == 401 or code == "InvalidAuthentication":
        return TokenError
    if status == 429 or "QpsLimit" in code or "QpmLimit" in code:
        return ThrottledError
    if code in API_THROTTLE_CODES:
        return ThrottledError
    if code == "Forbidden.AccessDenied.ApiCountLimitForOrg":
        return QuotaExhaustedError
    if status >= 500:
        return TransportError
    return CallerError


def _non_json(api: str, status: int) -> DingTalkError:
    if status >= 500:
        return TransportError(api, "server error with a non-JSON body", status=status)
    # DingTalk's per-IP ban (10,000 calls / 20 s) answers with an HTML page.
    return BannedError(
        api, "non-JSON reply, most likely DingTalk's per-IP ban page; stop calling "
        "for 5 minutes", status=status)


def _ban_wait(body: dict) -> float:
    try:
        return max(float(body.get("wait", 5)) * 60.0, 60.0)
    except (TypeError, ValueError):
        return 300.0


# -- sessions -------------------------------------------------------------------

_session_lock = threading.Lock()
_session: requests.Session | None = None
_session_pid = 0


def shared_session() -> requests.Session:
    """This process's pooled session, created afresh after a fork.

    A session inherited across ``fork`` would share its sockets with the
    parent, so each gunicorn worker builds its own on first use.
    """
    global _session, _session_pid
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _session, _session_pid = session, os.getpid()
        return _session


# urllib3 logs every request line, query included, at DEBUG; a query can
# carry ``access_token``, ``appsecret``, ``sign`` or a session key.
_SECRET_QUERY = re.compile(
    r"((?:access_token|appsecret|sign|session|timestamp)=)[^&\s\"]*", re.IGNORECASE
)


class _RedactQuery(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a
                for a in record.args
            )
        record.msg = _SECRET_QUERY.sub(r"\1***", str(record.msg))
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactQuery())


# -- the request loop -------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """A rate budget: at most ``limit`` calls in any ``window`` seconds."""

    bucket: str
    limit: int
    window: float


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry: attempts and total time both bound the loop.

    Sleeps use full jitter, ``uniform(0, min(cap, base * 2**attempt))``;
    a throttled call waits at least ``throttle_pause`` (DingTalk asks for
    about 1 s after 90018).
    """

    max_attempts: int = 5
    max_seconds: float = 30.0
    base: float = 0.5
    cap: float = 8.0
    throttle_pause: float = 1.0

    def delay(self, attempt: int, error: DingTalkError) -> float:
        """The jittered pause before retry number ``attempt + 1``."""
        pause = random.uniform(0, min(self.cap, self.base * 2**attempt))
        if isinstance(error, ThrottledError):
            pause = max(pause, self.throttle_pause)
        return pause


Query = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class Transport:
    """Sends requests to DingTalk with pacing, timeouts, typed errors and retries.

    ``qps`` calls per second per API path are shared by every process using
    the same ``store``; ``rate_margin`` widens the window (see ``budget``).
    """

    def __init__(
        self,
        *,
        app_key: str,
        store: Store,
        qps: int = 20,
        timeout: tuple[float, float] = (3.05, 10.0),
        retry: RetryPolicy | None = None,
        rate_margin: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.app_key = app_key
        self.store = store
        self.qps = qps
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.rate_margin = rate_margin
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"Transport(app_key={self.app_key!r}, qps={self.qps})"

    def budget(self, api: str) -> Budget:
        """The per-app, per-API budget (DingTalk's 20 QPS, protocol 7.1).

        The window is a little longer than 1 s because slots are reserved
        on our clock but counted on DingTalk's arrival times: network and
        scheduling jitter can bring two calls reserved 1.0 s apart closer
        together on arrival, so ``rate_margin`` seconds absorb that jitter.
        """
        return Budget(f"rate:{self.app_key}:{api}", self.qps, 1.0 + self.rate_margin)

    def request(
        self,
        method: str,
        url: str,
        *,
        style: Style,
        query: Query | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
    ) -> dict:
        """Send until success or a final error; return the decoded JSON reply.

        ``query`` may be a callable, evaluated per attempt (for signatures
        that must be fresh). Raises a :class:`DingTalkError` subclass; the
        transient ones only after the retry policy is spent. Sleeps while
        pacing and backing off.
        """
        api = urlsplit(url).path or "/"
        budget = budget or self.budget(api)
        policy = retry or self.retry
        deadline = time.monotonic() + policy.max_seconds
        attempt = 0
        while True:
            self._pace(budget)
            try:
                return self._send(method, url, api, style, query, body, headers)
            except (TransportError, ThrottledError) as err:
                # A POST that timed out may still have been carried out. Known
                # limit: resends lean on DingTalk's dedupe (same work notice
                # content to a user once a day, protocol 5.3; robot msgUuid).
                if isinstance(err, WebhookThrottledError):
                    raise self._final(err, attempt + 1) from None
                pause = policy.delay(attempt, err)
                attempt += 1
                out_of_time = time.monotonic() + pause > deadline
                if attempt >= policy.max_attempts or out_of_time:
                    raise self._final(err, attempt) from None
                logger.warning(
                    "dingtalk call retried: api=%s attempt=%s errcode=%s status=%s "
                    "error=%s pause=%.2f", api, attempt, err.errcode, err.status,
                    type(err).__name__, pause)
                self.sleep(pause)
            except DingTalkError as err:
                raise self._final(err, attempt + 1) from None

    def _pace(self, budget: Budget) -> None:
        wait = self.store.reserve(budget.bucket, budget.limit, budget.window)
        if wait > 0:
            self.sleep(wait)

    def _final(self, err: DingTalkError, attempts: int) -> DingTalkError:
        # Token errors are routine (the caller refetches), so they stay quiet.
        if not isinstance(err, TokenError):
            logger.error(
                "dingtalk call failed: api=%s attempts=%s errcode=%s status=%s "
                "error=%s request_id=%s", err.api, attempts, err.errcode, err.status,
                type(err).__name__, err.request_id)
        return err

    def _send(
        self,
        method: str,
        url: str,
        api: str,
        style: Style,
        query: Query | None,
        body: Any,
        headers: Mapping[str, str] | None,
    ) -> dict:
        params = query() if callable(query) else query
        all_headers = dict(headers or {})
        data = None
        if body is not None:
            data = encode_json(body)
            all_headers["Content-Type"] = "application/json; charset=utf-8"

        failure = None
        try:
            response = shared_session().request(
                method, url, params=params, data=data, headers=all_headers,
                timeout=self.timeout, allow_redirects=False)
        except requests.Timeout:
            failure = "timed out"
        except requests.RequestException as exc:
            # requests' message holds the full URL with its query: name the type only.
            failure = f"connection failed ({type(exc).__name__})"
        if failure is not None:
            # Raised outside the except block so no URL-bearing exception is chained.
            raise TransportError(api, failure)

        reply = decode_json(response.content)
        classify = classify_oapi if style == "oapi" else classify_api
        error = classify(api, response.status_code, reply)
        if error is not None:
            raise error
        return reply if isinstance(reply, dict) else {}


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, the form ``bot.messages`` measures sizes on."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def decode_json(content: bytes) -> Any:
    """The parsed reply, ``{}`` for an empty body, or None if it is not JSON."""
    if not content.strip():
        return {}
    try:
        return json.loads(content)
    except ValueError:
        return None
