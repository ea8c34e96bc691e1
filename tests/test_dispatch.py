"""Routing, argument parsing, access control and help (bot.dispatch)."""

from __future__ import annotations

import pytest

from bot.dispatch import Dispatcher, Plugin, call_with_args, split_args
from bot.errors import AccessDenied, ConfigError, UsageError
from bot.inbound.robot import TextMessage


def message(text: str, staff_id: str = "user001", conversation: str = "cid1") -> TextMessage:
    return TextMessage(
        msg_id="m1", msgtype="text", conversation_id=conversation,
        conversation_type="2", sender_nick="Alice", sender_staff_id=staff_id,
        robot_code="r", text=text,
    )


def make_dispatcher(*plugins: Plugin, admins=("boss",)) -> Dispatcher:
    return Dispatcher(list(plugins), admins=frozenset(admins))


@pytest.fixture
def ops() -> Plugin:
    plugin = Plugin("ops")

    @plugin.command("deploy", aliases=["ship"], usage="deploy <service> <version>",
                    admins_only=True, help="Deploy a service")
    def handle_deploy(ctx, service, version):
        return f"{service}@{version}"

    @plugin.command("oncall", allow_conversations=["cid-ops"])
    def handle_oncall(ctx):
        """Who is on call."""
        return "Bo"

    @plugin.command("echo", allow_users=["user001"])
    def handle_echo(ctx, *words):
        return " ".join(words)

    @plugin.match(r"^status of (\w+)")
    def handle_status(ctx):
        return ctx.match.group(1)

    return plugin


@pytest.mark.parametrize(("line", "expected"), [
    ("a b  c", ["a", "b", "c"]),
    ('say "hello world"', ["say", "hello world"]),
    ("say “你好 世界” ok", ["say", "你好 世界", "ok"]),
    ("say ‘单 引号’", ["say", "单 引号"]),
    ("a\u3000b", ["a", "b"]),
    ("", []),
])
def test_arguments_split_shell_style_with_chinese_quotes(line, expected):
    """ASCII and Chinese quotes group words; full-width spaces separate them."""
    assert split_args(line) == expected


def test_an_open_quote_is_a_usage_error():
    """An unclosed quote tells the user instead of guessing."""
    with pytest.raises(UsageError, match="quote"):
        split_args('say "oops')


def test_command_alias_and_slash_route_to_the_same_handler(ops):
    """'deploy', 'ship' and '/DEPLOY' all find the deploy command."""
    dispatcher = make_dispatcher(ops)
    for word in ("deploy", "ship", "/DEPLOY"):
        route = dispatcher.route(message(f"{word} api v1.4", staff_id="boss"))
        assert route.command == "deploy"
        assert route.args == ("api", "v1.4")


def test_admins_only_command_is_refused_to_others(ops):
    """A non-admin gets AccessDenied for an admins-only command."""
    with pytest.raises(AccessDenied):
        make_dispatcher(ops).route(message("deploy api v1"))


def test_conversation_and_user_allow_lists_are_enforced(ops):
    """oncall works only in cid-ops; echo only for user001."""
    dispatcher = make_dispatcher(ops)
    with pytest.raises(AccessDenied):
        dispatcher.route(message("oncall"))
    assert dispatcher.route(message("oncall", conversation="cid-ops")).command == "oncall"
    with pytest.raises(AccessDenied):
        dispatcher.route(message("echo hi", staff_id="user002"))


def test_matcher_runs_when_no_command_matches(ops):
    """Text that is not a command goes to the first matching regex."""
    route = make_dispatcher(ops).route(message("status of api please"))
    assert route.command == "match"
    assert route.match.group(1) == "api"


def test_unknown_command_suggests_a_close_visible_one(ops):
    """'deplyo' suggests 'deploy' to an admin but not to others."""
    dispatcher = make_dispatcher(ops)
    assert "Did you mean `deploy`" in dispatcher.route(message("deplyo", "boss")).answer
    assert "deploy" not in dispatcher.route(message("deplyo")).answer.replace("deplyo", "")


def test_fallback_takes_what_nothing_else_matches(ops):
    """With a fallback registered, unknown words go to it."""
    extra = Plugin("chatty")

    @extra.fallback
    def handle_rest(ctx):
        return "?"

    route = make_dispatcher(ops, extra).route(message("hello there"))
    assert route.handler is handle_rest


def test_same_command_in_two_plugins_stops_start_up(ops):
    """Two plugins claiming one name is a ConfigError naming both."""
    other = Plugin("other")
    other.command("ship")(lambda ctx: None)
    with pytest.raises(ConfigError, match="ops and other"):
        make_dispatcher(ops, other)


def test_wrong_argument_count_answers_with_usage(ops):
    """Too few arguments raise UsageError carrying the usage line."""
    route = make_dispatcher(ops).route(message("deploy api", staff_id="boss"))
    with pytest.raises(UsageError, match="deploy <service> <version>"):
        call_with_args(route.handler, None, route.args, route.usage)
    assert call_with_args(route.handler, None, ("api", "v2"), route.usage) == "api@v2"


def test_visible_commands_hide_what_the_sender_may_not_use(ops):
    """help's list for a plain user omits deploy and oncall."""
    names = [c.name for c in make_dispatcher(ops).visible_commands(message("help"))]
    assert names == ["echo"]


def test_event_subscriptions_accept_globs():
    """bpms_* matches both approval event types but not user events."""
    plugin = Plugin("approvals")
    handler = plugin.on_event("bpms_*")(lambda ctx: None)
    dispatcher = make_dispatcher(plugin)
    assert dispatcher.event_handlers("bpms_instance_change") == [handler]
    assert dispatcher.event_handlers("bpms_task_change") == [handler]
    assert dispatcher.event_handlers("user_add_org") == []


from hypothesis import given, strategies as st  # noqa: E402


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)
               | st.sampled_from("\t\n")))
def test_fast_split_agrees_with_shlex(line):
    """The plain-words fast path gives exactly shlex's answer for ASCII lines."""
    import shlex

    try:
        expected = shlex.split(line)
    except ValueError:
        with pytest.raises(UsageError):
            split_args(line)
        return
    assert split_args(line) == expected
