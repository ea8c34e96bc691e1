"""Handler plugins only the benchmarks load (``DINGBOT_PLUGINS=bench_plugins``).

``bench_slow`` events take 2 s in their handler, so the event benchmark
can show the acknowledgement does not wait for handlers.
"""

from __future__ import annotations

import time

from bot.context import Context
from bot.dispatch import Plugin

plugin = Plugin("bench")

SLOW_SECONDS = 2.0


@plugin.on_event("bench_slow")
def slow_handler(ctx: Context) -> None:
    """Sleep as a slow handler would wait on an upstream call."""
    time.sleep(SLOW_SECONDS)
