"""Benchmark: encrypted event callbacks (issue 4).

Part 1: ``check_url`` acknowledgements through ``POST /dingtalk/events``
under the Procfile's gunicorn (one worker, core 0) against the bare Flask
endpoint in bench/baseline.py (same command, ``baseline:app``), measured
as in bench/robot.py: alternating runs, per-pair throughput and server
CPU-per-request ratios. One sealed request serves every call (the
signature covers nothing unique per request).

Part 2: acknowledgement latency (wrk ``--latency``) for real events, each
with its own ``eventId``, of a type whose subscribed handler takes 2 s
(bench/bench_plugins.py). Requests are sealed in advance into a file that
bench/events.lua reads.

Run: ``.venv/bin/python bench/events.py`` (about two minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    APP_KEY, BENCH, CALLBACK_AES_KEY, CALLBACK_TOKEN, Server, baseline_command, bot_env,
    git_commit, load_average, machine_description, measure, procfile_web_command,
    run_wrk, summary, temp_dir,
)
from bot.inbound.cipher import CallbackCipher  # noqa: E402

SCRIPT = BENCH / "events.lua"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--latency-seconds", type=int, default=5)
    parser.add_argument("--latency-connections", type=int, default=4)
    return parser.parse_args(argv)


def sealed_line(cipher: CallbackCipher, payload: dict) -> str:
    """One request as "path?query<TAB>body", sealed as DingTalk would."""
    sealed = cipher.seal(json.dumps(payload))
    query = urlencode({"signature": sealed["msg_signature"],
                       "timestamp": sealed["timeStamp"], "nonce": sealed["nonce"]})
    return f"/dingtalk/events?{query}\t{json.dumps({'encrypt': sealed['encrypt']})}"


def write_requests(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def check(server: Server, line: str) -> dict:
    """Post one request line; raise unless 200 with an encrypted answer."""
    target, body = line.split("\t")
    response = requests.post(server.url + target, data=body, timeout=10,
                             headers={"Content-Type": "application/json"})
    if response.status_code != 200 or "encrypt" not in response.json():
        raise SystemExit(f"{server.url} answered {response.status_code}: {response.text}")
    return response.json()


def check_url_pairs(bot: Server, baseline: Server, cipher: CallbackCipher,
                    logs: Path, args: argparse.Namespace) -> None:
    """Part 1: check_url throughput and CPU per request, bot vs baseline."""
    request_file = write_requests(logs / "check_url.txt",
                                  [sealed_line(cipher, {"EventType": "check_url"})])
    answer = check(bot, request_file.read_text().strip())
    opened = cipher.open(signature=answer["msg_signature"], timestamp=answer["timeStamp"],
                         nonce=answer["nonce"], encrypt=answer["encrypt"])
    if opened != "success":
        raise SystemExit(f"bot answered {opened!r}, not success")
    check(baseline, request_file.read_text().strip())
    print("verified: the bot answers check_url with the sealed 'success'")

    for server in (bot, baseline):
        measure(server, SCRIPT, [str(request_file)], 3, args.connections)
    pairs = []
    for n in range(args.pairs):
        b = measure(bot, SCRIPT, [str(request_file)], args.seconds, args.connections)
        a = measure(baseline, SCRIPT, [str(request_file)], args.seconds, args.connections)
        pairs.append((b, a))
        print(f"pair {n + 1:2d}: bot {b.rps:7.1f} rps {b.cpu_ms_per_request:.3f} ms/req"
              f" | baseline {a.rps:7.1f} rps {a.cpu_ms_per_request:.3f} ms/req | ratio"
              f" {b.rps / a.rps:.3f}, cpu {b.cpu_ms_per_request / a.cpu_ms_per_request:.3f}"
              f" | errors {b.errors}/{a.errors}", flush=True)
    throughput = [b.rps / a.rps for b, a in pairs]
    cpu = [b.cpu_ms_per_request / a.cpu_ms_per_request for b, a in pairs]
    print(f"check_url throughput ratio bot/baseline: {summary(throughput)}")
    print(f"check_url CPU-per-request ratio bot/baseline: {summary(cpu)}")
    print("bar (>= 0.9):", "met" if statistics.median(throughput) >= 0.9 else "NOT met")


def slow_event_latency(bot: Server, cipher: CallbackCipher, logs: Path,
                       args: argparse.Namespace) -> None:
    """Part 2: ack latency of unique events whose handler takes 2 s."""
    run = uuid.uuid4().hex[:8]
    count = 40_000
    now_ms = int(time.time() * 1000)
    lines = [sealed_line(cipher, {"EventType": "bench_slow", "eventId": f"{run}-{n}",
                                  "EventTime": now_ms, "CorpId": "dingcorp"})
             for n in range(count)]
    request_file = write_requests(logs / "slow_events.txt", lines)
    check(bot, lines[-1])  # the last line, so the run below sees it as a duplicate once

    result = run_wrk(bot.url, SCRIPT, [str(request_file)], seconds=args.latency_seconds,
                     connections=args.latency_connections, latency=True)
    print(f"slow events: {result.requests} acknowledged in {result.seconds:.1f} s"
          f" ({result.rps:.0f}/s), errors {result.errors}, non-2xx {result.non_2xx},"
          f" of {count} unique eventIds sealed")
    print("  ack latency (ms): " + ", ".join(
        f"p{label.rstrip('%')} {value:.2f}" for label, value in result.latency.items()))
    p99 = result.latency.get("99%")
    print("  bar (p99 < 50 ms):", "met" if p99 is not None and p99 < 50 else "NOT met")
    if result.requests >= count:
        print("  NOTE: wrk sent more requests than sealed events; some were duplicates")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs = temp_dir("dingbot-bench-events-")
    print(f"machine: {machine_description()}; commit {git_commit()};"
          f" load average {load_average()}; logs in {logs}")
    cipher = CallbackCipher(CALLBACK_TOKEN, CALLBACK_AES_KEY, APP_KEY)
    env = bot_env(temp_dir("dingbot-bench-data-"), workers=1, events=True,
                  DINGBOT_PLUGINS="bench_plugins")

    with Server(procfile_web_command(), env, logs / "bot.log") as bot, \
            Server(baseline_command(), env, logs / "baseline.log") as baseline:
        check_url_pairs(bot, baseline, cipher, logs, args)
        slow_event_latency(bot, cipher, logs, args)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
