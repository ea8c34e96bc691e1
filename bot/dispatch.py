"""Which handler answers a message or an event, and whether the sender may use it.

Plugins declare handlers on a :class:`Plugin`; the :class:`Dispatcher`
merges the plugins of one app into lookup tables once, at start, and
then routes each message: the first word is a command name or alias;
otherwise the first regular expression that matches wins; otherwise the
fallback; otherwise an "unknown command, did you mean …" answer.

Arguments are split shell-style. Chinese quotes (“ ” ‘ ’) work like ASCII
quotes and full-width spaces like spaces, because that is what a DingTalk
user on a Chinese keyboard types.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.errors import AccessDenied, ConfigError, UsageError
from bot.inbound.robot import Message

Handler = Callable[..., Any]

_NEEDS_SHLEX = re.compile(r"[\"'\\#]")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "\u3000": " "})


def split_args(text: str) -> list[str]:
    """Split a command line shell-style; raise UsageError on an open quote."""
    text = text.translate(_QUOTES)
    if not _NEEDS_SHLEX.search(text):
        # Most commands have no quotes or escapes: plain words, and
        # str.split gives shlex's answer at a fraction of its cost.
        return text.split()
    try:
        return shlex.split(text)
    except ValueError:
        raise UsageError("a quote is not closed; check your quotation marks") from None


@dataclass(frozen=True)
class Command:
    """A command handler and the rules for who may run it."""

    name: str
    handler: Handler
    plugin: str
    aliases: tuple[str, ...] = ()
    help: str = ""
    usage: str = ""
    admins_only: bool = False
    allow_users: frozenset[str] | None = None
    allow_conversations: frozenset[str] | None = None
    inline: bool = False

    def permits(self, message: Message, admins: frozenset[str]) -> bool:
        """Whether the sender of ``message`` may run this command here."""
        staff_id = message.sender_staff_id
        if self.admins_only and staff_id not in admins:
            return False
        if self.allow_users is not None and staff_id not in self.allow_users:
            return False
        if (
            self.allow_conversations is not None
            and message.conversation_id not in self.allow_conversations
        ):
            return False
        return True


@dataclass(frozen=True)
class Matcher:
    """A handler run when its regular expression matches the message text."""

    pattern: re.Pattern[str]
    handler: Handler
    plugin: str
    help: str = ""


@dataclass(frozen=True)
class EventSubscription:
    """A handler for event types matching a glob such as ``bpms_*``."""

    pattern: str
    handler: Handler
    plugin: str


class Plugin:
    """A named set of handlers; a module exposes one as ``plugin``.

    Example::

        plugin = Plugin("deploy")

        @plugin.command("deploy", usage="deploy <service> <version>", admins_only=True)
        def handle_deploy(ctx, service, version):
            return f"Deploying {service} {version}"
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.commands: list[Command] = []
        self.matchers: list[Matcher] = []
        self.events: list[EventSubscription] = []
        self.fallback_handler: Handler | None = None

    def command(
        self,
        name: str,
        *,
        aliases: Sequence[str] = (),
        help: str = "",
        usage: str = "",
        admins_only: bool = False,
        allow_users: Iterable[str] | None = None,
        allow_conversations: Iterable[str] | None = None,
        inline: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register a command. The handler gets the context, then one
        parameter per argument; wrong arity answers with ``usage``.

        ``inline=True`` runs the handler on the request thread instead of
        the pool, saving the hand-off. Only for handlers that do no I/O and
        finish in microseconds (``ping``, ``help``): an inline handler that
        blocks holds a gunicorn thread for as long as it blocks.
        """

        def register(handler: Handler) -> Handler:
            self.commands.append(Command(
                name=name.lower(),
                handler=handler,
                plugin=self.name,
                aliases=tuple(alias.lower() for alias in aliases),
                help=help or _first_line(handler.__doc__),
                usage=usage or name,
                admins_only=admins_only,
                allow_users=frozenset(allow_users) if allow_users is not None else None,
                allow_conversations=(
                    frozenset(allow_conversations)
                    if allow_conversations is not None else None
                ),
                inline=inline,
            ))
            return handler

        return register

    def match(self, pattern: str, *, help: str = "", flags: int = re.IGNORECASE
              ) -> Callable[[Handler], Handler]:
        """Register a handler for text matching ``pattern`` (``re.search``).

        The handler gets the context; ``ctx.match`` holds the match object.
        """

        def register(handler: Handler) -> Handler:
            self.matchers.append(
                Matcher(re.compile(pattern, flags), handler, self.name, help)
            )
            return handler

        return register

    def fallback(self, handler: Handler) -> Handler:
        """Register the handler for messages nothing else takes."""
        self.fallback_handler = handler
        return handler

    def on_event(self, *patterns: str) -> Callable[[Handler], Handler]:
        """Subscribe to event types; globs like ``bpms_*`` are allowed."""

        def register(handler: Handler) -> Handler:
            for pattern in patterns:
                self.events.append(EventSubscription(pattern, handler, self.name))
            return handler

        return register


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""


@dataclass(frozen=True)
class Route:
    """What to run for one message.

    Either ``handler`` is set (run it with ``args``), or ``answer`` holds
    a ready reply (unknown command, access refused) and nothing runs.
    """

    handler: Handler | None = None
    args: tuple[str, ...] = ()
    command: str = ""
    match: re.Match[str] | None = None
    answer: str = ""
    usage: str = ""
    inline: bool = False


@dataclass
class Dispatcher:
    """Routes messages and events to the handlers of a set of plugins."""

    plugins: Sequence[Plugin]
    admins: frozenset[str] = frozenset()
    _commands: dict[str, Command] = field(init=False, default_factory=dict)
    _names: dict[str, Command] = field(init=False, default_factory=dict)
    _matchers: list[Matcher] = field(init=False, default_factory=list)
    _events: list[EventSubscription] = field(init=False, default_factory=list)
    _fallback: Handler | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        for plugin in self.plugins:
            for command in plugin.commands:
                self._add_command(command)
            self._matchers.extend(plugin.matchers)
            self._events.extend(plugin.events)
            if plugin.fallback_handler is not None:
                if self._fallback is not None:
                    raise ConfigError(
                        f"plugin {plugin.name}", "registers a second fallback",
                        "keep one fallback handler across all plugins",
                    )
                self._fallback = plugin.fallback_handler

    def _add_command(self, command: Command) -> None:
        for word in (command.name, *command.aliases):
            if word in self._commands:
                other = self._commands[word].plugin
                raise ConfigError(
                    f"command {word!r}",
                    f"is registered by both {other} and {command.plugin}",
                    "rename or alias one of them, or drop one plugin",
                )
            self._commands[word] = command
        self._names[command.name] = command

    @property
    def commands(self) -> list[Command]:
        """Every command, in registration order."""
        return list(self._names.values())

    def is_admin(self, message: Message) -> bool:
        """Whether the sender is one of the configured admins."""
        return bool(message.sender_staff_id) and message.sender_staff_id in self.admins

    def visible_commands(self, message: Message) -> list[Command]:
        """The commands this sender may use here, for ``help``."""
        return [c for c in self.commands if c.permits(message, self.admins)]

    def find(self, word: str) -> Command | None:
        """The command named or aliased ``word``, if any."""
        return self._commands.get(word.lower())

    def route(self, message: Message) -> Route:
        """Choose what answers ``message``; raises UsageError on bad quoting."""
        text = message.text
        word, _, rest = text.partition(" ")
        word = word.lstrip("/").lower()

        command = self._commands.get(word) if word else None
        if command is not None:
            return self._route_command(command, rest, message)

        for matcher in self._matchers:
            found = matcher.pattern.search(text)
            if found:
                return Route(handler=matcher.handler, match=found, command="match")

        if self._fallback is not None:
            return Route(handler=self._fallback, command="fallback")
        return Route(answer=self._unknown(word, message), command="unknown")

    def _route_command(self, command: Command, rest: str, message: Message) -> Route:
        if not command.permits(message, self.admins):
            raise AccessDenied(
                f"Sorry, `{command.name}` is not available to you here."
            )
        return Route(
            handler=command.handler,
            args=tuple(split_args(rest)),
            command=command.name,
            usage=command.usage,
            inline=command.inline,
        )

    def _unknown(self, word: str, message: Message) -> str:
        if not word:
            return "Hello! Send `help` to see what I can do."
        names: list[str] = []
        for command in self.visible_commands(message):
            names += [command.name, *command.aliases]
        close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
        if close:
            return f"I don't know `{word}`. Did you mean `{close[0]}`?"
        return f"I don't know `{word}`. Send `help` to see what I can do."

    def event_handlers(self, event_type: str) -> list[Handler]:
        """Handlers subscribed to ``event_type``, in registration order."""
        return [
            sub.handler for sub in self._events
            if fnmatch.fnmatchcase(event_type, sub.pattern)
        ]


def call_with_args(handler: Handler, ctx: Any, args: Sequence[str], usage: str) -> Any:
    """Call ``handler(ctx, *args)``; a wrong number of arguments is a UsageError.

    A handler that takes only the context gets none (it reads ``ctx.args``).
    """
    signature = _signature(handler)
    if len(signature.parameters) <= 1:
        return handler(ctx)
    try:
        signature.bind(ctx, *args)
    except TypeError:
        raise UsageError(f"Usage: `{usage}`") from None
    return handler(ctx, *args)


_SIGNATURES: dict[Handler, inspect.Signature] = {}


def _signature(handler: Handler) -> inspect.Signature:
    # Cached: inspect.signature costs more than the rest of routing.
    signature = _SIGNATURES.get(handler)
    if signature is None:
        signature = _SIGNATURES[handler] = inspect.signature(handler)
    return signature
