"""Where the bot's worker spends its CPU on `ping` callbacks (py-spy sampling).

Starts the bot exactly as bench/robot.py does (Procfile line, one worker
pinned to core 0), drives it with bench/robot.lua from core 1, and samples
the worker with py-spy meanwhile. Prints the share of CPU samples whose
stack passes through each request step, and the top functions by own time.
Needs py-spy (``.venv/bin/pip install py-spy``; not a project dependency).

Run: ``.venv/bin/python bench/robot_profile.py`` (about 30 s).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    APP_KEY, APP_SECRET, Server, bot_env, procfile_web_command, run_wrk, temp_dir,
)
from bench.robot import SCRIPT, wrk_args  # noqa: E402
from bot.simulator import StandIn  # noqa: E402

SECONDS = 12

#: Request steps, each recognised by a frame in the sampled stack.
STEPS = {
    "sign check (verify_sign)": "verify_sign (bot/inbound/robot.py",
    "JSON parse + typed message (parse_message)": "parse_message (bot/inbound/robot.py",
    "dedupe claim (store.claim)": "claim (bot/state/",
    "routing (dispatcher.route)": "route (bot/dispatch.py",
    "pool hand-off (submit + wait)": "_run (bot/responder.py",
    "handler thread (_call_handler)": "_call_handler (bot/responder.py",
    "logging (responder._log)": "_log (bot/responder.py",
    "metrics (prometheus_client)": "prometheus_client/",
    "trace id (observe.bind_trace_id)": "bind_trace_id (bot/observe.py",
    "jsonify response": "jsonify (",
    "whole RobotResponder.handle": "handle (bot/responder.py",
    "Flask/werkzeug request dispatch": "wsgi_app (",
    "gunicorn gthread (all)": "gunicorn/",
}


def main() -> int:
    if shutil.which("py-spy") is None and not Path(sys.executable).with_name(
            "py-spy").exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    logs = temp_dir("dingbot-bench-profile-")
    raw = logs / "worker.txt"

    with StandIn(app_key=APP_KEY, app_secret=APP_SECRET) as standin:
        env = bot_env(temp_dir("dingbot-bench-data-"), workers=1,
                      DINGTALK_OAPI_URL=standin.url, DINGTALK_API_URL=standin.url)
        with Server(procfile_web_command(), env, logs / "bot.log") as bot:
            worker = bot.worker_pids()[0]
            load = threading.Thread(target=run_wrk, args=(
                bot.url, SCRIPT, wrk_args(f"p{uuid.uuid4().hex[:8]}")),
                kwargs={"seconds": SECONDS + 3})
            load.start()
            subprocess.run(
                ["taskset", "-c", "1", py_spy, "record", "--gil", "--format", "raw", "-r", "200",
                 "-d", str(SECONDS), "-p", str(worker), "-o", str(raw)],
                check=True, capture_output=True, timeout=SECONDS + 60,
            )
            load.join(timeout=SECONDS + 60)

    report(raw)
    print(f"raw stacks: {raw}")
    return 0


def report(raw: Path) -> None:
    """Print step shares and top self-time functions from py-spy's raw output."""
    total = 0
    steps: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        for step, marker in STEPS.items():
            if marker in stack:
                steps[step] += samples
        own[stack.rsplit(";", 1)[-1]] += samples

    print(f"{total} samples of the worker thread holding the GIL")
    for step in STEPS:
        print(f"  {100 * steps[step] / total:5.1f}%  {step}")
    print("top functions by own samples:")
    for frame, samples in own.most_common(25):
        print(f"  {100 * samples / total:5.1f}%  {frame}")


if __name__ == "__main__":
    sys.exit(main())
