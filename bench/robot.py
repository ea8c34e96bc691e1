"""Benchmark: `ping` through POST /dingtalk/robot against a bare Flask endpoint.

Both servers run the Procfile's ``web:`` line under ``bash -c`` (the
baseline with ``bot.wsgi:app`` swapped for ``baseline:app``), one worker
each (``WEB_CONCURRENCY=1``), pinned to core 0; wrk runs on core 1. After
a check that the bot really answers pong and drops a repeated msgId, the
two are measured alternately (bot, baseline, bot, baseline …) and each
pair gives a throughput ratio and a ratio of server CPU time per request.
Every bot request carries a fresh msgId (bench/robot.lua).

Also measured: resident memory per worker after the load, and start-up
time (process start until /healthz answers; median of several starts).

Run: ``.venv/bin/python bench/robot.py`` (about two minutes).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    APP_KEY, APP_SECRET, BENCH, Measure, Server, baseline_command, bot_env,
    git_commit, load_average, machine_description, measure, procfile_web_command,
    rss_mb, summary, temp_dir,
)
from bot.inbound.robot import compute_sign  # noqa: E402
from bot.simulator import StandIn  # noqa: E402
from bot.simulator.robot import robot_message  # noqa: E402

SCRIPT = BENCH / "robot.lua"
PLACEHOLDER = "@@MSGID@@"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=4, help="per run")
    parser.add_argument("--warmup", type=int, default=3, help="per server")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--starts", type=int, default=7, help="start-up samples")
    return parser.parse_args(argv)


def wrk_args(run: str) -> list[str]:
    """Arguments for robot.lua: run prefix, timestamp, sign, body around the msgId."""
    timestamp = str(int(time.time() * 1000))
    body = json.dumps(robot_message("ping", msg_id=PLACEHOLDER, robot_code=APP_KEY),
                      ensure_ascii=False)
    head, tail = body.split(PLACEHOLDER)
    return [run, timestamp, compute_sign(timestamp, APP_SECRET), head, tail]


def post_ping(server: Server, msg_id: str) -> dict:
    """One signed ping with ``msg_id``; raises unless HTTP 200."""
    timestamp = str(int(time.time() * 1000))
    body = robot_message("ping", msg_id=msg_id, robot_code=APP_KEY)
    response = requests.post(
        f"{server.url}/dingtalk/robot", json=body, timeout=10,
        headers={"timestamp": timestamp, "sign": compute_sign(timestamp, APP_SECRET)},
    )
    if response.status_code != 200:
        raise SystemExit(f"{server.url} answered {response.status_code}: {response.text}")
    return response.json()


def verify(bot: Server, baseline: Server) -> None:
    """Stop unless the bot answers pong, drops a repeat, and the baseline answers."""
    msg_id = f"verify-{uuid.uuid4().hex}"
    first = post_ping(bot, msg_id)
    if first.get("text", {}).get("content") != "pong":
        raise SystemExit(f"bot did not answer pong: {first}")
    second = post_ping(bot, msg_id)
    if second != {"msgtype": "empty"}:
        raise SystemExit(f"bot did not drop a repeated msgId: {second}")
    if post_ping(baseline, msg_id).get("text", {}).get("content") != "pong":
        raise SystemExit("baseline did not answer pong")
    print("verified: bot answers pong, a repeated msgId gets {'msgtype': 'empty'}")


def callback_counts(server: Server) -> dict[str, float]:
    """dingbot_callbacks_total for the robot route, by outcome, from /metrics."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    pattern = r'^dingbot_callbacks_total\{([^}]*)\} ([\d.e+]+)$'
    for labels, value in re.findall(pattern, text, re.M):
        if 'route="robot"' in labels:
            outcome = re.search(r'outcome="([^"]*)"', labels).group(1)
            counts[outcome] = float(value)
    return counts


def start_up_times(env: dict[str, str], logs: Path, starts: int) -> list[float]:
    """Seconds from process start until /healthz answers, per fresh start."""
    times = []
    for n in range(starts):
        data_dir = temp_dir("dingbot-bench-start-")
        server = Server(procfile_web_command(), {**env, "DINGBOT_DATA_DIR": str(data_dir)},
                        logs / f"start-{n}.log")
        server.start()
        times.append(server.ready_after)
        server.stop()
    return times


def warm_up(bot: Server, baseline: Server, args: argparse.Namespace) -> None:
    """One unmeasured run against each server."""
    run_id = uuid.uuid4().hex[:8]
    for server in (bot, baseline):
        measure(server, SCRIPT, wrk_args(f"w{run_id}"), args.warmup, args.connections)


