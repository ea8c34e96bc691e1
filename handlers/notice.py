"""The ``notice`` command: an admin sends a work notice (工作通知) from the chat."""

from __future__ import annotations

from bot.context import Context
from bot.dingtalk.http import DingTalkError
from bot.dispatch import Plugin
from bot.errors import UsageError
from bot.messages import MessageError, text

plugin = Plugin("notice")


@plugin.command("notice", usage="notice <userid,userid…> <text>", admins_only=True)
def handle_notice(ctx: Context, recipients: str, *words: str) -> str:
    """Send a work notice to the listed staff ids (admins only)."""
    user_ids = [uid for uid in recipients.replace("，", ",").split(",") if uid.strip()]
    content = " ".join(words).strip()
    if not user_ids or not content:
        raise UsageError("Usage: `notice <userid,userid…> <text>`")
    if ctx.settings.agent_id is None:
        return "Work notices are not set up: DINGTALK_AGENT_ID is empty."

    try:
        task_ids = ctx.client.notices.send(text(content), user_ids=user_ids)
    except MessageError as exc:
        return f"That notice is too large for DingTalk ({exc})."
    except DingTalkError as exc:
        ctx.log.warning("notice refused: %s", exc, extra={"outcome": "refused"})
        return f"DingTalk refused the notice: {exc.errmsg} (errcode {exc.errcode})."

    ctx.log.info("notice sent", extra={"task_id": task_ids, "outcome": "sent"})
    people = "person" if len(user_ids) == 1 else "people"
    tasks = ", ".join(str(task) for task in task_ids)
    return f"Work notice sent to {len(user_ids)} {people} (task id {tasks})."
