"""Versioned enrolment sync against a broker-side implementation of the protocol."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import threading

import numpy as np
import pytest
from fr_numpy import NumpyMatcher
from hypothesis import given
from hypothesis import strategies as st

from fr_core import (
    DatabaseManager,
    SyncError,
    SyncManager,
    SyncManagerFactory,
)
from fr_core.syncpage import encode_embedding, parse_page
from fr_core.testing import wait_for
from fr_core.testing.syncsource import MemoryBroker

rng = np.random.default_rng(3)
MODELS = {"SFace": 128}


def vec(dim=128):
    return rng.standard_normal(dim).astype(np.float32)


@pytest.fixture
def db(tmp_path):
    with DatabaseManager(str(tmp_path / "s.db")) as d:
        yield d


@pytest.fixture
def broker():
    b = MemoryBroker()
    for i in range(25):
        b.enrol(f"EMP-{i:03d}", vec())
    return b


def same(db, broker):
    local = db.get_all_enrollments()
    live = broker.live()
    return set(local) == set(live) and all(np.array_equal(local[u], live[u]) for u in live)


def test_first_sync_is_a_snapshot_then_incremental(db, broker):
    mgr = SyncManager(db, broker, matcher=NumpyMatcher(), models=MODELS, page_size=7)
    first = mgr.sync_now()
    assert first.ok and first.snapshot and first.pages == 4 and first.version_after == 25
    assert same(db, broker)
    broker.enrol("EMP-100", vec())
    broker.remove("EMP-003")
    broker.enrol("EMP-004", vec())
    second = mgr.sync_now()
    assert second.ok and not second.snapshot
    assert (second.upserts, second.deletions, second.version_after) == (2, 1, 28)
    assert same(db, broker)
    assert mgr.sync_now().pages == 1  # nothing new: one empty page
    assert db.get_enrollment("EMP-100").sync_version == 26


def test_matcher_follows_every_sync(db, broker):
    matcher = NumpyMatcher()
    mgr = SyncManager(db, broker, matcher=matcher, models=MODELS)
    mgr.sync_now()
    e = vec()
    broker.enrol("EMP-new", e)
    broker.remove("EMP-000")
    mgr.sync_now()
    assert matcher.search("SFace", e)[0].user_id == "EMP-new"
    assert matcher.size("SFace") == 25
    assert "EMP-000" not in {m.user_id for m in matcher.search("SFace", vec(), k=100)}


def _sealed_blob(db, user_id):
    """The row's stored (sealed) template, read past fr-edge with sqlite3."""
    import sqlite3

    with sqlite3.connect(f"file:{db.path}?mode=ro", uri=True) as con:
        row = con.execute("SELECT embedding FROM enrolled_users WHERE user_id=?", (user_id,))
        return row.fetchone()[0]


def test_deletion_purges_the_embedding_bytes_from_the_file(db, broker):
    """Templates are sealed (issue 16): the plaintext is never in the file, and a deleted
    row's ciphertext is gone too (with the device key it would open)."""
    secret = np.full(128, 0.123456789, np.float32)
    secret[0] = 7.654321
    broker.enrol("EMP-gone", secret)
    mgr = SyncManager(db, broker, models=MODELS)
    mgr.sync_now()
    plain = secret.astype("<f4").tobytes()[:64]
    needle = _sealed_blob(db, "EMP-gone")[13:77]  # past the format byte and the nonce
    db.storage.checkpoint()
    with open(db.path, "rb") as f:
        data = f.read()
        assert needle in data and plain not in data
    broker.remove("EMP-gone")
    mgr.sync_now()
    db.storage.checkpoint()
    for suffix in ("", "-wal"):
        with open(db.path + suffix, "rb") as f:
            assert needle not in f.read(), f"template bytes left in {suffix or 'the file'}"


def _files_hold(db, needle):
    """Which of the database, its -wal and its -shm hold ``needle`` (as they are on disk)."""
    import os

    found = []
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db.path + suffix):
            with open(db.path + suffix, "rb") as f:
                if needle in f.read():
                    found.append(suffix or "db")
    return found


