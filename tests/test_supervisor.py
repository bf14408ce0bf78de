"""One fault never stops the device (issue 12, item 1).

In process, the parts: a frame handler that raises is caught per frame, counted by kind and
logged rate-limited; an event the outbox cannot take now (a database locked past its busy
timeout, a full disk) waits in memory, in order, and is stored when the fault clears; one
the outbox refuses by its policy (``reject_new``) is counted as dropped with the policy named.

Then the whole: a real ``fr-edge run`` process on the simulated camera, to the reference
broker over real HTTPS, through a corrupt frame, a detector plugin that raises, a database
locked by another process and an outbox full while the broker refuses events; after each
fault it goes on, and the next facial_id reaches the broker.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
import yaml
from sqlalchemy import event as sa_event

from fr_core import DatabaseManager, FacialIdEvent
from fr_core.broker import ReferenceBroker
from fr_core.config import default_config
from fr_core.interfaces import ComponentKind
from fr_core.pipeline.engine import Engine
from fr_core.plugins import build_registry
from fr_core.storage import OutboxPolicy

SUPERVISOR_KEY = "supervisor-key-7788"


def engine(sink=None, frames=40, handlers=()):
    cfg = default_config(camera={"plugin": "sim", "frames": frames, "width": 64, "height": 48})
    return Engine(cfg, build_registry(), event_sink=sink, handlers=list(handlers))


def facial(i):
    return FacialIdEvent.create(
        device_id="cam-1", user_id=f"EMP-{i:03d}", distance=0.3, frames_tracked=5
    )


def test_a_failing_handler_costs_its_frames_only(caplog):
    seen = []

    def bad(engine, result):
        if result.index % 2:
            raise ValueError(f"cannot process frame {result.index}")

    def count(engine, result):
        seen.append(result.index)

    bad.__name__ = "bad"
    with (
        caplog.at_level(logging.ERROR, "fr_core.pipeline.engine"),
        engine(handlers=[bad, count]) as e,
    ):
        stats = e.run()
    assert stats.frames == 40 and len(seen) == 40  # every frame reached the next handler
    assert stats.frame_errors == {"bad: ValueError": 20}
    lines = [r for r in caplog.records if "bad failed" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is not None  # once, with its traceback


def lock_for(path: Path, seconds: float) -> threading.Thread:
    """Another process's view: a connection holding the write lock for ``seconds``."""
    ready = threading.Event()

    def hold():
        con = sqlite3.connect(path, timeout=5, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        ready.set()
        time.sleep(seconds)
        con.execute("COMMIT")
        con.close()

    t = threading.Thread(target=hold)
    t.start()
    ready.wait(5)
    return t


def test_events_wait_out_a_locked_database_in_order(tmp_path):
    cfg = default_config(
        storage={
            "plugin": "sqlite",
            "path": str(tmp_path / "faces.db"),
            "busy_timeout_seconds": 0.2,
        }
    )
    db = DatabaseManager.from_config(cfg)
    db.initialize()
    with engine(lambda ev: db.outbox_append(ev.to_dict())) as e:
        holder = lock_for(tmp_path / "faces.db", 1.5)
        t0 = time.monotonic()
        assert all(e.queue_event(facial(i)) for i in range(6))
        first_six = time.monotonic() - t0
        assert e.spool.pending >= 5  # kept, not lost; only the first attempt waited
        holder.join()
        deadline = time.monotonic() + 15
        while e.spool.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        assert e.queue_event(facial(6))
        stats = e.refresh_stats()
    assert first_six < 1.0  # one busy timeout, not six
    assert stats.events_pending == 0 and stats.events_dropped == {}
    assert stats.events_refused.get("database locked", 0) >= 1
    claimed = db.outbox_claim(100, 60)
    assert [c.payload["user_id"] for c in claimed] == [f"EMP-{i:03d}" for i in range(7)]
    db.close()


def test_events_wait_out_a_full_disk(tmp_path):
    db = DatabaseManager(str(tmp_path / "faces.db"))
    db.initialize()
    con = sqlite3.connect(db.path)
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()
    sql_engine = db.storage.engine

    def limit(dbapi_conn, _rec):
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 2}")

    sa_event.listen(sql_engine, "connect", limit)
    sql_engine.dispose()
    with engine(lambda ev: db.outbox_append(ev.to_dict())) as e:
        results = [e.queue_event(facial(i)) for i in range(40)]
        assert all(results) and e.spool.pending > 0
        assert e.refresh_stats().events_refused.get("disk full", 0) >= 1
        sa_event.remove(sql_engine, "connect", limit)  # space is freed
        sql_engine.dispose()
        deadline = time.monotonic() + 15
        while e.spool.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = e.refresh_stats()
    assert stats.events_pending == 0 and stats.events_dropped == {}
    assert db.outbox_stats().depth == 40
    db.close()


