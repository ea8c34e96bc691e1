"""A plugin for end-to-end event tests: a handler that takes 2 seconds.

It appends ``start <event id>`` to the file named by ``SLOWPLUGIN_OUT``
when it begins and ``done <event id>`` when it finishes, so a test can tell
a handler that ran to completion from one that was killed midway.
"""

import os
import time

from bot.dispatch import Plugin

plugin = Plugin("e2e-slow")


@plugin.on_event("e2e_slow")
def handle_slow(ctx):
    """Sleep SLOWPLUGIN_SECONDS (default 2), recording start and end."""
    out = os.environ["SLOWPLUGIN_OUT"]
    _append(out, f"start {ctx.event.id}")
    time.sleep(float(os.environ.get("SLOWPLUGIN_SECONDS", "2")))
    _append(out, f"done {ctx.event.id}")


def _append(path: str, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")
