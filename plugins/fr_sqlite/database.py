"""The connection side of the SQLite storage: engines (readers never wait, writers lock
up front), the WAL, opening and upgrading the schema, the device config table, the lifetime
clock and the counters every other part updates in its own transactions."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from fr_core.clock import DeviceClock, boot_number
from fr_core.events import format_timestamp
from fr_core.interfaces import KeyProvider
from fr_core.keys import FileKeyProvider, default_key_file
from fr_core.storage import (
    OutboxPolicy,
    StorageError,
)
from fr_sqlite import schema as s
from fr_sqlite.keyloss import check_key
from fr_sqlite.recovery import is_corruption, move_aside, quick_check, short
from fr_sqlite.templates import TemplateSealer

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


def parse_target(target: str) -> tuple[URL, str | None]:
    """The URL of a path or SQLAlchemy URL, and its SQLite file; in-memory SQLite refused."""
    if "://" in target:
        url = make_url(target)
        file = url.database if url.get_backend_name() == "sqlite" else None
    else:
        url = make_url("sqlite://")._replace(database=str(Path(target)))
        file = str(Path(target))
    if url.get_backend_name() == "sqlite" and (
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
    return url, file


def database_file(target: str) -> Path | None:
    """The SQLite file a path or SQLAlchemy URL names, or None for another database; an
    in-memory SQLite database is refused (:func:`parse_target`)."""
    file = parse_target(target)[1]
    return Path(file) if file is not None else None


def now_iso() -> str:
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


class Database:
    """What every part of :class:`fr_sqlite.store.SqliteStorage` stands on."""

    def __init__(
        self,
        path: str,
        dev_mode: bool = False,
        policy: OutboxPolicy | None = None,
        on_corruption: Literal["recover", "fail"] = "recover",
        busy_timeout_seconds: float = 30.0,
        clock: DeviceClock | None = None,
        key_provider: KeyProvider | None = None,
        on_key_loss: Literal["resync", "fail"] = "resync",
    ):
        self.clock = clock or DeviceClock()
        # where the device key comes from; read at initialize(), kept only as derived keys
        if key_provider is None:
            file = database_file(path)
            if file is None:
                raise StorageError(
                    f"{path}: a database that is not a SQLite file needs a key provider named "
                    "in the storage block (key.provider; docs/privacy.md)"
                )
            key_provider = FileKeyProvider(default_key_file(file))
        self.key_provider: KeyProvider = key_provider
        self.on_key_loss = on_key_loss
        self._sealer: TemplateSealer | None = None
        self.last_key_loss: dict[str, Any] | None = None
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
        url, file = parse_target(target)
        is_sqlite = url.get_backend_name() == "sqlite"
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
                # sorts and temporary tables stay in memory: no plaintext in /var/tmp
                cur.execute("PRAGMA temp_store=MEMORY")
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
            problem = quick_check(self.engine)
        except StorageError as exc:
            if not is_corruption(exc):
                raise
            problem = short(exc.__cause__ or exc)
        if problem is None:
            return
        file = self._file()
        if self.on_corruption == "fail" or file is None:
            raise StorageError(f"the database {self._target} is corrupt: {problem}")
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self.last_recovery = move_aside(file, problem)
        self._initialize()
        with self.writer.begin() as conn:
            self._counter(conn, "corruption_recoveries", 1)

    def _file(self) -> Path | None:
        return database_file(self._target)

    def _initialize(self) -> None:
        with self._lock:
            if self._engine is None:
                self._engine = self._make_engine()
        try:
            if self._sealer is None:
                self._sealer = TemplateSealer(
                    self.key_provider.load(), self.key_provider.describe()
                )
            with self.writer.begin() as conn:
                start, end = s.migrate(conn, self._sealer)
                check_key(self, conn, self._sealer)
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
            raise StorageError(f"cannot open the database {self._target}: {short(exc)}") from exc
        if start != end:
            log.info("database schema upgraded from version %d to %d", start, end)
        # at every start: what a migration replaced (or a key loss forgot) may still sit in
        # the WAL, even from a start that was killed after its commit
        self._shred_wal()
        self._dims = {}

    @property
    def sealer(self) -> TemplateSealer:
        if self._sealer is None:
            raise StorageError("the database is not initialized: call initialize() first")
        return self._sealer

    def sealing_status(self) -> dict[str, Any]:
        """For ``fr-edge status`` and heartbeats: whether templates are sealed, with what,
        by which key (its id, never the key) and from where."""
        with self.engine.connect() as conn:
            row = conn.execute(select(s.key_check)).first()
        return {
            "sealed": row is not None,
            "cipher": "AES-256-GCM",
            "key_id": row.key_id if row else None,
            "key_source": row.source if row else None,
            "sealed_since": row.sealed_at if row else None,
            "last_key_loss": self.last_key_loss,
        }

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                try:  # the lifetime clock where it is now: a clean stop loses none of it
                    with self.relaxed_writer.begin() as conn:
                        self._save_life(conn, force=True)
                except SQLAlchemyError as exc:
                    log.warning("could not save the lifetime clock: %s", short(exc))
                self._engine.dispose()
                self._engine = None

    def integrity_check(self) -> str:
        with self.engine.connect() as conn:
            return s.integrity_check(conn)

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
            values = {"value": value, "updated_at": now_iso()}
            done = conn.execute(
                update(s.device_config).where(s.device_config.c.key == key).values(**values)
            )
            if done.rowcount == 0:
                conn.execute(insert(s.device_config).values(key=key, **values))

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
