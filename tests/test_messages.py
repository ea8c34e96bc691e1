"""Tests for bot.messages: the three wire shapes and every limit's edge."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import messages
from bot.errors import BotError
from bot.messages import (
    EMPTY,
    MSG_PARAM_LIMIT,
    WEBHOOK_BODY_LIMIT,
    WORK_NOTICE_LIMIT,
    Mentions,
    Message,
    MessageError,
    action_card,
    action_card_buttons,
    as_message,
    compact_json,
    feed_card,
    link,
    markdown,
    text,
)

URL = "https://example.com/a"
PIC = "https://example.com/p.png"


def size(value: object) -> int:
    """UTF-8 bytes of the compact JSON the limits are measured on."""
    return len(compact_json(value).encode("utf-8"))


def buttons(count: int) -> list[tuple[str, str]]:
    """``count`` distinct (title, url) buttons."""
    return [(f"B{n}", f"https://example.com/{n}") for n in range(1, count + 1)]


# --- the three shapes of every builder -------------------------------------


SHAPES = [
    pytest.param(
        text("deploy done"),
        {"msgtype": "text", "text": {"content": "deploy done"}},
        ("sampleText", {"content": "deploy done"}),
        {"msgtype": "text", "text": {"content": "deploy done"}},
        id="text",
    ),
    pytest.param(
        markdown("shown in list", "#### h\n> quote"),
        {
            "msgtype": "markdown",
            "markdown": {"title": "shown in list", "text": "#### h\n> quote"},
        },
        ("sampleMarkdown", {"title": "shown in list", "text": "#### h\n> quote"}),
        {
            "msgtype": "markdown",
            "markdown": {"title": "shown in list", "text": "#### h\n> quote"},
        },
        id="markdown",
    ),
    pytest.param(
        link("T", "body", URL, PIC),
        {
            "msgtype": "link",
            "link": {"title": "T", "text": "body", "messageUrl": URL, "picUrl": PIC},
        },
        (
            "sampleLink",
            {"text": "body", "title": "T", "picUrl": PIC, "messageUrl": URL},
        ),
        {
            "msgtype": "link",
            "link": {"messageUrl": URL, "picUrl": PIC, "title": "T", "text": "body"},
        },
        id="link",
    ),
    pytest.param(
        link("T", "body", URL),
        {"msgtype": "link", "link": {"title": "T", "text": "body", "messageUrl": URL}},
        ("sampleLink", {"text": "body", "title": "T", "picUrl": "", "messageUrl": URL}),
        {
            "msgtype": "link",
            "link": {"messageUrl": URL, "picUrl": "", "title": "T", "text": "body"},
        },
        id="link-without-picture",
    ),
    pytest.param(
        action_card("T", "md", "Open", URL),
        {
            "msgtype": "actionCard",
            "actionCard": {
                "title": "T",
                "text": "md",
                "singleTitle": "Open",
                "singleURL": URL,
                "btnOrientation": "0",
            },
        },
        (
            "sampleActionCard",
            {"title": "T", "text": "md", "singleTitle": "Open", "singleURL": URL},
        ),
        {
            "msgtype": "action_card",
            "action_card": {
                "title": "T",
                "markdown": "md",
                "single_title": "Open",
                "single_url": URL,
            },
        },
        id="action-card",
    ),
    pytest.param(
        action_card_buttons("T", "md", [("A", URL), ("B", PIC)]),
        {
            "msgtype": "actionCard",
            "actionCard": {
                "title": "T",
                "text": "md",
                "btnOrientation": "0",
                "btns": [
                    {"title": "A", "actionURL": URL},
                    {"title": "B", "actionURL": PIC},
                ],
            },
        },
        (
            "sampleActionCard2",
            {
                "title": "T",
                "text": "md",
                "actionTitle1": "A",
                "actionURL1": URL,
                "actionTitle2": "B",
                "actionURL2": PIC,
            },
        ),
        {
            "msgtype": "action_card",
            "action_card": {
                "title": "T",
                "markdown": "md",
                "btn_orientation": "0",
                "btn_json_list": [
                    {"title": "A", "action_url": URL},
                    {"title": "B", "action_url": PIC},
                ],
            },
        },
        id="action-card-buttons",
    ),
    pytest.param(
        action_card_buttons("T", "md", [("A", URL), ("B", PIC)], horizontal=True),
        {
            "msgtype": "actionCard",
            "actionCard": {
                "title": "T",
                "text": "md",
                "btnOrientation": "1",
                "btns": [
                    {"title": "A", "actionURL": URL},
                    {"title": "B", "actionURL": PIC},
                ],
            },
        },
        (
            "sampleActionCard6",
            {
                "title": "T",
                "text": "md",
                "buttonTitle1": "A",
                "buttonUrl1": URL,
                "buttonTitle2": "B",
                "buttonUrl2": PIC,
            },
        ),
        {
            "msgtype": "action_card",
            "action_card": {
                "title": "T",
                "markdown": "md",
                "btn_orientation": "1",
                "btn_json_list": [
                    {"title": "A", "action_url": URL},
                    {"title": "B", "action_url": PIC},
                ],
            },
        },
        id="action-card-horizontal",
    ),
]


@pytest.mark.parametrize(("message", "webhook", "openapi", "notice"), SHAPES)
def test_each_builder_renders_its_three_wire_shapes(
    message: Message, webhook: dict, openapi: tuple[str, dict], notice: dict
) -> None:
    """Every builder yields the documented webhook, OpenAPI and notice shapes."""
    msg_key, msg_param = message.to_openapi()

    assert message.to_webhook() == webhook
    assert (msg_key, json.loads(msg_param)) == openapi
    assert message.to_work_notice() == notice


def test_feed_card_renders_the_webhook_shape() -> None:
    """A feed card becomes feedCard.links with messageURL and picURL."""
    card = feed_card([("One", URL, PIC), ("Two", PIC, URL)])

    assert card.to_webhook() == {
        "msgtype": "feedCard",
        "feedCard": {
            "links": [
                {"title": "One", "messageURL": URL, "picURL": PIC},
                {"title": "Two", "messageURL": PIC, "picURL": URL},
            ]
        },
    }


def test_feed_card_has_no_openapi_or_work_notice_shape() -> None:
    """Converting a feed card for the OpenAPI or a work notice says why it fails."""
    card = feed_card([("One", URL, PIC)])

    with pytest.raises(MessageError, match="no feed card template") as openapi:
        card.to_openapi()
    with pytest.raises(MessageError, match="no feed card type") as notice:
        card.to_work_notice()

    assert openapi.value.field == "msgKey"
    assert notice.value.field == "msg.msgtype"


def test_msg_param_is_compact_unescaped_json() -> None:
    """msgParam is the compact JSON string, with Chinese left unescaped."""
    assert text('部署 "ok"').to_openapi() == (
        "sampleText",
        '{"content":"部署 \\"ok\\""}',
    )


@pytest.mark.parametrize(
    ("count", "horizontal", "msg_key"),
    [
        (1, False, "sampleActionCard"),
        (2, False, "sampleActionCard2"),
        (3, False, "sampleActionCard3"),
        (4, False, "sampleActionCard4"),
        (5, False, "sampleActionCard5"),
        (1, True, "sampleActionCard"),
        (2, True, "sampleActionCard6"),
    ],
)
def test_button_count_and_orientation_choose_the_msg_key(
    count: int, horizontal: bool, msg_key: str
) -> None:
    """The OpenAPI template follows the number and layout of the buttons."""
    card = action_card_buttons("T", "md", buttons(count), horizontal=horizontal)

    key, param = card.to_openapi()

    assert key == msg_key
    titles = [v for k, v in json.loads(param).items() if "itle" in k and k != "title"]
    assert titles == [f"B{n}" for n in range(1, count + 1)]


def test_five_vertical_buttons_number_title_and_url_pairs() -> None:
    """sampleActionCard5 carries actionTitle1..5 and actionURL1..5."""
    _, param = action_card_buttons("T", "md", buttons(5)).to_openapi()

    fields = json.loads(param)

    assert [fields[f"actionTitle{n}"] for n in range(1, 6)] == [
        "B1", "B2", "B3", "B4", "B5",
    ]
    assert fields["actionURL5"] == "https://example.com/5"


# --- mentions --------------------------------------------------------------


def test_missing_mention_tokens_are_appended_to_the_text() -> None:
    """Ids and mobiles absent from the text get an @token so they render."""
    message = text("deploy done", at_user_ids=["user123"], at_mobiles=["150001"])

    body = message.to_webhook()

    assert body["text"]["content"] == "deploy done @user123 @150001"
    assert body["at"] == {
        "atMobiles": ["150001"],
        "atUserIds": ["user123"],
        "isAtAll": False,
    }


def test_mention_already_in_the_text_is_not_repeated() -> None:
    """An @token the author wrote is left alone."""
    message = text("@user123 please look", at_user_ids=["user123"])

    assert message.to_webhook()["text"]["content"] == "@user123 please look"


def test_longer_id_in_the_text_does_not_count_as_the_mention() -> None:
    """@user12 in the text does not stand in for a mention of user1."""
    message = text("cc @user12", at_user_ids=["user1", "user12"])

    assert message.to_webhook()["text"]["content"] == "cc @user12 @user1"


def test_markdown_mentions_go_in_a_paragraph_of_their_own() -> None:
    """Markdown tokens start a new paragraph so a trailing code fence stays shut."""
    message = markdown("T", "```\nlog\n```", at_mobiles=["150001"])

    assert message.to_webhook()["markdown"]["text"] == "```\nlog\n```\n\n@150001"


def test_at_all_adds_the_flag_but_no_token() -> None:
    """isAtAll needs no token in the text."""
    body = text("outage", at_all=True).to_webhook()

    assert body["text"] == {"content": "outage"}
    assert body["at"] == {"atMobiles": [], "atUserIds": [], "isAtAll": True}


def test_openapi_and_work_notice_drop_mentions_and_tokens() -> None:
    """Mentions cannot be delivered by the OpenAPI or notices, so neither shows them."""
    message = markdown("T", "hi", at_user_ids=["user123"], at_all=True)

    assert json.loads(message.to_openapi()[1]) == {"title": "T", "text": "hi"}
    assert message.to_work_notice() == {
        "msgtype": "markdown",
        "markdown": {"title": "T", "text": "hi"},
    }


def test_fifty_user_ids_pass_and_fifty_one_fail() -> None:
    """At most 50 atUserIds may be mentioned."""
    ids = [f"u{n}" for n in range(51)]

    assert len(text("x", at_user_ids=ids[:50]).to_webhook()["at"]["atUserIds"]) == 50
    with pytest.raises(MessageError, match="at most 50") as caught:
        text("x", at_user_ids=ids)

    assert caught.value.field == "at.atUserIds"


def test_duplicate_mentions_are_collapsed() -> None:
    """The same id twice is one mention and one token."""
    message = text("x", at_user_ids=["u1", "u1"])

    assert message.mentions.user_ids == ("u1",)
    assert message.to_webhook()["text"]["content"] == "x @u1"


def test_a_bare_string_of_ids_is_refused() -> None:
    """at_user_ids="u1" is a mistake, not mentions of "u" and "1"."""
    with pytest.raises(TypeError):
        text("x", at_user_ids="u1")


@pytest.mark.parametrize("bad", ["", "two words"])
def test_blank_or_spaced_mention_ids_are_refused(bad: str) -> None:
    """An id that could not form one @token is rejected."""
    with pytest.raises(MessageError, match="atMobiles"):
        text("x", at_mobiles=[bad])


@pytest.mark.parametrize(
    "message",
    [
        link("T", "body", URL),
        feed_card([("One", URL, PIC)]),
        action_card("T", "md", "Open", URL),
    ],
    ids=["link", "feed-card", "action-card"],
)
def test_types_without_at_refuse_mentions(message: Message) -> None:
    """Only text and markdown may mention; the others say so."""
    with pytest.raises(MessageError, match="cannot mention") as caught:
        message.with_mentions(Mentions(user_ids=("u1",)))

    assert caught.value.field == f"{message.msgtype}.at"


def test_with_mentions_returns_a_mentioning_copy() -> None:
    """with_mentions leaves the original untouched."""
    plain = text("hi")

    mentioning = plain.with_mentions(Mentions(user_ids=("u1",)))

    assert mentioning.to_webhook()["text"]["content"] == "hi @u1"
    assert "at" not in plain.to_webhook()


# --- byte limits, at the edge ----------------------------------------------


def content_for(target: Callable[[str], int], wanted: int) -> str:
    """Text content, mostly Chinese, whose measured ``target`` size is ``wanted``."""
    room = wanted - target("")
    return "中" * (room // 3) + "a" * (room % 3)


def webhook_size(content: str) -> int:
    """Bytes of a mention-free text webhook body (also the notice ``msg``)."""
    return size({"msgtype": "text", "text": {"content": content}})


def param_size(content: str) -> int:
    """Bytes of a sampleText msgParam."""
    return size({"content": content})


LIMITS = [
    pytest.param(webhook_size, WEBHOOK_BODY_LIMIT, "to_webhook", id="webhook"),
    pytest.param(param_size, MSG_PARAM_LIMIT, "to_openapi", id="msg-param"),
    pytest.param(webhook_size, WORK_NOTICE_LIMIT, "to_work_notice", id="work-notice"),
]


@pytest.mark.parametrize(("measure", "limit", "convert"), LIMITS)
def test_a_message_exactly_at_the_byte_limit_passes(
    measure: Callable[[str], int], limit: int, convert: str
) -> None:
    """A body of exactly the limit in UTF-8 bytes converts."""
    content = content_for(measure, limit)
    assert len(content) < limit / 2  # mostly three-byte characters

    getattr(text(content), convert)()

    assert measure(content) == limit


@pytest.mark.parametrize(("measure", "limit", "convert"), LIMITS)
def test_one_byte_over_the_limit_fails_and_names_the_limit(
    measure: Callable[[str], int], limit: int, convert: str
) -> None:
    """One byte more than the limit is refused, naming the size and limit only."""
    content = content_for(measure, limit) + "a"

    with pytest.raises(MessageError) as caught:
        getattr(text(content), convert)()

    assert f"{limit + 1} bytes" in str(caught.value)
    assert f"the limit is {limit}" in str(caught.value)
    assert "中" not in str(caught.value)


def test_limits_count_bytes_not_characters() -> None:
    """7000 Chinese characters fit in characters but not in bytes."""
    message = text("中" * 7000)

    with pytest.raises(MessageError, match="webhook body"):
        message.to_webhook()


def test_appended_mention_tokens_count_towards_the_webhook_limit() -> None:
    """The size is measured on the body actually sent, tokens and at included."""
    plain = content_for(webhook_size, WEBHOOK_BODY_LIMIT)
    text(plain).to_webhook()

    with pytest.raises(MessageError, match="webhook body"):
        text(plain, at_user_ids=["u1"]).to_webhook()


def test_a_chinese_work_notice_stops_near_680_characters() -> None:
    """2048 bytes leave room for about 680 three-byte characters, not 2048."""
    text("中" * 660).to_work_notice()

    with pytest.raises(MessageError, match="work notice msg"):
        text("中" * 690).to_work_notice()


# --- build-time rules ------------------------------------------------------


@pytest.mark.parametrize("count", [1, 5])
def test_one_to_five_vertical_buttons_are_accepted(count: int) -> None:
    """Both ends of the vertical button range build."""
    assert len(action_card_buttons("T", "md", buttons(count)).buttons) == count


@pytest.mark.parametrize(
    ("count", "horizontal"), [(0, False), (6, False), (0, True), (3, True)]
)
def test_button_counts_outside_the_range_are_refused(
    count: int, horizontal: bool
) -> None:
    """No buttons, six stacked or three side by side is an error naming the range."""
    with pytest.raises(MessageError, match=f"got {count}") as caught:
        action_card_buttons("T", "md", buttons(count), horizontal=horizontal)

    assert caught.value.field == "actionCard.btns"


def test_ten_feed_links_pass_and_eleven_fail() -> None:
    """A feed card holds 1 to 10 links."""
    rows = [(f"Row {n}", URL, PIC) for n in range(11)]

    assert len(feed_card(rows[:10]).to_webhook()["feedCard"]["links"]) == 10
    with pytest.raises(MessageError, match="1 to 10 links, got 11"):
        feed_card(rows)
    with pytest.raises(MessageError, match="got 0"):
        feed_card([])


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda v: text(v), "text.content"),
        (lambda v: markdown(v, "x"), "markdown.title"),
        (lambda v: markdown("x", v), "markdown.text"),
        (lambda v: link(v, "x", URL), "link.title"),
        (lambda v: link("x", v, URL), "link.text"),
        (lambda v: action_card(v, "x", "b", URL), "actionCard.title"),
        (lambda v: action_card("x", v, "b", URL), "actionCard.text"),
        (lambda v: action_card("x", "x", v, URL), "actionCard.btns.title"),
        (lambda v: feed_card([(v, URL, PIC)]), "feedCard.links.title"),
    ],
)
@pytest.mark.parametrize("blank", ["", " \n\t　"])
def test_blank_titles_and_texts_are_refused(
    build: Callable[[str], Message], field: str, blank: str
) -> None:
    """Empty or whitespace-only fields are rejected, naming the field."""
    with pytest.raises(MessageError) as caught:
        build(blank)

    assert caught.value.field == field


def test_a_lone_surrogate_is_refused() -> None:
    """Text that cannot be UTF-8 encoded could never be sent."""
    with pytest.raises(MessageError, match="surrogate"):
        text("bad \ud800")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com/a",
        "ftp://example.com/a",
        "javascript:alert(1)",
        "https://",
        "https://exa mple.com/",
        "https://example.com/\n",
        "file:///etc/passwd",
    ],
)
def test_urls_that_are_not_http_or_dingtalk_are_refused(url: str) -> None:
    """Only absolute http(s) and dingtalk URLs pass; the URL is not echoed."""
    for build in (
        lambda: link("T", "x", url),
        lambda: link("T", "x", URL, url or "x"),
        lambda: action_card("T", "x", "Open", url),
        lambda: feed_card([("T", url, PIC)]),
        lambda: feed_card([("T", URL, url)]),
    ):
        with pytest.raises(MessageError, match="URL") as caught:
            build()
        assert "example" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "HTTPS://EXAMPLE.COM/x?y=1",
        "dingtalk://dingtalkclient/page/link?url=https%3A%2F%2Fe.com&pc_slide=true",
    ],
)
def test_http_https_and_dingtalk_urls_are_accepted(url: str) -> None:
    """The three allowed schemes build, in any letter case."""
    assert link("T", "x", url, url).message_url == url


def test_message_errors_name_the_field_not_the_content() -> None:
    """An error says which field broke which rule and never quotes the text."""
    secretish = "SECtopsecretvalue"

    with pytest.raises(MessageError) as caught:
        markdown(secretish, "x", at_user_ids=[secretish + str(n) for n in range(51)])

    assert secretish not in str(caught.value)
    assert str(caught.value) == "at.atUserIds: at most 50 user ids, got 51"


def test_message_error_is_a_bot_error_and_a_value_error() -> None:
    """Callers may catch it as either root."""
    assert issubclass(MessageError, BotError)
    assert issubclass(MessageError, ValueError)


def test_messages_are_immutable() -> None:
    """A built message cannot be changed behind its checks."""
    message = text("x")

    with pytest.raises(AttributeError):
        message.content = ""  # type: ignore[misc]


# --- answers, EMPTY, helpers -----------------------------------------------


def test_a_plain_string_answer_becomes_a_text_message() -> None:
    """as_message wraps a str in text() and passes messages through."""
    card = link("T", "x", URL)

    assert as_message("pong").to_webhook() == {
        "msgtype": "text",
        "text": {"content": "pong"},
    }
    assert as_message(card) is card


def test_as_message_refuses_blank_strings_and_other_types() -> None:
    """A blank answer is a MessageError; a non-str non-Message is a TypeError."""
    with pytest.raises(MessageError):
        as_message("  ")
    with pytest.raises(TypeError, match="NoneType"):
        as_message(None)  # type: ignore[arg-type]


def test_empty_is_the_no_reply_answer() -> None:
    """EMPTY is DingTalk's documented no-reply body."""
    assert EMPTY == {"msgtype": "empty"}


