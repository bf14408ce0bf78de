"""Storage plugin ``sqlite``: the device database on SQLite (WAL, synchronous=FULL,
secure_delete, file mode 0600) through SQLAlchemy 2.x; any SQLAlchemy URL also works."""

from __future__ import annotations

from typing import Any

from fr_core import hookimpl
from fr_core.storage import OutboxPolicy


@hookimpl
def fr_register_storages(register: Any) -> None:
    from fr_sqlite.store import SqliteStorage, SqliteStorageConfig

    def factory(cfg: SqliteStorageConfig, ctx: Any) -> SqliteStorage:
        app = getattr(ctx, "app_config", None)
        path = cfg.path or (app.db_path if app is not None else None)
        if not path:
            raise ValueError("no database path: set storage.path or the top-level db_path")
        dev_mode = cfg.dev_mode if cfg.dev_mode is not None else bool(app and app.dev_mode)
        policy = OutboxPolicy(**cfg.outbox.model_dump())
        return SqliteStorage(path, dev_mode, policy, cfg.on_corruption, cfg.busy_timeout_seconds)

    register(
        "sqlite",
        factory,
        SqliteStorageConfig,
        description="SQLite via SQLAlchemy: enrolments, sync state, durable outbox",
    )
