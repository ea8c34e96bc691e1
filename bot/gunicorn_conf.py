"""gunicorn settings for the ``web`` process (``gunicorn -c python:bot.gunicorn_conf``).

Worker class: gthread. A request mostly waits, on its handler (up to the
reply budget) or on DingTalk, so threads give each worker concurrency
without the monkey-patching an async worker would need.

The configuration is validated in the master before any worker forks:
a bad setting stops gunicorn with one line naming it, not a traceback
from every worker.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from bot.config import load_settings
from bot.errors import ConfigError

# The bind address comes from the Procfile (0.0.0.0:$PORT); this default
# serves `gunicorn -c python:bot.gunicorn_conf bot.wsgi:app` run by hand.
def _settings_or_none():
    try:
        return load_settings(require_credentials=False)
    except ConfigError:
        return None  # on_starting reports it, in one line


_settings = _settings_or_none()
bind = [f"0.0.0.0:{_settings.port if _settings else 8000}"]
workers = _settings.web_concurrency if _settings else 2
worker_class = "gthread"
threads = int(os.environ.get("DINGBOT_WEB_THREADS", "8") or 8)
# SIGTERM: stop accepting, let requests and handler jobs finish this long.
graceful_timeout = 25
timeout = 30
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Shared metrics across workers: each writes its own files in this folder.
_OWN_METRICS_DIR = ""
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _OWN_METRICS_DIR = tempfile.mkdtemp(prefix="dingbot-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR


def on_starting(server) -> None:
    """Validate settings and plugins once, in the master."""
    from bot.plugins import load_plugins

    try:
        settings = load_settings()
        load_plugins(settings.plugins)
    except ConfigError as exc:
        print(f"dingbot: configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)


def worker_exit(server, worker) -> None:
    """Let queued handler jobs finish (and send their late answers)."""
    # A worker that failed to boot has no app (gunicorn sets .wsgi on load).
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("dingbot")
    if services is not None:
        services.pool.shutdown(wait=True)
    from bot import observe

    observe.flush_logs()  # the late answers' lines, before the worker goes


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)
