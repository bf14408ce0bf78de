"""The durable outbox: order, leases, retries, bounds and policies, crash safety."""

from __future__ import annotations

import base64
import logging
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from fr_sqlite.schema import SCHEMA_VERSION
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fr_core import DatabaseManager, OutboxFullError, OutboxPolicy
from fr_core.testing import wait_for

from .conftest import REPO

JPEG = base64.b64encode(b"\xff\xd8" + bytes(range(256)) * 4).decode()


def event(i, image=True):
    e = {
        "event_id": f"EV1-{1795800000000 + i}-{i:06x}",
        "event_type": "facial_id",
        "device_id": "cam-001",
        "user_id": f"EMP-{i}",
        "confidence": 0.9,
    }
    if image:
        e["image"] = JPEG
    return e


@pytest.fixture
def db(tmp_path):
    with DatabaseManager(str(tmp_path / "o.db")) as d:
        yield d


def consistent(db):
    """The running totals match the rows."""
    con = sqlite3.connect(db.path)
    n, size = con.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
    stats = db.outbox_stats()
    assert (stats.depth, stats.bytes) == (n, size)
    return n


def test_append_claim_ack_in_order_with_images(db):
    for i in range(5):
        db.outbox_append(event(i))
    items = db.outbox_claim(limit=3)
    assert [it.payload["user_id"] for it in items] == ["EMP-0", "EMP-1", "EMP-2"]
    assert items[0].payload["image"] == JPEG and items[0].attempts == 0
    assert db.outbox_ack([it.event_id for it in items]) == 3
    rest = db.outbox_claim(limit=10)
    assert [it.payload["user_id"] for it in rest] == ["EMP-3", "EMP-4"]
    assert consistent(db) == 2
    assert db.outbox_stats().sent_total == 3


def files(db):
    out = b""
    for suffix in ("", "-wal"):
        with open(db.path + suffix, "rb") as f:
            out += f.read()
    return out


def test_images_are_sealed_at_rest(db):
    marker = b"\xff\xd8UNIQUE-FACE-BYTES-" * 20
    text = base64.b64encode(marker).decode()
    db.outbox_append({**event(1), "image": text})
    disk = files(db)
    assert marker[:40] not in disk and text[:40].encode() not in disk
    (item,) = db.outbox_claim()
    assert item.payload["image"] == text and f'"image":"{text}"'.encode() in item.payload.wire


def test_the_wire_form_is_the_event_as_json(db):
    """What the transports send (wire_json) is the claimed event, every field and the image,
    as compact UTF-8 JSON; a plain mapping (no stored form) is serialised the same way."""
    import json

    from fr_core.storage import wire_json

    image = base64.b64encode(b"\xff\xd8" + bytes(range(256)) * 40).decode()
    with_image = {**event(1), "user_id": "Zoë \u2603", "image": image}
    db.outbox_append_many([with_image, event(2)])
    a, b = db.outbox_claim()
    assert json.loads(wire_json(a.payload)) == dict(a.payload) == with_image
    assert json.loads(wire_json(b.payload)) == dict(b.payload) == event(2)
    assert wire_json(a.payload) is a.payload.wire  # sent as stored, not serialised again
    assert wire_json(with_image) == json.dumps(with_image, separators=(",", ":")).encode()


def test_acknowledged_images_leave_the_file(db):
    """The key of an acknowledged image is gone from the file: what is left of the image is
    ciphertext nobody can open (secure_delete=FAST does not overwrite freed overflow pages)."""
    db.outbox_append({**event(1), "image": base64.b64encode(b"\xff\xd8" * 9000).decode()})
    con = sqlite3.connect(db.path)
    ((key,),) = con.execute("SELECT key FROM outbox_keys").fetchall()
    con.close()
    assert len(key) == 61 and key in files(db)  # wrapped by the device key (issue 16)
    db.outbox_ack([event(1)["event_id"]])
    db.storage.checkpoint()
    assert key not in files(db)
    con = sqlite3.connect(db.path)
    assert con.execute("SELECT count(*) FROM outbox_images").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM outbox_keys").fetchone() == (0,)


