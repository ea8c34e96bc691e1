"""CPU cost of each step of a robot callback, measured one step at a time.

Builds the bot's real Services (SQLite state in a temp dir, metrics in a
multiprocess folder and JSON logs to a file, as under gunicorn) in this
process and times each step with ``time.process_time`` (CPU of every
thread of the process, so the handler thread counts) over many
iterations, pinned to one core. Complements bench/robot_profile.py: this
gives microseconds per request per step.

Run: ``.venv/bin/python bench/robot_steps.py`` (about 20 s).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

# As under gunicorn: metrics go to a multiprocess folder (set before import).
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="dingbot-bench-prom-")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import APP_KEY, APP_SECRET, temp_dir  # noqa: E402
from bot import observe  # noqa: E402
from bot.config import Secret, Settings  # noqa: E402
from bot.inbound.robot import compute_sign, parse_message, verify_sign  # noqa: E402
from bot.plugins import load_plugins  # noqa: E402
from bot.responder import DEDUPE_TTL, RobotResponder  # noqa: E402
from bot.services import Services  # noqa: E402
from bot.simulator.robot import robot_message  # noqa: E402
from bot.web import create_app  # noqa: E402

N = 5000


def cpu_us(step: Callable[[int], object], n: int = N) -> float:
    """Median over 3 rounds of CPU microseconds per call of ``step(i)``."""
    rounds = []
    for _ in range(3):
        start = time.process_time()
        for i in range(n):
            step(i)
        rounds.append((time.process_time() - start) * 1e6 / n)
    return sorted(rounds)[1]


def main() -> int:
    os.sched_setaffinity(0, {0})
    log_file = temp_dir("dingbot-bench-steps-") / "log.jsonl"
    # Log lines go to a file, like gunicorn's stderr redirected by the platform.
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 2)

    settings = Settings(app_key=APP_KEY, app_secret=Secret(APP_SECRET),
                        data_dir=temp_dir("dingbot-bench-data-"))
    services = Services(settings, load_plugins(settings.plugins))
    app = create_app(services=services)
    responder = RobotResponder(services)
    run = uuid.uuid4().hex[:8]

    timestamp = str(int(time.time() * 1000))
    sign = compute_sign(timestamp, APP_SECRET)
    secrets = (APP_SECRET,)
    body = json.dumps(robot_message("ping", robot_code=APP_KEY)).encode()
    message = parse_message(body)

    def fresh(i: int, tag: str) -> bytes:
        return json.dumps(robot_message("ping", msg_id=f"{tag}{run}-{i}",
                                        robot_code=APP_KEY)).encode()

    counter = iter(range(10**9))
    results = {
        "verify_sign": cpu_us(lambda i: verify_sign(timestamp, sign, secrets)),
        "parse_message (JSON + typed message)": cpu_us(lambda i: parse_message(body)),
        "store.claim (SQLite dedupe)": cpu_us(
            lambda i: services.store.claim(f"dedupe:robot:c{run}{next(counter)}",
                                           DEDUPE_TTL)),
        "dispatcher.route": cpu_us(lambda i: services.dispatcher.route(message)),
        "metrics: CALLBACKS.inc": cpu_us(
            lambda i: observe.CALLBACKS.labels("robot", "answered").inc()),
        "metrics: HANDLER_SECONDS.observe": cpu_us(
            lambda i: observe.HANDLER_SECONDS.labels("command").observe(0.001)),
        "log.info callback line (JSON to file)": cpu_us(
            lambda i: responder._log(message, "answered", observe.Stopwatch(), "ping")),
        "observe.bind_trace_id": cpu_us(lambda i: observe.bind_trace_id()),
        "pool hand-off (submit + wait, empty job)": cpu_us(
            lambda i: services.pool.submit(lambda: None).result()),
    }
    bodies = [fresh(i, "h") for i in range(3 * N)]
    handle = iter(bodies)
    results["RobotResponder.handle (all of the above)"] = cpu_us(
        lambda i: responder.handle(timestamp, sign, next(handle)))

    client = app.test_client()
    flask_bodies = iter([fresh(i, "f") for i in range(3 * N)])
    headers = {"timestamp": timestamp, "sign": sign,
               "Content-Type": "application/json"}
    results["Flask test client POST /dingtalk/robot"] = cpu_us(
        lambda i: client.post("/dingtalk/robot", data=next(flask_bodies),
                              headers=headers))

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from baseline import app as baseline_app

    base_client = baseline_app.test_client()
    results["Flask test client POST baseline"] = cpu_us(
        lambda i: base_client.post("/dingtalk/robot", data=body, headers=headers))

    services.pool.shutdown(wait=True)
    width = max(len(name) for name in results)
    for name, micros in results.items():
        print(f"{name:<{width}}  {micros:8.1f} us CPU per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
