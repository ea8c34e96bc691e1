"""A local stand-in for DingTalk's open platform, for tests and benchmarks.

Start one with ``StandIn(...).start()`` (or ``with StandIn(...) as standin``)
and point the DingTalk client at ``standin.url``. Run it as its own process
with ``python -m bot.simulator``.
"""

from bot.simulator.calls import Call
from bot.simulator.notices import Task
from bot.simulator.org import Department, Org, User
from bot.simulator.standin import StandIn

__all__ = ["Call", "Department", "Org", "StandIn", "Task", "User"]
