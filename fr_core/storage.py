"""Local storage API: enrolments, device config, sync state and the durable event outbox.

:class:`DatabaseManager` is the original module's class (README "Database Manager"). It is a
thin facade over the configured storage plugin (``sqlite`` by default, plugin ``fr_sqlite``),
looked up by name through the plugin registry like every other component.

Privacy rules (README "Development Mode"): display names are stored only in dev mode; in
production (``dev_mode=False``) the name column stays NULL on every path and local enrolment
(:meth:`DatabaseManager.enroll_local`) is refused. Enrolments otherwise arrive through sync.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fr_core.errors import FrEdgeError
from fr_core.interfaces import (
    ClockedStorage,
    ComponentKind,
    LeaseRenewingStorage,
    SealingStorage,
    Storage,
)
from fr_core.plugins import BuildContext, build_registry

MAX_DIM = 4096
USER_ID_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")
MAX_NAME_LEN = 256


class StorageError(FrEdgeError):
    """The local database failed or refused an operation."""


class DevModeError(StorageError):
    """An operation that only dev mode allows (local enrolment, display names)."""


class OutboxFullError(StorageError):
    """The outbox is full and its policy is ``reject_new``: the event was not stored."""


class SyncError(FrEdgeError):
    """A sync page could not be fetched or applied; nothing of it was written."""


@dataclass(frozen=True)
class Enrollment:
    user_id: str
    model: str
    embedding: np.ndarray  # float32, shape (dim,)
    detector: str | None = None
    display_name: str | None = None
    sync_version: int | None = None
    synced_at: str | None = None
    created_at: str | None = None

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[0])


@dataclass(frozen=True)
class SyncState:
    version: int = 0
    last_success_at: float | None = None  # epoch seconds
    last_attempt_at: float | None = None
    last_error: str | None = None
    resync_in_progress: bool = False


@dataclass(frozen=True)
class Change:
    """One applied enrolment change (what the matcher needs to follow the database)."""

    kind: Literal["upsert", "delete"]
    user_id: str
    version: int
    model: str | None = None
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class ApplyResult:
    version: int  # the device's version after the page
    applied: Sequence[Change] = ()
    stale: int = 0  # changes older than what the database already holds
    skipped_page: bool = False  # the whole page was stale or a duplicate


class EventPayload(dict[str, Any]):
    """An event as a dict, carrying its exact wire JSON (UTF-8 bytes) in ``wire`` when the
    storage has it, so transports need not serialise, re-escape and encode a 30 KB image
    again: the bytes go to the socket as they are."""

    wire: bytes | None = None


def wire_json(event: Mapping[str, Any]) -> bytes:
    """An event's JSON as UTF-8 bytes: its ``wire`` form when it has one, else serialised."""
    wire: bytes | None = getattr(event, "wire", None)
    if wire is not None:
        return wire
    return json.dumps(dict(event), separators=(",", ":")).encode()


@dataclass(frozen=True)
class OutboxItem:
    id: int
    event_id: str
    payload: EventPayload  # the event, image included (base64) if it had one
    attempts: int
    created_at: float


@dataclass(frozen=True)
class OutboxStats:
    depth: int = 0
    bytes: int = 0
    oldest_created_at: float | None = None
    dropped_total: int = 0  # drop_oldest policy
    rejected_total: int = 0  # reject_new policy
    expired_total: int = 0  # older than max_age
    sent_total: int = 0
    failed_attempts_total: int = 0
    counters: Mapping[str, int] = field(default_factory=dict)
    policy: OutboxPolicy | None = None  # the bounds these figures are measured against

    @property
    def full(self) -> bool:
        """At a bound: the next event is dropped or refused, as the policy says."""
        p = self.policy
        return p is not None and (self.depth >= p.max_events or self.bytes >= p.max_bytes)


@dataclass(frozen=True)
class OutboxPolicy:
    """Bounds of the outbox. When full, ``reject_new`` refuses the new event (OutboxFullError)
    and ``drop_oldest`` deletes the oldest; both are logged and counted, never silent."""

    max_events: int = 100_000
    max_bytes: int = 2 * 1024**3
    max_age_seconds: float = 30 * 86400.0
    when_full: Literal["reject_new", "drop_oldest"] = "drop_oldest"

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1024 or self.max_age_seconds <= 0:
            raise ValueError("outbox bounds must be positive (max_bytes >= 1024)")
        if self.when_full not in ("reject_new", "drop_oldest"):
            raise ValueError(f"when_full must be reject_new or drop_oldest, got {self.when_full!r}")


def check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not USER_ID_RE.match(user_id):
        raise ValueError(
            f"user_id must be 1-128 characters without control characters, got {user_id!r}"
        )
    return user_id


