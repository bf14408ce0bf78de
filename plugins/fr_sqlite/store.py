"""SQLite (or any SQLAlchemy database) implementation of the fr-edge storage interface."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from fr_core.clock import DeviceClock, boot_number
from fr_core.events import format_timestamp
from fr_core.storage import (
    ApplyResult,
    Change,
    DevModeError,
    Enrollment,
    EventPayload,
    OutboxFullError,
    OutboxItem,
    OutboxPolicy,
    OutboxStats,
    StorageError,
    SyncError,
    SyncState,
    check_display_name,
    check_embedding,
    check_model,
    check_user_id,
)
from fr_core.syncpage import ChangesPage, DeleteItem, UpsertItem, as_change
from fr_sqlite import schema as s
from fr_sqlite.sealing import seal, unseal

log = logging.getLogger(__name__)


class OutboxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_events: int = Field(100_000, ge=1, description="most events kept unsent")
    max_bytes: int = Field(2 * 1024**3, ge=1024, description="most bytes of events kept")
    max_age_seconds: float = Field(30 * 86400, gt=0, description="older unsent events expire")
    when_full: Literal["reject_new", "drop_oldest"] = Field(
        "drop_oldest", description="what a full outbox does with a new event"
    )


class SqliteStorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None, description="file path or SQLAlchemy URL; default: the top-level db_path"
    )
    dev_mode: bool | None = Field(None, description="default: the top-level dev_mode")
    outbox: OutboxOptions = Field(OutboxOptions(), description="outbox bounds and policy")
    on_corruption: Literal["recover", "fail"] = Field(
        "recover",
        description="a corrupt database file at start: move it aside and start empty (then "
        "a full resync), or fail",
    )
    busy_timeout_seconds: float = Field(
        30.0,
        ge=0.1,
        le=600.0,
        description="how long a write waits for another connection's lock before failing "
        "with 'database is locked' (the frame loop then keeps the event in memory and retries)",
    )


def _now_iso() -> str:
    return format_timestamp(datetime.now(timezone.utc))


def _prepare_file(path: Path) -> None:
    """Create the database file 0600 (and its folder 0700) before SQLite opens it."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("database %s was readable by others (mode %o); now 0600", path, mode)


