"""Corruption and resources (issue 6, item 4) on real SQLite files: a corrupt database is
detected at start, moved aside and rebuilt by a full resync, its lost events reported; a
full disk while writing the outbox is a clear error and corrupts nothing; a full outbox
applies its policy and says so in the figures the heartbeat carries."""

from __future__ import annotations

import base64
import logging
import os
import sqlite3

import numpy as np
import pytest
from sqlalchemy import event

from fr_core import DatabaseManager, OutboxPolicy, StorageError, SyncManager
from fr_core.delivery.outbox import OutboxWorker
from fr_core.testing.syncsource import MemoryBroker

rng = np.random.default_rng(7)
MODELS = {"SFace": 128}


def ev(i, image=b"\xff\xd8" + b"j" * 3000):
    return {
        "event_id": f"EV1-{1795800000000 + i}-{i:06x}",
        "event_type": "facial_id",
        "device_id": "cam-001",
        "user_id": f"EMP-{i}",
        "image": base64.b64encode(image).decode(),
    }


@pytest.fixture
def broker():
    b = MemoryBroker()
    for i in range(40):
        b.enrol(f"EMP-{i:03d}", rng.standard_normal(128).astype(np.float32))
    return b


def synced_device(path, broker, unsent=3):
    with DatabaseManager(str(path)) as db:
        assert SyncManager(db, broker, models=MODELS).sync_now().ok
        db.outbox_append_many([ev(i) for i in range(unsent)])
        db.storage.checkpoint()


def damage(path, offset_pages=2, pages=3):
    """Overwrite b-tree pages in the middle of the file (the header stays valid)."""
    size = os.path.getsize(path)
    page = 4096
    assert size > (offset_pages + pages) * page
    with open(path, "r+b") as f:
        f.seek(offset_pages * page)
        f.write(rng.bytes(pages * page))


@pytest.mark.parametrize("how", ["pages", "header"])
def test_a_corrupt_database_is_moved_aside_and_rebuilt_by_a_full_resync(
    tmp_path, broker, caplog, how
):
    path = tmp_path / "dev" / "faces.db"
    synced_device(path, broker, unsent=3)
    if how == "pages":
        damage(path)
    else:
        with open(path, "r+b") as f:
            f.write(b"this is no longer an SQLite file!")
    with caplog.at_level(logging.ERROR), DatabaseManager(str(path)) as db:
        # detected at start, moved aside, replaced by an empty database
        (aside,) = [
            p
            for p in path.parent.iterdir()
            if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))
        ]
        assert "is corrupt" in caplog.text and str(aside) in caplog.text
        if how == "header":
            assert "no unsent event could be read from it" in caplog.text
        assert db.integrity_check() == "ok"
        assert db.count_enrollments() == {} and db.get_sync_state().version == 0
        assert db.outbox_stats().counters["corruption_recoveries"] == 1
        # the next sync is a full resync that brings every enrolment back
        result = SyncManager(db, broker, models=MODELS).sync_now()
        assert result.ok and result.snapshot
        local = db.get_all_enrollments()
        assert set(local) == set(broker.live())
        assert all(np.array_equal(local[u], v) for u, v in broker.live().items())
    # the damaged file is kept for inspection, 0600 like the database
    assert oct(aside.stat().st_mode & 0o777) == "0o600"


def test_lost_unsent_events_are_counted_when_they_can_be(tmp_path, broker, caplog):
    path = tmp_path / "faces.db"
    synced_device(path, broker, unsent=5)
    # damage the enrolment pages only: the outbox can still be counted
    con = sqlite3.connect(path)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='enrolled_users'").fetchone()
    con.close()
    damage(path, offset_pages=root[0] - 1, pages=1)
    with caplog.at_level(logging.ERROR), DatabaseManager(str(path)) as db:
        assert "5 unsent event(s) in it are LOST" in caplog.text
        assert db.storage.last_recovery["unsent_lost"] == 5


def test_fail_mode_refuses_instead(tmp_path, broker):
    path = tmp_path / "faces.db"
    synced_device(path, broker)
    damage(path)
    from fr_core.interfaces import ComponentKind
    from fr_core.plugins import build_registry

    store = build_registry().create(
        ComponentKind.STORAGE, "sqlite", {"path": str(path), "on_corruption": "fail"}
    )
    with pytest.raises(StorageError, match="is corrupt"):
        store.initialize()
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))


def test_a_healthy_database_is_left_alone(tmp_path, broker, caplog):
    path = tmp_path / "faces.db"
    synced_device(path, broker)
    with caplog.at_level(logging.WARNING), DatabaseManager(str(path)) as db:
        assert db.count_enrollments() == {"SFace": 40} and db.outbox_stats().depth == 3
    assert "corrupt" not in caplog.text and not list(tmp_path.glob("*.corrupt-*"))


def limit_pages(db, extra_pages):
    """Every new connection of the store may grow the file by ``extra_pages`` pages only:
    SQLite then fails writes with SQLITE_FULL, exactly as on a full disk."""
    con = sqlite3.connect(db.path)
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    engine = db.storage.engine
    event.listen(
        engine,
        "connect",
        lambda c, _r: c.execute(f"PRAGMA max_page_count = {pages + extra_pages}"),
    )
    engine.dispose()


def test_a_full_disk_while_writing_the_outbox(tmp_path):
    with DatabaseManager(str(tmp_path / "faces.db")) as db:
        db.outbox_append_many([ev(i) for i in range(5)])
        limit_pages(db, extra_pages=4)
        stored, error = 5, None
        for i in range(5, 200):
            try:
                db.outbox_append_many([ev(i), ev(1000 + i)])  # two per transaction
                stored += 2
            except StorageError as exc:
                error = exc
                break
        assert error is not None and "the disk is full: 2 event(s) not stored" in str(error)
        # nothing half-written: the failed batch is absent, the rest intact and consistent
        assert db.integrity_check() == "ok"
        stats = db.outbox_stats()
        assert stats.depth == stored
        ids = {it.event_id for it in db.outbox_claim(limit=10_000)}
        assert ev(i)["event_id"] not in ids and len(ids) == stored
        con = sqlite3.connect(db.path)
        assert con.execute("SELECT count(*) FROM outbox_images").fetchone()[0] == stored
        assert con.execute("SELECT count(*) FROM outbox_keys").fetchone()[0] == stored


def test_a_full_outbox_applies_its_policy_and_reports_it(tmp_path):
    policy = OutboxPolicy(max_events=10, when_full="drop_oldest")
    with DatabaseManager(str(tmp_path / "faces.db"), outbox_policy=policy) as db:
        db.outbox_append_many([ev(i) for i in range(14)])
        worker = OutboxWorker(db, transport=None)
        figures = worker.stats()  # what the heartbeat's "outbox" carries
        assert figures["queued"] == 10 and figures["full"] is True
        assert figures["policy"] == "drop_oldest" and figures["dropped_total"] == 4
    policy = OutboxPolicy(max_events=10, when_full="reject_new")
    with DatabaseManager(str(tmp_path / "r.db"), outbox_policy=policy) as db:
        db.outbox_append_many([ev(i) for i in range(10)])
        with pytest.raises(Exception, match="rejected"):
            db.outbox_append(ev(99))
        figures = OutboxWorker(db, transport=None).stats()
        assert figures["full"] is True and figures["rejected_total"] == 1
        assert figures["policy"] == "reject_new"
