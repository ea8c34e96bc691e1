"""Outgoing message builders: one object, three wire shapes.

A handler builds an answer with :func:`text`, :func:`markdown`, :func:`link`,
:func:`action_card`, :func:`action_card_buttons` or :func:`feed_card`, or
just returns a ``str`` (see :func:`as_message`). The sending path then asks
the message for the shape it needs:

- :meth:`Message.to_webhook`: the JSON body for an HTTP reply to a robot
  callback, a ``sessionWebhook`` POST or a custom group robot
  (protocol 2.3(a), 2.3(b), 3.3);
- :meth:`Message.to_openapi`: ``(msgKey, msgParam)`` for the robot OpenAPI
  (protocol 2.3(c));
- :meth:`Message.to_work_notice`: the ``msg`` object of a work notice
  (protocol 5.1).

Checks that hold for every target (blank fields, URL schemes, button and
link counts, mention counts) run when the message is built. Size limits
differ per target, so they run in the ``to_*`` methods. Either way the
error is a :class:`MessageError` naming the field and the limit.

Sizes are the UTF-8 length of :func:`compact_json` of the object sent. A
sender must serialise with :func:`compact_json` too, or the checked size
and the sent size drift apart (indented or ASCII-escaped JSON is larger).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson

from bot.errors import BotError

#: Largest webhook / sessionWebhook / HTTP-reply body, in bytes.
#: An assumption: the figure given for the custom-robot page, which our
#: protocol notes (3.4) do not list; nothing is documented for sessionWebhook
#: or the HTTP reply, so the same cap is applied there.
WEBHOOK_BODY_LIMIT = 20000

#: Largest robot OpenAPI ``msgParam`` string, in bytes (protocol 2.3(c)).
MSG_PARAM_LIMIT = 15000

#: Largest work-notice ``msg`` object, in bytes (protocol 5.1).
WORK_NOTICE_LIMIT = 2048

#: Most ``atUserIds`` in one message (protocol 3.3).
MAX_AT_USER_IDS = 50

#: Most buttons on a vertical action card: ``sampleActionCard2``…``5`` stop
#: at five (protocol 2.3(c)).
MAX_BUTTONS = 5

#: Most buttons side by side. Our choice: protocol 2.3(c) lists the OpenAPI
#: horizontal template ``sampleActionCard6`` only as ``buttonTitle1/buttonUrl1,
#: …``; we recall it as the two-button card (UNCONFIRMED), and a third title
#: in one row of a phone screen is cut off anyway. Stack buttons for more.
MAX_HORIZONTAL_BUTTONS = 2

#: Most links in a feed card. A guess: no source we have (protocol 3.3)
#: states a maximum; ten rows keep a card to about one phone screen.
MAX_FEED_LINKS = 10

#: The HTTP answer to a robot callback that means "no reply" (protocol 2.3(a)).
#: Shared module state: send it as is, never mutate it.
EMPTY: dict = {"msgtype": "empty"}

_URL_SCHEMES = ("http", "https", "dingtalk")

# A mention token ends where the id ends; "@user1" inside "@user12" does not
# count. Ids and mobiles are ASCII, so an ASCII word character or a hyphen
# right after the token means it is a longer id.
_TOKEN_END = r"(?![0-9A-Za-z_-])"


class MessageError(BotError, ValueError):
    """A message breaks one of DingTalk's limits; says which.

    ``field`` is the wire field at fault (``"text.content"``,
    ``"actionCard.btns"``, ``"webhook body"``) and ``limit`` the rule it
    breaks. The message never quotes the content itself.
    """

    def __init__(self, field: str, limit: str) -> None:
        self.field = field
        self.limit = limit
        super().__init__(f"{field}: {limit}")


def compact_json(value: Any) -> str:
    """Serialise ``value`` the way every size limit here is measured.

    No spaces after separators and no ASCII escaping, so a Chinese
    character costs its three UTF-8 bytes rather than six ``\\uXXXX`` ones.
    """
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class Mentions:
    """Who a text or markdown message @mentions.

    Lists are accepted and stored as tuples; duplicates are dropped.
    Raises :class:`MessageError` for more than :data:`MAX_AT_USER_IDS` user
    ids or for an id that is empty or contains whitespace, and
    ``TypeError`` for a bare ``str`` in place of a sequence of them.
    """

    user_ids: tuple[str, ...] = ()
    mobiles: tuple[str, ...] = ()
    all: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_ids", _ids("at.atUserIds", self.user_ids))
        object.__setattr__(self, "mobiles", _ids("at.atMobiles", self.mobiles))

        if len(self.user_ids) > MAX_AT_USER_IDS:
            raise MessageError(
                "at.atUserIds",
                f"at most {MAX_AT_USER_IDS} user ids, got {len(self.user_ids)}",
            )

    def __bool__(self) -> bool:
        return bool(self.user_ids or self.mobiles or self.all)

    def to_at(self) -> dict:
        """The ``at`` object of a webhook body."""
        return {
            "atMobiles": list(self.mobiles),
            "atUserIds": list(self.user_ids),
            "isAtAll": self.all,
        }

    def add_tokens(self, text: str, separator: str) -> str:
        """``text`` with an ``@id`` token for each mention it lacks.

        DingTalk only renders a mention whose ``@<userId>`` or ``@<mobile>``
        appears in the text (protocol 3.3). ``isAtAll`` needs no token.
        """
        missing = [
            f"@{ident}"
            for ident in (*self.user_ids, *self.mobiles)
            if not re.search("@" + re.escape(ident) + _TOKEN_END, text)
        ]
        if not missing:
            return text

        if text[-1:].isspace():
            separator = ""
        return text + separator + " ".join(missing)


@dataclass(frozen=True)
class Message:
    """Base of the outgoing messages; build them with the module functions.

    Subclasses are frozen dataclasses, so a message can be built in one
    thread or process and sent from another. ``mentions`` is accepted only
    by :class:`Text` and :class:`Markdown`; any other message raises
    :class:`MessageError` when given one.
    """

    msgtype: ClassVar[str]
    #: Whether the message type carries an ``at`` block.
    can_mention: ClassVar[bool] = False
    #: Whether the type is documented for the synchronous HTTP reply
    #: (protocol 2.3(a)); if not, send it through the session webhook.
    http_reply_supported: ClassVar[bool] = True

    mentions: Mentions = field(default_factory=Mentions, kw_only=True)

    def __post_init__(self) -> None:
        if self.mentions and not self.can_mention:
            raise MessageError(
                f"{self.msgtype}.at",
                "cannot mention anyone; only text and markdown messages can",
            )
        self._validate()

    def with_mentions(self, mentions: Mentions) -> Message:
        """A copy of this message that @mentions ``mentions`` instead.

        Raises :class:`MessageError` for a type that cannot mention.
        """
        return replace(self, mentions=mentions)

    def to_webhook(self) -> dict:
        """The JSON body for an HTTP reply, a sessionWebhook or a custom robot.

        Missing ``@id`` tokens are appended to the text so that mentions
        render. Raises :class:`MessageError` when the body exceeds
        :data:`WEBHOOK_BODY_LIMIT` bytes.
        """
        body = {"msgtype": self.msgtype, self.msgtype: self._webhook_content()}
        if self.mentions:
            body["at"] = self.mentions.to_at()

        _check_size("webhook body", compact_json(body), WEBHOOK_BODY_LIMIT)
        return body

    def to_openapi(self) -> tuple[str, str]:
        """``(msgKey, msgParam)`` for the robot OpenAPI group and 1:1 sends.

        ``msgParam`` is already the JSON string the API wants. Mentions are
        dropped, and no ``@id`` tokens are added: these APIs cannot deliver
        a mention (protocol 2.3(c)). Raises :class:`MessageError` for a type
        with no OpenAPI template or a ``msgParam`` over
        :data:`MSG_PARAM_LIMIT` bytes.
        """
        msg_key, param = self._openapi_param()
        msg_param = compact_json(param)

        _check_size("msgParam", msg_param, MSG_PARAM_LIMIT)
        return msg_key, msg_param

    def to_work_notice(self) -> dict:
        """The ``msg`` object of a work notice (corpconversation asyncsend_v2).

        Mentions are dropped, and no ``@id`` tokens are added: work notices
        go to each person directly and have no ``at``. Raises
        :class:`MessageError` for a type work notices lack or a ``msg`` over
        :data:`WORK_NOTICE_LIMIT` bytes.
        """
        msg = self._work_notice_msg()

        _check_size("work notice msg", compact_json(msg), WORK_NOTICE_LIMIT)
        return msg

    def _validate(self) -> None:
        """Raise :class:`MessageError` if a field breaks a target-free rule."""

    def _webhook_content(self) -> dict:
        raise NotImplementedError

    def _openapi_param(self) -> tuple[str, dict]:
        raise NotImplementedError

    def _work_notice_msg(self) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Message):
    """A plain text message."""

    msgtype = "text"
    can_mention = True

    content: str

    def _validate(self) -> None:
        _check_text("text.content", self.content)

    def _webhook_content(self) -> dict:
        return {"content": self.mentions.add_tokens(self.content, " ")}

    def _openapi_param(self) -> tuple[str, dict]:
        return "sampleText", {"content": self.content}

    def _work_notice_msg(self) -> dict:
        # The notice page recommends at most about 500 characters of text
        # (protocol 5.1); a recommendation, so only the byte limit applies.
        return {"msgtype": "text", "text": {"content": self.content}}


@dataclass(frozen=True)
class Markdown(Message):
    """A markdown message; ``title`` is what chat lists and previews show."""

    msgtype = "markdown"
    can_mention = True

    title: str
    text: str

    def _validate(self) -> None:
        _check_text("markdown.title", self.title)
        _check_text("markdown.text", self.text)

    def _webhook_content(self) -> dict:
        # A paragraph of its own, so the tokens cannot land inside a code
        # block or heading on the text's last line.
        text = self.mentions.add_tokens(self.text, "\n\n")
        return {"title": self.title, "text": text}

    def _openapi_param(self) -> tuple[str, dict]:
        return "sampleMarkdown", {"title": self.title, "text": self.text}

    def _work_notice_msg(self) -> dict:
        # The 5000-character cap on notice markdown (protocol 5.1) can never
        # bite: 2048 bytes of msg always come first.
        return {
            "msgtype": "markdown",
            "markdown": {"title": self.title, "text": self.text},
        }


@dataclass(frozen=True)
class Link(Message):
    """A link card: title, a line of text, an optional picture.

    Not documented for the synchronous HTTP reply (protocol 2.3(a)); send
    it through the session webhook instead.
    """

    msgtype = "link"
    http_reply_supported = False

    title: str
    text: str
    message_url: str
    pic_url: str = ""

    def _validate(self) -> None:
        _check_text("link.title", self.title)
        _check_text("link.text", self.text)
        _check_url("link.messageUrl", self.message_url)
        # Only URLs, not mediaIds: the robot shapes take URLs, and one value
        # must suit all three targets.
        if self.pic_url:
            _check_url("link.picUrl", self.pic_url)

    def _webhook_content(self) -> dict:
        content = {
            "title": self.title,
            "text": self.text,
            "messageUrl": self.message_url,
        }
        # The webhook's picUrl is optional, so leave it out rather than
        # sending an empty string.
        if self.pic_url:
            content["picUrl"] = self.pic_url
        return content

    def _openapi_param(self) -> tuple[str, dict]:
        # UNCONFIRMED whether sampleLink and the notice link accept an empty
        # picUrl; both tables list it, so it is always sent, "" when unset.
        return "sampleLink", {
            "text": self.text,
            "title": self.title,
            "picUrl": self.pic_url,
            "messageUrl": self.message_url,
        }

    def _work_notice_msg(self) -> dict:
        return {
            "msgtype": "link",
            "link": {
                "messageUrl": self.message_url,
                "picUrl": self.pic_url,
                "title": self.title,
                "text": self.text,
            },
        }


@dataclass(frozen=True)
class ActionCard(Message):
    """A markdown card with buttons that open URLs.

    ``single`` is the one-button card (``singleTitle``/``singleURL``);
    otherwise ``buttons`` are stacked, or side by side when ``horizontal``.
    Cannot carry ``at``; write ``@userId`` into ``text`` instead
    (protocol 3.3; whether that renders is unconfirmed).
    """

    msgtype = "actionCard"

    title: str
    text: str
    buttons: tuple[tuple[str, str], ...]
    horizontal: bool = False
    single: bool = False

    def _validate(self) -> None:
        _check_text("actionCard.title", self.title)
        _check_text("actionCard.text", self.text)

        object.__setattr__(self, "buttons", tuple(map(tuple, self.buttons)))
        most = 1 if self.single else MAX_BUTTONS
        if self.horizontal:
            most = min(most, MAX_HORIZONTAL_BUTTONS)
        _check_count("actionCard.btns", "buttons", len(self.buttons), most)

        for button in self.buttons:
            _check_shape("actionCard.btns", button, "(title, url)")
        for title, url in self.buttons:
            _check_text("actionCard.btns.title", title)
            _check_url("actionCard.btns.actionURL", url)

    def _webhook_content(self) -> dict:
        if self.single:
            (title, url), = self.buttons
            return {
                "title": self.title,
                "text": self.text,
                "singleTitle": title,
                "singleURL": url,
                "btnOrientation": "0",
            }

        return {
            "title": self.title,
            "text": self.text,
            "btnOrientation": self._orientation(),
            "btns": [
                {"title": title, "actionURL": url} for title, url in self.buttons
            ],
        }

    def _openapi_param(self) -> tuple[str, dict]:
        param = {"title": self.title, "text": self.text}

        # One button, whichever kind of card: sampleActionCard is the only
        # one-button template (sampleActionCard2…5 are named by their count).
        if len(self.buttons) == 1:
            (title, url), = self.buttons
            param |= {"singleTitle": title, "singleURL": url}
            return "sampleActionCard", param

        # Side by side: sampleActionCard6 with buttonTitleN/buttonUrlN
        # (lower-case "Url" here, unlike actionURLN; protocol 2.3(c)).
        if self.horizontal:
            for number, (title, url) in enumerate(self.buttons, start=1):
                param[f"buttonTitle{number}"] = title
                param[f"buttonUrl{number}"] = url
            return "sampleActionCard6", param

        for number, (title, url) in enumerate(self.buttons, start=1):
            param[f"actionTitle{number}"] = title
            param[f"actionURL{number}"] = url
        return f"sampleActionCard{len(self.buttons)}", param

    def _work_notice_msg(self) -> dict:
        card = {"title": self.title, "markdown": self.text}
        if self.single:
            (title, url), = self.buttons
            card |= {"single_title": title, "single_url": url}
        else:
            card["btn_orientation"] = self._orientation()
            card["btn_json_list"] = [
                {"title": title, "action_url": url} for title, url in self.buttons
            ]
        return {"msgtype": "action_card", "action_card": card}

    def _orientation(self) -> str:
        return "1" if self.horizontal else "0"


@dataclass(frozen=True)
class FeedCard(Message):
    """A list of linked rows, each with a title and a picture.

    Webhook only: the robot OpenAPI has no feed card template and work
    notices have no feed card type, so those conversions raise
    :class:`MessageError`.
    """

    msgtype = "feedCard"

    links: tuple[tuple[str, str, str], ...]

    def _validate(self) -> None:
        object.__setattr__(self, "links", tuple(map(tuple, self.links)))
        _check_count("feedCard.links", "links", len(self.links), MAX_FEED_LINKS)

        for row in self.links:
            _check_shape("feedCard.links", row, "(title, message_url, pic_url)")
        for title, message_url, pic_url in self.links:
            _check_text("feedCard.links.title", title)
            _check_url("feedCard.links.messageURL", message_url)
            _check_url("feedCard.links.picURL", pic_url)

    def _webhook_content(self) -> dict:
        return {
            "links": [
                {"title": title, "messageURL": message_url, "picURL": pic_url}
                for title, message_url, pic_url in self.links
            ]
        }

    def _openapi_param(self) -> tuple[str, dict]:
        raise MessageError(
            "msgKey",
            "the robot OpenAPI has no feed card template; "
            "send it through a webhook or use an action card",
        )

    def _work_notice_msg(self) -> dict:
        raise MessageError(
            "msg.msgtype",
            "work notices have no feed card type; use a link or action card",
        )


def text(
    content: str,
    *,
    at_user_ids: Sequence[str] = (),
    at_mobiles: Sequence[str] = (),
    at_all: bool = False,
) -> Text:
    """A text message, optionally @mentioning people or everyone.

    Raises :class:`MessageError` for blank content or bad mentions.
    """
    mentions = Mentions(_tuple_of(at_user_ids), _tuple_of(at_mobiles), at_all)
    return Text(content, mentions=mentions)


def markdown(
    title: str,
    text: str,
    *,
    at_user_ids: Sequence[str] = (),
    at_mobiles: Sequence[str] = (),
    at_all: bool = False,
) -> Markdown:
    """A markdown message, optionally @mentioning people or everyone.

    Raises :class:`MessageError` for a blank title or text or bad mentions.
    """
    mentions = Mentions(_tuple_of(at_user_ids), _tuple_of(at_mobiles), at_all)
    return Markdown(title, text, mentions=mentions)


def link(title: str, text: str, message_url: str, pic_url: str = "") -> Link:
    """A link card.

    Raises :class:`MessageError` for a blank title or text, or a URL that is
    not ``http(s)://`` or ``dingtalk://``.
    """
    return Link(title, text, message_url, pic_url)


def action_card(
    title: str, text: str, button_title: str, button_url: str
) -> ActionCard:
    """A card with one button under its markdown ``text``.

    Raises :class:`MessageError` for a blank field or a bad URL.
    """
    return ActionCard(title, text, ((button_title, button_url),), single=True)


def action_card_buttons(
    title: str,
    text: str,
    buttons: Sequence[tuple[str, str]],
    *,
    horizontal: bool = False,
) -> ActionCard:
    """A card with 1 to 5 stacked buttons, or 1 to 2 side by side.

    ``buttons`` are ``(title, url)`` pairs. Raises :class:`MessageError`
    for a button count out of range, a blank field or a bad URL.
    """
    return ActionCard(title, text, _tuple_of(buttons), horizontal=horizontal)


def feed_card(links: Sequence[tuple[str, str, str]]) -> FeedCard:
    """A feed card of 1 to :data:`MAX_FEED_LINKS` rows.

    ``links`` are ``(title, message_url, pic_url)``; every row needs a
    picture. Raises :class:`MessageError` for a count out of range, a blank
    title or a bad URL.
    """
    return FeedCard(_tuple_of(links))


def as_message(answer: str | Message) -> Message:
    """A handler's answer as a message: a ``str`` becomes :func:`text`.

    Raises :class:`MessageError` for a blank string and ``TypeError`` for
    anything that is neither a ``str`` nor a :class:`Message`.
    """
    if isinstance(answer, Message):
        return answer
    if isinstance(answer, str):
        return text(answer)
    raise TypeError(f"a handler answer must be str or Message, not {type(answer)}")


def _tuple_of(items: Sequence[Any]) -> tuple:
    """``items`` as a tuple; raises ``TypeError`` for a bare ``str``.

    A string is a sequence of one-letter strings, so ``at_user_ids="u1"``
    would silently mean two mentions, ``@u`` and ``@1``.
    """
    if isinstance(items, str):
        raise TypeError("expected a sequence of values, got a single str")
    return tuple(items)


def _ids(field: str, values: Sequence[str]) -> tuple[str, ...]:
    """``values`` deduplicated in order; each must be a non-blank token."""
    unique = tuple(dict.fromkeys(_tuple_of(values)))
    for value in unique:
        if not isinstance(value, str) or not value or re.search(r"\s", value):
            raise MessageError(
                field, "each entry must be a non-empty str without spaces"
            )
    return unique


def _check_text(field: str, value: str) -> None:
    """Raise unless ``value`` is a str with something besides whitespace."""
    if not isinstance(value, str) or not value.strip():
        raise MessageError(field, "must be a non-blank str")

    # A lone surrogate cannot be encoded, so it could never be sent.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError(
            field, "must be valid Unicode (no lone surrogates)"
        ) from None


def _check_url(field: str, value: str) -> None:
    """Raise unless ``value`` is an absolute http(s) or dingtalk URL."""
    problem = "must be an absolute http://, https:// or dingtalk:// URL"
    if not isinstance(value, str) or re.search(r"[\s\x00-\x1f\x7f]", value):
        raise MessageError(field, problem)

    try:
        parts = urlsplit(value)
    except ValueError:
        raise MessageError(field, problem) from None
    if parts.scheme.lower() not in _URL_SCHEMES or not parts.netloc:
        raise MessageError(field, problem)


def _check_shape(field: str, item: tuple, shape: str) -> None:
    """Raise unless ``item`` has as many parts as ``shape`` names."""
    if len(item) != shape.count(",") + 1:
        raise MessageError(field, f"each entry must be a {shape} tuple")


def _check_count(field: str, noun: str, count: int, most: int) -> None:
    """Raise unless ``1 <= count <= most``."""
    if not 1 <= count <= most:
        raise MessageError(field, f"needs 1 to {most} {noun}, got {count}")


def _check_size(field: str, serialised: str, limit: int) -> None:
    """Raise if ``serialised`` takes more than ``limit`` UTF-8 bytes."""
    size = len(serialised.encode("utf-8"))
    if size > limit:
        raise MessageError(
            field, f"{size} bytes of UTF-8 JSON; the limit is {limit}"
        )
