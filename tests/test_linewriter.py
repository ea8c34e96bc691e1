"""Batched log lines (bot.linewriter), on real pipes and processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

from bot.linewriter import PIPE_BUF, LineWriter


class _CountingStream(io.StringIO):
    """A text stream that remembers each write it received."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_info_lines_wait_and_go_out_together_in_one_write():
    stream = _CountingStream()
    writer = LineWriter(stream, interval=60)
    for i in range(5):
        writer.write(f"line {i}")
    assert stream.writes == []

    writer.flush()
    assert stream.writes == ["".join(f"line {i}\n" for i in range(5))]


def test_an_urgent_line_goes_out_at_once_behind_the_queued_ones():
    stream = _CountingStream()
    writer = LineWriter(stream, interval=60)
    writer.write("first")
    writer.write("an error", urgent=True)
    assert stream.getvalue() == "first\nan error\n"


def test_no_write_exceeds_pipe_buf_and_no_line_is_split():
    stream = _CountingStream()
    writer = LineWriter(stream, interval=60)
    lines = [f"{i:05d} " + "x" * 300 for i in range(100)]
    for line in lines:
        writer.write(line)
    writer.flush()

    assert all(len(chunk.encode()) <= PIPE_BUF for chunk in stream.writes)
    assert all(chunk.endswith("\n") for chunk in stream.writes)
    assert stream.getvalue().splitlines() == lines


def test_a_line_longer_than_pipe_buf_is_written_whole_on_its_own():
    stream = _CountingStream()
    writer = LineWriter(stream, interval=60)
    writer.write("short")
    writer.write("y" * (PIPE_BUF * 2))
    writer.flush()
    assert stream.writes == ["short\n", "y" * (PIPE_BUF * 2) + "\n"]


def test_multibyte_lines_are_counted_in_bytes():
    stream = _CountingStream()
    writer = LineWriter(stream, interval=60)
    for _ in range(40):
        writer.write("部署" * 30)  # 180 bytes of UTF-8, 60 characters
    writer.flush()
    assert all(len(chunk.encode()) <= PIPE_BUF for chunk in stream.writes)
    assert len(stream.writes) >= 2


def test_queued_lines_are_written_within_the_interval_without_more_logging():
    stream = _CountingStream()
    writer = LineWriter(stream, interval=0.05)
    writer.write("quiet bot")
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "quiet bot\n"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=30, cwd=os.getcwd())


def test_lines_still_queued_at_exit_are_written():
    result = _run(
        "import sys\n"
        "from bot.linewriter import LineWriter\n"
        "w = LineWriter(sys.stderr, interval=60)\n"
        "w.write('last words')\n"
    )
    assert result.returncode == 0
    assert result.stderr == "last words\n"


def test_a_forked_child_does_not_repeat_its_parents_lines():
    result = _run(
        "import os, sys\n"
        "from bot.linewriter import LineWriter\n"
        "w = LineWriter(sys.stderr, interval=60)\n"
        "w.write('parent line')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    w.write('child line')\n"
        "    w.flush()\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    assert result.returncode == 0
    assert sorted(result.stderr.splitlines()) == ["child line", "parent line"]
