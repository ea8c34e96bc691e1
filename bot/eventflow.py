"""An encrypted event callback from raw request to acknowledgement, and after.

open (signature, AES, receive id, parse) → URL checks answered at once →
record in the inbox (the dedupe and the durable record in one write) →
hand to the pool → ack with the encrypted ``success``. The handlers run
later, on the pool; nothing on the ack path waits for them or calls
DingTalk. Redelivered events are acked and not handled again.

A sweeper thread in each process reruns what the inbox hands back: events
whose handlers failed (after a backoff), whose lease ran out, or whose
process died between the ack and the end of the handlers.

``replay_failed`` feeds DingTalk's list of failed pushes through the same
inbox, for ``dingbot events replay-failed``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot import observe
from bot.context import Context
from bot.errors import BotError, UpstreamError
from bot.inbound.cipher import CallbackCipher
from bot.inbound.events import Event, open_callback, parse_failed_list_item
from bot.inbox import Inbox, open_inbox
from bot.jobs import PoolFullError
from bot.services import Services

log = logging.getLogger(__name__)

#: Seconds between sweeps; the first sweep runs as the sweeper starts.
SWEEP_INTERVAL = 15.0
#: When the pool is full, an accepted event waits this long for a sweep.
BUSY_DELAY = 5.0


class EventResponder:
    """Answers ``POST /dingtalk/events`` for one process.

    Starts the process's sweeper thread on construction (and again in a
    forked child on its first request). Raises ConfigError when the
    callback token, AES key or receive id is unusable.
    """

    def __init__(
        self,
        services: Services,
        *,
        inbox: Inbox | None = None,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        settings = services.settings
        self.services = services
        self.cipher = CallbackCipher(
            settings.callback_token.reveal(),
            settings.callback_aes_key.reveal(),
            settings.callback_receive_id,
        )
        self.inbox = inbox if inbox is not None else open_inbox(settings)
        self._sweeper = Sweeper(self.sweep, sweep_interval)
        self._sweeper.start()

    def handle(self, query: Mapping[str, str], body: bytes) -> dict[str, str]:
        """Answer one callback: the sealed ``success`` body for the response.

        Raises CallbackRejectedError (401) for anything that fails to open,
        and StateUnavailableError (a 500, so DingTalk retries) when the
        event cannot be recorded: an unrecorded event must not be acked.
        """
        watch = observe.Stopwatch()
        self._sweeper.start()
        event = open_callback(self.cipher, query, body)
        if event.is_url_check:
            self._log(event, "url_check", watch)
            return self.cipher.seal_success()

        if not self.inbox.add(event):
            self._log(event, "duplicate", watch)
            return self.cipher.seal_success()

        outcome = self._submit(event)
        self._log(event, outcome, watch)
        return self.cipher.seal_success()

    def sweep(self) -> int:
        """Purge old records, then queue reclaimed events; return how many queued.

        Stops early (deferring the rest) when the pool is full.
        """
        self.inbox.purge()
        queued = 0
        for event in self.inbox.reclaim():
            if self._submit(event) != "accepted":
                continue
            queued += 1
        if queued:
            log.info("sweeper requeued %s events", queued,
                     extra={"outcome": "requeued"})
        return queued

    def close(self) -> None:
        """Stop the sweeper (tests; a process exit needs no call)."""
        self._sweeper.stop()

    def _submit(self, event: Event) -> str:
        """Queue the handlers of a recorded event; returns the log outcome."""
        if not self.services.dispatcher.event_handlers(event.type):
            self.inbox.done(event.id)
            return "unhandled"

        context = contextvars.copy_context()
        try:
            self.services.pool.submit(context.run, process_event,
                                      self.services, self.inbox, event)
        except PoolFullError:
            # Recorded, so safe to ack: a sweep picks it up once threads free.
            self.inbox.defer(event.id, BUSY_DELAY)
            return "deferred"
        return "accepted"

    def _log(self, event: Event, outcome: str, watch: observe.Stopwatch) -> None:
        observe.count_callback("events", outcome)
        observe.log_fields(log, "event callback", {
            "event_type": event.type, "event_id": event.id,
            "outcome": outcome, "duration_ms": watch.ms,
        })


def run_handlers(services: Services, event: Event) -> int:
    """Run every handler subscribed to ``event.type``; return how many ran.

    Handlers run in registration order with a fresh Context; the first
    exception propagates, and the handlers after it do not run.
    """
    handlers = services.dispatcher.event_handlers(event.type)
    ctx = Context(services, observe.trace_id_var.get(), event=event)
    for handler in handlers:
        handler(ctx)
    return len(handlers)


def process_event(services: Services, inbox: Inbox, event: Event) -> bool:
    """Run the handlers and settle the inbox record; True when they succeeded.

    A failure is logged and counted in the inbox (retried later, or dead
    with an ERROR line); it never raises, since it runs on the pool. A
    retry runs every handler of the event again, so handlers must be
    idempotent (DingTalk itself may deliver an event twice, protocol 1.8).
    """
    if not observe.trace_id_var.get():
        observe.bind_trace_id()
    watch = observe.Stopwatch()
    try:
        run_handlers(services, event)
    except Exception as exc:
        observe.HANDLER_SECONDS.labels("event").observe(watch.seconds)
        log.warning("event handler failed: %s", type(exc).__name__, exc_info=True,
                    extra=_fields(event, "failed", watch))
        _settle(inbox.failed, event)
        return False

    observe.HANDLER_SECONDS.labels("event").observe(watch.seconds)
    log.info("event handled", extra=_fields(event, "done", watch))
    _settle(inbox.done, event)
    return True


def _settle(mark: Any, event: Event) -> None:
    try:
        mark(event.id)
    except BotError as exc:
        # The record stays pending and leased; it is reclaimed once the
        # lease runs out, so the event is not lost, only maybe rerun.
        log.error("event inbox not updated: %s", type(exc).__name__,
                  extra={"event_type": event.type, "event_id": event.id})


def _fields(event: Event, outcome: str, watch: observe.Stopwatch) -> dict[str, Any]:
    return {"event_type": event.type, "event_id": event.id,
            "outcome": outcome, "duration_ms": watch.ms}


class Sweeper:
    """A daemon thread calling ``sweep()`` now and then every ``interval`` s.

    :meth:`start` is idempotent and fork-aware: in a forked child, where
    the parent's thread does not exist, it starts a new one. Exceptions
    from ``sweep`` are logged and the loop goes on.
    """

    def __init__(self, sweep: Any, interval: float) -> None:
        self._sweep = sweep
        self.interval = interval
        self._pid = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread unless it already runs in this process."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stop,), name="event-sweeper",
                daemon=True,
            )
            self._thread.start()
            self._pid = os.getpid()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for a sweep in progress to end."""
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout)

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            observe.bind_trace_id()
            try:
                self._sweep()
            except Exception as exc:
                log.error("event sweep failed: %s", type(exc).__name__,
                          exc_info=True)
            stop.wait(self.interval)


