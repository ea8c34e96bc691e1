"""Settings from a TOML file and the environment, validated once at start.

The file comes from ``DINGBOT_CONFIG``, else ``./config.toml`` if present.
Every setting can also come from the environment under a fixed name, and
the environment wins. :func:`load_settings` raises :class:`ConfigError`
naming the first bad setting and how to fix it; nothing else in the bot
reads the environment for configuration.

Secrets are wrapped in :class:`Secret`, whose ``repr`` and ``str`` never
show the value; call :meth:`Secret.reveal` at the one place that needs it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bot.errors import ConfigError


class Secret:
    """A string that keeps out of logs, reprs and error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it is sent or used as a key."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class Option:
    """How one setting is named, read and documented."""

    name: str
    env: str
    toml: str
    parse: Callable[[Any], Any]
    default: Any = None
    secret: bool = False
    help: str = ""


def _text(value: Any) -> str:
    if not isinstance(value, str | int):
        raise ValueError("must be a string")
    return str(value).strip()


def _names(value: Any) -> tuple[str, ...]:
    """A comma-separated string or a TOML list, as a tuple of names."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list):
        items = [_text(item) for item in value]
    else:
        raise ValueError("must be a comma-separated string or a list of strings")
    return tuple(item.strip() for item in items if item.strip())


def _secret(value: Any) -> Secret:
    return Secret(_text(value))


def _secrets(value: Any) -> tuple[Secret, ...]:
    return tuple(Secret(item) for item in _names(value))


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a whole number above 0")
    return number


def _seconds(value: Any) -> float:
    number = float(value)
    if not 0 < number < 86_400:
        raise ValueError("must be a number of seconds above 0")
    return number


def _sign_window(value: Any) -> float:
    number = _seconds(value)
    # DingTalk itself allows one hour; a wider window only widens replay.
    if number > 3600:
        raise ValueError("must be at most 3600 seconds (DingTalk's own window)")
    return number


def _url(value: Any) -> str:
    text = _text(value).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL such as https://oapi.dingtalk.com")
    return text


def _optional_url(value: Any) -> str:
    return _url(value) if _text(value) else ""


def _redis_url(value: Any) -> str:
    text = _text(value)
    if text and urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return text


def _log_level(value: Any) -> str:
    level = _text(value).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _aes_key(value: Any) -> Secret:
    text = _text(value)
    if text and not re.fullmatch(r"[A-Za-z0-9]{43}", text):
        raise ValueError("must be the 43 letters and digits shown in the developer console")
    return Secret(text)


def _path(value: Any) -> Path:
    return Path(_text(value)).expanduser()


OPTIONS: tuple[Option, ...] = (
    Option("app_key", "DINGTALK_APP_KEY", "dingtalk.app_key", _text, "",
           help="AppKey (Client ID) of the DingTalk app that owns the robot."),
    Option("app_secret", "DINGTALK_APP_SECRET", "dingtalk.app_secret", _secret, "",
           secret=True, help="AppSecret (Client Secret); signs robot callbacks."),
    Option("previous_app_secrets", "DINGBOT_PREVIOUS_APP_SECRETS",
           "dingtalk.previous_app_secrets", _secrets, (), secret=True,
           help="Secrets still accepted on robot callbacks during a rotation."),
    Option("agent_id", "DINGTALK_AGENT_ID", "dingtalk.agent_id", _positive_int, None,
           help="AgentId of the app; needed to send work notices."),
    Option("robot_code", "DINGTALK_ROBOT_CODE", "dingtalk.robot_code", _text, "",
           help="robotCode callbacks must carry; defaults to the app key."),
    Option("callback_token", "DINGTALK_CALLBACK_TOKEN", "dingtalk.callback_token",
           _secret, "", secret=True, help="Event subscription signing token."),
    Option("callback_aes_key", "DINGTALK_CALLBACK_AES_KEY",
           "dingtalk.callback_aes_key", _aes_key, "", secret=True,
           help="Event subscription EncodingAESKey (43 characters)."),
    Option("callback_receive_id", "DINGBOT_CALLBACK_RECEIVE_ID",
           "dingtalk.callback_receive_id", _text, "",
           help="receiveId in event callbacks; defaults to the app key "
                "(a corp id, suite key or custom key for other app types)."),
    Option("oapi_url", "DINGTALK_OAPI_URL", "dingtalk.oapi_url", _url,
           "https://oapi.dingtalk.com", help="Base URL of DingTalk's legacy API."),
    Option("api_url", "DINGTALK_API_URL", "dingtalk.api_url", _url,
           "https://api.dingtalk.com", help="Base URL of DingTalk's v1.0 API."),
    Option("api_qps", "DINGBOT_API_QPS", "dingtalk.api_qps", _positive_int, 20,
           help="Calls per second per API shared by every process (DingTalk allows 20)."),
    Option("admins", "DINGBOT_ADMINS", "bot.admins", _names, (),
           help="Staff ids allowed to use admin-only commands."),
    Option("welcome_text", "DINGBOT_WELCOME_TEXT", "bot.welcome_text", _text, "",
           help="When set, a work notice with this text greets new members."),
    Option("plugins", "DINGBOT_PLUGINS", "bot.plugins", _names, (),
           help="Extra handler modules to load, besides the dingbot.handlers "
                "entry points."),
    Option("reply_budget", "DINGBOT_REPLY_BUDGET", "bot.reply_budget", _seconds, 1.0,
           help="Seconds a handler may take to answer inside the HTTP response; "
                "later answers go through the session webhook."),
    Option("handler_threads", "DINGBOT_HANDLER_THREADS", "bot.handler_threads",
           _positive_int, 8, help="Handler threads per web process."),
    Option("sign_window", "DINGBOT_SIGN_WINDOW", "robot.sign_window", _sign_window,
           3600.0, help="How far (seconds) a callback timestamp may be from now."),
    Option("data_dir", "DINGBOT_DATA_DIR", "state.data_dir", _path, Path("data"),
           help="Directory for embedded state (SQLite)."),
    Option("redis_url", "REDIS_URL", "state.redis_url", _redis_url, "", secret=True,
           help="Redis for shared state and job queues across machines."),
    Option("sentry_dsn", "SENTRY_DSN", "observe.sentry_dsn", _optional_url, "",
           secret=True, help="Sentry DSN; errors are reported when set."),
    Option("log_level", "LOG_LEVEL", "observe.log_level", _log_level, "INFO",
           help="DEBUG, INFO, WARNING or ERROR."),
    Option("port", "PORT", "server.port", _positive_int, 8000,
           help="Port the web process listens on."),
    Option("web_concurrency", "WEB_CONCURRENCY", "server.web_concurrency",
           _positive_int, 2, help="gunicorn worker processes."),
)


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one bot process.

    Build it with :func:`load_settings`, or directly in tests.
    """

    app_key: str
    app_secret: Secret
    previous_app_secrets: tuple[Secret, ...] = ()
    agent_id: int | None = None
    robot_code: str = ""
    callback_token: Secret = field(default_factory=lambda: Secret(""))
    callback_aes_key: Secret = field(default_factory=lambda: Secret(""))
    callback_receive_id: str = ""
    oapi_url: str = "https://oapi.dingtalk.com"
    api_url: str = "https://api.dingtalk.com"
    api_qps: int = 20
    admins: tuple[str, ...] = ()
    welcome_text: str = ""
    plugins: tuple[str, ...] = ()
    reply_budget: float = 1.0
    handler_threads: int = 8
    sign_window: float = 3600.0
    data_dir: Path = Path("data")
    redis_url: str = ""
    sentry_dsn: str = ""
    log_level: str = "INFO"
    port: int = 8000
    web_concurrency: int = 2

    def __post_init__(self) -> None:
        # Fill the defaults that derive from other settings.
        if not self.robot_code:
            object.__setattr__(self, "robot_code", self.app_key)
        if not self.callback_receive_id:
            object.__setattr__(self, "callback_receive_id", self.app_key)

    @property
    def robot_secrets(self) -> tuple[Secret, ...]:
        """Every secret a robot callback may be signed with, newest first."""
        return (self.app_secret, *self.previous_app_secrets)

    @property
    def events_enabled(self) -> bool:
        """Whether event callbacks are configured."""
        return bool(self.callback_token and self.callback_aes_key)

    def secret_values(self) -> list[str]:
        """Every secret string, for the log and Sentry scrubbers."""
        values = [s.reveal() for s in self.robot_secrets]
        values += [self.callback_token.reveal(), self.callback_aes_key.reveal()]
        values += [_password_of(self.redis_url), _key_of_dsn(self.sentry_dsn)]
        return [value for value in values if value]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.masked().items())
        return f"Settings({shown})"

    def masked(self) -> dict[str, Any]:
        """The settings with every secret masked, for display."""
        shown: dict[str, Any] = {}
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.name in ("redis_url", "sentry_dsn"):
                value = _mask_url(value)
            elif option.secret:
                value = _mask(value)
            shown[option.name] = value
        return shown


