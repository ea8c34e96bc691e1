"""The dingbot command against the stand-in: notices and contacts."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import APP_KEY, APP_SECRET

ROOT = Path(__file__).resolve().parents[1]
SEND = "/topapi/message/corpconversation/asyncsend_v2"


def dingbot(standin, tmp_path, *args: str, agent: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DINGTALK_", "DINGBOT_"))}
    env.update({
        "DINGTALK_APP_KEY": APP_KEY, "DINGTALK_APP_SECRET": APP_SECRET,
        "DINGTALK_OAPI_URL": standin.url, "DINGTALK_API_URL": standin.url,
        "DINGBOT_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT),
    })
    if agent:
        env["DINGTALK_AGENT_ID"] = "1001"
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_help_lists_the_commands(standin, tmp_path):
    """dingbot --help names every top-level command."""
    out = dingbot(standin, tmp_path, "--help").stdout
    for name in ("run", "dev", "say", "check-config", "notice", "contacts"):
        assert name in out


def test_notice_to_users_sends_one_call_and_prints_the_task_id(standin, tmp_path):
    """--users sends one work notice and prints its task id."""
    standin.reset()
    result = dingbot(standin, tmp_path, "notice", "maintenance at 22:00",
                     "--users", "user001,user002")
    assert result.returncode == 0, result.stderr
    calls = standin.calls_to(SEND)
    assert len(calls) == 1
    assert calls[0].body["userid_list"] == "user001,user002"
    assert result.stdout.strip() == f"task ids: {calls[0].response['task_id']}"


def test_notice_to_a_department_tree_reaches_each_member_once(standin, tmp_path):
    """--dept 1 expands the whole org, each person once, in calls of at most 100."""
    standin.reset()
    result = dingbot(standin, tmp_path, "notice", "hello", "--dept", "1")
    assert result.returncode == 0, result.stderr
    sent = []
    for call in standin.calls_to(SEND):
        sent += call.body["userid_list"].split(",")
    assert sorted(sent) == sorted(user.userid for user in standin.org.users)
    assert len(sent) == len(set(sent))


def test_notice_without_agent_id_explains_what_to_set(standin, tmp_path):
    """No DINGTALK_AGENT_ID: a one-line error, nothing sent."""
    standin.reset()
    result = dingbot(standin, tmp_path, "notice", "x", "--users", "u1", agent=False)
    assert result.returncode == 3
    assert "DINGTALK_AGENT_ID is empty" in result.stderr
    assert standin.calls_to(SEND) == []


def test_contacts_users_exports_json_and_csv(standin, tmp_path):
    """contacts users lists every member once, in JSON or CSV."""
    expected = sorted(user.userid for user in standin.org.users)
    as_json = dingbot(standin, tmp_path, "contacts", "users", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert sorted(row["userid"] for row in json.loads(as_json.stdout)) == expected
    as_csv = dingbot(standin, tmp_path, "contacts", "users")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert sorted(row["userid"] for row in rows) == expected


def test_contacts_departments_lists_the_tree(standin, tmp_path):
    """contacts departments lists every department below the root."""
    result = dingbot(standin, tmp_path, "contacts", "departments", "--format", "json")
    assert result.returncode == 0, result.stderr
    ids = {row["dept_id"] for row in json.loads(result.stdout)}
    assert ids >= {d.dept_id for d in standin.org.departments if d.dept_id != 1}


def test_dev_mode_answers_say_from_a_plain_shell(tmp_path):
    """`dingbot dev` starts from the venv's script without PATH help; `say ping` gets pong."""
    import signal
    import time

    from tests.e2e.server import free_port

    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DINGTALK_", "DINGBOT_"))}
    env["PATH"] = "/usr/bin:/bin"  # no virtualenv on PATH, as a new user's shell
    env["DINGBOT_DATA_DIR"] = str(tmp_path / "data")
    bot_port, standin_port = free_port(), free_port()
    dev = subprocess.Popen(
        [str(bin_dir / "dingbot"), "dev", "--port", str(bot_port),
         "--standin-port", str(standin_port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        say = [str(bin_dir / "dingbot"), "say", "--bot", f"http://127.0.0.1:{bot_port}",
               "--standin", f"http://127.0.0.1:{standin_port}", "ping"]
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(say, env=env, capture_output=True, text=True,
                                    timeout=60)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result.stdout.strip() == "pong", result.stderr
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        dev.wait(30)


def test_say_without_a_running_bot_explains_what_to_start(tmp_path):
    """`say` with nothing listening prints one clear line, not a traceback."""
    from tests.e2e.server import free_port

    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "bot", "say", "--standin", f"http://127.0.0.1:{port}",
         "--bot", f"http://127.0.0.1:{port}", "ping"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert "is `./dev run` (or `dingbot dev`) running?" in result.stderr
    assert "Traceback" not in result.stderr