def run_pairs(bot: Server, baseline: Server, args: argparse.Namespace,
              ) -> list[tuple[Measure, Measure]]:
    """Alternate bot and baseline runs."""
    run_id = uuid.uuid4().hex[:8]
    pairs = []
    for n in range(args.pairs):
        bot_run = measure(bot, SCRIPT, wrk_args(f"b{run_id}{n}"), args.seconds,
                          args.connections)
        base_run = measure(baseline, SCRIPT, wrk_args(f"a{run_id}{n}"), args.seconds,
                           args.connections)
        pairs.append((bot_run, base_run))
        print(f"pair {n + 1:2d}: bot {bot_run.rps:7.1f} rps {bot_run.cpu_ms_per_request:.3f}"
              f" ms/req | baseline {base_run.rps:7.1f} rps"
              f" {base_run.cpu_ms_per_request:.3f} ms/req | ratio"
              f" {bot_run.rps / base_run.rps:.3f}, cpu"
              f" {bot_run.cpu_ms_per_request / base_run.cpu_ms_per_request:.3f}"
              f" | errors {bot_run.errors}/{base_run.errors}", flush=True)
    return pairs


def report(pairs: list[tuple[Measure, Measure]], rss: dict[str, list[float]],
           starts: list[float], counts: dict[str, float], sent: int) -> dict:
    """Print the summary and return it as a dict."""
    throughput = [b.rps / a.rps for b, a in pairs]
    cpu = [b.cpu_ms_per_request / a.cpu_ms_per_request for b, a in pairs]
    result = {
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "throughput_ratio_median": statistics.median(throughput),
        "cpu_per_request_ratio_median": statistics.median(cpu),
        "bot_rps_median": statistics.median(b.rps for b, _ in pairs),
        "baseline_rps_median": statistics.median(a.rps for _, a in pairs),
        "bot_cpu_ms_median": statistics.median(b.cpu_ms_per_request for b, _ in pairs),
        "baseline_cpu_ms_median": statistics.median(
            a.cpu_ms_per_request for _, a in pairs),
        "commit": git_commit(),
        "load_average_after": load_average(),
        "errors": sum(b.errors + a.errors for b, a in pairs),
        "rss_mb": rss,
        "startup_s": starts,
        "startup_s_median": statistics.median(starts),
        "bot_callbacks": counts,
        "bot_requests_counted_by_wrk": sent,
    }
    print(f"commit {result['commit']}; load average after: {result['load_average_after']}")
    print(f"throughput ratio bot/baseline: {summary(throughput)}")
    print(f"CPU-per-request ratio bot/baseline: {summary(cpu)}")
    print(f"errors or non-2xx: {result['errors']}")
    print(f"RSS per worker after load (MiB): {rss}")
    print(f"start-up to /healthz (s): {summary(starts)}")
    print(f"bot callbacks during the pairs, by outcome: {counts};"
          f" wrk counted {sent} completed bot requests")
    print("bar (throughput ratio >= 0.95):",
          "met" if result["throughput_ratio_median"] >= 0.95 else "NOT met")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs = temp_dir("dingbot-bench-robot-")
    print(f"machine: {machine_description()}; load average {load_average()};"
          f" logs in {logs}")

    with StandIn(app_key=APP_KEY, app_secret=APP_SECRET) as standin:
        env = bot_env(temp_dir("dingbot-bench-data-"), workers=1,
                      DINGTALK_OAPI_URL=standin.url, DINGTALK_API_URL=standin.url)
        starts = start_up_times(env, logs, args.starts)

        bot = Server(procfile_web_command(), env, logs / "bot.log").start()
        baseline = Server(baseline_command(), env, logs / "baseline.log").start()
        try:
            verify(bot, baseline)
            warm_up(bot, baseline, args)
            before = callback_counts(bot)
            pairs = run_pairs(bot, baseline, args)
            rss = {"bot": [rss_mb(p) for p in bot.worker_pids()],
                   "baseline": [rss_mb(p) for p in baseline.worker_pids()]}
            after = callback_counts(bot)
            counts = {k: v - before.get(k, 0.0) for k, v in after.items()}
        finally:
            bot.stop()
            baseline.stop()

    result = report(pairs, rss, starts, counts, sum(b.requests for b, _ in pairs))
    result["pairs"] = [
        {"bot_rps": b.rps, "baseline_rps": a.rps, "bot_cpu_ms": b.cpu_ms_per_request,
         "baseline_cpu_ms": a.cpu_ms_per_request} for b, a in pairs
    ]
    (logs / "robot.json").write_text(json.dumps(result, indent=2))
    print(f"results: {logs / 'robot.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
