"""Compare bot variants against the bare baseline, all servers up at once.

bench/robot_variants.py measures its variants one after another, so a
host that slows down halfway favours the first ones. Here every server
(the baseline and each variant) is started first, each pinned to core 0,
and then measured in rounds: in each round every server gets one short
wrk run, in the same order. Each variant's per-round ratio is taken
against the baseline's run of the same round; medians are printed.

A variant is ``name:KEY=VALUE,KEY=VALUE`` (environment for that server).
``ROOTDIR=<path>`` serves the bot from another checkout of this
repository instead (for instance ``git worktree add /tmp/old HEAD~3``),
so two commits can be compared in one run:

    .venv/bin/python bench/robot_compare.py now: quiet:LOG_LEVEL=WARNING \\
        old:ROOTDIR=/tmp/old

Environment: ``ROUNDS`` (default 10) and ``SECONDS`` per run (default 3).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.harness as harness  # noqa: E402
import bench.robot_variants as variants  # noqa: E402
from bench.harness import (  # noqa: E402
    Server, baseline_command, bot_env, procfile_web_command, temp_dir,
)

ROUNDS = int(os.environ.get("ROUNDS", "10"))
variants.SECONDS = float(os.environ.get("SECONDS", "3"))


def parse(spec: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = spec.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, env


def start(name: str, extra: dict[str, str], logs: Path) -> Server:
    """A bot server for one variant, from ROOTDIR if given."""
    root = Path(extra.pop("ROOTDIR", str(harness.ROOT)))
    env = {**bot_env(temp_dir("dingbot-bench-data-"), workers=1), **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "bench")])
    own_root, harness.ROOT = harness.ROOT, root  # Server runs from ROOT
    try:
        return Server(procfile_web_command(), env, logs / f"bot-{name}.log").start()
    finally:
        harness.ROOT = own_root


def main() -> int:
    specs = [parse(arg) for arg in sys.argv[1:]] or [("bot", {})]
    logs = temp_dir("dingbot-bench-compare-")
    servers: dict[str, Server] = {}
    try:
        servers["baseline"] = Server(baseline_command(),
                                     bot_env(temp_dir("dingbot-bench-data-"), workers=1),
                                     logs / "baseline.log").start()
        for name, extra in specs:
            servers[name] = start(name, extra, logs)
        for server in servers.values():
            variants.one_run(server, "ping", 8)  # warm-up
        runs: dict[str, list] = {name: [] for name in servers}
        for _ in range(ROUNDS):
            for name, server in servers.items():
                runs[name].append(variants.one_run(server, "ping", 8))
    finally:
        for server in servers.values():
            server.stop()

    base = runs["baseline"]
    for name, _ in specs:
        ratios = [b[0] / a[0] for b, a in zip(runs[name], base)]
        cpu = [(b[1] + b[2]) / (a[1] + a[2]) for b, a in zip(runs[name], base)]
        rps = statistics.median(run[0] for run in runs[name])
        print(f"{name:<20} throughput ratio median {statistics.median(ratios):.3f}"
              f" ({min(ratios):.3f}-{max(ratios):.3f}), CPU ratio median"
              f" {statistics.median(cpu):.3f}, rps {rps:.0f}")
    print(f"baseline rps {statistics.median(r[0] for r in base):.0f}; logs in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
