"""Run the DingTalk stand-in as its own process until SIGINT or SIGTERM.

Prints one line with its URL, then serves. Drive it from other processes
through ``/_standin/`` (see ``bot.simulator.control``). It binds only the
loopback address unless ``--host`` is given explicitly.
"""

import argparse
import signal
import sys
import threading

from bot.simulator.org import Org
from bot.simulator.standin import StandIn


def _webhook(value: str) -> tuple[str, str | None]:
    token, _, secret = value.partition("=")
    if not token:
        raise argparse.ArgumentTypeError("expected TOKEN=SECRET or TOKEN")
    return token, secret or None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; argparse exits with status 2 on a bad one."""
    parser = argparse.ArgumentParser(
        prog="python -m bot.simulator",
        description="A local stand-in for DingTalk's open platform (tests only).",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument("--org-users", type=int, help="generate an org of N users")
    parser.add_argument(
        "--org-departments", type=int, help="departments, root included"
    )
    parser.add_argument("--qps", type=int, help="per-API QPS limit for app-token calls")
    parser.add_argument("--app-key", default="dingtestkey")
    parser.add_argument("--app-secret", default="test-app-secret")
    parser.add_argument("--agent-id", type=int, default=1001)
    parser.add_argument("--robot-code", help="defaults to the app key")
    parser.add_argument(
        "--webhook",
        type=_webhook,
        action="append",
        default=[],
        metavar="TOKEN[=SECRET]",
        help="a custom robot webhook token and its 加签 secret (repeatable)",
    )
    return parser.parse_args(argv)


def _org(args: argparse.Namespace) -> Org:
    if args.org_users is None:
        return Org.small()
    departments = args.org_departments or max(1, args.org_users // 200)
    return Org.generate(users=args.org_users, departments=departments)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status."""
    args = parse_args(argv)
    standin = StandIn(
        app_key=args.app_key,
        app_secret=args.app_secret,
        agent_id=args.agent_id,
        org=_org(args),
        qps_limit=args.qps,
        webhook_secrets=dict(args.webhook),
        robot_code=args.robot_code,
        host=args.host or "127.0.0.1",
        port=args.port,
        allow_remote=args.host is not None,
    )

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())

    standin.start()
    print(f"dingtalk stand-in listening on {standin.url}", flush=True)
    stopping.wait()
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
