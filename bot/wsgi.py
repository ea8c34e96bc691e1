"""The WSGI entry point gunicorn loads: ``bot.wsgi:app``."""

from bot.web import create_app

app = create_app()