def test_an_outbox_full_by_policy_drops_and_names_it(tmp_path):
    db = DatabaseManager(
        str(tmp_path / "faces.db"), outbox_policy=OutboxPolicy(max_events=3, when_full="reject_new")
    )
    db.initialize()
    with engine(lambda ev: db.outbox_append(ev.to_dict())) as e:
        results = [e.queue_event(facial(i)) for i in range(5)]
        stats = e.refresh_stats()
    assert results == [True, True, True, False, False]
    assert stats.events_dropped == {"outbox full (reject_new)": 2} and stats.events_pending == 0
    assert db.outbox_stats().rejected_total == 2
    db.close()


# --- the whole device, in its own process ---------------------------------------------------


def wait_for(what, check, timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the device exited ({proc.returncode}) while waiting for {what}")
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def device(fr_data, tmp_path):
    registry = build_registry()
    det = registry.create(ComponentKind.DETECTOR, "yunet")
    emb = registry.create(ComponentKind.EMBEDDER, "sface")
    photo = fr_data / "faces" / "lin-manuel-miranda.png"
    img = cv2.imread(str(photo))
    face = max(det.detect(img), key=lambda d: d.bbox[2] * d.bbox[3])
    with ReferenceBroker(tmp_path / "broker", api_key=SUPERVISOR_KEY) as ref:
        ref.store.enrol("EMP-MIRANDA", emb.embed(img, face), "SFace")
        flag = tmp_path / "detector-fails"
        db_path = tmp_path / "device" / "faces.db"
        cfg = {
            "device_id": "cam-sup",
            "broker_url": ref.url,
            "heartbeat_interval_seconds": 1,
            "cooldown_seconds": 1,
            "confirmation_frames": 3,
            "camera": {
                "plugin": "sim",
                "source": str(photo),
                "repeat": 1_000_000,
                "fps": 10,
                "script": [{"frame": 3, "action": "corrupt"}],
            },
            "detector": {"plugin": "flaky_yunet", "fail_while": str(flag)},
            "embedder": "sface",
            "matcher": "numpy",
            "telemetry": "sim",
            "transport": {"plugin": "https", "ca_bundle": str(ref.ca_path)},
            "storage": {
                "plugin": "sqlite",
                "path": str(db_path),
                "busy_timeout_seconds": 1,
                "outbox": {"max_events": 3, "when_full": "reject_new"},
            },
        }
        path = tmp_path / "device.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log = open(tmp_path / "device.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [sys.executable, "-m", "fr_core", "run", "--config", str(path)],
            env={**os.environ, "FR_API_KEY": SUPERVISOR_KEY},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc, ref, flag, db_path
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            output = (tmp_path / "device.log").read_text()
            print(output[-5000:])  # into the suite-wide secret scan
            assert SUPERVISOR_KEY not in output


def test_a_running_device_goes_on_through_each_fault(device):
    proc, ref, flag, db_path = device

    def beat():
        beats = ref.store.heartbeats()
        return beats[-1] if beats else None

    def events():
        return sum(e["event_type"] == "facial_id" for e in ref.store.ledger())

    # running: frames processed, the corrupt frame counted, Miranda reported
    first = wait_for("a first event", events, 90, proc)
    b = wait_for(
        "the corrupt frame in a heartbeat",
        lambda: (x := beat()) and x["frame_errors"] and x,
        30,
        proc,
    )
    assert any(k.startswith("recognition: ") for k in b["frame_errors"])

    # a detector plugin that raises on every frame
    flag.write_text("")
    before = beat()["frames"]
    wait_for(
        "detector errors",
        lambda: beat()["frame_errors"].get("recognition: RuntimeError", 0) >= 5,
        30,
        proc,
    )
    assert beat()["frames"] > before  # the loop went on
    flag.unlink()
    n = events()
    wait_for("an event after the plugin recovered", lambda: events() > n, 60, proc)

    # the database locked by another process for longer than the busy timeout
    con = sqlite3.connect(db_path, timeout=5, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    time.sleep(5)
    con.execute("COMMIT")
    con.close()
    n = events()
    wait_for("an event after the lock", lambda: events() > n, 60, proc)
    b = beat()
    assert b["events_refused"].get("database locked", 0) >= 1
    assert "database locked" not in b["events_dropped"]  # kept and stored, not lost

    # the broker refuses events: the outbox fills (3, reject_new) and new ones are dropped
    ref.faults.add(status=503, count=100_000, path="/events")
    wait_for(
        "events dropped by the outbox policy",
        lambda: beat()["events_dropped"].get("outbox full (reject_new)", 0) >= 1,
        60,
        proc,
    )
    ref.faults.clear()
    n = events()
    wait_for("an event after the broker recovered", lambda: events() > n, 90, proc)
    assert proc.poll() is None and events() > first

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