def check_model(model: object) -> str:
    if not isinstance(model, str) or not MODEL_RE.match(model):
        raise ValueError(
            "model must be 1-64 characters (letters, digits, '.', '_', ':', '+', '-') starting "
            f"with a letter or digit, got {model!r}"
        )
    return model


def check_embedding(embedding: object, expected_dim: int | None = None) -> np.ndarray:
    """A finite, non-zero, 1-D float32 vector (a (1, d) row is accepted), returned contiguous."""
    if not isinstance(embedding, np.ndarray):
        raise ValueError(f"embedding must be a numpy array, got {type(embedding).__name__}")
    if embedding.dtype != np.float32:
        raise ValueError(
            f"embedding must have dtype float32, got {embedding.dtype} "
            "(convert with .astype(np.float32))"
        )
    vec = embedding.reshape(-1) if embedding.ndim == 2 and embedding.shape[0] == 1 else embedding
    if vec.ndim != 1:
        raise ValueError(f"embedding must be 1-D, got shape {embedding.shape}")
    if vec.size == 0:
        raise ValueError("embedding is empty")
    if vec.size > MAX_DIM:
        raise ValueError(f"embedding has {vec.size} values; at most {MAX_DIM} are allowed")
    if expected_dim is not None and vec.size != expected_dim:
        raise ValueError(
            f"embedding has dimension {vec.size}, expected {expected_dim} for this model"
        )
    if not np.isfinite(vec).all():
        raise ValueError("embedding contains NaN or infinite values")
    norm = float(np.linalg.norm(vec))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError("embedding is all zeros (it has no direction to compare)")
    return np.ascontiguousarray(vec)


def check_display_name(name: object) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str) or not (0 < len(name) <= MAX_NAME_LEN) or not name.isprintable():
        raise ValueError(f"display_name must be 1-{MAX_NAME_LEN} printable characters")
    return name


