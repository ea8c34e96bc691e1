"""Where the bot's extra CPU per robot callback goes, measured under gunicorn.

Same setup as bench/robot.py (Procfile line, one worker on core 0, wrk on
core 1), but each variant changes one thing and reports the server's CPU
per request (user and system separately) and throughput, alternating
with the bare baseline:

- ``bot``: as in bench/robot.py;
- ``bot, LOG_LEVEL=WARNING``: the per-callback INFO line is not written;
- ``bot, unknown command``: "pingx" is answered with "did you mean" on the
  request thread, so no pool hand-off and no handler run;
- ``bot, 1 connection``: no concurrent requests, so no thread contention.

Run: ``.venv/bin/python bench/robot_variants.py`` (about two minutes).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    APP_KEY, APP_SECRET, CLOCK_TICKS, Server, baseline_command, bot_env,
    procfile_web_command, run_wrk, temp_dir,
)
from bench.robot import PLACEHOLDER, SCRIPT  # noqa: E402
from bot.inbound.robot import compute_sign  # noqa: E402
from bot.simulator.robot import robot_message  # noqa: E402

SECONDS = 4
ROUNDS = 3


def args_for(text: str, run: str) -> list[str]:
    timestamp = str(int(time.time() * 1000))
    body = json.dumps(robot_message(text, msg_id=PLACEHOLDER, robot_code=APP_KEY))
    head, tail = body.split(PLACEHOLDER)
    return [run, timestamp, compute_sign(timestamp, APP_SECRET), head, tail]


def user_system(server: Server) -> tuple[float, float]:
    """utime and stime of the server tree, seconds."""
    user = system = 0
    for pid in server.pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def one_run(server: Server, text: str, connections: int) -> tuple[float, float, float]:
    """rps, user ms/req, system ms/req of one wrk run."""
    u0, s0 = user_system(server)
    result = run_wrk(server.url, SCRIPT, args_for(text, uuid.uuid4().hex[:10]),
                     seconds=SECONDS, connections=connections)
    u1, s1 = user_system(server)
    if result.errors or result.non_2xx:
        raise SystemExit(f"errors in run: {result.output}")
    n = max(result.requests, 1)
    return result.rps, (u1 - u0) * 1000 / n, (s1 - s0) * 1000 / n


def main() -> int:
    logs = temp_dir("dingbot-bench-variants-")
    env = bot_env(temp_dir("dingbot-bench-data-"), workers=1)
    variants = [
        ("bot", {}, "ping", 8),
        ("bot, LOG_LEVEL=WARNING", {"LOG_LEVEL": "WARNING"}, "ping", 8),
        ("bot, unknown command (no pool)", {}, "pingx", 8),
        ("bot, 1 connection", {}, "ping", 1),
    ]
    baseline = Server(baseline_command(), env, logs / "baseline.log").start()
    try:
        for name, extra, text, connections in variants:
            bot = Server(procfile_web_command(), {**env, **extra},
                         logs / f"bot-{len(name)}.log").start()
            try:
                one_run(bot, text, connections)  # warm-up
                one_run(baseline, text, connections)
                rows = [(one_run(bot, text, connections),
                         one_run(baseline, text, connections)) for _ in range(ROUNDS)]
            finally:
                bot.stop()
            ratio = statistics.median(b[0] / a[0] for b, a in rows)
            bot_u = statistics.median(b[1] for b, _ in rows)
            bot_s = statistics.median(b[2] for b, _ in rows)
            base_u = statistics.median(a[1] for _, a in rows)
            base_s = statistics.median(a[2] for _, a in rows)
            print(f"{name:<34} throughput ratio {ratio:.3f} | bot CPU ms/req user"
                  f" {bot_u:.3f} sys {bot_s:.3f} | baseline user {base_u:.3f}"
                  f" sys {base_s:.3f} | bot rps {statistics.median(b[0] for b, _ in rows):.0f}",
                  flush=True)
    finally:
        baseline.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
