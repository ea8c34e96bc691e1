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
    os.environ["PATH"] = _with_our_bin(os.environ.get("PATH", ""))
    os.execvp("bash", ["bash", "-c", "exec " + procfile_command("web")])


def _with_our_bin(path: str) -> str:
    """PATH with this interpreter's scripts folder first.

    The Procfile names ``gunicorn`` bare; run as ``.venv/bin/dingbot`` with
    the virtualenv not activated, it would not be found otherwise.
    """
    return os.pathsep.join([str(Path(sys.executable).parent), path])


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
        "WEB_CONCURRENCY", "1"), PATH=_with_our_bin(os.environ.get("PATH", "")))
    env.update(_dev_credentials(standin.url))
    click.echo(f"DingTalk stand-in on {standin.url}; bot on http://127.0.0.1:{port}")
    click.echo('Try:  dingbot say ping   (or: dingbot say "help")')
    bot = subprocess.Popen(["bash", "-c", "exec " + procfile_command("web")], env=env)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the same way on SIGTERM
    try:
        bot.wait()
    except KeyboardInterrupt:
        bot.send_signal(signal.SIGTERM)
        bot.wait()
    finally:
        standin.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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

    try:
        _say(words, bot_url, standin_url, staff_id, wait)
    except requests.RequestException as exc:
        raise click.ClickException(
            f"could not reach the bot or the stand-in ({type(exc).__name__}); "
            "is `./dev run` (or `dingbot dev`) running?"
        ) from None


def _say(words: tuple[str, ...], bot_url: str, standin_url: str, staff_id: str,
         wait: float) -> None:
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


def _services(require_agent: bool = False):
    """Services for a one-off CLI command (no web process)."""
    from bot.services import Services

    settings = _exit_on_bad_config()
    if require_agent and settings.agent_id is None:
        click.echo("dingbot: DINGTALK_AGENT_ID is empty; set it to send work notices",
                   err=True)
        sys.exit(3)
    return Services(settings, [])


@main.command("notice")
@click.argument("text")
@click.option("--users", help="Comma-separated staff ids.")
@click.option("--dept", type=int, help="A department id: everyone in it and below it.")
@click.option("--all", "to_all", is_flag=True, help="Everyone in the org.")
@click.option("--markdown", "title", help="Send TEXT as markdown with this title.")
def notice(text: str, users: str | None, dept: int | None, to_all: bool,
           title: str | None) -> None:
    """Send TEXT as a work notice to users, a department tree, or everyone.

    A department tree is expanded to its people first (every sub-department,
    each person once), then sent 100 people a call with a progress bar.
    Prints the task ids.
    """
    from bot import messages

    if sum(bool(x) for x in (users, dept is not None, to_all)) != 1:
        raise click.UsageError("give exactly one of --users, --dept or --all")
    message = messages.markdown(title, text) if title else messages.text(text)
    client = _services(require_agent=True).client

    if to_all:
        task_ids = client.notices.send(message, to_all=True)
    else:
        user_ids = _recipients(client, users, dept)
        with click.progressbar(length=len(user_ids), label="Sending",
                               file=sys.stderr) as bar:
            task_ids = client.notices.send(
                message, user_ids=user_ids,
                progress=lambda done, total: bar.update(done - bar.pos))
    click.echo("task ids: " + " ".join(str(task) for task in task_ids))


def _recipients(client, users: str | None, dept: int | None) -> list[str]:
    if users:
        return [uid.strip() for uid in users.split(",") if uid.strip()]
    found = []
    with click.progressbar(client.contacts.all_users(root=dept), label="Reading org",
                           file=sys.stderr) as people:
        found = [person.userid for person in people]
    if not found:
        raise click.ClickException(f"department {dept} has nobody in it")
    return found


@main.group("contacts")
def contacts() -> None:
    """Read the org chart from DingTalk."""


@contacts.command("departments")
@click.option("--root", default=1, show_default=True, help="Department to start at.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
def contacts_departments(root: int, fmt: str) -> None:
    """List the department tree under ROOT."""
    client = _services().client
    rows = [{"dept_id": d.dept_id, "name": d.name, "parent_id": d.parent_id}
            for d in client.contacts.departments(root=root)]
    _write_rows(rows, ["dept_id", "name", "parent_id"], fmt, sys.stdout)


@contacts.command("users")
@click.option("--dept", default=1, show_default=True,
              help="Department whose tree to export.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("--output", type=click.File("w", encoding="utf-8"), default="-",
              help="File to write (default: standard output).")
def contacts_users(dept: int, fmt: str, output) -> None:
    """Export everyone in a department tree, each person once."""
    client = _services().client
    fields = ["userid", "name", "title", "dept_ids", "mobile", "email"]
    rows = []
    with click.progressbar(client.contacts.all_users(root=dept), label="Reading org",
                           file=sys.stderr) as people:
        for person in people:
            rows.append({"userid": person.userid, "name": person.name,
                         "title": person.title,
                         "dept_ids": ",".join(str(d) for d in person.dept_ids),
                         "mobile": person.mobile, "email": person.email})
    _write_rows(rows, fields, fmt, output)


def _write_rows(rows: list[dict], fields: list[str], fmt: str, out) -> None:
    if fmt == "json":
        json.dump(rows, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    import csv

    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


@main.group("events")
def events() -> None:
    """Encrypted event callbacks (事件订阅): maintenance commands."""


@events.command("replay-failed")
def events_replay_failed() -> None:
    """Fetch DingTalk's failed event pushes and run them through the handlers.

    New events are recorded in the event inbox and handled here, waiting
    for their handlers; events already recorded are skipped, so running it
    twice is harmless. Exits 1 when DingTalk cannot be asked or a handler
    failed (that event is retried by the web processes).
    """
    from bot import observe
    from bot.eventflow import replay_failed
    from bot.plugins import load_plugins
    from bot.services import Services

    try:
        settings = load_settings()
        plugins = load_plugins(settings.plugins)
    except ConfigError as exc:
        click.echo(f"dingbot: configuration error: {exc}", err=True)
        sys.exit(3)
    observe.configure(settings.log_level, settings.secret_values())

    services = Services(settings, plugins)
    try:
        summary = replay_failed(services)
    except BotError as exc:
        click.echo(f"dingbot: replay failed: {exc}", err=True)
        sys.exit(1)
    finally:
        services.pool.shutdown(wait=True)
    click.echo(f"failed events replayed: {summary}")
    if summary.failed:
        sys.exit(1)