def test_a_damaged_sealed_image_is_reported_not_sent(db, caplog):
    """Its event still goes (without the image): one bad picture must not hold back every
    event behind it (issue 16 review)."""
    db.outbox_append(event(1))
    con = sqlite3.connect(db.path)
    (image,) = con.execute("SELECT image FROM outbox_images").fetchone()
    damaged = image[:100] + bytes([image[100] ^ 1]) + image[101:]
    con.execute("UPDATE outbox_images SET image = ?", (damaged,))
    con.commit()
    con.close()
    caplog.set_level("ERROR")
    (item,) = db.outbox_claim()
    assert item.event_id == event(1)["event_id"] and "image" not in item.payload
    assert f"event {event(1)['event_id']} fails its integrity" in caplog.text
    assert "sent without its face image" in caplog.text
    assert db.outbox_stats().counters["images_unopenable_total"] == 1


def test_images_queued_by_schema_2_are_sealed_on_upgrade(tmp_path):
    """A database written by the schema-2 fr-edge (images in clear, no keys) upgrades in
    place: its queued images are sealed and their clear bytes overwritten."""
    path = str(tmp_path / "v2.db")
    marker = b"\xff\xd8CLEAR-FACE-OF-SCHEMA-2-" * 30
    with DatabaseManager(path) as d:
        d.outbox_append({**event(1), "image": base64.b64encode(marker).decode()})
        d.outbox_append(event(2, image=False))
    con = sqlite3.connect(path)
    con.execute("DROP TABLE outbox_keys")
    con.execute("UPDATE outbox_images SET image = ?", (marker,))
    con.execute("UPDATE schema_version SET version = 2")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with open(path, "rb") as f:
        assert marker[:40] in f.read()
    with DatabaseManager(path) as d:
        items = d.outbox_claim()
        assert [it.event_id for it in items] == [event(1)["event_id"], event(2)["event_id"]]
        assert base64.b64decode(items[0].payload["image"]) == marker
        assert "image" not in items[1].payload
        d.storage.checkpoint()
        assert marker[:40] not in files(d)
    assert sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone() == (
        SCHEMA_VERSION,
    )


def test_a_claim_is_a_lease(db):
    db.outbox_append(event(1))
    assert len(db.outbox_claim(lease_seconds=60)) == 1
    assert db.outbox_claim() == []  # leased to the first worker
    first = db.outbox_claim(lease_seconds=60)
    assert first == []
    db2 = DatabaseManager(db.path)
    db2.initialize()
    assert db2.outbox_claim() == []  # also from another connection
    db2.close()


def test_expired_lease_is_claimable_again(db):
    db.outbox_append(event(1))
    db.outbox_claim(lease_seconds=0.05)
    got = []
    assert wait_for(lambda: got.extend(db.outbox_claim()) or got, timeout=5)
    assert [it.payload["user_id"] for it in got] == ["EMP-1"]


def test_failures_are_retried_later(db):
    db.outbox_append(event(1))
    (item,) = db.outbox_claim()
    db.outbox_fail([item.event_id], "HTTP 503", retry_in=3600)
    assert db.outbox_claim() == []
    con = sqlite3.connect(db.path)
    assert con.execute("SELECT attempts, last_error FROM outbox").fetchone() == (1, "HTTP 503")
    db.outbox_fail([item.event_id], "again", retry_in=0)
    (again,) = db.outbox_claim()
    assert again.attempts == 2
    assert db.outbox_stats().failed_attempts_total == 2


def test_append_is_idempotent_and_batches_are_atomic(db):
    db.outbox_append(event(1))
    db.outbox_append(event(1))
    assert consistent(db) == 1
    with pytest.raises(ValueError, match="needs a non-empty string event_id"):
        db.outbox_append_many([event(2), event(3), {"event_type": "facial_id"}])
    with pytest.raises(ValueError, match="image is not base64"):
        db.outbox_append_many([event(4), {**event(5), "image": "%%%"}])
    with pytest.raises(ValueError, match="cannot be stored as JSON"):
        db.outbox_append({**event(6), "confidence": float("nan")})
    assert consistent(db) == 1


