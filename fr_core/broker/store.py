"""The reference broker's store: enrolment changes (the sync feed), the event ledger
(deduplicated by event_id) and heartbeats, in SQLite through SQLAlchemy.

Both front ends write here: the HTTPS server (:mod:`fr_core.broker.https`) and the MQTT
bridge (:mod:`fr_core.broker.mqtt`). A harness for another protocol is "your server plus a
bridge into :class:`BrokerStore`" (docs/writing_plugins.md).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)

from fr_core.events import format_timestamp, parse_event
from fr_core.syncpage import encode_embedding

log = logging.getLogger(__name__)

metadata = MetaData()
changes = Table(
    "changes",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False, index=True),
    Column("op", Text, nullable=False),  # "upsert" | "delete"
    Column("model", Text),
    Column("dim", Integer),
    Column("embedding", LargeBinary),
    Column("detector", Text),
    Column("display_name", Text),
    Column("created_at", Text, nullable=False),
    sqlite_autoincrement=True,
)
meta = Table("meta", metadata, Column("key", Text, primary_key=True), Column("value", Text))
events = Table(
    "events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("device_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("deliveries", Integer, nullable=False, default=1),
    Column("payload", Text, nullable=False),
    Column("image", LargeBinary),
    Column("seq", Integer, nullable=False),  # arrival order
)
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("payload", Text, nullable=False),
)


class BrokerStore:
    """The broker's state: versioned enrolment changes, received events, heartbeats."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(
            f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False}
        )

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=FULL")  # acknowledged = on disk

        @event.listens_for(self.engine, "begin")
        def _begin(conn: Any) -> None:
            write = conn.get_execution_options().get("fr_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        self.writer = self.engine.execution_options(fr_write=True)
        metadata.create_all(self.writer)
        self._snapshots: dict[str, int] = {}
        self._lock = threading.Lock()

    # --- enrolments ---

    def enrol(
        self,
        user_id: str,
        embedding: np.ndarray,
        model: str = "SFace",
        detector: str | None = None,
        display_name: str | None = None,
    ) -> int:
        version = self.enrol_many([(user_id, embedding, model, detector, display_name)])
        assert version is not None
        return version

    def enrol_many(
        self, items: list[tuple[str, np.ndarray, str, str | None, str | None]]
    ) -> int | None:
        """Enrol (user_id, embedding, model, detector, display_name) records in one
        transaction: all of them, or none if any fails. Returns the last version."""
        version = None
        with self.writer.begin() as conn:
            for user_id, embedding, model, detector, display_name in items:
                vec = np.asarray(embedding, dtype="<f4").reshape(-1)
                if not np.isfinite(vec).all() or not vec.any():
                    raise ValueError(f"{user_id}: embedding must be finite and non-zero")
                key = conn.execute(
                    insert(changes).values(
                        user_id=user_id,
                        op="upsert",
                        model=model,
                        dim=int(vec.size),
                        embedding=vec.tobytes(),
                        detector=detector,
                        display_name=display_name,
                        created_at=_now(),
                    )
                ).inserted_primary_key
                assert key is not None
                version = int(key[0])
        return version

    def remove(self, user_id: str) -> int | None:
        with self.writer.begin() as conn:
            last = conn.execute(
                select(changes.c.op)
                .where(changes.c.user_id == user_id)
                .order_by(changes.c.version.desc())
                .limit(1)
            ).scalar()
            if last != "upsert":
                return None
            key = conn.execute(
                insert(changes).values(user_id=user_id, op="delete", created_at=_now())
            ).inserted_primary_key
            assert key is not None
            return int(key[0])

    def version(self) -> int:
        """The newest version issued (deleting compacted rows never lowers it)."""
        with self.engine.connect() as conn:
            return self._issued(conn)

    @staticmethod
    def _issued(conn: Any) -> int:
        seq = conn.exec_driver_sql(
            "SELECT seq FROM sqlite_sequence WHERE name = 'changes'"
        ).scalar()
        return int(seq or 0)

    def horizon(self) -> int:
        with self.engine.connect() as conn:
            v = conn.execute(select(meta.c.value).where(meta.c.key == "horizon")).scalar()
        return int(v or 0)

    def compact(self) -> None:
        """Drop superseded changes and tombstones: older devices must then resync fully."""
        with self.writer.begin() as conn:
            latest = (
                select(changes.c.user_id, func.max(changes.c.version).label("v"))
                .group_by(changes.c.user_id)
                .subquery()
            )
            keep = select(latest.c.v)
            conn.execute(delete(changes).where(changes.c.version.not_in(keep)))
            conn.execute(delete(changes).where(changes.c.op == "delete"))
            v = self._issued(conn)
            conn.execute(delete(meta).where(meta.c.key == "horizon"))
            conn.execute(insert(meta).values(key="horizon", value=str(v)))

    def live(self) -> dict[str, np.ndarray]:
        out = {}
        with self.engine.connect() as conn:
            for r in conn.execute(self._state_at(None)):
                out[r.user_id] = np.frombuffer(r.embedding, "<f4").copy()
        return out

    def _state_at(self, version: int | None, after_user: str = "", limit: int | None = None) -> Any:
        c2 = changes.alias("c2")
        newest = select(func.max(c2.c.version)).where(c2.c.user_id == changes.c.user_id)
        if version is not None:
            newest = newest.where(c2.c.version <= version)
        q = (
            select(changes)
            .where(changes.c.version == newest.scalar_subquery())
            .where(changes.c.op == "upsert")
            .where(changes.c.user_id > after_user)
            .order_by(changes.c.user_id)
        )
        return q.limit(limit) if limit else q

    def changes_page(self, since: int, limit: int, cursor: str | None = None) -> dict[str, Any]:
        """One page of the sync protocol (docs/broker-api.md)."""
        latest = self.version()
        if since == 0:
            return self._snapshot(limit, cursor, latest)
        if since < self.horizon():
            return {
                "from_version": since,
                "to_version": since,
                "latest_version": latest,
                "more": False,
                "full_resync": True,
                "upserts": [],
                "deletions": [],
            }
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(changes)
                .where(changes.c.version > since)
                .order_by(changes.c.version)
                .limit(limit + 1)
            ).all()
        more = len(rows) > limit
        rows = rows[:limit]
        to_version = rows[-1].version if more else max(latest, since)
        return {
            "from_version": since,
            "to_version": to_version,
            "latest_version": latest,
            "more": more,
            "upserts": [_upsert(r) for r in rows if r.op == "upsert"],
            "deletions": [
                {"user_id": r.user_id, "version": r.version} for r in rows if r.op == "delete"
            ],
        }

    def _snapshot(self, limit: int, cursor: str | None, latest: int) -> dict[str, Any]:
        if cursor is None:
            version, after = latest, ""
        else:
            head, _, after = cursor.partition(":")
            if not head.isdigit():
                raise ValueError("bad cursor")
            version = int(head)
            if version < self.horizon():
                raise LookupError("snapshot expired: start again without a cursor")
        with self.engine.connect() as conn:
            rows = conn.execute(self._state_at(version, after, limit + 1)).all()
            total = None
            if cursor is None:
                total = len(conn.execute(self._state_at(version)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        page: dict[str, Any] = {
            "from_version": 0,
            "to_version": version,
            "latest_version": latest,
            "more": more,
            "snapshot": True,
            "cursor": f"{version}:{rows[-1].user_id}" if more else None,
            "upserts": [_upsert(r) for r in rows],
            "deletions": [],
        }
        if total is not None:
            page["total"] = total
        return page

    # --- events and heartbeats ---

    def record_events(self, device_id: str, batch: list[Any]) -> dict[str, Any]:
        accepted: list[str] = []
        duplicates: list[str] = []
        rejected: dict[str, str] = {}
        now = time.time()
        with self._lock, self.writer.begin() as conn:
            seq = int(conn.execute(select(func.count()).select_from(events)).scalar() or 0)
            for item in batch:
                eid = item.get("event_id") if isinstance(item, dict) else None
                if not isinstance(eid, str) or not eid:
                    rejected[f"#{len(rejected)}"] = "event_id missing"
                    continue
                try:
                    ev = parse_event(item)
                except ValidationError as exc:
                    err = exc.errors(include_url=False)[0]
                    rejected[eid] = f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                    continue
                if ev.device_id != device_id:
                    rejected[eid] = f"device_id {ev.device_id!r} does not match the URL"
                    continue
                done = conn.execute(
                    update(events)
                    .where(events.c.event_id == eid)
                    .values(deliveries=events.c.deliveries + 1)
                ).rowcount
                if done:
                    duplicates.append(eid)
                    continue
                data = ev.to_dict()
                image = data.pop("image", None)
                seq += 1
                conn.execute(
                    insert(events).values(
                        event_id=eid,
                        device_id=device_id,
                        event_type=ev.event_type,
                        received_at=now,
                        deliveries=1,
                        payload=json.dumps(data),
                        image=base64.b64decode(image) if image else None,
                        seq=seq,
                    )
                )
                accepted.append(eid)
        return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}

    def record_heartbeat(self, device_id: str, payload: dict[str, Any]) -> None:
        with self.writer.begin() as conn:
            conn.execute(
                insert(heartbeats).values(
                    device_id=device_id, received_at=time.time(), payload=json.dumps(payload)
                )
            )

    def ledger(self) -> list[dict[str, Any]]:
        """Every event received, once, in arrival order, with its delivery count."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(events).order_by(events.c.seq)).all()
        out = []
        for r in rows:
            d = json.loads(r.payload)
            d["image_bytes"] = len(r.image) if r.image else 0
            d["deliveries"] = r.deliveries
            out.append(d)
        return out

    def heartbeats(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                json.loads(r.payload)
                for r in conn.execute(select(heartbeats.c.payload).order_by(heartbeats.c.id))
            ]


def _upsert(r: Any) -> dict[str, Any]:
    return {
        "user_id": r.user_id,
        "model": r.model,
        "dim": r.dim,
        "version": r.version,
        "embedding": encode_embedding(np.frombuffer(r.embedding, "<f4")),
        "detector": r.detector,
        "display_name": r.display_name,
    }


def _now() -> str:
    return format_timestamp(datetime.now(timezone.utc))
