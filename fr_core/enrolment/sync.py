"""Enrolment sync: SyncManager and SyncManagerFactory (README "Sync Manager").

The device asks its sync source (the transport) for the changes after its version and applies
them page by page; each page is validated whole (:func:`fr_core.syncpage.parse_page`) and
applied in one transaction that also stores the new version, so an interrupted sync resumes
where it stopped. A device at version 0, or one the broker finds too old (``full_resync``:
deletions it missed are forgotten), gets a snapshot instead: pages of the live enrolments,
followed by cursor, staged in a separate table and swapped in at the end in one transaction.

After a sync the matcher follows in one atomic step: a batch of changes patched into its
galleries, or (after a full resync or a large change) galleries rebuilt from the database by
streaming, so recognition never sees a half-applied change.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import numpy as np

from fr_core.delivery.client import IoTClient, IoTClientConfig
from fr_core.errors import FrEdgeError
from fr_core.events import format_timestamp
from fr_core.plugins import build_registry
from fr_core.storage import Change, DatabaseManager, StorageError, SyncError
from fr_core.syncpage import parse_page

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (versions done, versions in total)


class SyncSource(Protocol):
    """What SyncManager pulls pages from: any transport's ``fetch_changes``."""

    def fetch_changes(self, since_version: int, limit: int, cursor: str | None = None) -> Any: ...


@dataclass(frozen=True)
class SyncResult:
    ok: bool
    version_before: int
    version_after: int
    pages: int = 0
    upserts: int = 0
    deletions: int = 0
    stale: int = 0
    snapshot: bool = False  # the enrolments were replaced by a snapshot (first or full resync)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(ts: float | None) -> str | None:
    return format_timestamp(datetime.fromtimestamp(ts, timezone.utc)) if ts else None


