"""Tables of the device database and the forward migrations between schema versions.

Version 1 is the original module's database: ``enrolled_users`` and ``device_config`` exactly
as its README lists them, nothing else. Devices upgraded from that module open such a file
and it is migrated in place. Version 2 adds the outbox, sync state, counters, the staging
table of a full resync, and the schema version record itself. Version 3 seals outbox images
at rest: each has its own key in ``outbox_keys`` (see :mod:`fr_sqlite.sealing`). Version 4
moves leases and ages to the lifetime clock. Version 5 seals the face templates with the
device key and wraps the image keys with it (:mod:`fr_sqlite.templates`); ``key_check``
records which key.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    inspect,
    select,
    text,
)

from fr_core.storage import StorageError
from fr_sqlite.sealing import seal
from fr_sqlite.templates import TemplateSealer

SCHEMA_VERSION = 5

metadata = MetaData()


def _user_columns() -> list[Column[Any]]:
    # The README's schema, column for column.
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("user_id", Text, nullable=False, unique=True),
        Column("display_name", Text),
        Column("model", Text),
        Column("detector", Text),
        Column("embedding", LargeBinary),
        Column("embedding_dim", Integer),
        Column("sync_version", Integer),
        Column("synced_at", Text),
        Column("created_at", Text),
    ]


enrolled_users = Table("enrolled_users", metadata, *_user_columns(), sqlite_autoincrement=True)
Index("ix_enrolled_users_model", enrolled_users.c.model)

device_config = Table(
    "device_config",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text),
    Column("updated_at", Text),
)

# --- added in version 2 ---

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

enrolled_users_staging = Table("enrolled_users_staging", metadata, *_user_columns())

sync_state = Table(
    "sync_state",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("version", Integer, nullable=False, default=0),
    Column("last_success_at", Float),
    Column("last_attempt_at", Float),
    Column("last_error", Text),
    Column("resync_in_progress", Integer, nullable=False, default=0),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("event_type", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the event as JSON, without its image
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),  # wall clock: for people, not for ages
    Column("attempts", Integer, nullable=False, default=0),
    # on the store's lifetime clock (fr_core.clock), which no wall-clock jump moves
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_until", Float),
    Column("created_life", Float),  # NULL: queued before schema 4 (its age: wall clock)
    Column("last_error", Text),
    sqlite_autoincrement=True,
)
Index("ix_outbox_created_at", outbox.c.created_at)

# Images apart from their events: a claim or a retry rewrites only the small outbox row, not
# 20 KB of JPEG (SQLite rewrites a whole record on update).
outbox_images = Table(
    "outbox_images",
    metadata,
    Column("outbox_id", Integer, ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True),
    # the JPEG; from schema 3 on its base64 text, sealed (fr_sqlite.sealing)
    Column("image", LargeBinary, nullable=False),
)

# The key of each sealed image, in rows small enough never to spill into overflow pages:
# deleting one zeroes it even with secure_delete=FAST (fr_sqlite.sealing says why).
outbox_keys = Table(
    "outbox_keys",
    metadata,
    Column("outbox_id", Integer, ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True),
    Column("key", LargeBinary, nullable=False),
)

# Which device key sealed the templates (fr_sqlite.templates): its id, never the key, and
# where it came from. A start with another key finds it here before decrypting anything.
key_check = Table(
    "key_check",
    metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("key_id", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("sealed_at", Text, nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Integer, nullable=False, default=0),
)

V1_TABLES = ("enrolled_users", "device_config")


def current_version(conn: Connection) -> int:
    """0 for an empty database, 1 for the original module's, else the recorded version."""
    tables = set(inspect(conn).get_table_names())
    if "schema_version" in tables:
        return int(conn.execute(select(func.max(schema_version.c.version))).scalar() or 0)
    if "enrolled_users" in tables:
        return 1
    return 0


def _create_v1(conn: Connection, _sealer: TemplateSealer) -> None:
    for name in V1_TABLES:
        metadata.tables[name].create(conn, checkfirst=True)


def _v1_to_v2(conn: Connection, _sealer: TemplateSealer) -> None:
    for t in (schema_version, enrolled_users_staging, sync_state, outbox, outbox_images, counters):
        t.create(conn, checkfirst=True)
    # the original module's file has no index on model
    conn.execute(
        text("CREATE INDEX IF NOT EXISTS ix_enrolled_users_model ON enrolled_users (model)")
    )
    # The original module kept a sync version per row; the device's version is the highest.
    version = conn.execute(select(func.max(enrolled_users.c.sync_version))).scalar() or 0
    conn.execute(sync_state.insert().values(id=1, version=int(version), resync_in_progress=0))


