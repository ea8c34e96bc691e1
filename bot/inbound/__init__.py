"""Turning raw inbound callbacks into typed, verified messages and events.

Nothing in this package imports Flask: the web layer hands it plain strings,
bytes and mappings, and gets back typed objects or a ``RequestRejected``.
"""