class SyncManager:
    """Keeps the local enrolments (and the matcher) in step with the broker."""

    def __init__(
        self,
        db: DatabaseManager,
        source: SyncSource,
        *,
        matcher: Any = None,
        models: Mapping[str, int] | None = None,
        page_size: int = 500,
        jitter: float = 0.1,
        rebuild_fraction: float = 0.2,
    ) -> None:
        if not 1 <= page_size <= 20_000:
            raise ValueError(f"page_size must be in 1..20000, got {page_size}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.db = db
        self.source = source
        self.matcher = matcher
        self.models = dict(models) if models is not None else None
        # rows the device cannot use (left by an older version that stored a bad page):
        # found when the matcher is loaded; the next sync is a full resync that replaces them
        self.unusable: dict[str, int] = {}
        self._resync_needed = False
        self.page_size = page_size
        self.jitter = jitter
        self.rebuild_fraction = rebuild_fraction
        self.interval_minutes: float | None = None
        self.last_result: SyncResult | None = None
        self._sync_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._syncing = False
        self._next_at: float | None = None

    # --- the README's API ---------------------------------------------------------------

    def sync_now(self, progress: ProgressCallback | None = None) -> SyncResult:
        """Pull and apply every page available now. Never raises for a broker or page
        problem: the result (and :meth:`get_sync_status`) says what went wrong."""
        with self._sync_lock:
            self._syncing = True
            try:
                result = self._sync(progress)
            finally:
                self._syncing = False
        self.last_result = result
        return result

    def start_periodic_sync(self, interval_minutes: float = 15) -> None:
        """Sync now, then every ``interval_minutes`` (+/- ``jitter``), and at once whenever
        :meth:`notify_changes` is called. Runs in a daemon thread until :meth:`stop`."""
        if not interval_minutes > 0:
            raise ValueError(f"interval_minutes must be > 0, got {interval_minutes}")
        if self._thread is not None and self._thread.is_alive():
            raise FrEdgeError("periodic sync is already running")
        self.interval_minutes = float(interval_minutes)
        self._stop.clear()
        self._wake.set()  # first sync straight away
        self._thread = threading.Thread(target=self._loop, name="fr-sync", daemon=True)
        self._thread.start()

    def notify_changes(self) -> None:
        """The broker says changes are available: sync as soon as possible. With periodic
        sync running this wakes its thread (notifications coalesce); otherwise one sync runs
        in a background thread unless one is already in progress."""
        if self._thread is not None and self._thread.is_alive():
            self._wake.set()
        elif not self._syncing:
            threading.Thread(target=self.sync_now, name="fr-sync-now", daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop periodic sync; waits up to ``timeout`` for a sync in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("sync thread still busy after %.1fs; it stops after this page", timeout)
            self._thread = None
        self._next_at = None

    def get_sync_status(self) -> dict[str, Any]:
        state = self.db.get_sync_state()
        now = time.time()
        return {
            "version": state.version,
            "last_success_at": _iso(state.last_success_at),
            "last_attempt_at": _iso(state.last_attempt_at),
            "age_seconds": round(now - state.last_success_at, 1) if state.last_success_at else None,
            "last_error": state.last_error,
            "resync_in_progress": state.resync_in_progress,
            "enrollments": self.db.count_enrollments(),
            "periodic": self._thread is not None and self._thread.is_alive(),
            "interval_minutes": self.interval_minutes,
            "next_sync_in_seconds": round(self._next_at - time.monotonic(), 1)
            if self._next_at
            else None,
            "syncing": self._syncing,
            "last_result": self.last_result.as_dict() if self.last_result else None,
        }

    # --- matcher ------------------------------------------------------------------------

    def load_matcher(self) -> None:
        """Rebuild every gallery from the database, streaming rows into one preallocated
        matrix per model (memory: the matrix plus one batch)."""
        if self.matcher is None:
            return
        counts = self.db.count_enrollments()
        galleries: dict[str, tuple[list[str], np.ndarray | None]] = {m: ([], None) for m in counts}
        unusable: dict[str, int] = {}
        for model, ids_block, block in self.db.iter_embedding_blocks(batch=5000):
            if not self._usable(model, block, len(ids_block), unusable):
                galleries.pop(model, None)
                continue
            if model not in galleries:
                continue
            ids, mat = galleries[model]
            if mat is None:
                mat = np.empty((counts[model], block.shape[1]), np.float32)
                galleries[model] = (ids, mat)
            n = len(ids)
            mat[n : n + len(ids_block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
            ids.extend(ids_block)
        load = getattr(self.matcher, "load", None)
        existing = set(getattr(self.matcher, "models", dict)())
        for model, (ids, mat) in galleries.items():
            if mat is None:
                continue
            if load is not None:
                load(model, ids, mat[: len(ids)])
            else:
                self.matcher.replace_gallery(model, ids, mat[: len(ids)])
        for model in existing - set(galleries):
            self.matcher.replace_gallery(model, [], np.empty((0, 1), np.float32))
        self._found_unusable(unusable)

    def _usable(self, model: str, block: np.ndarray, rows: int, unusable: dict[str, int]) -> bool:
        """Whether this device runs ``model`` with ``block``'s dimension; if not, the
        ``rows`` are counted in ``unusable`` under the reason."""
        dim = block.shape[1]
        if self.models is None or self.models.get(model) == dim:
            return True
        runs = ", ".join(f"{m}: {d}" for m, d in sorted(self.models.items()))
        why = f"{model} with {dim} values (this device runs {runs})"
        unusable[why] = unusable.get(why, 0) + rows
        return False

    def _found_unusable(self, unusable: dict[str, int]) -> None:
        self.unusable = unusable
        if unusable:
            self._resync_needed = True
            log.error(
                "the database holds enrolments this device cannot use (%s): they are not "
                "matched, and the next sync is a full resync that replaces them",
                "; ".join(f"{n} of {why}" for why, n in sorted(unusable.items())),
            )

    def check_enrolments(self) -> dict[str, int]:
        """Find enrolments of models or dimensions this device does not run (a bad page
        stored by an older version): counted by why, and the next sync made a full
        resync. What ``load_matcher`` does too, for a manager without a matcher."""
        unusable: dict[str, int] = {}
        for model, ids_block, block in self.db.iter_embedding_blocks(batch=5000):
            self._usable(model, block, len(ids_block), unusable)
        self._found_unusable(unusable)
        return unusable

    def _update_matcher(self, pending: dict[str, Change], rebuild: bool) -> None:
        if self.matcher is None or (not pending and not rebuild):
            return
        size = sum(self.db.count_enrollments().values())
        if rebuild or (len(pending) > self.rebuild_fraction * max(size, 1) and len(pending) > 1000):
            self.load_matcher()
            return
        ups = [(c.model, c.user_id, c.embedding) for c in pending.values() if c.kind == "upsert"]
        gone = [c.user_id for c in pending.values() if c.kind == "delete"]
        apply = getattr(self.matcher, "apply", None)
        if apply is not None:
            apply(upserts=ups, removals=gone)
        else:  # a Matcher with only the protocol's methods
            for uid in gone:
                for model in getattr(self.matcher, "models", dict)() or [None]:
                    self.matcher.remove(model, uid)
            for model, uid, emb in ups:
                self.matcher.add(model, uid, emb)

    # --- internals ----------------------------------------------------------------------

    def _sync(self, progress: ProgressCallback | None) -> SyncResult:
        t0 = time.monotonic()
        start = self.db.get_sync_state().version
        since = start
        pages = upserts = deletions = stale = 0
        pending: dict[str, Change] = {}
        want_snapshot = staging = rebuild = False
        if self._resync_needed:
            want_snapshot = True  # repair: unusable rows from an older version
            log.warning("full resync to replace enrolments this device cannot use")
        cursor: str | None = None
        error: str | None = None
        try:
            while True:
                raw = self.source.fetch_changes(
                    since_version=0 if want_snapshot else since,
                    limit=self.page_size,
                    cursor=cursor,
                )
                page = parse_page(raw, models=self.models)
                if page.full_resync:
                    if want_snapshot:
                        raise SyncError("the broker asked for a full resync during a snapshot")
                    log.warning("broker says version %d is too old: full resync", since)
                    want_snapshot = True
                    continue
                if page.snapshot:
                    if not staging:
                        self.db.begin_resync()
                        staging = want_snapshot = True
                    self.db.apply_changes(page)
                    pages += 1
                    upserts += len(page.upserts)
                    if progress is not None:
                        progress(upserts, max(upserts, page.total or page.latest_version))
                    if not page.more:
                        self.db.finish_resync(page.to_version)
                        staging, rebuild = False, True
                        self._resync_needed = False
                        break
                    cursor = page.cursor
                    continue
                if want_snapshot:
                    raise SyncError("the broker sent an incremental page where a snapshot was due")
                result = self.db.apply_changes(page)
                pages += 1
                if not result.skipped_page:
                    for ch in result.applied:
                        pending[ch.user_id] = ch
                    upserts += len(page.upserts)
                    deletions += len(page.deletions)
                    stale += result.stale
                if page.more and page.to_version <= since:
                    raise SyncError(f"the broker sent no progress past version {since}")
                since = result.version
                if progress is not None:
                    progress(since - start, max(1, page.latest_version - start))
                if not page.more:
                    break
            self.db.record_sync_attempt(None)
        except (SyncError, StorageError) as exc:
            error = str(exc)
        except Exception as exc:  # the transport: network, TLS, auth...
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if error is not None:
            if staging:
                self.db.abort_resync()
            log.error("sync failed at version %d: %s", since, error)
            try:
                self.db.record_sync_attempt(error[:500])
            except StorageError as exc:
                log.error("could not record the sync error: %s", exc)
        try:
            self._update_matcher(pending, rebuild)
        except Exception as exc:
            log.error("matcher update failed, rebuilding from the database: %s", exc)
            self.load_matcher()
        after = self.db.get_sync_state().version
        if error is None and (pages > 1 or pending or rebuild):
            log.info(
                "sync: version %d -> %d, %d upserts, %d deletions in %d pages",
                start,
                after,
                upserts,
                deletions,
                pages,
            )
        return SyncResult(
            error is None,
            start,
            after,
            pages,
            upserts,
            deletions,
            stale,
            rebuild,
            error,
            round(time.monotonic() - t0, 3),
        )

    def _loop(self) -> None:
        assert self.interval_minutes is not None
        while not self._stop.is_set():
            delay = self.interval_minutes * 60 * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 - jitter, not crypto
            self._next_at = time.monotonic() + delay
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.sync_now()
            except Exception:  # never let the thread die
                log.exception("periodic sync crashed")


class SyncManagerFactory:
    """Builds the database, the sync source and the manager together (README example)."""

    @staticmethod
    def create(
        db_path: str,
        device_id: str,
        broker_url: str,
        *,
        api_key: str | None = None,
        dev_mode: bool = False,
        source: SyncSource | None = None,
        matcher: Any = None,
        models: Mapping[str, int] | None = None,
        transport: str | None = None,
        registry: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> tuple[SyncManager, DatabaseManager, Any]:
        """Returns ``(sync_manager, db, client)``.

        ``client`` is the sync source: ``source`` when given, else an :class:`IoTClient` for
        the broker (transport by the URL's scheme, or ``transport``; extra keyword options go
        to the transport) sharing the database. Call ``client.start()`` to also send events.
        ``storage_options`` go to the storage plugin (for sqlite: where the device key comes
        from; by default the key file beside the database's folder).
        """

        reg = registry or build_registry()
        db = DatabaseManager(
            db_path, dev_mode=dev_mode, registry=reg, storage_options=storage_options
        )
        db.initialize()
        if source is None:
            source = IoTClient(
                IoTClientConfig(
                    device_id=device_id,
                    broker_url=broker_url,
                    api_key=api_key,
                    transport=transport,
                    db_path=db_path,
                    storage_options=dict(storage_options or {}),
                    dev_mode=dev_mode,
                    transport_options=options,
                ),
                db=db,
                registry=reg,
            )
        manager = SyncManager(db, source, matcher=matcher, models=models)
        if hasattr(source, "on_changes"):
            source.on_changes = manager.notify_changes  # MQTT "changes available"
        manager.load_matcher()
        return manager, db, source
