"""What keeps the frame loop running through one fault, and says what went wrong.

- :class:`RateLimitedLog`: the first fault of a kind is logged with its traceback, then at most
  one line a minute per kind with how many more there were, so a fault on every frame of a
  15 fps camera neither floods the journal nor goes unseen.
- :class:`EventSpool`: events the event sink (the durable outbox) could not take because of
  a fault that may clear (a locked database past its busy timeout, a full disk, an I/O error)
  are kept in memory, in order, bounded, and retried by a thread with backoff; while any wait,
  new events queue behind them instead of blocking the frame loop on the same fault. Events the
  outbox refuses by its own policy (``when_full: reject_new``) are dropped and counted with the
  policy named, as that policy asks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fr_core.storage import OutboxFullError

LOG_INTERVAL_SECONDS = 60.0
SPOOL_MAX_EVENTS = 256
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 0.5, 30.0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.logger, self.interval = logger, interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def error(self, kind: str, message: str, exc: BaseException | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            more = self._suppressed.pop(kind, 0)
            self._last[kind] = now
        suffix = f" ({more} more since the last report)" if more else ""
        # the traceback once per kind; afterwards one line
        self.logger.error(
            "%s%s", message, suffix, exc_info=exc if last is None and exc is not None else None
        )


def refusal_reason(exc: BaseException) -> str:
    """A short, stable name for why the sink refused an event (a metrics label)."""
    text = str(exc).lower()
    if isinstance(exc, OutboxFullError):
        return "outbox full (reject_new)"
    if "disk is full" in text or "database or disk is full" in text:
        return "disk full"
    if "locked" in text or "busy" in text:
        return "database locked"
    return type(exc).__name__


class EventSpool:
    """Events waiting for the sink to work again (see the module doc).

    Two locks: ``_qlock`` guards the queue only (held for microseconds), ``_sink_lock``
    serialises calls into the sink. The frame loop calls the sink itself only when nothing
    waits and no retry is under way, so it stalls at most once per fault, on the attempt
    that meets it; the retry thread takes every later attempt."""

    def __init__(
        self,
        sink: Callable[[Any], None],
        log: RateLimitedLog,
        *,
        capacity: int = SPOOL_MAX_EVENTS,
        on_stored: Callable[[Any], None] | None = None,
    ) -> None:
        self.sink, self.log, self.capacity = sink, log, capacity
        self.on_stored = on_stored
        self.refused: dict[str, int] = {}  # why -> failed attempts
        self.dropped: dict[str, int] = {}  # why -> events lost
        self._queue: deque[Any] = deque()
        self._qlock = threading.Lock()
        self._sink_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    def offer(self, event: Any) -> bool:
        """Store ``event`` now, or keep it for a retry. False: dropped (the policy refused it,
        or the spool is full)."""
        with self._qlock:
            if self._queue or not self._sink_lock.acquire(blocking=False):
                return self._keep(event)  # behind the ones waiting: order kept, no stall
        try:
            outcome = self._attempt(event)
        finally:
            self._sink_lock.release()
        if outcome == "retry":
            with self._qlock:
                self._queue.appendleft(event)  # it was first: it stays first
                return self._keep(None)
        return outcome == "stored"

    def _attempt(self, event: Any) -> str:
        """One call into the sink: "stored", "dropped" or "retry"."""
        try:
            self.sink(event)
        except Exception as exc:
            reason = refusal_reason(exc)
            self.refused[reason] = self.refused.get(reason, 0) + 1
            if isinstance(exc, OutboxFullError | ValueError):  # the policy, or never storable
                self.dropped[reason] = self.dropped.get(reason, 0) + 1
                self.log.error(f"event:{reason}", f"event dropped: {exc}")
                return "dropped"
            self.log.error(f"event:{reason}", f"event kept in memory to retry: {exc}", exc)
            return "retry"
        if self.on_stored is not None:
            self.on_stored(event)
        return "stored"

    def _keep(self, event: Any) -> bool:
        """Queue ``event`` (None: only make sure the retry thread runs); under ``_qlock``."""
        if event is not None:
            if len(self._queue) >= self.capacity:
                self.dropped["spool full"] = self.dropped.get("spool full", 0) + 1
                self.log.error(
                    "event:spool full",
                    f"{self.capacity} events already wait for the outbox: the newest is dropped",
                )
                return False
            self._queue.append(event)
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._retry, name="fr-event-spool", daemon=True)
            self._thread.start()
        return True

    def flush(self) -> int:
        """Try to store what waits, oldest first; returns how many still wait."""
        with self._sink_lock:
            while True:
                with self._qlock:
                    if not self._queue:
                        return 0
                    event = self._queue[0]
                outcome = self._attempt(event)
                if outcome == "retry":
                    return len(self._queue)
                with self._qlock:
                    self._queue.popleft()

    def _retry(self) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            if self._stop.wait(delay):
                return
            left = self.flush()
            with self._qlock:
                if left == 0 and not self._queue:
                    self._thread = None  # a later fault starts another
                    return
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def close(self, deadline_seconds: float = 5.0) -> int:
        """Stop retrying after last attempts within ``deadline_seconds``; returns the number
        of events lost (logged)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=deadline_seconds)
        end = time.monotonic() + deadline_seconds
        left = self.flush()
        while left and time.monotonic() < end:
            time.sleep(0.2)
            left = self.flush()
        if left:
            self.dropped["not stored at stop"] = self.dropped.get("not stored at stop", 0) + left
            self.log.logger.error("%d events could not be stored before stopping: lost", left)
        return left