def test_drop_oldest_policy_is_reported(tmp_path, caplog):
    policy = OutboxPolicy(max_events=3, when_full="drop_oldest")
    with DatabaseManager(str(tmp_path / "o.db"), outbox_policy=policy) as db:
        for i in range(5):
            db.outbox_append(event(i))
        ids = [it.payload["user_id"] for it in db.outbox_claim(10)]
        assert ids == ["EMP-2", "EMP-3", "EMP-4"]
        assert db.outbox_stats().dropped_total == 2 and consistent(db) == 3
    assert caplog.text.count("dropped the oldest event") == 2


def test_reject_new_policy_is_reported(tmp_path, caplog):
    policy = OutboxPolicy(max_events=2, when_full="reject_new")
    with DatabaseManager(str(tmp_path / "o.db"), outbox_policy=policy) as db:
        db.outbox_append(event(0))
        db.outbox_append(event(1))
        with pytest.raises(OutboxFullError, match="rejected"):
            db.outbox_append(event(2))
        assert db.outbox_stats().rejected_total == 1 and consistent(db) == 2
    assert "new event rejected" in caplog.text


def test_byte_bound(tmp_path):
    policy = OutboxPolicy(max_bytes=4096, when_full="drop_oldest")
    with DatabaseManager(str(tmp_path / "o.db"), outbox_policy=policy) as db:
        for i in range(10):
            db.outbox_append(event(i))
        stats = db.outbox_stats()
        assert stats.bytes <= 4096 and stats.dropped_total > 0
        with pytest.raises(ValueError, match="larger than the outbox limit"):
            db.outbox_append(
                {**event(99), "image": base64.b64encode(b"\xff\xd8" + b"x" * 5000).decode()}
            )


def test_old_events_expire_loudly(tmp_path, caplog):
    policy = OutboxPolicy(max_age_seconds=0.2)
    with DatabaseManager(str(tmp_path / "o.db"), outbox_policy=policy) as db:
        db.outbox_append(event(0))
        time.sleep(0.3)  # let the event age past the bound
        assert db.outbox_claim() == []
        assert db.outbox_stats().expired_total == 1 and consistent(db) == 0
    assert "expired unsent" in caplog.text


def test_bad_policies():
    with pytest.raises(ValueError):
        OutboxPolicy(max_events=0)
    with pytest.raises(ValueError):
        OutboxPolicy(when_full="ignore")


def test_sigkilled_writers_lose_no_committed_event(tmp_path):
    path = str(tmp_path / "crash.db")
    DatabaseManager(path).initialize()
    committed: list[str] = []
    rnd = random.Random(7)
    for run in range(20):
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "outbox_writer.py"), path, f"run{run}"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        target = rnd.randint(1, 40)
        got = []
        while len(got) < target:
            line = proc.stdout.readline()
            assert line, "writer died on its own"
            got.append(line.strip())
        proc.send_signal(signal.SIGKILL)  # mid-stream: it keeps writing until killed
        proc.wait()
        committed.extend(got)
        committed.extend(line.strip() for line in proc.stdout.read().splitlines())
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = [r[0] for r in con.execute("SELECT event_id FROM outbox")]
    assert len(stored) == len(set(stored))  # exactly once
    assert set(committed) <= set(stored)  # nothing committed was lost
    db = DatabaseManager(path)
    db.initialize()
    assert consistent(db) == len(stored)
    logging.getLogger(__name__).info("%d committed events survived 20 SIGKILLs", len(committed))


