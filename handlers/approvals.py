"""Example event plugin: tell an approval's originator how it ended.

Not loaded by default; enable it with ``DINGBOT_PLUGINS=handlers.approvals``
and subscribe the app to 审批实例开始、结束 (``bpms_instance_change``).
"""

from __future__ import annotations

from bot.context import Context
from bot.dispatch import Plugin
from bot.messages import text

plugin = Plugin("approvals")

_RESULTS = {"agree": "approved", "refuse": "refused"}


@plugin.on_event("bpms_instance_change")
def handle_instance_change(ctx: Context) -> None:
    """When an approval instance finishes, send its originator the result.

    Only ``type == "finish"`` counts (start, terminate and delete are
    ignored). The originator is ``staffId``; an event without one sends
    nothing. An unknown ``result`` is reported as it came.
    """
    event = ctx.event
    originator = event.get("staffId")
    if event.get("type") != "finish":
        return
    if not isinstance(originator, str) or not originator:
        return

    title = event.get("title") or "Your approval"
    result = event.get("result")
    outcome = _RESULTS.get(result, f"finished ({result or 'no result'})")
    message = f"“{title}” was {outcome}."
    url = event.get("url")
    if isinstance(url, str) and url:
        message += f"\n{url}"

    ctx.client.notices.send(text(message), user_ids=[originator])
    ctx.log.info("approval result sent", extra={"outcome": str(result)})