def _mask(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_mask(item) for item in value)
    return "********" if value else "(not set)"


def _password_of(url: str) -> str:
    return urlsplit(url).password or "" if url else ""


def _key_of_dsn(dsn: str) -> str:
    return urlsplit(dsn).username or "" if dsn else ""


def _mask_url(url: str) -> str:
    """The URL with any user name or password replaced by asterisks."""
    if not url:
        return "(not set)"
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"********@{host}"))


def config_path(environ: Mapping[str, str]) -> Path | None:
    """The TOML file to read: ``DINGBOT_CONFIG``, else ``./config.toml`` if present."""
    if environ.get("DINGBOT_CONFIG"):
        return Path(environ["DINGBOT_CONFIG"])
    default = Path("config.toml")
    return default if default.is_file() else None


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the config file; a missing or broken file is a ConfigError."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            "DINGBOT_CONFIG", f"points to {path}, which does not exist",
            "fix the path or unset DINGBOT_CONFIG",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            str(path), f"is not valid TOML ({exc})", "fix the syntax on that line",
        ) from None


def _lookup(table: Mapping[str, Any], dotted: str) -> Any:
    node: Any = table
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    require_credentials: bool = True,
) -> Settings:
    """Read the config file and the environment into validated Settings.

    Raises :class:`ConfigError` on the first missing or malformed setting.
    ``require_credentials=False`` lets ``check-config`` report everything
    else even when the app key and secret are absent.
    """
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    table = read_toml(path) if path else {}

    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw, source = _raw_value(option, environ, table)
        if raw is None:
            continue
        try:
            values[option.name] = option.parse(raw)
        except (ValueError, TypeError) as exc:
            # Parsers' own messages can quote the value; never a secret's.
            problem = "is malformed" if option.secret else f"is malformed: {exc}"
            raise ConfigError(source, problem, f"correct {source} and restart") from None

    if require_credentials:
        _require(values, "app_key", "DINGTALK_APP_KEY")
        _require(values, "app_secret", "DINGTALK_APP_SECRET")
    values.setdefault("app_key", "")
    values.setdefault("app_secret", Secret(""))
    _check_event_pair(values)
    return Settings(**values)


