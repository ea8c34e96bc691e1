"""A plugin for end-to-end robot tests: a command slower than the reply budget."""

import time

from bot.dispatch import Plugin

plugin = Plugin("e2e-robot")


@plugin.command("slow", usage="slow <seconds>")
def handle_slow(ctx, seconds="2"):
    """Sleep, then answer (later than the reply budget)."""
    time.sleep(float(seconds))
    return f"done after {seconds}s"