class OutboxMachine(RuleBasedStateMachine):
    """Outbox operations interleaved with crashes: an abandoned connection in the middle of
    a write transaction, and the database closed and reopened without a clean shutdown."""

    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.mkdtemp()
        self.db = DatabaseManager(f"{self.dir}/m.db")
        self.db.initialize()
        self.model: dict[str, int] = {}  # queued event_id -> attempts
        self.leased: set[str] = set()
        self.n = 0

    @rule(k=st.integers(1, 4))
    def append(self, k):
        batch = [event(self.n + i, image=bool((self.n + i) % 2)) for i in range(k)]
        self.n += k
        self.db.outbox_append_many(batch)
        for e in batch:
            self.model[e["event_id"]] = 0

    @rule(limit=st.integers(1, 5))
    def claim(self, limit):
        items = self.db.outbox_claim(limit, lease_seconds=3600)
        free = [e for e in self.model if e not in self.leased]
        assert [it.event_id for it in items] == free[:limit]
        self.leased.update(it.event_id for it in items)

    @precondition(lambda self: self.leased)
    @rule(data=st.data())
    def ack(self, data):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.leased)), unique=True, min_size=1))
        assert self.db.outbox_ack(ids) == len(ids)
        for e in ids:
            del self.model[e]
            self.leased.discard(e)

    @precondition(lambda self: self.leased)
    @rule(data=st.data())
    def fail(self, data):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.leased)), unique=True, min_size=1))
        self.db.outbox_fail(ids, "broker down", retry_in=0)
        for e in ids:
            self.model[e] += 1
            self.leased.discard(e)

    @rule()
    def crash_mid_transaction(self):
        con = sqlite3.connect(self.db.path, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        con.execute(
            "INSERT INTO outbox (event_id, event_type, payload, size, created_at, "
            "attempts, next_attempt_at) VALUES ('half-written', 'facial_id', '{}', 2, 0,"
            " 0, 0)"
        )
        con.execute("UPDATE counters SET value = value + 1 WHERE name = 'outbox_depth'")
        con.close()  # never committed: SQLite rolls it back

    @rule()
    def reopen(self):
        self.db.storage._engine = None  # abandon the pool without a clean close
        self.db = DatabaseManager(self.db.path)
        self.db.initialize()

    @invariant()
    def matches_the_model(self):
        con = sqlite3.connect(self.db.path)
        rows = dict(con.execute("SELECT event_id, attempts FROM outbox").fetchall())
        assert rows == self.model
        assert consistent(self.db) == len(self.model)

    def teardown(self):
        assert self.db.integrity_check() == "ok"
        self.db.close()


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


# --- the pipelined drain ----------------------------------------------------------------------


class ScriptedAsyncTransport:
    """Publishes without waiting, as the mqtt transport does; the ``fail_batch``-th batch
    (0-based) raises when its acknowledgements are awaited, the ``refuse_batch``-th cannot
    even be published (connection gone), and events whose user_id is in ``reject`` are
    refused by the broker's application. Records what went out."""

    def __init__(self, fail_batch=None, refuse_batch=None, reject=()):
        self.fail_batch, self.refuse_batch, self.reject = fail_batch, refuse_batch, set(reject)
        self.batches = []
        self.calls = 0
        self.waiting = self.most_waiting = 0  # events published, acknowledgements not read

    def send_events_async(self, events):
        from fr_core.errors import TransportUnavailable
        from fr_core.interfaces import SendResult

        n, self.calls = self.calls, self.calls + 1
        if n == self.refuse_batch:
            raise TransportUnavailable("not connected")
        ids = [e["event_id"] for e in events]
        bad = {e["event_id"]: "user_id unknown" for e in events if e["user_id"] in self.reject}
        self.batches.append(ids)
        self.waiting += len(ids)
        self.most_waiting = max(self.most_waiting, self.waiting)

        class Pending:
            def result(_self):
                self.waiting -= len(ids)
                if n == self.fail_batch:
                    raise TransportUnavailable("connection lost")
                return SendResult(acknowledged=[i for i in ids if i not in bad], rejected=bad)

        return Pending()

    def send_events(self, events):
        return self.send_events_async(events).result()


def test_pipelined_drain_groups_acks_and_keeps_order_on_failure(db):
    from fr_core.delivery.outbox import OutboxWorker
    from fr_core.errors import TransportUnavailable

    for i in range(0, 50, 10):
        db.outbox_append_many([event(j) for j in range(i, i + 10)])
    # claimed two batches at a time (a group): batches 0-2 delivered, 3 fails, 4-5 in flight
    t = ScriptedAsyncTransport(fail_batch=3)
    worker = OutboxWorker(db, t, batch_size=5, pipeline_depth=2)
    with pytest.raises(TransportUnavailable):
        worker.drain()
    assert len(t.batches) == 6  # never more than two groups on the wire
    # what the broker acknowledged left the outbox even though the drain failed after it
    assert worker.sent == 15 and consistent(db) == 35
    left = db.outbox_claim(limit=100)
    assert [it.payload["user_id"] for it in left] == [f"EMP-{i}" for i in range(15, 50)]
    assert [it.attempts for it in left] == [1] * 15 + [0] * 20
    db.outbox_fail([it.event_id for it in left], "test", retry_in=0.0)
    t.fail_batch = None
    assert worker.drain() == 35 and consistent(db) == 0
    sent = [i for batch in t.batches for i in batch]
    assert sent[:15] == [event(i)["event_id"] for i in range(15)]
    assert sent[-35:] == [event(i)["event_id"] for i in range(15, 50)]


@pytest.mark.parametrize(
    ("batch_size", "depth", "most"),
    [(100, 3, 600), (200, 3, 400), (500, 3, 1000), (50, 2, 200)],
)
def test_a_backlog_drains_with_bounded_events_in_flight(db, batch_size, depth, most):
    """Two claim groups at most are waiting for acknowledgements: a group is ``depth``
    batches, fewer if that would pass GROUP_MAX_EVENTS (300), never less than one batch. So
    the images held in memory during a drain are bounded whatever the backlog."""
    from fr_core.delivery.outbox import OutboxWorker

    for i in range(0, 1500, 500):
        db.outbox_append_many([event(j) for j in range(i, i + 500)])
    t = ScriptedAsyncTransport()
    worker = OutboxWorker(db, t, batch_size=batch_size, pipeline_depth=depth)
    assert worker.drain() == 1500 and consistent(db) == 0
    assert t.most_waiting == most
    assert [i for b in t.batches for i in b] == [event(j)["event_id"] for j in range(1500)]


def test_claimed_events_that_could_not_be_published_are_due_again_at_once(db):
    """The second batch of a claimed group cannot be published: the whole group (the first
    batch was on the wire, unanswered) is due again at once, in order, not held for the
    lease."""
    from fr_core.delivery.outbox import OutboxWorker
    from fr_core.errors import TransportUnavailable

    db.outbox_append_many([event(i) for i in range(12)])
    t = ScriptedAsyncTransport(refuse_batch=1)
    worker = OutboxWorker(db, t, batch_size=4, pipeline_depth=3, lease_seconds=600)
    with pytest.raises(TransportUnavailable, match="not connected"):
        worker.drain()
    assert worker.sent == 0 and consistent(db) == 12
    left = db.outbox_claim(limit=100)
    assert [it.event_id for it in left] == [event(i)["event_id"] for i in range(12)]
    assert all(it.attempts == 1 for it in left)


def test_a_rejected_event_does_not_block_the_pipelined_drain(db, caplog):
    """The broker refuses one event (the mqtt transport with require_ack reports it so): the
    drain delivers the rest, keeps that one for a day and says why; it is not sent again and
    again in a loop."""
    from fr_core.delivery.outbox import OutboxWorker

    db.outbox_append_many([event(i) for i in range(10)])
    t = ScriptedAsyncTransport(reject={"EMP-3"})
    worker = OutboxWorker(db, t, batch_size=2, pipeline_depth=2)
    assert worker.drain() == 9
    assert worker.rejected == 1 and consistent(db) == 1
    assert db.outbox_claim(limit=10) == []  # not due again before a day
    assert sum(len(b) for b in t.batches) == 10  # each sent once
    assert f"broker rejected event {event(3)['event_id']}: user_id unknown" in caplog.text


def test_a_starting_worker_takes_over_the_claims_of_a_dead_one(db):
    from fr_core.delivery.outbox import OutboxWorker

    db.outbox_append_many([event(i) for i in range(6)])
    assert len(db.outbox_claim(limit=4, lease_seconds=600)) == 4  # then the process died
    assert [it.event_id for it in db.outbox_claim(limit=10)] == [
        event(4)["event_id"],
        event(5)["event_id"],
    ]
    db.outbox_fail([event(4)["event_id"], event(5)["event_id"]], "test", retry_in=0)
    worker = OutboxWorker(db, ScriptedAsyncTransport(), idle_poll=0.05)
    worker.start()
    try:
        assert wait_for(lambda: db.outbox_stats().depth == 0, timeout=10)
    finally:
        worker.stop()
    assert worker.sent == 6  # not held back for the 600 s lease


class SlowTransport(ScriptedAsyncTransport):
    """Each batch's acknowledgements take ``wait`` seconds: longer than the lease."""

    def __init__(self, wait, max_send_seconds=0.0):
        super().__init__()
        self.wait, self.max_send_seconds = wait, max_send_seconds

    def send_events_async(self, events):
        pending = super().send_events_async(events)

        class Slow:
            def result(_self):
                time.sleep(self.wait)
                return pending.result()

        return Slow()


def test_leases_are_renewed_while_batches_wait_on_the_wire(db):
    """Issue 12, item 3: with a 1 s lease and acknowledgements taking 1.2 s, the pipelined
    drain's next claim re-took events still on the wire (120 events, 210 publishes)."""
    from fr_core.delivery.outbox import OutboxWorker

    db.outbox_append_many([event(i, image=False) for i in range(120)])
    t = SlowTransport(wait=1.2)
    worker = OutboxWorker(db, t, batch_size=10, pipeline_depth=3, lease_seconds=1.0)
    assert worker.drain() == 120 and consistent(db) == 0
    published = [i for b in t.batches for i in b]
    assert len(published) == 120 and len(set(published)) == 120  # each event once
    assert worker.sent == 120


def test_a_slow_single_send_keeps_its_lease_against_a_second_worker(db):
    import threading

    from fr_core.delivery.outbox import OutboxWorker

    db.outbox_append_many([event(i, image=False) for i in range(5)])
    slow = SlowTransport(wait=2.0)
    first = OutboxWorker(
        db, type("Sync", (), {"send_events": slow.send_events})(), lease_seconds=0.6
    )
    sending = threading.Thread(target=first.drain_once)
    sending.start()
    time.sleep(1.2)  # two leases' worth into the send
    assert db.outbox_claim(10, 60) == []  # renewed: nobody else may take them
    sending.join()
    assert first.sent == 5 and consistent(db) == 0


def test_leases_are_sized_from_the_transport_and_sent_counts_real_deletions(db):
    from fr_core.delivery.outbox import OutboxWorker

    t = SlowTransport(wait=0.0, max_send_seconds=50.0)
    assert OutboxWorker(db, t, lease_seconds=120).lease_seconds == 150.0
    assert OutboxWorker(db, SlowTransport(wait=0.0), lease_seconds=120).lease_seconds == 120
    db.outbox_append_many([event(i) for i in range(3)])
    worker = OutboxWorker(db, t)
    ids = [e.event_id for e in db.outbox_claim(10, 60)]
    assert worker._ack(ids) == 3 and worker._ack(ids) == 0  # already gone: not sent again
    assert worker.sent == 3


def test_a_worker_stopped_mid_send_and_started_again_sends_nothing_twice(db):
    """Issue 12, item 9: stop() forgot a thread still sending, and the next start() freed
    that thread's claims (and cleared the stop it was watching): its events went twice."""
    from fr_core.delivery.outbox import OutboxWorker

    db.outbox_append_many([event(i, image=False) for i in range(20)])
    slow = SlowTransport(wait=1.0)
    sync_only = type("Sync", (), {"send_events": slow.send_events})()
    worker = OutboxWorker(db, sync_only, batch_size=5, lease_seconds=30)
    worker.start()
    assert wait_for(lambda: slow.batches, timeout=10)  # a send is in flight
    assert worker.stop(timeout=0.1) is False  # still sending
    worker.start()  # again, at once
    assert wait_for(lambda: consistent(db) == 0, timeout=30)
    worker.stop(timeout=5)
    published = [i for b in slow.batches for i in b]
    assert sorted(published) == sorted(event(i, image=False)["event_id"] for i in range(20))
    assert len(published) == 20  # none twice