class DatabaseManager:
    """The device database (README "Database Manager"), backed by a storage plugin.

    ``path`` is a file path (SQLite) or any SQLAlchemy URL. Call :meth:`initialize` once
    before use (it creates or upgrades the schema); it is idempotent. ``storage_options``
    are the plugin's own options, e.g. for ``sqlite`` where the device key comes from:
    ``{"key": {"provider": "env", "options": {"variable": "FR_EDGE_DEVICE_KEY"}}}``
    (default: the key file ``<data folder>.key`` beside the database's folder, made on first
    start).
    """

    def __init__(
        self,
        path: str,
        dev_mode: bool = False,
        *,
        storage: str = "sqlite",
        outbox_policy: OutboxPolicy | None = None,
        registry: Any = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = str(path)
        self.dev_mode = bool(dev_mode)
        reg = registry or build_registry()
        # the plugin's own options (for sqlite: key, on_key_loss, busy_timeout_seconds...)
        options: dict[str, Any] = dict(storage_options or {})
        options |= {"path": self.path, "dev_mode": self.dev_mode}
        if outbox_policy is not None:
            options["outbox"] = {
                "max_events": outbox_policy.max_events,
                "max_bytes": outbox_policy.max_bytes,
                "max_age_seconds": outbox_policy.max_age_seconds,
                "when_full": outbox_policy.when_full,
            }
        self.storage: Storage = reg.create(ComponentKind.STORAGE, storage, options)

    @classmethod
    def from_config(
        cls, config: Any, registry: Any = None, *, inspect: bool = False
    ) -> DatabaseManager:
        """The database a device config describes: its ``storage`` block (default: the
        ``sqlite`` plugin) at ``db_path``, in the config's ``dev_mode``. ``inspect`` (for
        commands that only look, like ``fr-edge status``): the storage must not make a new
        device key nor forget what another key sealed; it refuses to open instead."""

        reg = registry or build_registry()
        block = config.storage
        name = block.plugin if block is not None else "sqlite"
        options = block.options if block is not None else {}
        self = cls.__new__(cls)
        self.path = str(options.get("path") or config.db_path)
        self.dev_mode = bool(options.get("dev_mode", config.dev_mode))
        extras = {"inspect": True, "create_key": False} if inspect else {}
        ctx = BuildContext(registry=reg, app_config=config, extras=extras)
        self.storage = reg.create(ComponentKind.STORAGE, name, options, ctx, path="storage")
        return self

    # --- the README's methods ---

    def initialize(self) -> None:
        """Create or upgrade the schema (forward migrations), idempotent."""
        self.storage.initialize()

    def upsert_enrollment(
        self,
        user_id: str,
        embedding: np.ndarray,
        model: str,
        *,
        detector: str | None = None,
        display_name: str | None = None,
    ) -> None:
        """Add or replace a user's embedding. ``display_name`` is refused outside dev mode."""
        self.storage.upsert_enrollment(
            user_id, embedding, model, detector=detector, display_name=display_name
        )

    def get_all_enrollments(self, model: str | None = None) -> dict[str, np.ndarray]:
        """``{user_id: embedding}`` for matching (optionally of one model only)."""
        return self.storage.get_all_enrollments(model)

    # --- what the rest of the device needs ---

    def enroll_local(
        self,
        user_id: str,
        embedding: np.ndarray,
        model: str,
        display_name: str | None = None,
        detector: str | None = None,
    ) -> None:
        """Local enrolment (from photos on the device): dev mode only."""
        if not self.dev_mode:
            raise DevModeError(
                "local enrolment is refused in production mode (dev_mode=False): employees are "
                "enrolled centrally and reach the device by sync"
            )
        self.upsert_enrollment(
            user_id, embedding, model, detector=detector, display_name=display_name
        )

    def delete_enrollment(self, user_id: str) -> bool:
        """Delete a user's embedding for real (the bytes are overwritten); True if it existed."""
        return self.storage.delete_enrollment(user_id)

    def get_enrollment(self, user_id: str) -> Enrollment | None:
        return self.storage.get_enrollment(user_id)

    def iter_enrollments(self, model: str | None = None, batch: int = 1000) -> Iterator[Enrollment]:
        """Stream every enrolment (constant memory), ordered by user_id."""
        return iter(self.storage.iter_enrollments(model, batch))

    def iter_embedding_blocks(
        self, batch: int = 5000
    ) -> Iterator[tuple[str, list[str], np.ndarray]]:
        """Every embedding as ``(model, user_ids, (n, dim) float32 matrix)`` blocks, grouped
        by model: the fast way to (re)build a matcher."""
        return iter(self.storage.iter_embedding_blocks(batch))

    def count_enrollments(self) -> dict[str, int]:
        """Enrolments per model."""
        return self.storage.count_enrollments()

    def get_config(self, key: str, default: str | None = None) -> str | None:
        return self.storage.get_config(key, default)

    def set_config(self, key: str, value: str) -> None:
        self.storage.set_config(key, value)

    def get_sync_state(self) -> SyncState:
        return self.storage.get_sync_state()

    # --- sync (used by SyncManager) ---

    def apply_changes(self, page: Any) -> ApplyResult:
        """Apply one validated sync page atomically
        (:class:`fr_core.syncpage.ChangesPage`)."""
        return self.storage.apply_changes(page)

    def record_sync_attempt(self, error: str | None) -> None:
        self.storage.record_sync_attempt(error)

    def begin_resync(self) -> None:
        """Start a full resync: following pages go to a staging table."""
        self.storage.begin_resync()

    def finish_resync(self, version: int) -> None:
        """Swap the staged enrolments in, in one transaction, at ``version``."""
        self.storage.finish_resync(version)

    def abort_resync(self) -> None:
        self.storage.abort_resync()

    # --- outbox ---

    def outbox_append(self, event: Mapping[str, Any]) -> None:
        self.storage.outbox_append(event)

    def outbox_append_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.storage.outbox_append_many(events)

    def outbox_claim(self, limit: int = 100, lease_seconds: float = 60.0) -> list[OutboxItem]:
        return self.storage.outbox_claim(limit, lease_seconds)

    def outbox_ack(self, event_ids: Sequence[str]) -> int:
        return self.storage.outbox_ack(event_ids)

    def outbox_fail(self, event_ids: Sequence[str], error: str, retry_in: float) -> None:
        self.storage.outbox_fail(event_ids, error, retry_in)

    def clock_status(self) -> dict[str, Any]:
        """Whether the wall clock is synchronised and the store's lifetime clock
        (fr_core.clock); empty from a storage plugin without one."""
        if isinstance(self.storage, ClockedStorage):
            return dict(self.storage.clock_status())
        return {}

    def sealing_status(self) -> dict[str, Any]:
        """Whether the templates are sealed at rest, the cipher, the key's id (never the key)
        and where it comes from; ``{"sealed": False}`` from a storage plugin that cannot say."""
        if isinstance(self.storage, SealingStorage):
            return dict(self.storage.sealing_status())
        return {"sealed": False}

    def outbox_renew(self, event_ids: Sequence[str], lease_seconds: float) -> int:
        """Extend the leases of claimed events still on the wire; returns how many were
        renewed (0 from a storage plugin that cannot: its leases then only expire)."""
        if isinstance(self.storage, LeaseRenewingStorage):
            return int(self.storage.outbox_renew(event_ids, lease_seconds))
        return 0

    def outbox_release_claims(self) -> int:
        """End every lease (claims of a worker that died); returns how many were held. A
        worker calls this when it starts: there is one worker per database."""
        return self.storage.outbox_release_claims()

    def outbox_stats(self) -> OutboxStats:
        return self.storage.outbox_stats()

    def integrity_check(self) -> str:
        return self.storage.integrity_check()

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> DatabaseManager:
        self.initialize()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
