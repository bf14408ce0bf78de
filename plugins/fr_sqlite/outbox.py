"""The outbox: events appended durably (images sealed), bounded by count, bytes and age,
claimed under leases on the lifetime clock, acknowledged, failed and retried."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from fr_core.storage import (
    EventPayload,
    OutboxFullError,
    OutboxItem,
    OutboxStats,
    StorageError,
)
from fr_sqlite import schema as s
from fr_sqlite.database import Database
from fr_sqlite.recovery import short
from fr_sqlite.sealing import seal, unseal

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


class Outbox(Database):
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
                        wrapped = self.sealer.wrap(event_id, key)
                        conn.execute(insert(s.outbox_keys).values(outbox_id=new_id[0], key=wrapped))
                    depth, size = depth + 1, size + nbytes
                    self._counter(conn, "outbox_depth", 1)
                    self._counter(conn, "outbox_bytes", nbytes)
        except OutboxFullError:
            with self.writer.begin() as conn:
                self._counter(conn, "rejected_total", 1)
            log.warning("outbox full: new event rejected (policy reject_new)")
            raise
        except IntegrityError as exc:
            raise StorageError(f"outbox append failed: {short(exc)}") from exc
        except SQLAlchemyError as exc:
            if "database or disk is full" in str(exc):
                raise StorageError(
                    f"the disk is full: {len(rows)} event(s) not stored (the transaction was "
                    f"rolled back, nothing half-written); free space where {self._target} "
                    "lives"
                ) from exc
            raise StorageError(f"outbox append failed: {short(exc)}") from exc

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
            b64 = self._open_image(event_id, key, sealed) if sealed is not None else None
            if b64 is None:
                payload.wire = text.encode()
            else:
                payload["image"] = b64.decode("ascii")
                # the stored JSON is an object without "image": splice it in as bytes, in
                # one allocation, nothing re-escaped or re-encoded on the way to the socket
                head = text.encode()[:-1] + b"," if len(text) > 2 else b"{"
                payload.wire = b"".join((head, b'"image":"', b64, b'"}'))
            items.append(OutboxItem(rid, event_id, payload, attempts, created_at))
        return items

    def _open_image(self, event_id: str, key: bytes | None, sealed: bytes) -> bytes | None:
        """A queued image's base64 (ASCII, as stored), or None when it cannot be opened
        (damaged, or its key): the event is then sent without it, logged and counted,
        instead of holding back every event behind it."""
        try:
            return unseal(event_id, self.sealer.unwrap(event_id, key), sealed)
        except StorageError as exc:  # the event matters more than its picture
            log.error("%s: event %s is sent without its face image", exc, event_id)
            with self.writer.begin() as conn:
                self._counter(conn, "images_unopenable_total", 1)
            return None

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
