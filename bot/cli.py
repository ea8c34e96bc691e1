"""The ``dingbot`` command.

``dingbot run`` serves the bot as the Procfile does; ``dingbot dev`` does
the same against the local DingTalk stand-in when no credentials are set;
``dingbot say`` talks to a running bot as DingTalk would; ``dingbot
check-config`` shows the effective settings with secrets masked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click

from bot.config import Settings, load_settings
from bot.errors import BotError, ConfigError

#: Credentials the dev mode gives both the bot and the stand-in.
DEV_APP_KEY = "dingdevkey"
DEV_APP_SECRET = "dev-app-secret-not-for-production"
DEV_AGENT_ID = "1001"


@click.group()
@click.version_option(package_name="dingbot")
def main() -> None:
    """dingbot: a DingTalk chatops bot and webhook responder."""


@main.command("check-config")
def check_config() -> None:
    """Print the effective settings (secrets masked); exit 1 on a problem."""
    try:
        settings = load_settings()
        from bot.plugins import load_plugins

        plugins = load_plugins(settings.plugins)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(1)
    for name, value in settings.masked().items():
        click.echo(f"{name} = {_show(value)}")
    click.echo("plugins loaded = " + ", ".join(p.name for p in plugins))


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)


def procfile_command(process: str = "web", procfile: Path | None = None) -> str:
    """The command line of ``process`` in the Procfile next to the package."""
    procfile = procfile or Path(__file__).resolve().parent.parent / "Procfile"
    for line in procfile.read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process:
            return command.strip()
    raise click.ClickException(f"the Procfile has no {process!r} process")


@main.command("run")
def run() -> None:
    """Serve the bot with gunicorn, exactly as the Procfile's web line does."""
    settings = _exit_on_bad_config()
    os.environ.setdefault("PORT", str(settings.port))
    os.execvp("bash", ["bash", "-c", "exec " + procfile_command("web")])


def _exit_on_bad_config() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"dingbot: configuration error: {exc}", err=True)
        sys.exit(3)


@main.command("dev")
@click.option("--port", default=8000, show_default=True, help="Port of the bot.")
@click.option("--standin-port", default=8900, show_default=True,
              help="Port of the local DingTalk stand-in.")
def dev(port: int, standin_port: int) -> None:
    """Run the bot against the local DingTalk stand-in (no account needed).

    The stand-in plays DingTalk's open platform on loopback; the bot gets
    matching development credentials. Talk to it with ``dingbot say``.
    """
    from bot.simulator import StandIn

    standin = StandIn(app_key=DEV_APP_KEY, app_secret=DEV_APP_SECRET,
                      agent_id=int(DEV_AGENT_ID), port=standin_port)
    standin.start()
    env = dict(os.environ, PORT=str(port), WEB_CONCURRENCY=os.environ.get(
        "WEB_CONCURRENCY", "1"))
    env.update(_dev_credentials(standin.url))
    click.echo(f"DingTalk stand-in on {standin.url}; bot on http://127.0.0.1:{port}")
    click.echo('Try:  dingbot say ping   (or: dingbot say "help")')
    bot = subprocess.Popen(["bash", "-c", "exec " + procfile_command("web")], env=env)
    try:
        bot.wait()
    except KeyboardInterrupt:
        bot.send_signal(signal.SIGTERM)
        bot.wait()
    finally:
        standin.stop()


def _dev_credentials(standin_url: str) -> dict[str, str]:
    return {
        "DINGTALK_APP_KEY": DEV_APP_KEY,
        "DINGTALK_APP_SECRET": DEV_APP_SECRET,
        "DINGTALK_AGENT_ID": DEV_AGENT_ID,
        "DINGTALK_OAPI_URL": standin_url,
        "DINGTALK_API_URL": standin_url,
        "DINGBOT_ADMINS": os.environ.get("DINGBOT_ADMINS", "dev-admin"),
    }


@main.command("say")
@click.argument("words", nargs=-1, required=True)
@click.option("--bot", "bot_url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--standin", "standin_url", default="http://127.0.0.1:8900",
              show_default=True, help="Stand-in that receives late answers.")
@click.option("--staff-id", default="dev-admin", show_default=True)
@click.option("--wait", default=10.0, show_default=True,
              help="Seconds to wait for an answer that comes later.")
def say(words: tuple[str, ...], bot_url: str, standin_url: str, staff_id: str,
        wait: float) -> None:
    """Send WORDS to a running bot as a signed group message; print the answer.

    Uses DINGTALK_APP_SECRET (the dev secret if unset), so it works with
    ``dingbot dev`` out of the box.
    """
    import requests

    from bot.simulator.robot import robot_message, signed_request

    secret = os.environ.get("DINGTALK_APP_SECRET", DEV_APP_SECRET)
    robot_code = os.environ.get("DINGTALK_ROBOT_CODE") or os.environ.get(
        "DINGTALK_APP_KEY", DEV_APP_KEY)
    session_id = f"say-{uuid.uuid4().hex[:12]}"
    session = requests.post(f"{standin_url}/_standin/session",
                            json={"session": session_id}, timeout=5).json()
    body = robot_message(" ".join(words), robot_code=robot_code,
                         sender_staff_id=staff_id, sender_nick=staff_id,
                         session_webhook=session["url"],
                         session_webhook_expires_at=session["expires_at"])
    headers, raw = signed_request(secret, body)
    answer = requests.post(f"{bot_url}/dingtalk/robot", headers=headers, data=raw,
                           timeout=10)
    if answer.status_code != 200:
        raise click.ClickException(f"the bot answered {answer.status_code}: {answer.text}")
    if answer.json().get("msgtype") != "empty":
        click.echo(_render(answer.json()))
        return
    _print_late_answers(standin_url, session_id, wait)


def _print_late_answers(standin_url: str, session: str, wait: float) -> None:
    import requests

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = requests.get(f"{standin_url}/_standin/session_messages",
                             params={"session": session}, timeout=5).json()["messages"]
        if found:
            for body in found:
                click.echo(_render(body))
            return
        time.sleep(0.2)
    click.echo("(no answer)")


def _render(body: dict) -> str:
    kind = body.get("msgtype", "")
    part = body.get(kind, {})
    if kind == "text":
        return part.get("content", "")
    if kind == "markdown":
        return part.get("text", "")
    return json.dumps(body, ensure_ascii=False, indent=2)


if __name__ == "__main__":
    main()
