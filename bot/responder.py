"""A robot callback from raw request to answer, step by step.

verify the sign → parse the message → check the robotCode → drop a seen
``msgId`` → route → run the handler on the pool → answer within the reply
budget, or answer ``{"msgtype":"empty"}`` now and deliver the answer later
through the session webhook (or the robot OpenAPI once that expired).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

from bot import observe
from bot.context import Context, deliver
from bot.dispatch import Route, call_with_args
from bot.errors import AccessDenied, BotError, RequestRejected, UsageError
from bot.inbound.robot import Message, parse_message, verify_sign
from bot.jobs import PoolFullError
from bot.messages import EMPTY, Message as Outgoing, as_message, text
from bot.services import Services

log = logging.getLogger(__name__)

#: How long a handled msgId is remembered. DingTalk redelivers within
#: minutes; a day leaves a wide margin at a few bytes per message.
DEDUPE_TTL = 24 * 3600.0

BUSY_ANSWER = "I'm busy with other requests right now; please try again in a minute."


class _Handoff:
    """Passes a handler's answer to the waiting request, or takes it back.

    The request waits up to the reply budget. If the answer arrives in
    time, the request returns it; if not, the request gives up and the
    handler thread delivers the answer itself. The lock makes the two
    outcomes exclusive, so an answer is never sent twice or dropped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._abandoned = False
        self.answer: Outgoing | None = None

    def offer(self, answer: Outgoing | None) -> bool:
        """Hand the answer over; False when the request already gave up."""
        with self._lock:
            if self._abandoned:
                return False
            self.answer = answer
            self._ready.set()
            return True

    def wait(self, budget: float) -> bool:
        """Wait for the answer; True if it came, False if we gave up."""
        self._ready.wait(budget)
        with self._lock:
            if self._ready.is_set():
                return True
            self._abandoned = True
            return False


class RobotResponder:
    """Answers robot callbacks for one process."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self._secrets = tuple(s.reveal() for s in self.settings.robot_secrets)

    def handle(self, timestamp: str | None, sign: str | None, body: bytes) -> dict[str, Any]:
        """Answer one callback: the JSON body for the HTTP response.

        Raises RequestRejected (4xx) for anything that fails a check;
        handler failures never raise, they become an apology.
        """
        watch = observe.Stopwatch()
        verify_sign(timestamp, sign, self._secrets, window=self.settings.sign_window)
        message = parse_message(body)
        if message.robot_code != self.settings.robot_code:
            raise RequestRejected("robotCode does not match this bot", status=403)

        if not self.services.store.claim(f"dedupe:robot:{message.msg_id}", DEDUPE_TTL):
            self._log(message, "duplicate", watch)
            return EMPTY

        try:
            route = self.services.dispatcher.route(message)
        except (AccessDenied, UsageError) as exc:
            self._log(message, "refused", watch)
            return text(str(exc)).to_webhook()
        if route.handler is None:
            self._log(message, route.command, watch, command=route.command)
            return text(route.answer).to_webhook()

        if route.inline:
            return self._run_inline(message, route, watch)
        return self._run(message, route, watch)

    def _run_inline(
        self, message: Message, route: Route, watch: observe.Stopwatch
    ) -> dict[str, Any]:
        """Run a handler declared I/O-free on this thread: no hand-off cost."""
        trace_id = observe.trace_id_var.get()
        ctx = Context(self.services, trace_id, message=message, args=route.args,
                      match=route.match, command=route.command)
        answer = self._answer_of(ctx, route, trace_id)
        if answer is not None and not answer.http_reply_supported:
            self._deliver_elsewhere(message, answer, route.command)
            answer = None
        self._log(message, "answered", watch, command=route.command)
        return answer.to_webhook() if answer is not None else EMPTY

    def _deliver_elsewhere(self, message: Message, answer: Outgoing, command: str) -> None:
        """Post an answer the HTTP reply cannot carry, off this thread if possible."""
        try:
            self.services.pool.submit(self._deliver_late, message, answer, command)
        except PoolFullError:
            self._deliver_late(message, answer, command)

    def _run(self, message: Message, route: Route, watch: observe.Stopwatch) -> dict[str, Any]:
        handoff = _Handoff()
        context = contextvars.copy_context()
        try:
            self.services.pool.submit(
                context.run, self._call_handler, message, route, handoff
            )
        except PoolFullError:
            self._log(message, "busy", watch, command=route.command)
            return text(BUSY_ANSWER).to_webhook()

        if handoff.wait(self.settings.reply_budget):
            self._log(message, "answered", watch, command=route.command)
            answer = handoff.answer
            return answer.to_webhook() if answer is not None else EMPTY
        self._log(message, "deferred", watch, command=route.command)
        return EMPTY

    def _call_handler(self, message: Message, route: Route, handoff: _Handoff) -> None:
        """Run the handler (on the pool) and pass its answer on."""
        trace_id = observe.trace_id_var.get()
        ctx = Context(
            self.services, trace_id, message=message, args=route.args,
            match=route.match, command=route.command,
        )
        watch = observe.Stopwatch()
        answer = self._answer_of(ctx, route, trace_id)
        observe.HANDLER_SECONDS.labels("command").observe(watch.seconds)
        if answer is not None and not answer.http_reply_supported:
            # DingTalk documents no link card in the HTTP reply: post it.
            handoff.offer(None)
            self._deliver_late(message, answer, route.command)
        elif not handoff.offer(answer) and answer is not None:
            self._deliver_late(message, answer, route.command)

    def _answer_of(self, ctx: Context, route: Route, trace_id: str) -> Outgoing | None:
        """The handler's answer as a message; failures become short replies."""
        try:
            result = call_with_args(route.handler, ctx, route.args, route.usage)
            return as_message(result) if result is not None else None
        except (UsageError, AccessDenied) as exc:
            return text(str(exc))
        except Exception:
            log.exception("handler failed", extra={"command": route.command,
                                                   "outcome": "error"})
            _report_to_sentry()
            return text(f"Sorry, that failed on my side (trace {trace_id}).")

    def _deliver_late(self, message: Message, answer: Outgoing, command: str) -> None:
        try:
            deliver(self.services, message, answer)
        except BotError as exc:
            # Nothing is silently skipped: a lost answer is an ERROR line.
            log.error("late answer not delivered: %s", type(exc).__name__,
                      extra={"msg_id": message.msg_id, "command": command,
                             "outcome": "undelivered"})
            return
        observe.REPLIES.labels("late").inc()
        log.info("late answer delivered", extra={
            "msg_id": message.msg_id, "command": command, "outcome": "delivered"})

    def _log(self, message: Message, outcome: str, watch: observe.Stopwatch,
             command: str = "") -> None:
        observe.count_callback("robot", outcome)
        observe.log_fields(log, "robot callback", {
            "msg_id": message.msg_id, "conversation_id": message.conversation_id,
            "command": command or None, "outcome": outcome, "duration_ms": watch.ms,
        })


def _report_to_sentry() -> None:
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover - sentry-sdk is a dependency
        return
    if sentry_sdk.is_initialized():
        sentry_sdk.capture_exception()
