"""Finding the handler plugins: the built-ins, the config list, entry points.

A plugin is a :class:`bot.dispatch.Plugin`. A module offers one as its
``plugin`` attribute; an entry point in the ``dingbot.handlers`` group may
name either such a module or the Plugin object itself, so a team can ship
handlers in its own package::

    [project.entry-points."dingbot.handlers"]
    deploy = "acme_bot.deploy"
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from bot.dispatch import Plugin
from bot.errors import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dingbot.handlers"

#: Always loaded, even when the package's entry points are not installed.
BUILTIN_MODULES = ("handlers.builtin", "handlers.notice", "handlers.welcome")


def load_plugins(
    modules: Iterable[str] = (), *, entry_point_group: str | None = ENTRY_POINT_GROUP
) -> list[Plugin]:
    """Import the built-ins, ``modules`` and the entry points; one Plugin each.

    Raises ConfigError naming a module that cannot be imported or that
    offers no plugin. A plugin found twice (by module and by entry point)
    counts once.
    """
    found: dict[int, Plugin] = {}
    for name in (*BUILTIN_MODULES, *modules):
        plugin = _plugin_of(_import(name), name)
        found.setdefault(id(plugin), plugin)

    if entry_point_group:
        for entry in entry_points(group=entry_point_group):
            try:
                target = entry.load()
            except Exception as exc:
                raise ConfigError(
                    f"entry point {entry.name!r} ({entry.value})",
                    f"failed to import: {type(exc).__name__}",
                    "fix or uninstall the package that declares it",
                ) from None
            plugin = _plugin_of(target, entry.value)
            found.setdefault(id(plugin), plugin)

    plugins = list(found.values())
    log.debug("loaded plugins %s", [p.name for p in plugins])
    return plugins


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(
            f"plugin module {name!r}", f"cannot be imported ({exc.name or exc})",
            "check DINGBOT_PLUGINS / bot.plugins and that the package is installed",
        ) from None


def _plugin_of(target: Any, where: str) -> Plugin:
    if isinstance(target, Plugin):
        return target
    plugin = getattr(target, "plugin", None)
    if not isinstance(plugin, Plugin):
        raise ConfigError(
            f"plugin module {where!r}", "has no `plugin = Plugin(...)` attribute",
            "create one and register the handlers on it",
        )
    return plugin
