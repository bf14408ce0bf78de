"""Enrolment change pages: the wire format of versioned sync, and its validation.

A page answers "what changed after version N" (docs/broker-api.md)::

    {"from_version": 100, "to_version": 130, "latest_version": 250, "more": true,
     "full_resync": false, "snapshot": false, "cursor": null,
     "upserts": [{"user_id": "EMP-1", "model": "SFace", "dim": 128, "version": 101,
                  "embedding": "<base64 of dim little-endian float32>",
                  "detector": "YuNet", "display_name": null}],
     "deletions": [{"user_id": "EMP-9", "version": 102}]}

:func:`parse_page` validates a page completely before anything is written: a page with any bad
part (wrong types, bad dimension, NaN, an unknown model, oversize, non-UTF-8, versions outside
its range or repeated) is rejected whole with a :class:`~fr_core.storage.SyncError` that says
where the problem is.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from fr_core.storage import (
    MAX_DIM,
    MAX_NAME_LEN,
    Change,
    SyncError,
    check_embedding,
    check_model,
    check_user_id,
)

MAX_PAGE_BYTES = 32 * 1024 * 1024
MAX_PAGE_CHANGES = 20_000


class _Upsert(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str
    model: str
    dim: StrictInt = Field(ge=1, le=MAX_DIM)
    version: StrictInt = Field(ge=1)
    embedding: str
    detector: str | None = Field(None, max_length=64)
    display_name: str | None = Field(None, max_length=MAX_NAME_LEN)


class _Deletion(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str
    version: StrictInt = Field(ge=1)


class _Page(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    from_version: StrictInt = Field(ge=0)
    to_version: StrictInt = Field(ge=0)
    latest_version: StrictInt = Field(ge=0)
    more: StrictBool = False
    full_resync: StrictBool = False
    snapshot: StrictBool = False
    cursor: str | None = Field(None, min_length=1, max_length=256)
    total: StrictInt | None = Field(None, ge=0)  # snapshot pages: upserts in the whole snapshot
    upserts: list[_Upsert] = Field(default_factory=list)
    deletions: list[_Deletion] = Field(default_factory=list)


@dataclass(frozen=True)
class UpsertItem:
    user_id: str
    model: str
    embedding: np.ndarray
    version: int
    detector: str | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class DeleteItem:
    user_id: str
    version: int


@dataclass(frozen=True)
class ChangesPage:
    """A validated page; ``changes`` are sorted by version."""

    from_version: int
    to_version: int
    latest_version: int
    more: bool
    full_resync: bool
    changes: tuple[UpsertItem | DeleteItem, ...]
    snapshot: bool = False
    cursor: str | None = None
    total: int | None = None

    @property
    def upserts(self) -> list[UpsertItem]:
        return [c for c in self.changes if isinstance(c, UpsertItem)]

    @property
    def deletions(self) -> list[DeleteItem]:
        return [c for c in self.changes if isinstance(c, DeleteItem)]


def decode_embedding(text: str, dim: int) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not standard base64") from None
    if len(raw) != 4 * dim:
        raise ValueError(f"holds {len(raw)} bytes; dim {dim} needs {4 * dim} (float32)")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def encode_embedding(vec: np.ndarray) -> str:
    """The wire encoding: base64 of little-endian float32 values."""
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")


def parse_page(
    raw: bytes | str | Mapping[str, Any],
    *,
    models: Mapping[str, int] | None = None,
    max_bytes: int = MAX_PAGE_BYTES,
    max_changes: int = MAX_PAGE_CHANGES,
) -> ChangesPage:
    """Validate a page (bytes, text or an already-decoded mapping) or raise SyncError.

    ``models`` maps the embedding models this device can use to their dimension; an upsert
    for any other model, or with another dimension, rejects the page. ``None`` accepts any
    model (the storage still refuses a dimension that differs from that model's enrolments).
    """
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > max_bytes:
            raise SyncError(f"sync page of {len(raw)} bytes exceeds the limit of {max_bytes}")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SyncError(f"sync page is not UTF-8 (byte {exc.start})") from None
    if isinstance(raw, str):
        if len(raw) > max_bytes:
            raise SyncError(f"sync page of {len(raw)} characters exceeds the limit of {max_bytes}")
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SyncError(f"sync page is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(raw, Mapping):
        raise SyncError(f"sync page must be a JSON object, got {type(raw).__name__}")
    n_changes = len(raw.get("upserts") or []) + len(raw.get("deletions") or [])
    if n_changes > max_changes:
        raise SyncError(f"sync page has {n_changes} changes; at most {max_changes} are allowed")
    try:
        page = _Page.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise SyncError(f"malformed sync page: {where}: {err['msg']}{more}") from None
    if not page.from_version <= page.to_version <= page.latest_version:
        raise SyncError(
            "malformed sync page: need from_version <= to_version <= latest_version, got "
            f"{page.from_version}, {page.to_version}, {page.latest_version}"
        )
    if page.snapshot:
        if page.from_version != 0 or page.deletions or page.full_resync:
            raise SyncError(
                "malformed sync page: a snapshot page starts at version 0 and holds no deletions"
            )
        if page.more and page.cursor is None:
            raise SyncError("malformed sync page: a snapshot page with more to come needs a cursor")
    if page.full_resync and (page.upserts or page.deletions or page.more):
        raise SyncError("malformed sync page: a full_resync answer carries no changes")
    changes: list[UpsertItem | DeleteItem] = []
    seen: set[int] = set()
    page_dims: dict[str, int] = {}
    for i, u in enumerate(page.upserts):
        where = f"upserts.{i} (user_id {u.user_id[:64]!r})"
        try:
            check_user_id(u.user_id)
            check_model(u.model)
            if models is not None:
                if u.model not in models:
                    known = ", ".join(sorted(models)) or "none"
                    raise ValueError(f"unknown model {u.model!r}; this device uses {known}")
                if models[u.model] != u.dim:
                    raise ValueError(
                        f"dim {u.dim} does not match model {u.model!r} ({models[u.model]})"
                    )
            if page_dims.setdefault(u.model, u.dim) != u.dim:
                raise ValueError(f"model {u.model!r} appears with two dimensions in one page")
            try:
                vec = check_embedding(decode_embedding(u.embedding, u.dim))
            except ValueError as exc:
                raise ValueError(f"embedding {exc}") from None
        except ValueError as exc:
            raise SyncError(f"malformed sync page: {where}: {exc}") from None
        changes.append(UpsertItem(u.user_id, u.model, vec, u.version, u.detector, u.display_name))
    for i, d in enumerate(page.deletions):
        try:
            check_user_id(d.user_id)
        except ValueError as exc:
            raise SyncError(f"malformed sync page: deletions.{i}: {exc}") from None
        changes.append(DeleteItem(d.user_id, d.version))
    for c in changes:
        if not page.from_version < c.version <= page.to_version:
            raise SyncError(
                f"malformed sync page: change of {c.user_id!r} has version {c.version}, outside "
                f"the page's range ({page.from_version}, {page.to_version}]"
            )
        if c.version in seen:
            raise SyncError(f"malformed sync page: version {c.version} appears twice")
        seen.add(c.version)
    changes.sort(key=lambda c: c.version)
    return ChangesPage(
        from_version=page.from_version,
        to_version=page.to_version,
        latest_version=page.latest_version,
        more=page.more,
        full_resync=page.full_resync,
        changes=tuple(changes),
        snapshot=page.snapshot,
        cursor=page.cursor,
        total=page.total,
    )


def as_change(item: UpsertItem | DeleteItem) -> Change:
    if isinstance(item, UpsertItem):
        return Change("upsert", item.user_id, item.version, item.model, item.embedding)
    return Change("delete", item.user_id, item.version)