def _v2_to_v3(conn: Connection, _sealer: TemplateSealer) -> None:
    outbox_keys.create(conn, checkfirst=True)
    # images queued by an older fr-edge are sealed now; this runs under secure_delete=ON,
    # so their clear pages are overwritten as they are replaced
    rows = conn.execute(
        select(outbox_images.c.outbox_id, outbox.c.event_id, outbox_images.c.image).join(
            outbox, outbox.c.id == outbox_images.c.outbox_id
        )
    ).all()
    for r in rows:
        key, sealed = seal(r.event_id, base64.b64encode(r.image))
        conn.execute(
            outbox_images.update()
            .where(outbox_images.c.outbox_id == r.outbox_id)
            .values(image=sealed)
        )
        conn.execute(outbox_keys.insert().values(outbox_id=r.outbox_id, key=key))


def _v3_to_v4(conn: Connection, _sealer: TemplateSealer) -> None:
    """Leases, retries and ages move to the lifetime clock (issue 12): rows of schema 3 hold
    wall-clock times there, meaningless on the new clock, so every queued event is due now
    and unclaimed; their age stays the wall clock's (created_life NULL)."""
    columns = {r[1] for r in conn.execute(text("PRAGMA table_info(outbox)"))}
    if "created_life" not in columns:
        conn.execute(text("ALTER TABLE outbox ADD COLUMN created_life REAL"))
    conn.execute(outbox.update().values(next_attempt_at=0.0, claimed_until=None))


BATCH = 2000


def _v4_to_v5(conn: Connection, sealer: TemplateSealer) -> None:
    """Templates sealed with the device key, outbox image keys wrapped with it (issue 16), in
    the caller's one transaction: a crash at any point leaves the old form or the new. The
    writer runs with secure_delete=ON, so each plaintext cell is overwritten as it is
    replaced; the caller truncates the WAL afterwards."""
    key_check.create(conn, checkfirst=True)
    for table in (enrolled_users, enrolled_users_staging):
        last = 0
        while True:
            rows = conn.execute(
                select(table.c.id, table.c.user_id, table.c.model, table.c.embedding)
                .where(table.c.id > last)
                .order_by(table.c.id)
                .limit(BATCH)
            ).all()
            if not rows:
                break
            sealed = [
                {"b_id": r.id, "embedding": sealer.seal(r.user_id, r.model, r.embedding)}
                for r in rows
                if r.embedding is not None
            ]
            if sealed:
                conn.execute(
                    table.update()
                    .where(table.c.id == bindparam("b_id"))
                    .values(embedding=bindparam("embedding")),
                    sealed,
                )
            last = rows[-1].id
    keys = conn.execute(
        select(outbox_keys.c.outbox_id, outbox.c.event_id, outbox_keys.c.key).join(
            outbox, outbox.c.id == outbox_keys.c.outbox_id
        )
    ).all()
    if keys:
        conn.execute(
            outbox_keys.update()
            .where(outbox_keys.c.outbox_id == bindparam("b_id"))
            .values(key=bindparam("key")),
            [{"b_id": r.outbox_id, "key": sealer.wrap(r.event_id, r.key)} for r in keys],
        )
    record_key(conn, sealer)


def record_key(conn: Connection, sealer: TemplateSealer) -> None:
    """Record which key seals this database (replacing any earlier record)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    conn.execute(key_check.delete())
    conn.execute(
        key_check.insert().values(id=1, key_id=sealer.key_id, source=sealer.source, sealed_at=stamp)
    )


MIGRATIONS: dict[int, Callable[[Connection, TemplateSealer], None]] = {
    # from version -> step to version + 1
    0: _create_v1,
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
}


def migrate(conn: Connection, sealer: TemplateSealer) -> tuple[int, int]:
    """Apply every forward migration in the caller's transaction; returns (from, to).
    ``sealer`` holds the device key the templates are (or get) sealed with."""
    start = version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the database has schema version {version}, newer than this fr-edge "
            f"({SCHEMA_VERSION}); upgrade fr-edge instead of opening it with an older one"
        )
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn, sealer)
        version += 1
    if start != version:
        conn.execute(schema_version.delete())
        conn.execute(schema_version.insert().values(version=version))
    return start, version


def integrity_check(conn: Connection) -> str:
    if conn.dialect.name != "sqlite":
        return "ok"
    rows = conn.execute(text("PRAGMA integrity_check")).fetchall()
    return "; ".join(str(r[0]) for r in rows)
