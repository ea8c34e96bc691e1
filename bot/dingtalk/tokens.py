"""Access tokens: one per app and kind, shared by every process, refetched on error.

DingTalk issues two tokens (protocol 4): the legacy one for ``oapi`` paths,
passed as the ``access_token`` query parameter, and the v1.0 one for ``api``
paths, passed in the ``x-acs-dingtalk-access-token`` header. Each lives 7200 s
and asking again while it is valid returns the same token, so refreshing
early never invalidates a token someone else still holds.

Lookups go: this process's memory (no I/O on the hot path), then the Store,
then, under the Store lock, DingTalk itself, so a whole deployment fetches
one token per lifetime whatever its worker count.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.dingtalk.http import CallerError, Query, TokenError, Transport
from bot.state import LockTimeout, Store

logger = logging.getLogger(__name__)

# Refresh 5 to 10 minutes before expiry (protocol 4.3: the calling guide says
# 10 min, the stream SDK 5 min); the jitter spreads apps sharing one Store.
REFRESH_EARLY = 300.0
REFRESH_JITTER = 300.0
# A fetch is one HTTP call with retries; the lock outlives a dead holder.
LOCK_TTL = 45.0
LOCK_WAIT = 60.0


@dataclass(frozen=True)
class CachedToken:
    """A token with its expiry and the moment it should be refreshed (epoch s)."""

    token: str
    expires_at: float
    refresh_at: float

    def __repr__(self) -> str:
        return f"CachedToken(expires_at={self.expires_at:.0f})"

    def fresh(self, now: float) -> bool:
        """Whether the token can be used without trying to refresh it."""
        return now < self.refresh_at

    def usable(self, now: float) -> bool:
        """Whether the token is still valid, fresh or not."""
        return now < self.expires_at - 5.0

    def dumps(self) -> str:
        """The JSON stored under the cache key."""
        return json.dumps({"token": self.token, "expires_at": self.expires_at,
                           "refresh_at": self.refresh_at})

    @classmethod
    def loads(cls, raw: str | None) -> CachedToken | None:
        """Parse a stored value; None for anything missing or malformed."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(str(data["token"]), float(data["expires_at"]),
                       float(data["refresh_at"]))
        except (ValueError, KeyError, TypeError):
            return None


Fetcher = Callable[[], tuple[str, float]]


