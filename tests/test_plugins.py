"""Loading handler plugins: built-ins, the config list and entry points."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from bot.errors import ConfigError
from bot.plugins import load_plugins


def _write_package(root, name: str, command: str) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(f"""
        from bot.dispatch import Plugin

        plugin = Plugin({name!r})

        @plugin.command({command!r})
        def handle(ctx):
            return {command!r}
    """))


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in list(sys.modules):
        if name.startswith("acme_"):
            del sys.modules[name]
    importlib.invalidate_caches()


def test_builtins_load_without_any_configuration():
    """help, ping, whoami and notice are there with no plugins configured."""
    names = {c.name for p in load_plugins(entry_point_group=None) for c in p.commands}
    assert {"help", "ping", "whoami", "notice"} <= names


def test_modules_from_the_config_list_are_loaded(site):
    """A module named in DINGBOT_PLUGINS contributes its plugin."""
    _write_package(site, "acme_deploy", "deploy")
    plugins = load_plugins(["acme_deploy"], entry_point_group=None)
    assert "acme_deploy" in [p.name for p in plugins]


def test_entry_points_of_installed_packages_are_loaded(site):
    """A package declaring a dingbot.handlers entry point is picked up."""
    _write_package(site, "acme_oncall", "oncall")
    dist = site / "acme_oncall-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-oncall\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dingbot.handlers]\noncall = acme_oncall\n")
    importlib.invalidate_caches()
    plugins = load_plugins()
    assert "acme_oncall" in [p.name for p in plugins]


def test_a_missing_module_stops_start_up_with_its_name():
    """A typo in the plugin list is a ConfigError naming the module."""
    with pytest.raises(ConfigError, match="acme_missing"):
        load_plugins(["acme_missing"], entry_point_group=None)


def test_a_module_without_a_plugin_is_refused(site):
    """A module that offers no `plugin` attribute is a ConfigError."""
    (site / "acme_empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="has no `plugin"):
        load_plugins(["acme_empty"], entry_point_group=None)
