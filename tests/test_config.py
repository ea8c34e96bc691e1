"""Settings from TOML and the environment (bot.config) and `dingbot check-config`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import OPTIONS, Secret, load_settings, settings_fields
from bot.errors import ConfigError

BASE_ENV = {"DINGTALK_APP_KEY": "dingkey", "DINGTALK_APP_SECRET": "very-secret-value"}
ROOT = Path(__file__).resolve().parents[1]


def test_environment_alone_is_enough():
    """The two credentials from the environment give usable Settings."""
    settings = load_settings(BASE_ENV)
    assert settings.app_key == "dingkey"
    assert settings.app_secret.reveal() == "very-secret-value"
    assert settings.robot_code == "dingkey"          # defaults to the app key
    assert settings.callback_receive_id == "dingkey"
    assert settings.sign_window == 3600


def test_environment_wins_over_the_file(tmp_path):
    """A key set in both places takes the environment's value."""
    path = tmp_path / "bot.toml"
    path.write_text('[dingtalk]\napp_key = "from-file"\nagent_id = 7\n'
                    '[bot]\nadmins = ["a1", "a2"]\n')
    settings = load_settings({**BASE_ENV, "DINGBOT_CONFIG": str(path)})
    assert settings.app_key == "dingkey"
    assert settings.agent_id == 7
    assert settings.admins == ("a1", "a2")


def test_config_toml_in_the_working_directory_is_read(tmp_path, monkeypatch):
    """Without DINGBOT_CONFIG, ./config.toml is used when present."""
    (tmp_path / "config.toml").write_text('[bot]\nwelcome_text = "hi"\n')
    monkeypatch.chdir(tmp_path)
    assert load_settings(BASE_ENV).welcome_text == "hi"


@pytest.mark.parametrize(("env", "named"), [
    ({"DINGTALK_APP_SECRET": "x"}, "DINGTALK_APP_KEY is empty"),
    ({"DINGTALK_APP_KEY": "k"}, "DINGTALK_APP_SECRET is empty"),
    ({**BASE_ENV, "DINGTALK_AGENT_ID": "abc"}, "DINGTALK_AGENT_ID is malformed"),
    ({**BASE_ENV, "DINGTALK_AGENT_ID": "-3"}, "DINGTALK_AGENT_ID is malformed"),
    ({**BASE_ENV, "DINGBOT_SIGN_WINDOW": "7200"}, "DINGBOT_SIGN_WINDOW is malformed"),
    ({**BASE_ENV, "DINGTALK_OAPI_URL": "oapi.dingtalk.com"}, "DINGTALK_OAPI_URL"),
    ({**BASE_ENV, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL is malformed"),
    ({**BASE_ENV, "DINGTALK_CALLBACK_AES_KEY": "short", "DINGTALK_CALLBACK_TOKEN": "t"},
     "DINGTALK_CALLBACK_AES_KEY is malformed"),
    ({**BASE_ENV, "DINGTALK_CALLBACK_TOKEN": "t"}, "DINGTALK_CALLBACK_AES_KEY is empty"),
    ({**BASE_ENV, "DINGBOT_CONFIG": "/nonexistent/bot.toml"}, "DINGBOT_CONFIG"),
])
def test_bad_settings_name_the_setting_and_the_fix(env, named):
    """Each problem raises ConfigError naming the setting, with a fix."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert named in message
    assert ";" in message  # problem; fix


def test_malformed_toml_is_a_config_error(tmp_path):
    """A syntax error in the file names the file."""
    path = tmp_path / "bad.toml"
    path.write_text("[dingtalk\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({**BASE_ENV, "DINGBOT_CONFIG": str(path)})


def test_secrets_stay_out_of_repr_and_errors():
    """repr(Settings) masks every secret, including a Redis password."""
    env = {**BASE_ENV, "REDIS_URL": "redis://:hunter22@redis.local:6379/0",
           "DINGTALK_CALLBACK_TOKEN": "cbtoken1",
           "DINGTALK_CALLBACK_AES_KEY": "A" * 43,
           "DINGBOT_PREVIOUS_APP_SECRETS": "old-secret-1,old-secret-2"}
    settings = load_settings(env)
    shown = repr(settings)
    for secret in ("very-secret-value", "hunter22", "cbtoken1", "A" * 43, "old-secret-1"):
        assert secret not in shown
    assert "redis.local" in shown
    assert repr(Secret("x")) == "Secret('********')"
    assert set(settings.secret_values()) >= {"very-secret-value", "hunter22", "cbtoken1"}


def test_every_setting_has_an_option_and_an_example_entry():
    """Settings fields, OPTIONS and config.example.toml stay in step."""
    assert [o.name for o in OPTIONS] == settings_fields()
    example = (ROOT / "config.example.toml").read_text()
    for option in OPTIONS:
        assert option.env in example, option.env
        assert option.toml.split(".")[-1] in example, option.toml


def _check_config(env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DINGTALK_", "DINGBOT_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", "check-config"], env={**clean, **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )


def test_check_config_prints_masked_settings(tmp_path):
    """check-config lists the settings with the secret masked and exits 0."""
    result = _check_config({**BASE_ENV, "PYTHONPATH": str(ROOT)}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "app_key = dingkey" in result.stdout
    assert "app_secret = ********" in result.stdout
    assert "very-secret-value" not in result.stdout + result.stderr
    assert "plugins loaded = builtin" in result.stdout


def test_check_config_exits_non_zero_on_a_problem(tmp_path):
    """A missing secret makes check-config fail with one line."""
    result = _check_config({"DINGTALK_APP_KEY": "k", "PYTHONPATH": str(ROOT)}, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "configuration error: DINGTALK_APP_SECRET is empty; set it in the service "
        "environment (or dingtalk.app_secret in the config file) and restart"]