@pytest.mark.parametrize("how", ["sync", "local", "resync"])
def test_a_deleted_embedding_is_gone_from_the_wal_too(db, broker, how):
    """Issue 12, item 5: no manual checkpoint; the deletion itself truncates the WAL, where
    the row's earlier versions lived on after secure_delete overwrote the database pages."""
    secret = np.full(128, 0.987654321, np.float32)
    secret[0] = 3.1415927
    broker.enrol("EMP-gone", secret)
    broker.enrol("EMP-stays", vec())
    mgr = SyncManager(db, broker, models=MODELS)
    assert mgr.sync_now().ok
    assert _files_hold(db, secret.astype("<f4").tobytes()[:64]) == []  # sealed (issue 16)
    needle = _sealed_blob(db, "EMP-gone")[13:77]
    assert _files_hold(db, needle)  # its ciphertext is there while enrolled
    if how == "sync":
        broker.remove("EMP-gone")
        assert mgr.sync_now().ok
    elif how == "local":
        assert db.delete_enrollment("EMP-gone")
    else:  # the broker compacted its history: the device is told to resync in full
        broker.remove("EMP-gone")
        broker.enrol("EMP-new", vec())
        broker.compact()
        result = mgr.sync_now()
        assert result.ok and result.snapshot
    assert "EMP-gone" not in db.get_all_enrollments()
    assert _files_hold(db, needle) == []


def test_duplicate_and_stale_pages_are_ignored(db, broker):
    mgr = SyncManager(db, broker, models=MODELS)
    mgr.sync_now()
    broker.enrol("EMP-000", vec())
    page = broker.fetch_changes(25, 100)
    assert db.apply_changes(parse_page(page)).applied  # first time: applied
    again = db.apply_changes(parse_page(page))
    assert again.skipped_page and again.version == 26  # replay: ignored
    assert same(db, broker)


def test_a_gap_is_refused(db, broker):
    SyncManager(db, broker, models=MODELS).sync_now()
    broker.enrol("EMP-x", vec())
    broker.enrol("EMP-y", vec())
    page = broker.fetch_changes(26, 100)  # the device is at 25
    with pytest.raises(SyncError, match="a gap"):
        db.apply_changes(parse_page(page))
    assert db.get_sync_state().version == 25 and db.get_enrollment("EMP-y") is None


def test_a_too_old_device_resyncs_fully(db, broker):
    mgr = SyncManager(db, broker, matcher=NumpyMatcher(), models=MODELS, page_size=10)
    mgr.sync_now()
    broker.remove("EMP-001")
    broker.remove("EMP-002")
    broker.enrol("EMP-050", vec())
    broker.compact()  # the tombstones are forgotten: the device cannot catch up by changes
    result = mgr.sync_now()
    assert result.ok and result.snapshot
    assert same(db, broker) and db.get_enrollment("EMP-001") is None
    assert mgr.matcher.size("SFace") == 24
    assert db.get_sync_state().version == broker.version


def test_an_interrupted_resync_keeps_the_old_enrolments(db, broker):
    mgr = SyncManager(db, broker, models=MODELS, page_size=5)
    mgr.sync_now()
    before = db.get_all_enrollments()
    broker.remove("EMP-001")
    broker.compact()
    # full_resync answer, two snapshot pages, then the broker goes away
    broker.fail_next = [None, None, None, ConnectionError("broker went away")]
    result = mgr.sync_now()
    assert not result.ok and "ConnectionError: broker went away" in result.error
    assert set(db.get_all_enrollments()) == set(before)  # untouched
    assert not db.get_sync_state().resync_in_progress
    assert mgr.sync_now().ok and same(db, broker)


