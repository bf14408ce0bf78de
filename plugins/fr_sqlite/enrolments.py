"""The enrolled_users table: upserts, deletions (overwritten, then the WAL truncated),
reads, streams and the embedding blocks matchers are built from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import (
    Connection,
    delete,
    func,
    insert,
    select,
    update,
)

from fr_core.storage import (
    DevModeError,
    Enrollment,
    StorageError,
    check_display_name,
    check_embedding,
    check_model,
    check_user_id,
)
from fr_sqlite import schema as s
from fr_sqlite.database import Database, now_iso

log = logging.getLogger(__name__)
T = TypeVar("T")

log = logging.getLogger(__name__)


class Enrolments(Database):
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
        now = now_iso()
        values = {
            "model": model,
            "detector": detector,
            "embedding": self._seal(user_id, model, vec),
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

    def _seal(self, user_id: str, model: str, vec: np.ndarray) -> bytes:
        """One template as it is stored: little-endian float32, sealed (fr_sqlite.templates)."""
        return self.sealer.seal(user_id, model, vec.astype("<f4").tobytes())

    def _vector(self, user_id: str, model: str | None, blob: bytes) -> np.ndarray:
        """One template, opened (in memory only)."""
        return np.frombuffer(self.sealer.open(user_id, model, blob), dtype="<f4").astype(np.float32)

    def _open_raw(self, model: str, row: Any) -> bytes:
        return self.sealer.open(row.user_id, model, row.embedding)

    def _open_each(self, rows: Sequence[Any], open_row: Callable[[Any], T]) -> list[tuple[Any, T]]:
        """``(row, open_row(row))`` for the rows that open; the others (failing
        authentication, or empty) are forgotten (:meth:`_forget_unopenable`)."""
        opened, bad = [], []
        for row in rows:
            try:
                opened.append((row, open_row(row)))
            except StorageError:
                bad.append(row.user_id)
        if bad:
            self._forget_unopenable(bad)
        return opened

    def _row_to_enrollment(self, row: Any) -> Enrollment:
        vec = self._vector(row.user_id, row.model, row.embedding)
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
        u = s.enrolled_users
        q = select(u.c.user_id, u.c.model, u.c.embedding)
        if model is not None:
            q = q.where(u.c.model == model)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        opened = self._open_each(rows, lambda r: self._vector(r.user_id, r.model, r.embedding))
        return {r.user_id: vec for r, vec in opened}

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
            for _row, item in self._open_each(rows, self._row_to_enrollment):
                yield item
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
                last = rows[-1].user_id
                opened = self._open_each(rows, partial(self._open_raw, model))
                if opened:
                    ids = [r.user_id for r, _ in opened]
                    block = np.frombuffer(b"".join(raw for _, raw in opened), dtype="<f4")
                    yield model, ids, block.reshape(len(ids), -1).astype(np.float32)

    def _forget_unopenable(self, user_ids: list[str]) -> None:
        """Rows that fail authentication (moved to another employee or model, or damaged)
        are never matched: deleted, and the next sync made a full resync that brings the
        real ones back. The device keeps running."""
        with self.writer.begin() as conn:
            conn.execute(delete(s.enrolled_users).where(s.enrolled_users.c.user_id.in_(user_ids)))
            conn.execute(update(s.sync_state).values(version=0))
            self._counter(conn, "templates_failed_authentication", len(user_ids))
        log.error(
            "%d template(s) fail authentication (%s%s): a row moved to another employee or "
            "model, or a damaged file; they are deleted and the next sync is a full resync",
            len(user_ids),
            ", ".join(user_ids[:3]),
            ", ..." if len(user_ids) > 3 else "",
        )

    def count_enrollments(self) -> dict[str, int]:
        q = select(s.enrolled_users.c.model, func.count()).group_by(s.enrolled_users.c.model)
        with self.engine.connect() as conn:
            return {str(m): int(n) for m, n in conn.execute(q)}
