"""The outbox worker: drains the durable outbox through the transport.

* In order: it claims the oldest due events; when a send fails it backs off and retries the
  same events before any newer one.
* At least once: an event leaves the outbox only when the broker acknowledged it (accepted or
  already had it). If the process dies mid-send, the claim's lease expires and the events go
  again; the broker deduplicates by event_id.
* Backoff while the broker is unreachable: exponential with jitter, from ``backoff_min`` to
  ``backoff_max``, never shorter than the broker's Retry-After.
* Batching: up to ``batch_size`` events per send when there is a backlog.
* Events the broker rejects for good (invalid for it) are not dropped: they stay in the outbox,
  retried once a day, logged as errors and counted, visible in ``fr-edge status``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from fr_core.errors import (
    TransportAuthError,
    TransportError,
    TransportTLSError,
    TransportUnavailable,
)
from fr_core.storage import DatabaseManager

log = logging.getLogger(__name__)

REJECTED_RETRY_SECONDS = 86400.0
# A lease outlives the longest a send can take by this factor (transport.max_send_seconds),
# and is renewed every third of it while events are on the wire.
LEASE_OVER_SEND = 3.0
# Events claimed per transaction by the pipelined drain (unless one batch is larger): with
# two groups in flight at most, this bounds the images held in memory during a drain
# (600 events: ~16 MB of 20 KB images, ~40 MB at the 50 KB limit).
GROUP_MAX_EVENTS = 300


class OutboxWorker:
    def __init__(
        self,
        db: DatabaseManager,
        transport: Any,
        *,
        batch_size: int = 100,
        lease_seconds: float = 120.0,
        backoff_min: float = 1.0,
        backoff_max: float = 300.0,
        jitter: float = 0.2,
        idle_poll: float = 5.0,
        pipeline_depth: int = 3,
    ) -> None:
        if batch_size < 1 or backoff_min <= 0 or backoff_max < backoff_min:
            raise ValueError("batch_size >= 1 and 0 < backoff_min <= backoff_max are required")
        self.db, self.transport = db, transport
        # sized from the transport's own timeouts, so that a batch still on the wire is never
        # taken for abandoned; renewed while it waits (issue 12)
        longest = float(getattr(transport, "max_send_seconds", 0.0) or 0.0)
        self.batch_size = batch_size
        self.lease_seconds = max(lease_seconds, LEASE_OVER_SEND * longest)
        self.backoff_min, self.backoff_max, self.jitter = backoff_min, backoff_max, jitter
        self.idle_poll = idle_poll
        self.pipeline_depth = max(1, pipeline_depth)
        self.sent = self.failed_sends = self.rejected = 0
        self.last_error: str | None = None
        self.backoff = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- control ---

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
            return  # running
        previous = self._thread
        if previous is not None and previous.is_alive():
            # stopped while a send was in flight: that send still holds live (renewed)
            # claims; they are left to it, and it ends after the send (its own stop event)
            log.info("the previous outbox thread is finishing a send; its events stay its own")
        else:
            # One worker per database: leases still held belong to a process that died
            # mid-send (they would otherwise hold their events back for lease_seconds). They
            # go again now; the broker deduplicates by event_id.
            released = self.db.outbox_release_claims()
            if released:
                log.info("%d event(s) claimed by a previous run are due again", released)
        self._stop = threading.Event()  # each thread its own: a stopped one stays stopped
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name="fr-outbox", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """New events were queued: send them without waiting for the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop within ``timeout`` seconds. A send in flight is left to finish on its own;
        its events stay in the outbox (leased) and go again after the lease if it did not."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        if not done:  # kept: start() must know it still holds claims
            log.warning("outbox worker still sending after %.1fs; its events stay queued", timeout)
        else:
            self._thread = None
        return done

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- work ---

    def drain_once(self) -> int:
        """Claim one batch and send it. Returns events acknowledged; raises TransportError
        after recording the failure (the events are due again at once: order is kept)."""
        items = self.db.outbox_claim(self.batch_size, self.lease_seconds)
        if not items:
            return 0
        ids = [it.event_id for it in items]
        try:
            with _LeaseKeeper(self.db, self.lease_seconds, lambda: ids):
                result = self.transport.send_events([it.payload for it in items])
        except Exception as exc:
            self.failed_sends += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.db.outbox_fail(ids, self.last_error[:500], retry_in=0.0)
            raise
        acked, missing = self._settle(ids, result)
        self._ack(acked)
        if missing:
            raise TransportUnavailable(f"broker acknowledged {len(acked)} of {len(ids)} events")
        self.last_error = None
        return len(acked)

    def _settle(self, ids: list[str], result: Any) -> tuple[list[str], list[str]]:
        """Sort the answer to a sent batch into (acknowledged, missing), both in order.

        Events the broker rejected stay queued, logged and counted, due again in a day (a
        poison event must not block the ones behind it). Missing ones (no answer either
        way) are due again at once; the caller raises after acknowledging the others."""
        done = set(result.acknowledged)
        acked = [i for i in ids if i in done]
        sent = set(ids)
        rejected = {i: r for i, r in dict(result.rejected).items() if i in sent and i not in done}
        for eid, reason in rejected.items():
            log.error("broker rejected event %s: %s (kept; retried daily)", eid, reason)
        if rejected:
            self.rejected += len(rejected)
            self.db.outbox_fail(
                list(rejected),
                "rejected by the broker: "
                + "; ".join(f"{k}: {v}" for k, v in rejected.items())[:400],
                retry_in=REJECTED_RETRY_SECONDS,
            )
        missing = [i for i in ids if i not in done and i not in rejected]
        if missing:
            self.db.outbox_fail(missing, "not acknowledged by the broker", retry_in=0.0)
        return acked, missing

    def drain(self, stop: threading.Event | None = None) -> int:
        """Send until the outbox has nothing due; pipelined when the transport can publish
        without waiting (``send_events_async``). Returns events sent.

        Events are claimed a group of ``pipeline_depth`` batches at a time (one transaction
        instead of one per batch; fewer batches if they would exceed GROUP_MAX_EVENTS, never
        fewer than one) and published at once, batch by batch; the next group is claimed as
        soon as no more than one group's worth of events is still waiting for
        acknowledgements, so the transport always has the next one queued behind the one on
        the wire (at most two groups in flight). Acknowledged events are deleted a group at
        a time too, in one transaction: fewer commits for the costliest step of a drain
        (freeing the pages of their sealed images). Until then they stay leased, so nothing
        sends them again; if the process dies first they go again after the lease and the
        broker deduplicates them by event_id."""
        halt = stop if stop is not None else self._stop  # the calling thread's own
        if not hasattr(self.transport, "send_events_async"):
            total = 0
            while not halt.is_set() and (n := self.drain_once()) > 0:
                total += n
            return total
        total = 0
        inflight: list[tuple[list[str], Any]] = []
        acked: list[str] = []  # acknowledged by the broker, still in the outbox
        unsent: list[str] = []  # claimed, not yet handed to the transport
        batches = max(1, min(self.pipeline_depth, GROUP_MAX_EVENTS // self.batch_size))
        group = self.batch_size * batches  # events per claim

        def held() -> list[str]:  # claimed and not yet deleted: their leases must not lapse
            return [i for ids, _ in list(inflight) for i in ids] + list(acked) + list(unsent)

        keeper = _LeaseKeeper(self.db, self.lease_seconds, held)
        keeper.start()
        try:
            while True:
                waiting = sum(len(ids) for ids, _ in inflight)
                if waiting <= group and not halt.is_set():
                    items = self.db.outbox_claim(group, self.lease_seconds)
                    if items:
                        unsent = [it.event_id for it in items]
                        for i in range(0, len(items), self.batch_size):
                            chunk = items[i : i + self.batch_size]
                            pending = self.transport.send_events_async([it.payload for it in chunk])
                            inflight.append((unsent[: len(chunk)], pending))
                            unsent = unsent[len(chunk) :]
                        continue
                if not inflight:
                    return total
                ids, pending = inflight[0]
                result = pending.result()  # raises: this batch is still in `inflight`
                inflight.pop(0)
                ok, missing = self._settle(ids, result)
                acked += ok
                if missing:
                    raise TransportUnavailable(
                        f"broker answered for {len(ids) - len(missing)} of {len(ids)} events"
                    )
                if len(acked) >= group or not inflight:
                    total += self._ack(acked)
                    acked = []
        except Exception as exc:
            self.failed_sends += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            # in order: what was on the wire first, then what never left (due again at once)
            left = [i for ids, _ in inflight for i in ids] + unsent
            if left:
                self.db.outbox_fail(left, self.last_error[:500], retry_in=0.0)
            raise
        finally:
            keeper.stop()
            if acked:  # delivered before the failure: they leave the outbox all the same
                self._ack(acked)

    def _ack(self, ids: list[str]) -> int:
        """Delete acknowledged events; counts as sent only the rows really deleted (an event
        another drain already acknowledged is not sent twice in the figures)."""
        if not ids:
            return 0
        deleted = self.db.outbox_ack(ids)
        if deleted < len(ids):
            log.warning(
                "%d of %d acknowledged events were no longer queued (sent twice?)",
                len(ids) - deleted,
                len(ids),
            )
        self.sent += deleted
        return deleted

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.drain(stop)
            except TransportError as exc:
                self._back_off(exc, stop)
                continue
            except Exception as exc:  # a bug or the database: keep the thread alive
                log.exception("outbox worker error")
                self._back_off(exc, stop)
                continue
            self.backoff = 0.0
            if sent == 0:
                self._wake.wait(self.idle_poll)
                self._wake.clear()

    def _back_off(self, exc: BaseException, stop: threading.Event) -> None:
        self.backoff = min(self.backoff_max, max(self.backoff_min, self.backoff * 2))
        delay = self.backoff * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311
        hint = getattr(exc, "retry_after", None)
        if hint:
            delay = max(delay, float(hint))
        level = (
            logging.ERROR
            if isinstance(exc, (TransportAuthError, TransportTLSError))
            else logging.WARNING
        )
        log.log(level, "sending events failed (%s); retrying in %.1fs", exc, delay)
        stop.wait(delay)

    def stats(self) -> dict[str, Any]:
        box = self.db.outbox_stats()
        now = time.time()
        return {
            "queued": box.depth,
            "sent": self.sent,
            "failed_sends": self.failed_sends,
            "rejected_by_broker": self.rejected,
            "oldest_age_seconds": round(now - box.oldest_created_at, 1)
            if box.oldest_created_at
            else None,
            "backoff_seconds": round(self.backoff, 1),
            "last_error": self.last_error,
            "dropped_total": box.dropped_total,
            "rejected_total": box.rejected_total,
            "expired_total": box.expired_total,
            "policy": box.policy.when_full if box.policy else None,
            "full": box.full,
            "corruption_recoveries": int(box.counters.get("corruption_recoveries", 0)),
        }


class _LeaseKeeper:
    """Renews the leases of the events ``held()`` returns every third of ``lease_seconds``,
    from its own thread, while a send waits on the network."""

    def __init__(self, db: DatabaseManager, lease_seconds: float, held: Any) -> None:
        self.db, self.lease, self.held = db, lease_seconds, held
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fr-outbox-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> _LeaseKeeper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.lease / 3):
            ids = self.held()
            if not ids:
                continue
            try:
                self.db.outbox_renew(ids, self.lease)
            except Exception as exc:  # the next renewal may work; the lease is 3x the wait
                log.warning("renewing the leases of %d events failed: %s", len(ids), exc)