def test_only_link_is_kept_out_of_the_http_reply() -> None:
    """Link is the one type not documented for the synchronous reply."""
    kept_out = [
        cls.__name__
        for cls in (
            messages.Text,
            messages.Markdown,
            messages.Link,
            messages.ActionCard,
            messages.FeedCard,
        )
        if not cls.http_reply_supported
    ]

    assert kept_out == ["Link"]


def test_compact_json_has_no_spaces_and_no_ascii_escapes() -> None:
    """The measuring serialisation is compact and leaves Chinese as UTF-8."""
    assert compact_json({"a": ["中", 1]}) == '{"a":["中",1]}'


# --- property --------------------------------------------------------------


# Repeating a random piece reaches every limit (2048 to 20000 bytes) often
# enough, where plain random text would almost always be short.
CONTENTS = st.builds(
    lambda piece, times: piece * times,
    st.text(st.characters(exclude_categories=()), max_size=40),
    st.integers(min_value=1, max_value=1500),
)


def _encodes(content: str) -> bool:
    """Whether ``content`` has no lone surrogates."""
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(deadline=None, max_examples=150)
@given(CONTENTS)
def test_random_text_either_fails_cleanly_or_fits_every_limit(content: str) -> None:
    """text() is refused, or each shape converts exactly when it fits its limit."""
    if not (content.strip() and _encodes(content)):
        with pytest.raises(MessageError):
            text(content)
        return
    message = text(content)

    for convert, measured, limit in (
        (message.to_webhook, webhook_size(content), WEBHOOK_BODY_LIMIT),
        (message.to_openapi, param_size(content), MSG_PARAM_LIMIT),
        (message.to_work_notice, webhook_size(content), WORK_NOTICE_LIMIT),
    ):
        if measured > limit:
            with pytest.raises(MessageError, match=f"the limit is {limit}"):
                convert()
        else:
            shape = convert()
            sent = shape[1] if isinstance(shape, tuple) else compact_json(shape)
            assert len(sent.encode("utf-8")) == measured <= limit