def test_an_interrupted_incremental_sync_resumes(db, broker):
    mgr = SyncManager(db, broker, models=MODELS, page_size=3)
    mgr.sync_now()
    for i in range(10):
        broker.enrol(f"EMP-n{i}", vec())
    broker.fail_next = [None, None, TimeoutError("read timed out")]
    result = mgr.sync_now()
    assert not result.ok and result.version_after == 31  # two pages of three were kept
    status = mgr.get_sync_status()
    assert "TimeoutError" in status["last_error"] and status["version"] == 31
    assert mgr.sync_now().ok and same(db, broker)
    assert mgr.get_sync_status()["last_error"] is None


# --- malformed pages --------------------------------------------------------------------------


def good_page():
    return {
        "from_version": 0,
        "to_version": 2,
        "latest_version": 2,
        "more": False,
        "upserts": [
            {
                "user_id": "EMP-1",
                "model": "SFace",
                "dim": 128,
                "version": 1,
                "embedding": encode_embedding(vec()),
            }
        ],
        "deletions": [{"user_id": "EMP-2", "version": 2}],
    }


def nan_embedding():
    v = vec()
    v[5] = np.nan
    return encode_embedding(v)


MALFORMED = {
    "bad dimension": (
        lambda p: p["upserts"][0].update(embedding=encode_embedding(vec(64))),
        "holds 256 bytes; dim 128",
    ),
    "wrong model dimension": (
        lambda p: p["upserts"][0].update(dim=64, embedding=encode_embedding(vec(64))),
        "does not match model 'SFace'",
    ),
    "NaN": (lambda p: p["upserts"][0].update(embedding=nan_embedding()), "NaN"),
    "zero vector": (
        lambda p: p["upserts"][0].update(embedding=encode_embedding(np.zeros(128, np.float32))),
        "all zeros",
    ),
    "wrong type": (lambda p: p["upserts"][0].update(version="1"), "upserts.0.version"),
    "bool as int": (lambda p: p.update(to_version=True), "to_version"),
    "unknown model": (lambda p: p["upserts"][0].update(model="ArcFace"), "unknown model 'ArcFace'"),
    "not base64": (lambda p: p["upserts"][0].update(embedding="***"), "not standard base64"),
    "extra key": (lambda p: p.update(extra=1), "extra"),
    "bad user id": (lambda p: p["deletions"][0].update(user_id=""), "deletions.0"),
    "version out of range": (
        lambda p: p["deletions"][0].update(version=p["to_version"] + 1),
        "outside the page",
    ),
    "repeated version": (
        lambda p: p["deletions"][0].update(version=p["upserts"][0]["version"]),
        "appears twice",
    ),
    "bad range": (
        lambda p: p.update(to_version=p["latest_version"] + 3),
        "from_version <= to_version <= latest",
    ),
    "resync with changes": (lambda p: p.update(full_resync=True), "carries no changes"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_pages_are_rejected_whole(db, case, caplog):
    mutate, fragment = MALFORMED[case]
    page = good_page()
    mutate(page)

    class Source:
        def fetch_changes(self, since_version, limit, cursor=None):
            return page

    result = SyncManager(db, Source(), models=MODELS).sync_now()
    assert not result.ok and fragment in result.error
    assert db.count_enrollments() == {} and db.get_sync_state().version == 0
    assert fragment in caplog.text  # logged
    assert db.get_sync_state().last_error == result.error


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{" + b" " * 100, "not JSON"),
        (b"[]", "must be a JSON object"),
        (json.dumps(good_page()).encode() + b" " * 2000, "exceeds the limit"),
    ],
)
def test_undecodable_pages(raw, fragment):
    with pytest.raises(SyncError, match=fragment):
        parse_page(raw, max_bytes=1500)


def test_too_many_changes():
    page = good_page()
    page["deletions"] = [{"user_id": f"u{i}", "version": 2} for i in range(30)]
    with pytest.raises(SyncError, match="at most 20 are allowed"):
        parse_page(page, max_changes=20)


def test_a_dimension_that_differs_from_stored_enrolments_is_refused(db):
    db.upsert_enrollment("EMP-0", vec(128), "SFace")
    page = good_page()
    page["upserts"][0].update(dim=64, embedding=encode_embedding(vec(64)))
    with pytest.raises(SyncError, match="has dimension 128 on this device"):
        db.apply_changes(parse_page(page))  # no model list given: the database still checks


# --- property-based ---------------------------------------------------------------------------

ops = st.lists(
    st.tuples(st.sampled_from(["enrol", "remove", "compact", "sync"]), st.integers(0, 12)),
    max_size=40,
)


@given(ops, st.integers(1, 6))
def test_any_history_converges_to_the_broker_state(tmp_path_factory, history, page_size):
    broker = MemoryBroker()
    path = tmp_path_factory.mktemp("h") / "h.db"
    with DatabaseManager(str(path)) as db:
        matcher = NumpyMatcher(threshold=1.99)
        mgr = SyncManager(db, broker, matcher=matcher, models=MODELS, page_size=page_size)
        for op, n in history:
            if op == "enrol":
                broker.enrol(f"EMP-{n}", vec())
            elif op == "remove":
                broker.remove(f"EMP-{n}")
            elif op == "compact":
                broker.compact()
            else:
                assert mgr.sync_now().ok
        assert mgr.sync_now().ok
        assert same(db, broker)
        assert matcher.size("SFace") == len(broker.live())
        for uid, e in broker.live().items():
            assert matcher.search("SFace", e)[0].user_id == uid


mutations = st.sampled_from(sorted(MALFORMED))


@given(mutations, st.integers(0, 3))
def test_malformed_pages_never_write(tmp_path_factory, case, good_pages_first):
    path = tmp_path_factory.mktemp("m") / "m.db"
    with DatabaseManager(str(path)) as db:
        for v in range(good_pages_first):
            db.apply_changes(
                parse_page(
                    {
                        "from_version": v,
                        "to_version": v + 1,
                        "latest_version": v + 1,
                        "upserts": [
                            {
                                "user_id": f"EMP-{v}",
                                "model": "SFace",
                                "dim": 128,
                                "version": v + 1,
                                "embedding": encode_embedding(vec()),
                            }
                        ],
                    }
                )
            )
        before = (db.get_all_enrollments(), db.get_sync_state().version)
        page = copy.deepcopy(good_page())
        page["from_version"] += good_pages_first
        page["to_version"] += good_pages_first
        page["latest_version"] += good_pages_first
        page["upserts"][0]["version"] += good_pages_first
        page["deletions"][0]["version"] += good_pages_first
        MALFORMED[case][0](page)
        with pytest.raises(SyncError):
            db.apply_changes(parse_page(page, models=MODELS))
        after = (db.get_all_enrollments(), db.get_sync_state().version)
        assert after[1] == before[1] and set(after[0]) == set(before[0])


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_sync_error(data):
    with contextlib.suppress(SyncError):
        parse_page(data)


# --- SyncManager behaviour --------------------------------------------------------------------


def test_periodic_sync_and_change_notification(db, broker):
    mgr = SyncManager(db, broker, models=MODELS, jitter=0.0)
    mgr.start_periodic_sync(interval_minutes=60)  # first sync at once, next in an hour
    try:
        assert wait_for(lambda: db.get_sync_state().version == 25)
        status = mgr.get_sync_status()
        assert status["periodic"] and status["interval_minutes"] == 60
        assert 3500 < status["next_sync_in_seconds"] <= 3600
        broker.enrol("EMP-pushed", vec())
        mgr.notify_changes()  # e.g. the MQTT "changes available" message
        assert wait_for(lambda: db.get_enrollment("EMP-pushed") is not None, timeout=5)
    finally:
        mgr.stop(timeout=5)
    assert not mgr.get_sync_status()["periodic"]


def test_periodic_interval_is_jittered(db, broker, monkeypatch):
    delays = []
    mgr = SyncManager(db, broker, models=MODELS, jitter=0.2)
    real_wait = mgr._wake.wait

    def record(timeout=None):
        delays.append(timeout)
        if len(delays) >= 20:
            mgr._stop.set()
        return real_wait(0.001)

    monkeypatch.setattr(mgr._wake, "wait", record)
    mgr.start_periodic_sync(interval_minutes=1)
    assert wait_for(lambda: len(delays) >= 20)
    mgr.stop()
    assert all(48 <= d <= 72 for d in delays) and len(set(delays)) > 10


def test_recognition_never_sees_a_half_applied_sync(db):
    """Every user's embedding is rotated to another user's in one sync; a reader searching
    continuously must always see one whole permutation, old or new."""
    broker = MemoryBroker()
    n = 200
    base = [vec() for _ in range(n)]
    for i in range(n):
        broker.enrol(f"EMP-{i}", base[i])
    matcher = NumpyMatcher()
    mgr = SyncManager(db, broker, matcher=matcher, models=MODELS, page_size=50)
    mgr.sync_now()
    probes = np.stack(base)
    seen, bad = set(), []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            got = tuple(m.user_id for m in matcher.search_batch("SFace", probes))
            seen.add(got)
            if len(set(got)) != n:
                bad.append(got)

    t = threading.Thread(target=reader)
    t.start()
    for shift in range(1, 4):
        for i in range(n):
            broker.enrol(f"EMP-{i}", base[(i + shift) % n])
        assert mgr.sync_now().ok
    stop.set()
    t.join()
    assert not bad
    allowed = {tuple(f"EMP-{(j - s) % n}" for j in range(n)) for s in range(4)}
    assert seen <= allowed and len(seen) >= 2


def test_factory_with_a_source(tmp_path, broker):
    mgr, db, client = SyncManagerFactory.create(
        db_path=str(tmp_path / "f.db"),
        device_id="cam-001",
        broker_url="https://b.example",
        source=broker,
        matcher=NumpyMatcher(),
        models=MODELS,
    )
    assert client is broker
    assert mgr.sync_now().ok and db.count_enrollments() == {"SFace": 25}
    mgr2, _, _ = SyncManagerFactory.create(
        str(tmp_path / "f.db"),
        "cam-001",
        "https://b.example",
        source=broker,
        matcher=NumpyMatcher(),
    )
    assert mgr2.matcher.size("SFace") == 25  # the matcher is loaded from the database
    db.close()


def test_factory_builds_an_iot_client_over_https(tmp_path):
    from fr_core import IoTClient
    from fr_core.broker import ReferenceBroker

    with ReferenceBroker(tmp_path / "broker", api_key="key-123456") as ref:
        for i in range(12):
            ref.store.enrol(f"EMP-{i}", vec())
        mgr, db, client = SyncManagerFactory.create(
            str(tmp_path / "x.db"),
            "cam-001",
            ref.url,
            api_key="key-123456",
            matcher=NumpyMatcher(),
            ca_bundle=str(ref.ca_path),
        )
        assert isinstance(client, IoTClient)
        assert mgr.sync_now().ok and db.count_enrollments() == {"SFace": 12}
        ref.store.remove("EMP-3")
        assert mgr.sync_now().deletions == 1 and mgr.matcher.size("SFace") == 11
        client.stop()
        db.close()


def test_sync_status_shape(db, broker):
    mgr = SyncManager(db, broker, models=MODELS)
    mgr.sync_now()
    status = mgr.get_sync_status()
    assert status["version"] == 25 and status["enrollments"] == {"SFace": 25}
    assert status["last_success_at"].endswith("Z") and status["age_seconds"] < 60
    assert status["last_result"]["ok"] is True


def test_progress_is_reported(db, broker):
    seen = []
    SyncManager(db, broker, models=MODELS, page_size=10).sync_now(
        progress=lambda done, total: seen.append((done, total))
    )
    assert seen[-1][0] == seen[-1][1] == 25 and len(seen) == 3


def test_logs_never_hold_embeddings(db, broker, caplog):
    caplog.set_level(logging.DEBUG)
    SyncManager(db, broker, models=MODELS).sync_now()
    page = broker.fetch_changes(0, 5)
    assert page["upserts"][0]["embedding"][:20] not in caplog.text
    assert base64  # keep the import meaningful for readers of this module