class TokenCache:
    """One kind of token for one app, cached in memory and in the Store.

    ``fetch`` returns ``(token, expires_in_seconds)`` from DingTalk.
    """

    def __init__(self, *, kind: str, app_key: str, store: Store, fetch: Fetcher,
                 clock: Callable[[], float] = time.time) -> None:
        self.kind = kind
        self.key = f"token:{kind}:{app_key}"
        self.store = store
        self.fetch = fetch
        self.clock = clock
        self._memo: CachedToken | None = None
        self._local = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenCache(key={self.key!r})"

    def get(self) -> str:
        """A valid token; may fetch one from DingTalk (blocking on the Store lock).

        Raises :class:`DingTalkError` when the fetch fails and no still-valid
        token is at hand.
        """
        memo = self._memo
        if memo is not None and memo.fresh(self.clock()):
            return memo.token

        # One thread per process goes further; the others then find its result.
        with self._local:
            return self._refresh().token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` after DingTalk refused it, if it is still the cached one.

        Comparing first means many workers failing on one token cause a
        single refetch, and a token fetched meanwhile by someone else stays.
        """
        with self._local:
            if self._memo is not None and self._memo.token == token:
                self._memo = None
            try:
                with self.store.lock(self.key, LOCK_TTL, LOCK_WAIT):
                    cached = CachedToken.loads(self.store.get(self.key))
                    if cached is not None and cached.token == token:
                        self.store.delete(self.key)
                        logger.info("dingtalk token dropped: kind=%s", self.kind)
            except LockTimeout:
                # Whoever holds the lock is fetching; its token replaces ours.
                logger.warning("dingtalk token lock busy while dropping: kind=%s",
                               self.kind)

    def _refresh(self) -> CachedToken:
        now = self.clock()
        if self._memo is not None and self._memo.fresh(now):
            return self._memo

        cached = CachedToken.loads(self.store.get(self.key))
        if cached is not None and cached.fresh(now):
            self._memo = cached
            return cached

        try:
            with self.store.lock(self.key, LOCK_TTL, LOCK_WAIT):
                return self._fetch_locked()
        except LockTimeout:
            # The holder is stuck; a token that is stale but valid still works.
            if cached is not None and cached.usable(self.clock()):
                return cached
            raise

    def _fetch_locked(self) -> CachedToken:
        # Someone may have fetched while we waited for the lock.
        cached = CachedToken.loads(self.store.get(self.key))
        now = self.clock()
        if cached is not None and cached.fresh(now):
            self._memo = cached
            return cached

        token, expires_in = self.fetch()
        now = self.clock()
        early = min(REFRESH_EARLY + random.uniform(0, REFRESH_JITTER), expires_in / 2)
        fetched = CachedToken(token, now + expires_in, now + expires_in - early)
        self.store.put(self.key, fetched.dumps(), ttl=expires_in)
        self._memo = fetched
        logger.info("dingtalk token fetched: kind=%s expires_in=%s", self.kind,
                    expires_in)
        return fetched


def fetch_legacy(transport: Transport, oapi_url: str, app_key: str,
                 app_secret: str) -> tuple[str, float]:
    """Ask ``/gettoken`` for the legacy token; returns (token, expires_in)."""
    reply = transport.request(
        "GET", f"{oapi_url}/gettoken", style="oapi",
        query={"appkey": app_key, "appsecret": app_secret})
    return _token_from(reply, "access_token", "expires_in", "/gettoken")


def fetch_v1(transport: Transport, api_url: str, app_key: str,
             app_secret: str) -> tuple[str, float]:
    """Ask ``/v1.0/oauth2/accessToken`` for the v1.0 token: (token, expires_in)."""
    reply = transport.request(
        "POST", f"{api_url}/v1.0/oauth2/accessToken", style="api",
        body={"appKey": app_key, "appSecret": app_secret})
    return _token_from(reply, "accessToken", "expireIn", "/v1.0/oauth2/accessToken")


def _token_from(reply: dict, token_key: str, expiry_key: str,
                api: str) -> tuple[str, float]:
    token = reply.get(token_key)
    if not isinstance(token, str) or not token:
        raise CallerError(api, f"token reply has no {token_key}")
    try:
        expires_in = float(reply.get(expiry_key, 7200))
    except (TypeError, ValueError):
        expires_in = 7200.0
    return token, expires_in


class OpenApi:
    """Authenticated calls: adds the right token, refetches once on a token error.

    The only place the bot turns a path into an authenticated DingTalk call.
    """

    def __init__(self, *, transport: Transport, oapi_url: str, api_url: str,
                 legacy: TokenCache, v1: TokenCache) -> None:
        self.transport = transport
        self.oapi_url = oapi_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.legacy = legacy
        self.v1 = v1

    def __repr__(self) -> str:
        return f"OpenApi(oapi_url={self.oapi_url!r}, api_url={self.api_url!r})"

    def oapi(self, method: str, path: str, *, body: Any = None,
             query: Mapping[str, Any] | None = None) -> dict:
        """Call an ``oapi`` path with the legacy token in the query.

        Raises :class:`DingTalkError`; a refused token is refetched and the
        call sent once more before giving up.
        """
        def send(token: str) -> dict:
            params: Query = {**(query or {}), "access_token": token}
            return self.transport.request(
                method, self.oapi_url + path, style="oapi", query=params, body=body)

        return self._with_token(self.legacy, send)

    def api(self, method: str, path: str, *, body: Any = None) -> dict:
        """Call a v1.0 ``api`` path with the v1.0 token in its header.

        Raises :class:`DingTalkError`; a refused token is refetched and the
        call sent once more before giving up.
        """
        def send(token: str) -> dict:
            headers = {"x-acs-dingtalk-access-token": token}
            return self.transport.request(
                method, self.api_url + path, style="api", body=body, headers=headers)

        return self._with_token(self.v1, send)

    def _with_token(self, cache: TokenCache, send: Callable[[str], dict]) -> dict:
        token = cache.get()
        try:
            return send(token)
        except TokenError as err:
            logger.warning("dingtalk token refused, refetching: api=%s errcode=%s",
                           err.api, err.errcode)
            cache.invalidate(token)

        retry_token = cache.get()
        try:
            return send(retry_token)
        except TokenError as err:
            logger.error("dingtalk token refused twice: api=%s errcode=%s",
                         err.api, err.errcode)
            raise

