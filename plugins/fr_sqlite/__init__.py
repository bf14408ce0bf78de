"""Storage plugin ``sqlite``: the device database on SQLite (WAL, synchronous=FULL,
secure_delete, file mode 0600) through SQLAlchemy 2.x; any SQLAlchemy URL also works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fr_core import hookimpl
from fr_core.errors import ConfigError
from fr_core.interfaces import ComponentKind
from fr_core.keys import default_key_file
from fr_core.plugins import BuildContext
from fr_core.storage import OutboxPolicy


def _outside_data_folder(provider: Any, db_file: Path | None) -> None:
    """A key file in the database's own folder would travel with it: refused."""
    key_file = getattr(provider, "path", None)
    if key_file is None or db_file is None:
        return
    data = db_file.resolve().parent
    if Path(key_file).resolve().is_relative_to(data):
        raise ConfigError(
            f"storage.options.key: the key file {key_file} is inside the data folder {data}: "
            "whoever copies the folder would get the key with the templates; put it elsewhere "
            "(e.g. /etc/fr-edge/device.key) or use the credential provider"
        )


@hookimpl
def fr_register_storages(register: Any) -> None:
    from fr_sqlite.database import database_file
    from fr_sqlite.store import SqliteStorage, SqliteStorageConfig

    def factory(cfg: SqliteStorageConfig, ctx: Any) -> SqliteStorage:
        app = getattr(ctx, "app_config", None)
        path = cfg.path or (app.db_path if app is not None else None)
        if not path:
            raise ValueError("no database path: set storage.path or the top-level db_path")
        dev_mode = cfg.dev_mode if cfg.dev_mode is not None else bool(app and app.dev_mode)
        policy = OutboxPolicy(**cfg.outbox.model_dump())
        db_file = database_file(path)  # an in-memory database is refused before anything else
        # the default key file follows the database (never the user who runs the command);
        # inspecting commands (status, doctor) pass create_key=False and never make one
        extras = dict(ctx.extras)
        extras.setdefault("default_key_file", default_key_file(db_file) if db_file else None)
        provider = ctx.registry.create(
            ComponentKind.KEY_PROVIDER,
            cfg.key.provider,
            cfg.key.options,
            BuildContext(registry=ctx.registry, app_config=ctx.app_config, extras=extras),
            path="storage.options.key.options",
        )
        _outside_data_folder(provider, db_file)
        return SqliteStorage(
            path,
            dev_mode,
            policy,
            cfg.on_corruption,
            cfg.busy_timeout_seconds,
            key_provider=provider,
            on_key_loss="fail" if extras.get("inspect") else cfg.on_key_loss,
        )

    register(
        "sqlite",
        factory,
        SqliteStorageConfig,
        description="SQLite via SQLAlchemy: enrolments, sync state, durable outbox",
    )
