"""SQLite (or any SQLAlchemy database) implementation of the fr-edge storage interface.

One class, :class:`SqliteStorage`, assembled from one part per concern: the connection and
schema (``database``), corruption recovery (``recovery``), enrolments (``enrolments``), sync
state (``syncstate``) and the outbox (``outbox``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fr_core.interfaces import (
    ClockedStorage,
    LeaseRenewingStorage,
    SealingStorage,
    Storage,
)
from fr_sqlite.outbox import Outbox
from fr_sqlite.syncstate import SyncFeed


class OutboxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_events: int = Field(100_000, ge=1, description="most events kept unsent")
    max_bytes: int = Field(2 * 1024**3, ge=1024, description="most bytes of events kept")
    max_age_seconds: float = Field(30 * 86400, gt=0, description="older unsent events expire")
    when_full: Literal["reject_new", "drop_oldest"] = Field(
        "drop_oldest", description="what a full outbox does with a new event"
    )


class KeyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(
        "file", min_length=1, description="the key provider: file, env, credential or a plugin's"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="the provider's options (see docs/privacy.md)"
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
    key: KeyOptions = Field(
        default_factory=KeyOptions,
        description="where the device key that seals the templates comes from",
    )
    on_key_loss: Literal["resync", "fail"] = Field(
        "resync",
        description="a database sealed with another key than its recorded key source now "
        "gives: forget what it sealed and resync from the broker, or fail (another key from "
        "another source is always refused)",
    )


class SqliteStorage(SyncFeed, Outbox):
    """See :class:`fr_core.storage.DatabaseManager` for the meaning of each method."""


if TYPE_CHECKING:  # mypy checks the class against the contract and the optional parts

    def _conforms(store: SqliteStorage) -> Storage:
        return store

    def _clocked(store: SqliteStorage) -> ClockedStorage:
        return store

    def _renews(store: SqliteStorage) -> LeaseRenewingStorage:
        return store

    def _seals(store: SqliteStorage) -> SealingStorage:
        return store
