"""The ``welcome`` event handler: greet new members with a work notice.

Loaded by default, and silent unless ``DINGBOT_WELCOME_TEXT`` is set.
"""

from __future__ import annotations

from bot.context import Context
from bot.dispatch import Plugin
from bot.messages import text

plugin = Plugin("welcome")


@plugin.on_event("user_add_org")
def handle_user_add_org(ctx: Context) -> None:
    """Send the welcome text, as one work notice, to the members who joined.

    Both payload formats carry the new staff ids (``UserId``/``userId``).
    Sends nothing when no welcome text is set or the event names nobody.
    Client errors propagate, so the event is retried later; a retry after
    a send that did go through greets the members twice.
    """
    welcome = ctx.settings.welcome_text
    user_ids = ctx.event.user_ids
    if not welcome or not user_ids:
        return

    task_ids = ctx.client.notices.send(text(welcome), user_ids=user_ids)
    ctx.log.info("welcome notice sent", extra={"task_id": task_ids, "outcome": "sent"})
