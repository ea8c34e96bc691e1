"""What a handler receives: the message or event, a way to answer, the client."""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING, Any

from bot.inbound.robot import Message
from bot.messages import Message as Outgoing
from bot.messages import as_message

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.dingtalk import DingTalkClient
    from bot.dispatch import Dispatcher
    from bot.services import Services

log = logging.getLogger(__name__)


class Context:
    """One handler invocation's view of the bot.

    ``reply()`` sends an extra answer at once (through the session
    webhook, or the robot OpenAPI once that has expired); the handler's
    return value is its main answer.
    """

    def __init__(
        self,
        services: Services,
        trace_id: str,
        *,
        message: Message | None = None,
        event: Any = None,
        args: tuple[str, ...] = (),
        match: re.Match[str] | None = None,
        command: str = "",
    ) -> None:
        self.services = services
        self.trace_id = trace_id
        self.message = message
        self.event = event
        self.args = args
        self.match = match
        self.command = command

    @functools.cached_property
    def log(self) -> logging.LoggerAdapter:
        """A logger named ``handlers.<command>`` whose lines carry the command."""
        return logging.LoggerAdapter(
            logging.getLogger(f"handlers.{self.command or 'event'}"),
            {"command": self.command or None},
        )

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def dispatcher(self) -> Dispatcher:
        return self.services.dispatcher

    @property
    def client(self) -> DingTalkClient:
        """The shared DingTalk client (tokens, retries and rate limits handled)."""
        return self.services.client

    @property
    def is_admin(self) -> bool:
        """Whether the sender is one of DINGBOT_ADMINS."""
        return self.message is not None and self.dispatcher.is_admin(self.message)

    def reply(self, answer: str | Outgoing) -> None:
        """Send ``answer`` to the conversation now; raises the client's errors."""
        if self.message is None:
            raise RuntimeError("reply() needs a chat message; events have none")
        deliver(self.services, self.message, as_message(answer))


def deliver(services: Services, message: Message, answer: Outgoing) -> None:
    """Post ``answer`` to the conversation ``message`` came from.

    Uses the session webhook while it is valid and on DingTalk's host;
    otherwise the client falls back to the robot OpenAPI.
    """
    webhook = message.session_webhook
    expires = message.session_webhook_expires_at
    if webhook and not services.trusts_webhook(webhook):
        log.warning("session webhook not on the DingTalk host; using the OpenAPI")
        webhook, expires = "", 0
    services.client.robot.reply(
        answer,
        session_webhook=webhook,
        expires_at_ms=expires,
        conversation_id=message.conversation_id,
        conversation_type=message.conversation_type,
        staff_id=message.sender_staff_id,
    )
