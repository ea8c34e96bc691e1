"""What every benchmark shares: gunicorn from the Procfile, wrk, CPU accounting.

The method follows DESIGN.md ("How to measure so the figure holds on a
shared 2-core machine"): the server (master and workers) is pinned to one
core with ``taskset``, wrk to the other; bot and baseline alternate in
short runs; each pair gives a throughput ratio and a ratio of server CPU
time per request, read from ``/proc/<pid>/stat`` of the whole process tree.

Benchmarks are not tests: they only talk to 127.0.0.1 and every wait here
is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bot.cli import procfile_command

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

#: Cores for the server and for the load generator (a 2-core machine).
SERVER_CPU = "0"
CLIENT_CPU = "1"

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: Credentials of the stand-in app; the benchmarks sign with these.
APP_KEY = "dingtestkey"
APP_SECRET = "bench-app-secret-not-real"
CALLBACK_TOKEN = "benchtoken"
CALLBACK_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_web_command() -> str:
    """The command of the Procfile's ``web:`` line, verbatim."""
    return procfile_command("web")


def baseline_command() -> str:
    """The Procfile's web command with the bot's app swapped for bench/baseline.py.

    Everything else (config module, bind, worker class, threads, worker
    count) stays as the Procfile says, so only the app differs.
    """
    command = procfile_web_command()
    if "bot.wsgi:app" not in command:
        raise SystemExit("Procfile web: line does not serve bot.wsgi:app")
    return command.replace("bot.wsgi:app", "baseline:app")


def bot_env(data_dir: Path, workers: int = 1, events: bool = False,
            **extra: str) -> dict[str, str]:
    """Environment for a bot (or baseline) server: credentials, data dir, PATH.

    Event-callback credentials are set only with ``events``, since they make
    the bot load its event flow.
    """
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH)]),
        "WEB_CONCURRENCY": str(workers),
        "DINGTALK_APP_KEY": APP_KEY,
        "DINGTALK_APP_SECRET": APP_SECRET,
        "DINGTALK_AGENT_ID": "1001",
        "DINGBOT_DATA_DIR": str(data_dir),
    }
    if events:
        env["DINGTALK_CALLBACK_TOKEN"] = CALLBACK_TOKEN
        env["DINGTALK_CALLBACK_AES_KEY"] = CALLBACK_AES_KEY
    for name in ("REDIS_URL", "SENTRY_DSN", "DINGBOT_CONFIG", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    env.update(extra)
    return env


class Server:
    """A gunicorn started with ``bash -c <command>``, optionally pinned to a core.

    Output goes to a log file (a pipe could fill and stall the server).
    ``stop()`` SIGTERMs the process group and waits; SIGKILL after 30 s.
    """

    def __init__(self, command: str, env: dict[str, str], log_path: Path,
                 cpu: str | None = SERVER_CPU) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command
        self.env = {**env, "PORT": str(self.port)}
        self.log_path = log_path
        self.cpu = cpu
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_after = 0.0

    def start(self, timeout: float = 30.0) -> Server:
        """Start it and wait until ``/healthz`` answers; raise if it does not."""
        argv = ["bash", "-c", self.command]
        if self.cpu is not None:
            argv = ["taskset", "-c", self.cpu, *argv]
        log = self.log_path.open("ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=log,
            start_new_session=True,
        )
        log.close()
        self.ready_after = self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> float:
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited early; see {self.log_path}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - self.started_at
            except requests.RequestException:
                pass
            time.sleep(0.005)
        self.stop()
        raise SystemExit(f"server not ready in {timeout} s; see {self.log_path}")

    def pids(self) -> list[int]:
        """The pid of every process in the server's tree (bash, master, workers)."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += [int(p) for p in (task / "children").read_text().split()]
                except OSError:
                    pass
        return found

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: processes in the tree with no children of their own."""
        tree = self.pids()
        return [pid for pid in tree[1:] if _children(pid) == [] and _is_worker(pid)]

    def cpu_seconds(self) -> float:
        """utime + stime of the whole tree so far, in seconds."""
        return sum(process_cpu_ticks(pid) for pid in self.pids()) / CLOCK_TICKS

    def stop(self) -> None:
        """SIGTERM the process group and wait for it to go (SIGKILL after 30 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"gunicorn" in cmdline


def process_cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name (field 2) may hold spaces; fields after ")" are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


@dataclass
class WrkResult:
    """What one wrk run reported."""

    requests: int
    seconds: float
    rps: float
    errors: int
    non_2xx: int
    latency: dict[str, float]  # percentile label ("50%", "99%") -> milliseconds
    output: str


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def run_wrk(url: str, script: Path, script_args: list[str], *, seconds: float,
            connections: int = 8, threads: int = 1, latency: bool = False,
            timeout_s: int = 5) -> WrkResult:
    """Run wrk pinned to the client core; raise if it does not finish in time."""
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", f"-t{threads}", f"-c{connections}",
            f"-d{round(seconds)}s", f"--timeout={timeout_s}s", "-s", str(script)]
    if latency:
        argv.append("--latency")
    argv += [url, "--", *script_args]
    done = subprocess.run(argv, capture_output=True, text=True,
                          timeout=seconds + timeout_s + 30, check=True)
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk's summary (requests, duration, errors, latency distribution)."""
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk output:\n{text}")
    count = int(match.group(1))
    seconds = float(match.group(2)) * _UNITS_MS[match.group(3)] / 1000
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket_errors:
        errors = sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    latency = {
        label: float(value) * _UNITS_MS[unit]
        for label, value, unit in re.findall(r"^\s+(\d+%)\s+([\d.]+)(us|ms|s|m)\s*$",
                                             text, re.M)
    }
    return WrkResult(count, seconds, count / seconds, errors,
                     int(non_2xx.group(1)) if non_2xx else 0, latency, text)


@dataclass
class Measure:
    """One timed run of one server: throughput and server CPU per request."""

    rps: float
    cpu_ms_per_request: float
    requests: int
    errors: int


def measure(server: Server, script: Path, script_args: list[str], seconds: float,
            connections: int) -> Measure:
    """One wrk run against ``server``, with the server's CPU time over it."""
    cpu_before = server.cpu_seconds()
    result = run_wrk(server.url, script, script_args, seconds=seconds,
                     connections=connections)
    cpu_after = server.cpu_seconds()
    per_request = (cpu_after - cpu_before) * 1000 / max(result.requests, 1)
    return Measure(result.rps, per_request, result.requests,
                   result.errors + result.non_2xx)


def summary(values: list[float]) -> str:
    """min / median / max as one short string."""
    return (f"min {min(values):.3f}, median {statistics.median(values):.3f}, "
            f"max {max(values):.3f}")


def temp_dir(prefix: str) -> Path:
    """A fresh directory under the system temp dir (left for inspection)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def git_commit() -> str:
    """The short commit of the working tree being measured (+dirty if edited)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "bot", "handlers"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head + ("+uncommitted changes in bot/handlers" if dirty else "")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on a shared machine."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_description() -> str:
    """CPU model, core count, kernel and Python, for the report."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (f"{model}, {os.cpu_count()} cores, Linux {os.uname().release}, "
            f"Python {sys.version.split()[0]}")
