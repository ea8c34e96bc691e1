"""The built-in commands: help, ping, whoami."""

from __future__ import annotations

from bot.context import Context
from bot.dispatch import Command, Plugin
from bot.messages import Markdown, markdown

plugin = Plugin("builtin")


@plugin.command("help", aliases=["?", "帮助"], usage="help [command]", inline=True)
def handle_help(ctx: Context, name: str = "") -> Markdown:
    """List the commands you can use, or explain one."""
    visible = ctx.dispatcher.visible_commands(ctx.message)
    if name:
        command = ctx.dispatcher.find(name.lstrip("/"))
        if command is None or command not in visible:
            return markdown("Help", f"No command `{name}` here. Send `help` for the list.")
        return markdown(f"Help: {command.name}", _describe(command))

    lines = ["#### What I can do", ""]
    lines += [f"- `{c.usage}`: {c.help}" if c.help else f"- `{c.usage}`" for c in visible]
    lines += ["", "Send `help <command>` for details."]
    return markdown("Help", "\n".join(lines))


def _describe(command: Command) -> str:
    parts = [f"#### {command.name}", "", command.help or "(no description)", "",
             f"Usage: `{command.usage}`"]
    if command.aliases:
        parts.append("Also: " + ", ".join(f"`{a}`" for a in command.aliases))
    if command.admins_only:
        parts.append("Admins only.")
    return "\n\n".join(p for p in parts if p)


@plugin.command("ping", inline=True)
def handle_ping(ctx: Context) -> str:
    """Check that the bot is alive."""
    return "pong"


@plugin.command("whoami", aliases=["我是谁"], inline=True)
def handle_whoami(ctx: Context) -> str:
    """Show what the bot knows about you and this conversation."""
    message = ctx.message
    role = "admin" if ctx.is_admin else "not an admin"
    staff_id = message.sender_staff_id or "(none: outside the org or bot unpublished)"
    kind = "group" if message.is_group else "direct chat"
    title = f" “{message.conversation_title}”" if message.conversation_title else ""
    return (
        f"You are {message.sender_nick or 'unknown'}, staff id {staff_id}, {role}.\n"
        f"Conversation: {message.conversation_id} ({kind}{title})."
    )
