"""The record of every call the stand-in answered, for tests to inspect.

Records hold tokens and secrets verbatim (they are test-only) and are never
logged or printed.
"""

import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Call:
    """One answered request.

    ``query`` keeps the first value of each parameter; ``headers`` has lower
    case names; ``body`` is parsed JSON, or the raw text, or None when empty;
    ``response`` is the JSON object answered, or the raw text; ``at`` is
    ``time.time()`` when the call arrived.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int
    response: Any
    at: float

    def to_dict(self) -> dict[str, Any]:
        """The call as plain JSON-able data (for the HTTP control API)."""
        return asdict(self)

    def __repr__(self) -> str:
        # The default repr would show the query and headers, which carry tokens.
        return f"Call({self.method} {self.path} -> {self.status})"


class CallLog:
    """A thread-safe, append-only list of calls with per-path counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    def record(self, call: Call) -> None:
        """Append one call."""
        with self._lock:
            self._calls.append(call)

    def snapshot(self, path: str | None = None) -> list[Call]:
        """A copy of the calls so far, optionally only those to ``path``."""
        with self._lock:
            calls = list(self._calls)
        if path is None:
            return calls
        return [call for call in calls if call.path == path]

    def counts(self) -> dict[str, int]:
        """How many calls each path received."""
        with self._lock:
            return dict(Counter(call.path for call in self._calls))

    def clear(self) -> None:
        """Forget every recorded call."""
        with self._lock:
            self._calls.clear()
