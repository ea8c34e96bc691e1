"""``python -m bot`` runs the ``dingbot`` command."""

from bot.cli import main

main()