def _raw_value(
    option: Option, environ: Mapping[str, str], table: Mapping[str, Any]
) -> tuple[Any, str]:
    """The raw value of one option and where it came from (env beats file)."""
    if environ.get(option.env, "") != "":
        return environ[option.env], option.env
    raw = _lookup(table, option.toml)
    return raw, f"{option.toml} (env {option.env})"


def _require(values: dict[str, Any], name: str, env: str) -> None:
    if not values.get(name):
        raise ConfigError(
            env, "is empty",
            f"set it in the service environment (or {_toml_of(name)} in the "
            "config file) and restart",
        )


def _check_event_pair(values: dict[str, Any]) -> None:
    token = values.get("callback_token") or Secret("")
    key = values.get("callback_aes_key") or Secret("")
    if bool(token) != bool(key):
        missing = "DINGTALK_CALLBACK_AES_KEY" if token else "DINGTALK_CALLBACK_TOKEN"
        raise ConfigError(
            missing, "is empty while its partner is set",
            "set both event subscription credentials, or neither",
        )


def _toml_of(name: str) -> str:
    return next(option.toml for option in OPTIONS if option.name == name)


def settings_fields() -> list[str]:
    """Names of the Settings fields (used by tests to keep OPTIONS complete)."""
    return [f.name for f in fields(Settings)]
