"""Batched writing of log lines to a stream (stderr, in production).

The one log line each callback writes cost about a tenth of the robot
route's throughput (docs/benchmarks.md). Most of that was building the
record (see ``observe.log_fields``); what remains is a ``write()`` system
call per line, which is slow in a VM and hands the GIL to gunicorn's other
threads mid-request. So lines gather in memory and go out together, in
one ``write()`` of at most :data:`PIPE_BUF` bytes:

- a line at WARNING or above goes out at once, behind the lines queued
  before it, so errors are never delayed;
- other lines wait until a batch is full, or for at most
  ``interval`` seconds (a background thread flushes them), or until the
  process exits (``atexit`` and ``logging.shutdown`` both flush).

One write never exceeds :data:`PIPE_BUF` bytes, so when several gunicorn
workers share one pipe (a PaaS log collector), their batches cannot
interleave mid-line: POSIX makes such writes to a pipe atomic. A single
line longer than that is written on its own, as an unbatched line was.

What is lost: lines below WARNING written in the last ``interval``
seconds before a SIGKILL or a hard crash.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import TextIO

#: The largest write a pipe keeps whole (POSIX guarantees at least 512;
#: Linux gives 4096).
PIPE_BUF = 4096

# Writers alive in this process, for the fork and exit hooks below.
_writers: weakref.WeakSet[LineWriter] = weakref.WeakSet()


class LineWriter:
    """Writes text lines to ``stream`` in batches; see the module docstring.

    Thread-safe. ``write`` takes one line without its newline.
    """

    def __init__(self, stream: TextIO, interval: float = 0.5) -> None:
        self.stream = stream
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._size = 0
        self._flusher_pid = 0
        _writers.add(self)

    def write(self, line: str, urgent: bool = False) -> None:
        """Queue ``line``; write the batch now if ``urgent`` or full."""
        data = line.encode("utf-8", "replace") + b"\n"
        with self._lock:
            if self._size + len(data) > PIPE_BUF:
                self._write_pending()
            self._pending.append(data)
            self._size += len(data)
            if urgent or self._size >= PIPE_BUF:
                self._write_pending()
            elif self._flusher_pid != os.getpid():
                self._start_flusher()

    def flush(self) -> None:
        """Write every queued line now."""
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        # Called with the lock held, so batches leave in the order queued.
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        buffer = getattr(self.stream, "buffer", None)
        if buffer is not None:
            self.stream.flush()  # anything written to the text layer directly
            buffer.write(data)
            buffer.flush()
        else:  # a text-only stream, such as io.StringIO in tests
            self.stream.write(data.decode("utf-8"))
            self.stream.flush()

    def _start_flusher(self) -> None:
        # One daemon thread per process; a forked child starts its own.
        self._flusher_pid = os.getpid()
        thread = threading.Thread(
            target=_flush_periodically, args=(weakref.ref(self), self.interval),
            name="dingbot-log-flush", daemon=True,
        )
        thread.start()

    def _reset_after_fork(self) -> None:
        # The parent flushed before forking (see below); whatever it still
        # held belongs to the parent, and its lock may be held by a thread
        # that does not exist here.
        self._lock = threading.Lock()
        self._pending = []
        self._size = 0


def _flush_periodically(ref: weakref.ref[LineWriter], interval: float) -> None:
    # Threads do not survive fork(), so this loop only ever runs in the
    # process that started it.
    while True:
        time.sleep(interval)
        writer = ref()
        if writer is None:
            return
        try:
            writer.flush()
        except Exception:  # a closed stream at exit: nothing left to do
            return
        del writer


def _flush_all() -> None:
    for writer in list(_writers):
        try:
            writer.flush()
        except Exception:
            pass


os.register_at_fork(
    before=_flush_all,
    after_in_child=lambda: [w._reset_after_fork() for w in list(_writers)],
)
atexit.register(_flush_all)