class SqliteStorage:
    """See :class:`fr_core.storage.DatabaseManager` for the meaning of each method."""

    def __init__(
        self,
        path: str,
        dev_mode: bool = False,
        policy: OutboxPolicy | None = None,
        on_corruption: Literal["recover", "fail"] = "recover",
        busy_timeout_seconds: float = 30.0,
        clock: DeviceClock | None = None,
    ):
        self.clock = clock or DeviceClock()
        self._life_base, self._mono_anchor = 0.0, self.clock.mono()
        self._life_saved = -1e18
        self.dev_mode = dev_mode
        self.busy_timeout_seconds = busy_timeout_seconds
        self.on_corruption = on_corruption
        self.last_recovery: dict[str, Any] | None = None
        self.policy = policy or OutboxPolicy()
        self._engine: Engine | None = None
        self._target = path
        self._lock = threading.Lock()
        self._dims: dict[str, int] = {}
        self._last_expiry = 0.0

    # --- connection -------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """For reads. Writes go through :attr:`writer`."""
        if self._engine is None:
            raise StorageError("the database is not initialized: call initialize() first")
        return self._engine

    @property
    def writer(self) -> Engine:
        """The engine whose transactions start with BEGIN IMMEDIATE (synchronous=FULL)."""
        return self.engine.execution_options(fr_write=True)

    @property
    def relaxed_writer(self) -> Engine:
        """Writes whose loss on power failure is harmless: outbox claims (a lost lease just
        frees the events sooner), acknowledgements (a lost one means the event is sent
        again, and the broker deduplicates by event_id) and retry bookkeeping. They skip
        the fsync; the next FULL commit or checkpoint makes them durable anyway."""
        return self.engine.execution_options(fr_write=True, fr_relaxed=True)

    def checkpoint(self) -> bool:
        """Fold the WAL into the database file and truncate it (SQLite only); True when the
        WAL is empty afterwards. A reader in the middle of a transaction can keep it from
        truncating: tried a few times over a second, then left to the next one (logged)."""
        if self.engine.dialect.name != "sqlite":
            return True
        for attempt in range(5):
            raw = self.engine.raw_connection()
            try:
                busy = raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                raw.close()
            if not busy:
                return True
            time.sleep(0.05 * 2**attempt)
        log.warning("the WAL could not be truncated (a reader holds it); the next checkpoint will")
        return False

    def _shred_wal(self) -> None:
        """After a deletion: the deleted rows' earlier versions may still be in the -wal file
        (secure_delete overwrites the database pages, not the log). Truncate it now."""
        self.checkpoint()

    def _make_engine(self) -> Engine:
        target = self._target
        if "://" in target:
            url = make_url(target)
            file = url.database if url.get_backend_name() == "sqlite" else None
        else:
            url = make_url("sqlite://")._replace(database=str(Path(target)))
            file = str(Path(target))
        is_sqlite = url.get_backend_name() == "sqlite"
        if is_sqlite and (
            not file
            or file == ":memory:"
            or file.startswith("file::memory:")
            or "mode=memory" in str(url)
        ):
            raise StorageError(
                f"{target!r} is an in-memory SQLite database: every connection (and fr-edge "
                "uses one per thread) would get its own empty database, and nothing would "
                "survive a restart; give a file path, e.g. fr-edge-data/faces.db"
            )
        if is_sqlite and file:
            _prepare_file(Path(file))
        engine = create_engine(
            url, connect_args={"timeout": self.busy_timeout_seconds} if is_sqlite else {}
        )
        if is_sqlite:

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")  # a committed event survives power loss
                cur.execute("PRAGMA secure_delete=ON")  # deleted embeddings are overwritten
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                # Writers take the write lock up front (no deadlock upgrading a read lock
                # later); readers take none and, in WAL mode, never wait for a writer.
                opts = conn.get_execution_options()
                if opts.get("fr_write"):
                    # FULL: a committed event or enrolment survives power loss. NORMAL (WAL
                    # synced at checkpoints) only for writes whose loss is harmless.
                    sync = "NORMAL" if opts.get("fr_relaxed") else "FULL"
                    conn.exec_driver_sql(f"PRAGMA synchronous={sync}")
                    # ON overwrites every freed page; FAST only b-tree content, which is
                    # enough where what is freed is sealed (outbox images, fr_sqlite.sealing)
                    shred = "FAST" if opts.get("fr_sealed_delete") else "ON"
                    conn.exec_driver_sql(f"PRAGMA secure_delete={shred}")
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.exec_driver_sql("BEGIN")

        return engine

    def initialize(self) -> None:
        """Create or upgrade the schema. A corrupt file (not a database, or failing SQLite's
        quick_check) is moved aside and replaced by an empty database, loudly: the next sync
        is a full resync, and the unsent events in it are counted as lost when they can be
        counted. ``on_corruption="fail"`` raises a StorageError instead."""
        try:
            self._initialize()
            problem = self._quick_check()
        except StorageError as exc:
            if not _is_corruption(exc):
                raise
            problem = _short(exc.__cause__ or exc)
        if problem is None:
            return
        file = self._file()
        if self.on_corruption == "fail" or file is None:
            raise StorageError(f"the database {self._target} is corrupt: {problem}")
        self._recover(file, problem)
        self._initialize()
        with self.writer.begin() as conn:
            self._counter(conn, "corruption_recoveries", 1)

    def _file(self) -> Path | None:
        if "://" not in self._target:
            return Path(self._target)
        url = make_url(self._target)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(str(url.database))
        return None

    def _quick_check(self) -> str | None:
        if self.engine.dialect.name != "sqlite":
            return None
        try:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql("PRAGMA quick_check").fetchall()
        except SQLAlchemyError as exc:
            return _short(exc)
        result = "; ".join(str(r[0]) for r in rows)
        return None if result == "ok" else result[:300]

    def _recover(self, file: Path, problem: str) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        unsent: int | None = None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as con:
                unsent = int(con.execute("SELECT count(*) FROM outbox").fetchone()[0])
        except sqlite3.Error:
            pass
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = file.with_name(f"{file.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(file) + suffix)
            if part.exists():
                os.replace(part, Path(str(aside) + suffix))
        lost = (
            f"{unsent} unsent event(s) in it are LOST"
            if unsent
            else "no unsent event could be read from it"
            if unsent is None
            else "it held no unsent event"
        )
        log.error(
            "database %s is corrupt (%s): moved to %s and replaced by an empty one; %s; "
            "the enrolments come back with a full resync at the next sync",
            file,
            problem,
            aside,
            lost,
        )
        self.last_recovery = {"moved_to": str(aside), "problem": problem, "unsent_lost": unsent}

    def _initialize(self) -> None:
        with self._lock:
            if self._engine is None:
                self._engine = self._make_engine()
        try:
            with self.writer.begin() as conn:
                start, end = s.migrate(conn)
                if conn.execute(select(s.sync_state.c.id)).first() is None:
                    conn.execute(insert(s.sync_state).values(id=1, version=0, resync_in_progress=0))
                if not self.dev_mode:
                    purged = conn.execute(
                        update(s.enrolled_users)
                        .where(s.enrolled_users.c.display_name.is_not(None))
                        .values(display_name=None)
                    ).rowcount
                    if purged:
                        log.warning("production mode: removed %d stored display names", purged)
                self._start_life(conn)
                conn.execute(delete(s.enrolled_users_staging))  # an interrupted resync
                if conn.execute(select(s.sync_state.c.resync_in_progress)).scalar():
                    conn.execute(update(s.sync_state).values(resync_in_progress=0))
                    log.warning("a full resync was interrupted; it starts again on the next sync")
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open the database {self._target}: {_short(exc)}") from exc
        if start != end:
            log.info("database schema upgraded from version %d to %d", start, end)
        self._dims = {}

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                try:  # the lifetime clock where it is now: a clean stop loses none of it
                    with self.relaxed_writer.begin() as conn:
                        self._save_life(conn, force=True)
                except SQLAlchemyError as exc:
                    log.warning("could not save the lifetime clock: %s", _short(exc))
                self._engine.dispose()
                self._engine = None

    def integrity_check(self) -> str:
        with self.engine.connect() as conn:
            return s.integrity_check(conn)

    # --- enrolments ---------------------------------------------------------------------------

    def _model_dim(self, conn: Connection, model: str) -> int | None:
        if model not in self._dims:
            dim = conn.execute(
                select(s.enrolled_users.c.embedding_dim)
                .where(s.enrolled_users.c.model == model)
                .limit(1)
            ).scalar()
            if dim is None:
                return None
            self._dims[model] = int(dim)
        return self._dims[model]

    def upsert_enrollment(
        self,
        user_id: str,
        embedding: np.ndarray,
        model: str,
        *,
        detector: str | None = None,
        display_name: str | None = None,
    ) -> None:
        check_user_id(user_id)
        check_model(model)
        if display_name is not None and not self.dev_mode:
            raise DevModeError(
                "display names are stored only in dev mode; in production the device keeps "
                "the employee id alone"
            )
        check_display_name(display_name)
        with self.writer.begin() as conn:
            vec = check_embedding(embedding, self._model_dim(conn, model))
            self._upsert(conn, s.enrolled_users, user_id, vec, model, detector, display_name, None)
            self._dims.setdefault(model, vec.size)

    def _upsert(
        self,
        conn: Connection,
        table: Any,
        user_id: str,
        vec: np.ndarray,
        model: str,
        detector: str | None,
        display_name: str | None,
        version: int | None,
    ) -> None:
        now = _now_iso()
        values = {
            "model": model,
            "detector": detector,
            "embedding": vec.astype("<f4").tobytes(),
            "embedding_dim": int(vec.size),
            "display_name": display_name if self.dev_mode else None,
            "sync_version": version,
            "synced_at": now if version is not None else None,
        }
        done = conn.execute(update(table).where(table.c.user_id == user_id).values(**values))
        if done.rowcount == 0:
            conn.execute(insert(table).values(user_id=user_id, created_at=now, **values))

    def delete_enrollment(self, user_id: str) -> bool:
        check_user_id(user_id)
        with self.writer.begin() as conn:
            gone = conn.execute(
                delete(s.enrolled_users).where(s.enrolled_users.c.user_id == user_id)
            ).rowcount
        if gone:
            self._shred_wal()
        return bool(gone)

    def _row_to_enrollment(self, row: Any) -> Enrollment:
        vec = np.frombuffer(row.embedding, dtype="<f4").astype(np.float32)
        return Enrollment(
            user_id=row.user_id,
            model=row.model,
            embedding=vec,
            detector=row.detector,
            display_name=row.display_name,
            sync_version=row.sync_version,
            synced_at=row.synced_at,
            created_at=row.created_at,
        )

    def get_enrollment(self, user_id: str) -> Enrollment | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(s.enrolled_users).where(s.enrolled_users.c.user_id == user_id)
            ).first()
        return self._row_to_enrollment(row) if row else None

    def get_all_enrollments(self, model: str | None = None) -> dict[str, np.ndarray]:
        q = select(s.enrolled_users.c.user_id, s.enrolled_users.c.embedding)
        if model is not None:
            q = q.where(s.enrolled_users.c.model == model)
        with self.engine.connect() as conn:
            return {
                r.user_id: np.frombuffer(r.embedding, dtype="<f4").astype(np.float32)
                for r in conn.execute(q)
            }

    def iter_enrollments(self, model: str | None = None, batch: int = 1000) -> Iterator[Enrollment]:
        last = ""
        while True:
            q = select(s.enrolled_users).where(s.enrolled_users.c.user_id > last)
            if model is not None:
                q = q.where(s.enrolled_users.c.model == model)
            with self.engine.connect() as conn:
                rows = conn.execute(q.order_by(s.enrolled_users.c.user_id).limit(batch)).all()
            if not rows:
                return
            for row in rows:
                yield self._row_to_enrollment(row)
            last = rows[-1].user_id

    def iter_embedding_blocks(
        self, batch: int = 5000
    ) -> Iterator[tuple[str, list[str], np.ndarray]]:
        """``(model, user_ids, (n, dim) float32)`` blocks of every enrolment, by model then
        user_id: what a matcher needs, without one Python object per row."""
        u = s.enrolled_users
        for model in sorted(self.count_enrollments()):
            last = ""
            while True:
                with self.engine.connect() as conn:
                    rows = conn.execute(
                        select(u.c.user_id, u.c.embedding)
                        .where(u.c.model == model, u.c.user_id > last)
                        .order_by(u.c.user_id)
                        .limit(batch)
                    ).all()
                if not rows:
                    break
                ids = [r[0] for r in rows]
                block = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4")
                yield model, ids, block.reshape(len(ids), -1).astype(np.float32)
                last = ids[-1]

    def count_enrollments(self) -> dict[str, int]:
        q = select(s.enrolled_users.c.model, func.count()).group_by(s.enrolled_users.c.model)
        with self.engine.connect() as conn:
            return {str(m): int(n) for m, n in conn.execute(q)}

    # --- device config ------------------------------------------------------------------------

    def get_config(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(s.device_config.c.value).where(s.device_config.c.key == key)
            ).scalar()
        return default if value is None else str(value)

    def set_config(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not key or len(key) > 128:
            raise ValueError(f"config key must be 1-128 characters, got {key!r}")
        if not isinstance(value, str):
            raise ValueError(f"config value must be a string, got {type(value).__name__}")
        with self.writer.begin() as conn:
            values = {"value": value, "updated_at": _now_iso()}
            done = conn.execute(
                update(s.device_config).where(s.device_config.c.key == key).values(**values)
            )
            if done.rowcount == 0:
                conn.execute(insert(s.device_config).values(key=key, **values))

    # --- sync ---------------------------------------------------------------------------------

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
            raise StorageError(f"applying a sync page failed: {_short(exc)}") from exc
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
        now = _now_iso()
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
            now = _now_iso()
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
            "embedding": item.embedding.astype("<f4").tobytes(),
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

    # --- outbox -------------------------------------------------------------------------------

    # --- the lifetime clock -------------------------------------------------------------
    # Leases, retries and outbox ages are measured on it: the monotonic clock within a boot,
    # carried across restarts and reboots by counters in the database (the boot id says
    # which); the wall clock never moves it. Time switched off is not counted, so an event
    # ages only while the device runs: it may expire later than by the calendar, never
    # sooner (a boot with a stale clock then set by NTP used to expire everything queued).

    def _start_life(self, conn: Connection) -> None:
        c = self._counters(conn)
        boot = boot_number(self.clock.boot_id())
        mono = self.clock.mono()
        life = c.get("life_ms", 0) / 1000
        if c.get("life_boot") == boot and "life_mono_ms" in c:  # same boot: it kept running
            life += max(0.0, mono - c["life_mono_ms"] / 1000)
        self._life_base, self._mono_anchor = life, mono
        self._save_life(conn, force=True)

    def _life(self) -> float:
        return self._life_base + (self.clock.mono() - self._mono_anchor)

    def _save_life(self, conn: Connection, force: bool = False) -> None:
        life = self._life()
        if not force and life - self._life_saved < 5.0:
            return
        self._life_saved = life
        self._set_counter(conn, "life_ms", int(life * 1000))
        self._set_counter(conn, "life_boot", boot_number(self.clock.boot_id()))
        self._set_counter(conn, "life_mono_ms", int(self.clock.mono() * 1000))

    def clock_status(self) -> dict[str, Any]:
        """For heartbeats: whether the wall clock is synchronised, and the lifetime clock."""
        return {
            "synchronised": self.clock.synchronised(),
            "lifetime_seconds": round(self._life(), 1),
        }

    def _counter(self, conn: Connection, name: str, delta: int) -> None:
        if delta == 0:
            return
        self._upsert_counter(conn, name, s.counters.c.value + delta, delta)

    def _set_counter(self, conn: Connection, name: str, value: int) -> None:
        self._upsert_counter(conn, name, value, value)

    @staticmethod
    def _upsert_counter(conn: Connection, name: str, new: Any, initial: int) -> None:
        done = conn.execute(update(s.counters).where(s.counters.c.name == name).values(value=new))
        if done.rowcount == 0:
            conn.execute(insert(s.counters).values(name=name, value=initial))

    def _counters(self, conn: Connection) -> dict[str, int]:
        return {
            str(n): int(v) for n, v in conn.execute(select(s.counters.c.name, s.counters.c.value))
        }

    @staticmethod
    def _split(event: Mapping[str, Any]) -> tuple[str, str, str, bytes | None]:
        data = dict(event)
        event_id = data.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError("an outbox event needs a non-empty string event_id")
        event_type = data.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"event {event_id}: event_type must be a non-empty string")
        image = data.pop("image", None)
        blob = None
        if image is not None:
            try:
                base64.b64decode(image, validate=True)
                # kept as the base64 text it travels as: a claim splices it into the wire
                # JSON as it is (the alphabet needs no escaping), no re-encoding per send
                blob = image.encode("ascii") if isinstance(image, str) else bytes(image)
            except (binascii.Error, ValueError, TypeError):
                raise ValueError(f"event {event_id}: image is not base64") from None
        try:
            payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event {event_id} cannot be stored as JSON: {exc}") from None
        return event_id, event_type, payload, blob

    def outbox_append(self, event: Mapping[str, Any]) -> None:
        self.outbox_append_many([event])

    def outbox_append_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Store events in one transaction (all or none). An event_id already queued is
        ignored, so a retried append never duplicates."""
        rows = [self._split(e) for e in events]
        now = self._life()
        wall = self.clock.wall()
        p = self.policy
        try:
            with self.writer.begin() as conn:
                self._expire(conn, now)
                c = self._counters(conn)
                depth, size = c.get("outbox_depth", 0), c.get("outbox_bytes", 0)
                for event_id, event_type, payload, blob in rows:
                    nbytes = len(payload) + (len(blob) if blob else 0)
                    exists = conn.execute(
                        select(s.outbox.c.id).where(s.outbox.c.event_id == event_id)
                    ).first()
                    if exists:
                        continue
                    if nbytes > p.max_bytes:
                        raise ValueError(
                            f"event {event_id} ({nbytes} bytes) is larger than the "
                            f"outbox limit ({p.max_bytes} bytes)"
                        )
                    while depth + 1 > p.max_events or size + nbytes > p.max_bytes:
                        if p.when_full == "reject_new":
                            raise OutboxFullError(
                                f"outbox full ({depth} events, {size} bytes; limits "
                                f"{p.max_events} events, {p.max_bytes} bytes): event {event_id} "
                                "rejected (policy reject_new)"
                            )
                        oldest = conn.execute(
                            select(s.outbox.c.id, s.outbox.c.event_id, s.outbox.c.size)
                            .order_by(s.outbox.c.id)
                            .limit(1)
                        ).first()
                        if oldest is None:
                            break
                        conn.execute(delete(s.outbox).where(s.outbox.c.id == oldest.id))
                        depth, size = depth - 1, size - oldest.size
                        self._counter(conn, "outbox_depth", -1)
                        self._counter(conn, "outbox_bytes", -oldest.size)
                        self._counter(conn, "dropped_total", 1)
                        log.warning(
                            "outbox full: dropped the oldest event %s (policy drop_oldest)",
                            oldest.event_id,
                        )
                    new_id = conn.execute(
                        insert(s.outbox).values(
                            event_id=event_id,
                            event_type=event_type,
                            payload=payload,
                            size=nbytes,
                            created_at=wall,
                            created_life=now,
                            attempts=0,
                            next_attempt_at=now,
                        )
                    ).inserted_primary_key
                    if blob is not None and new_id is not None:
                        key, sealed = seal(event_id, blob)
                        conn.execute(
                            insert(s.outbox_images).values(outbox_id=new_id[0], image=sealed)
                        )
                        conn.execute(insert(s.outbox_keys).values(outbox_id=new_id[0], key=key))
                    depth, size = depth + 1, size + nbytes
                    self._counter(conn, "outbox_depth", 1)
                    self._counter(conn, "outbox_bytes", nbytes)
        except OutboxFullError:
            with self.writer.begin() as conn:
                self._counter(conn, "rejected_total", 1)
            log.warning("outbox full: new event rejected (policy reject_new)")
            raise
        except IntegrityError as exc:
            raise StorageError(f"outbox append failed: {_short(exc)}") from exc
        except SQLAlchemyError as exc:
            if "database or disk is full" in str(exc):
                raise StorageError(
                    f"the disk is full: {len(rows)} event(s) not stored (the transaction was "
                    f"rolled back, nothing half-written); free space where {self._target} "
                    "lives"
                ) from exc
            raise StorageError(f"outbox append failed: {_short(exc)}") from exc

    def _expire(self, conn: Connection, now: float) -> None:
        """Expire events older than max_age on the lifetime clock (``now``). Events queued
        before schema 4 have no lifetime stamp: their wall-clock age counts, and only while
        the kernel says the wall clock is synchronised."""
        # a scan per claim is wasted work: ages move slowly next to the bound (days)
        if now - self._last_expiry < min(5.0, self.policy.max_age_seconds / 10):
            return
        self._last_expiry = now
        self._save_life(conn)
        o = s.outbox
        old_by_life = o.c.created_life.is_not(None) & (
            o.c.created_life < now - self.policy.max_age_seconds
        )
        which = old_by_life
        if self.clock.synchronised():
            old_by_wall = o.c.created_life.is_(None) & (
                o.c.created_at < self.clock.wall() - self.policy.max_age_seconds
            )
            which = old_by_life | old_by_wall
        old = conn.execute(select(o.c.event_id, o.c.size).where(which)).all()
        if not old:
            return
        conn.execute(delete(o).where(which))
        self._counter(conn, "outbox_depth", -len(old))
        self._counter(conn, "outbox_bytes", -sum(r.size for r in old))
        self._counter(conn, "expired_total", len(old))
        log.warning(
            "outbox: %d events older than %.0f s expired unsent (first: %s)",
            len(old),
            self.policy.max_age_seconds,
            old[0].event_id,
        )

    def outbox_claim(self, limit: int = 100, lease_seconds: float = 60.0) -> list[OutboxItem]:
        """The oldest due events, leased for ``lease_seconds`` so no other worker takes them."""
        now = self._life()
        o = s.outbox
        with self.relaxed_writer.begin() as conn:
            self._expire(conn, now)
            rows = conn.execute(
                select(
                    o.c.id,
                    o.c.event_id,
                    o.c.payload,
                    s.outbox_images.c.image,
                    s.outbox_keys.c.key,
                    o.c.attempts,
                    o.c.created_at,
                )
                .select_from(
                    o.outerjoin(s.outbox_images, s.outbox_images.c.outbox_id == o.c.id).outerjoin(
                        s.outbox_keys, s.outbox_keys.c.outbox_id == o.c.id
                    )
                )
                .where(o.c.next_attempt_at <= now)
                .where((o.c.claimed_until.is_(None)) | (o.c.claimed_until < now))
                .order_by(o.c.id)
                .limit(limit)
            ).all()
            if rows:
                conn.execute(
                    update(o)
                    .where(o.c.id.in_([r.id for r in rows]))
                    .values(claimed_until=now + lease_seconds)
                )
        items = []
        for rid, event_id, text, sealed, key, attempts, created_at in rows:
            payload = EventPayload(json.loads(text))
            if sealed is None:
                payload.wire = text.encode()
            else:
                b64 = unseal(event_id, key, sealed)  # base64 ASCII, as stored
                payload["image"] = b64.decode("ascii")
                # the stored JSON is an object without "image": splice it in as bytes, in
                # one allocation, nothing re-escaped or re-encoded on the way to the socket
                head = text.encode()[:-1] + b"," if len(text) > 2 else b"{"
                payload.wire = b"".join((head, b'"image":"', b64, b'"}'))
            items.append(OutboxItem(rid, event_id, payload, attempts, created_at))
        return items

    def outbox_ack(self, event_ids: Sequence[str]) -> int:
        """Delete delivered events (row, key and sealed image); returns how many were still
        queued. The keys are zeroed, the images' pages freed as ciphertext (fr_sqlite.sealing)."""
        if not event_ids:
            return 0
        o = s.outbox
        with self.relaxed_writer.execution_options(fr_sealed_delete=True).begin() as conn:
            gone = delete(o).where(o.c.event_id.in_(list(event_ids)))
            if conn.dialect.delete_returning:  # one statement instead of two
                rows = conn.execute(gone.returning(o.c.size)).all()
            else:
                rows = conn.execute(select(o.c.size).where(o.c.event_id.in_(list(event_ids)))).all()
                conn.execute(gone)
            self._counter(conn, "outbox_depth", -len(rows))
            self._counter(conn, "outbox_bytes", -sum(r.size for r in rows))
            self._counter(conn, "sent_total", len(rows))
        return len(rows)

    def outbox_renew(self, event_ids: Sequence[str], lease_seconds: float) -> int:
        """Extend the leases of events still claimed (on the wire): returns how many were."""
        if not event_ids:
            return 0
        o = s.outbox
        with self.relaxed_writer.begin() as conn:
            return int(
                conn.execute(
                    update(o)
                    .where(o.c.event_id.in_(list(event_ids)))
                    .where(o.c.claimed_until.is_not(None))
                    .values(claimed_until=self._life() + lease_seconds)
                ).rowcount
            )

    def outbox_fail(self, event_ids: Sequence[str], error: str, retry_in: float) -> None:
        """Release events after a failed delivery; they are due again in ``retry_in`` s."""
        if not event_ids:
            return
        o = s.outbox
        with self.relaxed_writer.begin() as conn:
            done = conn.execute(
                update(o)
                .where(o.c.event_id.in_(list(event_ids)))
                .values(
                    attempts=o.c.attempts + 1,
                    next_attempt_at=self._life() + max(0.0, retry_in),
                    claimed_until=None,
                    last_error=error[:500],
                )
            ).rowcount
            self._counter(conn, "failed_attempts_total", done)

    def outbox_release_claims(self) -> int:
        o = s.outbox
        with self.relaxed_writer.begin() as conn:
            return int(
                conn.execute(
                    update(o).where(o.c.claimed_until.is_not(None)).values(claimed_until=None)
                ).rowcount
            )

    def outbox_stats(self) -> OutboxStats:
        with self.engine.connect() as conn:
            c = self._counters(conn)
            oldest = conn.execute(select(func.min(s.outbox.c.created_at))).scalar()
        return OutboxStats(
            depth=c.get("outbox_depth", 0),
            bytes=c.get("outbox_bytes", 0),
            oldest_created_at=oldest,
            dropped_total=c.get("dropped_total", 0),
            rejected_total=c.get("rejected_total", 0),
            expired_total=c.get("expired_total", 0),
            sent_total=c.get("sent_total", 0),
            failed_attempts_total=c.get("failed_attempts_total", 0),
            counters=c,
            policy=self.policy,
        )


_CORRUPTION = ("file is not a database", "malformed", "database corrupt", "disk image")


def _is_corruption(exc: BaseException) -> bool:
    text = f"{exc} {exc.__cause__ or ''}".lower()
    return any(marker in text for marker in _CORRUPTION)


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig or exc).split())[:300]
