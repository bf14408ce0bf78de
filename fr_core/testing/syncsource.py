"""An in-memory broker side of the enrolment sync protocol (docs/broker-api.md).

It is the executable statement of what a broker must answer to ``fetch_changes``: tests use
it as the device's sync source, and the reference broker follows the same rules on SQLite.

* Every change (enrolment or removal) gets the next version number.
* ``since_version=0`` is answered with a snapshot: the live enrolments, no deletions.
* After :meth:`compact`, tombstones up to the horizon are forgotten; a device asking for
  changes since an older version is told ``full_resync``.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fr_core.interfaces import SendResult
from fr_core.syncpage import encode_embedding


@dataclass
class _Entry:
    user_id: str
    version: int
    model: str | None = None  # None: a tombstone
    embedding: str | None = None  # wire encoding
    dim: int = 0
    detector: str | None = None
    display_name: str | None = None


class MemoryBroker:
    """Thread-safe. ``calls`` counts fetches. ``fail_next`` scripts the next fetches: each
    entry is an exception to raise, or None to answer normally (``[None, None, err]`` fails
    the third fetch)."""

    def __init__(self) -> None:
        self.version = 0
        self.horizon = 0  # tombstones at or below this version are gone
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.calls = 0
        self.fail_next: list[BaseException | None] = []

    def enrol(
        self,
        user_id: str,
        embedding: np.ndarray,
        model: str = "SFace",
        detector: str | None = "YuNet",
        display_name: str | None = None,
    ) -> int:
        with self._lock:
            self.version += 1
            vec = np.asarray(embedding, dtype=np.float32)
            self._entries[user_id] = _Entry(
                user_id,
                self.version,
                model,
                encode_embedding(vec),
                int(vec.size),
                detector,
                display_name,
            )
            return self.version

    def remove(self, user_id: str) -> int:
        with self._lock:
            self.version += 1
            self._entries[user_id] = _Entry(user_id, self.version)
            return self.version

    def compact(self) -> None:
        """Forget tombstones: devices older than now must resync fully."""
        with self._lock:
            self._entries = {u: e for u, e in self._entries.items() if e.model is not None}
            self.horizon = self.version

    def live(self) -> dict[str, np.ndarray]:
        return {
            e.user_id: np.frombuffer(base64.b64decode(e.embedding), "<f4").copy()
            for e in self._entries.values()
            if e.model is not None and e.embedding
        }

    def fetch_changes(
        self, since_version: int, limit: int, cursor: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            if self.fail_next and (failure := self.fail_next.pop(0)) is not None:
                raise failure
            if since_version == 0:
                return self._snapshot_page(limit, cursor)
            if since_version < self.horizon:
                return {
                    "from_version": since_version,
                    "to_version": since_version,
                    "latest_version": self.version,
                    "more": False,
                    "full_resync": True,
                    "upserts": [],
                    "deletions": [],
                }
            entries = sorted(
                (e for e in self._entries.values() if e.version > since_version),
                key=lambda e: e.version,
            )
            page, more = entries[:limit], len(entries) > limit
            to_version = page[-1].version if more else self.version
            return {
                "from_version": since_version,
                "to_version": max(to_version, since_version),
                "latest_version": self.version,
                "more": more,
                "upserts": [self._upsert(e) for e in page if e.model is not None],
                "deletions": [
                    {"user_id": e.user_id, "version": e.version} for e in page if e.model is None
                ],
            }

    def _snapshot_page(self, limit: int, cursor: str | None) -> dict[str, Any]:
        # A snapshot is frozen when it starts, so later changes cannot tear it.
        if cursor is None:
            self._snap_id = getattr(self, "_snap_id", 0) + 1
            live = sorted(
                (e for e in self._entries.values() if e.model is not None), key=lambda e: e.user_id
            )
            self._snapshots = {self._snap_id: (self.version, live)}
            snap_id, offset = self._snap_id, 0
        else:
            snap, _, off = cursor.partition(":")
            snap_id, offset = int(snap), int(off)
        version, live = self._snapshots[snap_id]
        page = live[offset : offset + limit]
        more = offset + limit < len(live)
        return {
            "from_version": 0,
            "to_version": version,
            "latest_version": self.version,
            "more": more,
            "snapshot": True,
            "total": len(live),
            "cursor": f"{snap_id}:{offset + limit}" if more else None,
            "upserts": [self._upsert(e) for e in page],
            "deletions": [],
        }

    @staticmethod
    def _upsert(e: _Entry) -> dict[str, Any]:
        return {
            "user_id": e.user_id,
            "model": e.model,
            "dim": e.dim,
            "version": e.version,
            "embedding": e.embedding,
            "detector": e.detector,
            "display_name": e.display_name,
        }


def synthetic_pages(
    count: int, dim: int = 128, page_size: int = 1000, model: str = "SFace", seed: int = 0
) -> Iterator[dict[str, Any]]:
    """A snapshot of ``count`` random users, generated lazily page by page (for large
    benchmarks: the source never holds more than one page)."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, page_size):
        n = min(page_size, count - start)
        vecs = rng.standard_normal((n, dim)).astype(np.float32)
        more = start + n < count
        yield {
            "from_version": 0,
            "to_version": count,
            "latest_version": count,
            "more": more,
            "snapshot": True,
            "total": count,
            "cursor": str(start + n) if more else None,
            "upserts": [
                {
                    "user_id": f"EMP-{start + i:07d}",
                    "model": model,
                    "dim": dim,
                    "version": start + i + 1,
                    "embedding": encode_embedding(vecs[i]),
                }
                for i in range(n)
            ],
            "deletions": [],
        }


class PageStream:
    """A sync source serving one :func:`synthetic_pages` snapshot, then "nothing new"."""

    def __init__(self, count: int, dim: int = 128, page_size: int = 1000) -> None:
        self.count = count
        self._pages = synthetic_pages(count, dim, page_size)

    def fetch_changes(
        self, since_version: int, limit: int, cursor: str | None = None
    ) -> dict[str, Any]:
        page = next(self._pages, None)
        if page is None:
            return {
                "from_version": since_version,
                "to_version": since_version,
                "latest_version": since_version,
                "more": False,
            }
        return page


class LoopbackTransport:
    """An in-process transport to a :class:`MemoryBroker` (for tests of everything above the
    wire: the CLI, SyncManager wiring, the outbox worker). Events are kept by event_id."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.events: dict[str, dict[str, Any]] = {}
        self.heartbeats: list[dict[str, Any]] = []
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 5.0) -> None:
        self.started = False

    def send_events(self, events: Any) -> Any:
        for e in events:
            self.events.setdefault(str(e["event_id"]), dict(e))
        return SendResult(acknowledged=[str(e["event_id"]) for e in events])

    def send_heartbeat(self, payload: Any) -> None:
        self.heartbeats.append(dict(payload))

    def fetch_changes(
        self, since_version: int, limit: int, cursor: str | None = None
    ) -> dict[str, Any]:
        return self.broker.fetch_changes(since_version, limit, cursor)
