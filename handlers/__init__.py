"""Handler plugins that ship with dingbot.

Each module offers ``plugin = Plugin(...)``; see ``bot.dispatch.Plugin``.
"""
