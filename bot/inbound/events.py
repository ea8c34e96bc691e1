"""Typed DingTalk events from encrypted HTTP callbacks and the failed-push list.

Two plaintext formats arrive (``dingtalk-protocol.md`` 1.7): legacy
API-registered callbacks in Pascal case with no event id (``UserId``,
``TimeStamp``), and app-level pushes with an envelope (``eventId``,
``EventTime``, ``CorpId``, ``BizId``) beside camel-case business fields
(``userId``). Both become one ``Event``; legacy ones get a stable hash as id
so redeliveries can be deduplicated.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import UpstreamError
from bot.inbound.cipher import CallbackCipher, CallbackRejectedError

#: Validation pushes that must be answered with the sealed ``success`` at once.
URL_CHECK_TYPES = frozenset(
    {"check_url", "check_create_suite_url", "check_update_suite_url"}
)

# Keys that describe the delivery rather than the business event; everything
# else in the plaintext goes to ``Event.data`` under its original name.
# App-level ``timeStamp`` and ``corpId`` stay in data: the event pages list
# them as business fields (chat_add_member has both casings of corp id).
_ENVELOPE_KEYS = frozenset(
    {"EventType", "eventId", "EventTime", "CorpId", "BizId", "TimeStamp"}
)
_TIME_KEYS = ("EventTime", "TimeStamp", "timeStamp")

# Longer digit strings are not epoch times and would only make int() slow.
_MAX_TIME_DIGITS = 20


@dataclass(frozen=True)
class Event:
    """One DingTalk event, whichever format it arrived in.

    ``id`` is the app-level ``eventId``, or for legacy payloads (``legacy``
    true) a sha256 hex of the type, time, corp id and payload. ``data`` holds
    the business fields under their original keys; it is left out of the
    repr so that logging an event never logs its content.
    """

    type: str
    id: str
    time: int | None
    corp_id: str | None
    data: dict[str, Any] = field(hash=False, repr=False)
    legacy: bool

    def get(self, name: str, default: Any = None) -> Any:
        """Return the business field ``name``, matching its case loosely.

        An exact key wins; otherwise the first key equal ignoring case, so
        ``get("userid")`` finds legacy ``UserId`` and app-level ``userId``.
        """
        if name in self.data:
            return self.data[name]

        wanted = name.lower()
        for key, value in self.data.items():
            if key.lower() == wanted:
                return value
        return default

    @property
    def user_ids(self) -> list[str]:
        """The staff ids in ``UserId``/``userId`` (user_add_org and kin), or []."""
        value = self.get("userid")
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            return []
        return [str(item) for item in value if isinstance(item, str | int)]

    @property
    def is_url_check(self) -> bool:
        """Whether this is a URL validation push (see ``URL_CHECK_TYPES``)."""
        return self.type in URL_CHECK_TYPES


def parse_event(plaintext: str) -> Event:
    """Parse decrypted callback plaintext in either format into an ``Event``.

    Raises ``CallbackRejectedError`` if the text is not a JSON object or has
    no string ``EventType``. A missing or odd time gives ``time=None``.
    """
    payload = _load_object(plaintext, "plaintext_json")
    event_type = payload.get("EventType")
    if not isinstance(event_type, str) or not event_type:
        raise CallbackRejectedError.at("event_type")

    corp_id = payload.get("CorpId")
    if not isinstance(corp_id, str):
        corp_id = _corp_id_of(payload)
    data = {key: value for key, value in payload.items() if key not in _ENVELOPE_KEYS}
    return _build_event(
        event_type,
        _time_of(payload),
        corp_id,
        data,
        payload.get("eventId"),
    )


def open_callback(
    cipher: CallbackCipher, query: Mapping[str, str], body: bytes
) -> Event:
    """Verify, decrypt and parse one ``POST /dingtalk/events`` request.

    Reads the signature from ``msg_signature`` or ``signature``, the
    timestamp from ``timeStamp`` or ``timestamp``, and ``nonce``; ``body``
    must be a JSON object with a string ``encrypt``. Any problem, here or in
    the cipher, raises the same ``CallbackRejectedError``.
    """
    signature = query.get("msg_signature") or query.get("signature")
    timestamp = query.get("timeStamp") or query.get("timestamp")
    nonce = query.get("nonce")
    for value in (signature, timestamp, nonce):
        if not isinstance(value, str) or not value:
            raise CallbackRejectedError.at("query")

    encrypt = _load_object(body, "body_json").get("encrypt")
    if not isinstance(encrypt, str):
        raise CallbackRejectedError.at("encrypt")

    plaintext = cipher.open(
        signature=signature, timestamp=timestamp, nonce=nonce, encrypt=encrypt
    )
    return parse_event(plaintext)


def parse_failed_list_item(item: Mapping[str, Any]) -> Event:
    """Turn one ``failed_list`` item of ``get_call_back_failed_result`` into an Event.

    The item is ``{call_back_tag, event_time, <tag>: {..., corpid}}``. The id
    is the ``eventId`` if the inner object has one, else the legacy hash, so
    a replayed failure deduplicates against a live delivery where the two
    carry the same fields (see the note in the body). Raises
    ``UpstreamError`` if the item has no string ``call_back_tag``.
    """
    event_type = item.get("call_back_tag")
    if not isinstance(event_type, str) or not event_type:
        raise UpstreamError("failed_list item has no call_back_tag")

    body = _failed_item_body(item.get(event_type))
    # Doubt: nothing documents that event_time equals the live push's
    # TimeStamp, nor that the inner object repeats the live fields (one
    # report shows only a corpid). The legacy hash lowers key case and drops
    # corpid from the payload to give the two shapes their best chance to
    # match; where they still differ, the handler sees the event twice and
    # must be idempotent anyway (protocol 1.8).
    time = _parse_time(item.get("event_time"))
    if time is None:
        time = _time_of(body)
    data = {
        key: value
        for key, value in body.items()
        if key not in _ENVELOPE_KEYS and key.lower() != "corpid"
    }
    return _build_event(event_type, time, _corp_id_of(body), data, body.get("eventId"))


def _build_event(
    event_type: str,
    time: int | None,
    corp_id: str | None,
    data: dict[str, Any],
    event_id: object,
) -> Event:
    if isinstance(event_id, str) and event_id:
        return Event(event_type, event_id, time, corp_id, data, legacy=False)

    legacy_id = _legacy_id(event_type, time, corp_id, data)
    return Event(event_type, legacy_id, time, corp_id, data, legacy=True)


def _legacy_id(
    event_type: str, time: int | None, corp_id: str | None, data: dict[str, Any]
) -> str:
    """Hash a payload that has no event id, stable across key order.

    Top-level keys are lowered (legacy ``UserId`` and the failed list's
    ``userid`` then agree) and corp id keys are hashed once, as ``corp_id``.
    Keys are visited in sorted order so a case clash resolves the same way
    whatever order the keys came in.
    """
    payload = {}
    for key in sorted(data):
        if key.lower() != "corpid":
            payload[key.lower()] = data[key]

    canonical = json.dumps(
        [event_type, time, corp_id, payload],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # surrogatepass: JSON escapes can carry lone surrogates into the strings.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _load_object(text: str | bytes, step: str) -> dict[str, Any]:
    """Parse a JSON object or raise the uniform rejection labelled ``step``."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        value = None
    # Raised outside the except block so the rejection has no __context__.
    if not isinstance(value, dict):
        raise CallbackRejectedError.at(step)
    return value


def _failed_item_body(value: object) -> dict[str, Any]:
    """The inner object of a failed_list item, however DingTalk encoded it.

    Seen in the wild: a JSON object, and a Java ``Map.toString()`` string
    such as ``{corpid=ding…}``; the latter is split on ``, `` and ``=`` as a
    best effort. Anything else gives an empty dict.
    """
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        return {}

    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        return parsed

    text = value.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return {}
    pairs = (part.partition("=") for part in text[1:-1].split(", "))
    return {key.strip(): val for key, sep, val in pairs if sep and key.strip()}


def _corp_id_of(payload: Mapping[str, Any]) -> str | None:
    for key, value in payload.items():
        if key.lower() == "corpid" and isinstance(value, str):
            return value
    return None


def _time_of(payload: Mapping[str, Any]) -> int | None:
    for key in _TIME_KEYS:
        time = _parse_time(payload.get(key))
        if time is not None:
            return time
    return None


def _parse_time(value: object) -> int | None:
    """An int, or a string of ASCII digits, as an int; anything else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_TIME_DIGITS
        and value.isascii()
        and value.isdigit()
    ):
        return int(value)
    return None
