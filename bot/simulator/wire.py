"""Wire shapes shared by the stand-in's endpoints: parsed requests and replies.

The two DingTalk hosts answer differently. oapi (``oapi.dingtalk.com``)
answers HTTP 200 with ``errcode``/``errmsg`` even on errors; the v1.0 API
(``api.dingtalk.com``) uses real statuses with ``{code, message, requestid}``.
The stand-in serves both from one base URL and tells them apart by path.
"""

import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

TOKEN_PATHS = frozenset({"/gettoken", "/v1.0/oauth2/accessToken"})

JSON_TYPE = "application/json;charset=UTF-8"


def request_id() -> str:
    """A fresh random id in the style of DingTalk's ``request_id``."""
    return secrets.token_hex(8)


def is_openapi_path(path: str) -> bool:
    """True for the v1.0 API (real HTTP statuses), False for oapi."""
    return path.startswith("/v1.0/")


@dataclass(frozen=True)
class ApiRequest:
    """One inbound call, decoded once so endpoints need not touch Flask.

    ``headers`` keys are lower case. ``json`` is the parsed body, or None when
    the body is empty or not JSON; ``form`` holds a form-encoded body.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    text: str
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        raw: bytes,
    ) -> "ApiRequest":
        """Decode the body as JSON, or as a form when its Content-Type says so."""
        text = raw.decode("utf-8", "replace")
        lowered = {name.lower(): value for name, value in headers.items()}

        parsed = None
        if text.strip():
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None

        form = {}
        if lowered.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            form = dict(parse_qsl(text, keep_blank_values=True))
        return cls(method, path, query, lowered, text, parsed, form)

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case ('' when absent)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def body(self) -> Any:
        """The body as recorded: parsed JSON, else the raw text, else None."""
        if self.json is not None:
            return self.json
        return self.text or None

    def fields(self) -> dict[str, Any]:
        """Body fields from a JSON object or a form; {} for anything else."""
        if isinstance(self.json, dict):
            return self.json
        return dict(self.form)


@dataclass(frozen=True)
class Reply:
    """What an endpoint answers: a status and a JSON object or raw text."""

    status: int
    payload: dict | list | str
    content_type: str = JSON_TYPE

    def encode(self) -> bytes:
        """The body bytes: compact UTF-8 JSON, or the raw text."""
        if isinstance(self.payload, str):
            return self.payload.encode("utf-8")
        return json.dumps(self.payload, ensure_ascii=False).encode("utf-8")


def ok(**fields: Any) -> Reply:
    """An oapi success: errcode 0 plus ``fields``."""
    return Reply(
        200, {"errcode": 0, "errmsg": "ok", **fields, "request_id": request_id()}
    )


def oapi_error(errcode: int | str, errmsg: str) -> Reply:
    """An oapi failure: HTTP 200 with a non-zero errcode, as DingTalk does."""
    payload = {"errcode": errcode, "errmsg": errmsg, "request_id": request_id()}
    return Reply(200, payload)


def openapi_error(status: int, code: str, message: str) -> Reply:
    """A v1.0 failure: a real HTTP status and ``{code, message, requestid}``."""
    return Reply(status, {"code": code, "message": message, "requestid": request_id()})


def bad_parameter(detail: str) -> Reply:
    """oapi 40035, DingTalk's generic "bad parameter" errcode."""
    return oapi_error(40035, f"不合法的参数: {detail}")


def missing_parameter(name: str) -> Reply:
    """v1.0 HTTP 400 for a missing body field, worded like DingTalk's gateway."""
    return openapi_error(400, f"Missing{name}", f"{name} is mandatory for this action.")


def invalid_parameter(detail: str) -> Reply:
    """v1.0 HTTP 400 for a malformed body field."""
    return openapi_error(400, "InvalidParameter", detail)


def as_int(value: Any) -> int | None:
    """An int from an int or a digit string (forms send strings); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None
