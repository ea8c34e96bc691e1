"""Access tokens: issuing them from the two token endpoints and checking them.

Like DingTalk, asking again while the current token is valid returns the
same token and extends its life (protocol 4.3). One legacy and one v1.0
token are current at a time. Either kind is accepted on either host,
because the official stream SDK uses a v1.0 token on oapi (protocol 4.4).
"""

import hmac
import secrets
import threading
from collections.abc import Callable

from bot.simulator.wire import (
    ApiRequest,
    Reply,
    is_openapi_path,
    oapi_error,
    ok,
    openapi_error,
)

OPENAPI_TOKEN_HEADER = "x-acs-dingtalk-access-token"


class Tokens:
    """The token state of one app.

    ``fetches`` counts token calls that issued (or re-issued) a token; calls
    with bad credentials do not count.
    """

    def __init__(
        self, app_key: str, app_secret: str, ttl: int, clock: Callable[[], float]
    ) -> None:
        self._app_key = app_key
        self._app_secret = app_secret
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        # kind ("oapi" or "v1") -> (token, expires_at)
        self._current: dict[str, tuple[str, float]] = {}
        self.fetches = 0

    def _credentials_match(self, app_key: object, app_secret: object) -> bool:
        if not isinstance(app_key, str) or not isinstance(app_secret, str):
            return False
        key_ok = hmac.compare_digest(app_key.encode(), self._app_key.encode())
        secret_ok = hmac.compare_digest(app_secret.encode(), self._app_secret.encode())
        return key_ok and secret_ok

    def _issue(self, kind: str) -> str:
        now = self._clock()
        with self._lock:
            self.fetches += 1
            current = self._current.get(kind)
            token = (
                current[0] if current and current[1] > now else secrets.token_hex(16)
            )
            self._current[kind] = (token, now + self._ttl)
            return token

    def gettoken(self, request: ApiRequest) -> Reply:
        """``GET /gettoken``: 40089 for a wrong appkey or appsecret."""
        app_key = request.query.get("appkey")
        app_secret = request.query.get("appsecret")
        if not self._credentials_match(app_key, app_secret):
            return oapi_error(40089, "invalid appkey or appsecret")
        token = self._issue("oapi")
        return ok(access_token=token, expires_in=self._ttl)

    def access_token(self, request: ApiRequest) -> Reply:
        """``POST /v1.0/oauth2/accessToken``: HTTP 400 for bad creds or non-JSON."""
        body = request.json
        if not isinstance(body, dict):
            return openapi_error(400, "MissingBody", "body is mandatory")
        if not self._credentials_match(body.get("appKey"), body.get("appSecret")):
            return openapi_error(
                400, "invalidClientIdOrSecret", "无效的clientId或者clientSecret"
            )
        token = self._issue("v1")
        return Reply(200, {"accessToken": token, "expireIn": self._ttl})

    def revoke(self) -> None:
        """Make the current tokens invalid; the next fetch issues new ones."""
        with self._lock:
            self._current.clear()

    def _status(self, token: str) -> str:
        now = self._clock()
        with self._lock:
            current = list(self._current.values())
        for value, expires_at in current:
            if hmac.compare_digest(value.encode(), token.encode()):
                return "valid" if expires_at > now else "expired"
        return "invalid"

    def authorize(self, request: ApiRequest) -> Reply | None:
        """None when the call carries a valid token, else DingTalk's refusal.

        oapi: 41001 missing, 40014 wrong or revoked, 42001 expired (HTTP 200).
        v1.0: HTTP 401 ``InvalidAuthentication`` for all three.
        """
        if is_openapi_path(request.path):
            token = request.headers.get(OPENAPI_TOKEN_HEADER, "")
            if not token or self._status(token) != "valid":
                return openapi_error(
                    401, "InvalidAuthentication", "不合法的access_token"
                )
            return None

        token = request.query.get("access_token", "")
        if not token:
            return oapi_error(41001, "缺少access_token参数")
        status = self._status(token)
        if status == "expired":
            return oapi_error(42001, "access_token超时")
        if status == "invalid":
            return oapi_error(40014, "不合法的access_token")
        return None
