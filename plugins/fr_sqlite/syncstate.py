"""Sync state and sync pages: incremental pages applied in one transaction each, a full
resync staged and swapped in at the end, and the attempt log heartbeats report."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from fr_core.storage import (
    ApplyResult,
    Change,
    StorageError,
    SyncError,
    SyncState,
)
from fr_core.syncpage import ChangesPage, DeleteItem, UpsertItem, as_change
from fr_sqlite import schema as s
from fr_sqlite.database import now_iso
from fr_sqlite.enrolments import Enrolments
from fr_sqlite.recovery import short

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


class SyncFeed(Enrolments):
    def get_sync_state(self) -> SyncState:
        with self.engine.connect() as conn:
            row = conn.execute(select(s.sync_state).where(s.sync_state.c.id == 1)).first()
        if row is None:
            return SyncState()
        return SyncState(
            version=int(row.version),
            last_success_at=row.last_success_at,
            last_attempt_at=row.last_attempt_at,
            last_error=row.last_error,
            resync_in_progress=bool(row.resync_in_progress),
        )

    def record_sync_attempt(self, error: str | None) -> None:
        now = time.time()
        values: dict[str, Any] = {"last_attempt_at": now, "last_error": error}
        if error is None:
            values["last_success_at"] = now
        with self.writer.begin() as conn:
            conn.execute(update(s.sync_state).where(s.sync_state.c.id == 1).values(**values))

    def apply_changes(self, page: ChangesPage) -> ApplyResult:
        """Apply one page in one transaction; the new version is stored with the data.

        A page that ends at or before the stored version is a duplicate and is skipped.
        A page that starts after it leaves a gap and is refused. Inside a page, a change
        older than the row it would touch is stale and ignored.
        """
        try:
            with self.writer.begin() as conn:
                state = conn.execute(select(s.sync_state).where(s.sync_state.c.id == 1)).one()
                if page.snapshot != bool(state.resync_in_progress):
                    raise SyncError(
                        "a snapshot page outside a resync"
                        if page.snapshot
                        else "an incremental page during a resync"
                    )
                if page.snapshot:
                    return self._stage(conn, page)
                current = int(state.version)
                if page.to_version <= current and page.changes:
                    return ApplyResult(current, (), len(page.changes), skipped_page=True)
                if page.from_version > current:
                    raise SyncError(
                        f"sync page starts at version {page.from_version} but the device is at "
                        f"{current}: a gap; it was not applied"
                    )
                self._check_dims(conn, page)
                applied, stale = self._apply_batch(conn, page, current)
                new_version = max(current, page.to_version)
                conn.execute(
                    update(s.sync_state).where(s.sync_state.c.id == 1).values(version=new_version)
                )
        except SQLAlchemyError as exc:
            raise StorageError(f"applying a sync page failed: {short(exc)}") from exc
        if any(c.kind == "delete" for c in applied):
            self._shred_wal()
        return ApplyResult(new_version, tuple(applied), stale)

    def _check_dims(self, conn: Connection, page: ChangesPage) -> None:
        for item in page.upserts:
            dim = self._model_dim(conn, item.model)
            if dim is not None and dim != item.embedding.size:
                raise SyncError(
                    f"sync page upsert of {item.user_id!r}: model {item.model!r} has dimension "
                    f"{dim} on this device, the page sends {item.embedding.size}"
                )

    def _apply_batch(
        self, conn: Connection, page: ChangesPage, current: int
    ) -> tuple[list[Change], int]:
        """Apply a page's changes in version order with three bulk statements.

        A change is stale (ignored) when its version is not above the device's version or
        the row already holds a newer one. Only each user's final state is written.
        """
        u = s.enrolled_users
        ids = list({c.user_id for c in page.changes})
        versions: dict[str, int] = {}
        for chunk in range(0, len(ids), 900):
            rows = conn.execute(
                select(u.c.user_id, u.c.sync_version).where(
                    u.c.user_id.in_(ids[chunk : chunk + 900])
                )
            )
            versions.update({r.user_id: int(r.sync_version or 0) for r in rows})
        exists = set(versions)
        final: dict[str, UpsertItem | DeleteItem] = {}
        stale = 0
        for item in page.changes:  # sorted by version
            if item.version <= current or item.version <= versions.get(item.user_id, 0):
                stale += 1
                continue
            versions[item.user_id] = item.version
            final[item.user_id] = item
        now = now_iso()
        gone = [uid for uid, it in final.items() if isinstance(it, DeleteItem) and uid in exists]
        ups = [it for it in final.values() if isinstance(it, UpsertItem)]
        if gone:
            conn.execute(delete(u).where(u.c.user_id.in_(gone)))
        updates = [self._row(it, now) for it in ups if it.user_id in exists]
        if updates:
            for row in updates:
                row["b_user_id"] = row.pop("user_id")
                del row["created_at"]
            conn.execute(
                update(u)
                .where(u.c.user_id == bindparam("b_user_id"))
                .values({k: bindparam(k) for k in updates[0] if k != "b_user_id"}),
                updates,
            )
        inserts = [self._row(it, now) for it in ups if it.user_id not in exists]
        if inserts:
            conn.execute(insert(u), inserts)
        for it in ups:
            self._dims.setdefault(it.model, it.embedding.size)
        return [as_change(it) for it in final.values()], stale

    # full resync: pages go to a staging table, swapped in at the end in one transaction

    def begin_resync(self) -> None:
        with self.writer.begin() as conn:
            conn.execute(delete(s.enrolled_users_staging))
            conn.execute(update(s.sync_state).values(resync_in_progress=1))

    def _stage(self, conn: Connection, page: ChangesPage) -> ApplyResult:
        """Snapshot pages go to the staging table in one bulk insert per page."""
        if page.upserts:
            now = now_iso()
            st = s.enrolled_users_staging
            uids = [u.user_id for u in page.upserts]
            conn.execute(delete(st).where(st.c.user_id.in_(uids)))  # a page sent twice
            conn.execute(insert(st), [self._row(u, now) for u in page.upserts])
        return ApplyResult(page.to_version, (), 0)

    def _row(self, item: UpsertItem, now: str) -> dict[str, Any]:
        return {
            "user_id": item.user_id,
            "model": item.model,
            "detector": item.detector,
            "embedding": self._seal(item.user_id, item.model, item.embedding),
            "embedding_dim": int(item.embedding.size),
            "display_name": item.display_name if self.dev_mode else None,
            "sync_version": item.version,
            "synced_at": now,
            "created_at": now,
        }

    def finish_resync(self, version: int) -> None:
        u, st = s.enrolled_users, s.enrolled_users_staging
        cols = [c.name for c in u.columns if c.name != "id"]
        with self.writer.begin() as conn:
            dims = conn.execute(
                select(
                    st.c.model, func.min(st.c.embedding_dim), func.max(st.c.embedding_dim)
                ).group_by(st.c.model)
            ).all()
            for model, lo, hi in dims:
                if lo != hi:
                    raise SyncError(f"snapshot holds model {model!r} with dimensions {lo} and {hi}")
            conn.execute(delete(u))
            conn.execute(
                insert(u).from_select(cols, select(*[st.c[c] for c in cols]).order_by(st.c.id))
            )
            conn.execute(delete(st))
            conn.execute(update(s.sync_state).values(version=version, resync_in_progress=0))
        self._dims = {}
        self._shred_wal()  # every row was replaced: the old ones, and the staging copies

    def abort_resync(self) -> None:
        with self.writer.begin() as conn:
            conn.execute(delete(s.enrolled_users_staging))
            conn.execute(update(s.sync_state).values(resync_in_progress=0))
        self._shred_wal()