@dataclass(frozen=True)
class ReplaySummary:
    """Counts from one ``replay_failed`` run."""

    new: int = 0
    duplicate: int = 0
    unparseable: int = 0
    skipped: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return (f"new: {self.new}, duplicate: {self.duplicate}, "
                f"unparseable: {self.unparseable}, skipped: {self.skipped}, "
                f"handler failures: {self.failed}")


def replay_failed(services: Services, inbox: Inbox | None = None) -> ReplaySummary:
    """Fetch DingTalk's failed pushes and run the new ones through the handlers.

    Each item is recorded in the inbox as it arrives (DingTalk forgets an
    item once handed out, so the record is what keeps it), and only then
    are the handlers of the new ones run inline. Already recorded events
    count as duplicates, so a second run is harmless. Items with no event
    type count as unparseable and are logged; URL checks are skipped. A
    handler failure leaves the event to the web processes' retries. Raises
    the client's errors (UpstreamError and kin) when DingTalk cannot be
    asked.
    """
    inbox = inbox if inbox is not None else open_inbox(services.settings)
    observe.bind_trace_id()
    counts = {"new": 0, "duplicate": 0, "unparseable": 0, "skipped": 0, "failed": 0}

    fresh = list(_record_failed(services.client.failed_events(), inbox, counts))
    for event in fresh:
        if not process_event(services, inbox, event):
            counts["failed"] += 1

    summary = ReplaySummary(**counts)
    log.info("failed events replayed: %s", summary, extra={"outcome": "replayed"})
    return summary


def _record_failed(
    items: Iterable[Any], inbox: Inbox, counts: dict[str, int]
) -> Iterable[Event]:
    """Parse and record each item; yield the events seen for the first time."""
    for item in items:
        try:
            if not isinstance(item, Mapping):
                raise UpstreamError("failed_list item is not an object")
            event = parse_failed_list_item(item)
        except UpstreamError:
            counts["unparseable"] += 1
            log.warning("failed_list item skipped: no event type",
                        extra={"outcome": "unparseable"})
            continue

        if event.is_url_check:
            counts["skipped"] += 1  # a stale URL check needs no answer now
            continue
        if not inbox.add(event):
            counts["duplicate"] += 1
            continue
        counts["new"] += 1
        yield event
