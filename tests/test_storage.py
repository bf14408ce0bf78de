"""The device database on real SQLite files: schema, pragmas, permissions, migrations,
validation and the dev-mode privacy rules."""

from __future__ import annotations

import os
import sqlite3
import stat

import numpy as np
import pytest
from fr_sqlite.schema import SCHEMA_VERSION

from fr_core import DatabaseManager, DevModeError, StorageError
from fr_core.syncpage import encode_embedding, parse_page

rng = np.random.default_rng(42)


def vec(dim=128):
    return rng.standard_normal(dim).astype(np.float32)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "data" / "faces.db")


@pytest.fixture
def db(db_path):
    with DatabaseManager(db_path, dev_mode=False) as d:
        yield d


@pytest.fixture
def dev_db(tmp_path):
    with DatabaseManager(str(tmp_path / "dev.db"), dev_mode=True) as d:
        yield d


def raw(path):
    return sqlite3.connect(path)


# the README's schema, column for column
SPEC_ENROLLED_USERS = [
    ("id", "INTEGER"),
    ("user_id", "TEXT"),
    ("display_name", "TEXT"),
    ("model", "TEXT"),
    ("detector", "TEXT"),
    ("embedding", "BLOB"),
    ("embedding_dim", "INTEGER"),
    ("sync_version", "INTEGER"),
    ("synced_at", "TEXT"),
    ("created_at", "TEXT"),
]
SPEC_DEVICE_CONFIG = [("key", "TEXT"), ("value", "TEXT"), ("updated_at", "TEXT")]


def test_schema_is_exactly_the_spec(db, db_path):
    con = raw(db_path)
    cols = [(r[1], r[2]) for r in con.execute("PRAGMA table_info(enrolled_users)")]
    assert cols == SPEC_ENROLLED_USERS
    assert [
        (r[1], r[2]) for r in con.execute("PRAGMA table_info(device_config)")
    ] == SPEC_DEVICE_CONFIG
    pk = [r[1] for r in con.execute("PRAGMA table_info(enrolled_users)") if r[5]]
    assert pk == ["id"]
    uniques = [r for r in con.execute("PRAGMA index_list(enrolled_users)") if r[2]]
    assert any(
        con.execute(f"PRAGMA index_info('{r[1]}')").fetchone()[2] == "user_id" for r in uniques
    )
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"outbox", "sync_state", "schema_version", "counters"} <= tables


def test_wal_full_sync_and_secure_delete(db, db_path):
    assert raw(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with db.storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1


def test_files_are_private(db, db_path):
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    folder = os.path.dirname(db_path)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for name in os.listdir(folder):  # the database, -wal and -shm
        assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o600, name


def test_an_existing_world_readable_file_is_tightened(tmp_path):
    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    with DatabaseManager(str(path)):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sqlalchemy_urls_work(tmp_path):
    with DatabaseManager(f"sqlite:///{tmp_path}/url.db") as d:
        d.upsert_enrollment("EMP-1", vec(), "SFace")
        assert d.count_enrollments() == {"SFace": 1}


def test_initialize_is_idempotent(db_path):
    for _ in range(3):
        with DatabaseManager(db_path) as d:
            d.upsert_enrollment("EMP-1", vec(), "SFace")
    con = raw(db_path)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert con.execute("SELECT count(*) FROM sync_state").fetchone()[0] == 1


# --- migrations -----------------------------------------------------------------------------

V1_DDL = """
CREATE TABLE enrolled_users (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT UNIQUE NOT NULL, display_name TEXT,
    model TEXT, detector TEXT, embedding BLOB, embedding_dim INTEGER, sync_version INTEGER,
    synced_at TEXT, created_at TEXT);
CREATE TABLE device_config (key TEXT PRIMARY KEY, value TEXT, updated_at TEXT);
"""


def make_v1(path, rows):
    con = sqlite3.connect(path)
    con.executescript(V1_DDL)
    for uid, name, emb, version in rows:
        con.execute(
            "INSERT INTO enrolled_users (user_id, display_name, model, detector, "
            "embedding, embedding_dim, sync_version, synced_at, created_at) VALUES "
            "(?, ?, 'ArcFace', 'RetinaFace', ?, ?, ?, '2025-01-01T00:00:00.000Z', "
            "'2025-01-01T00:00:00.000Z')",
            (uid, name, emb.tobytes(), emb.size, version),
        )
    con.execute("INSERT INTO device_config VALUES ('site', 'HQ', '2025-01-01T00:00:00.000Z')")
    con.commit()
    con.close()


def test_original_module_database_upgrades_without_losing_data(tmp_path):
    path = str(tmp_path / "v1.db")
    embs = [vec(512) for _ in range(3)]
    make_v1(
        path,
        [("EMP-1", "Ada", embs[0], 7), ("EMP-2", "Bo", embs[1], 12), ("EMP-3", None, embs[2], 9)],
    )
    with DatabaseManager(path, dev_mode=True) as d:
        got = d.get_all_enrollments()
        assert set(got) == {"EMP-1", "EMP-2", "EMP-3"}
        for i, uid in enumerate(["EMP-1", "EMP-2", "EMP-3"]):
            assert np.array_equal(got[uid], embs[i])
        assert d.get_enrollment("EMP-1").display_name == "Ada"
        assert d.get_enrollment("EMP-2").detector == "RetinaFace"
        assert d.get_config("site") == "HQ"
        assert d.get_sync_state().version == 12  # the highest row version
        d.outbox_append({"event_id": "EV1-1-abcdef", "event_type": "facial_id"})
    assert raw(path).execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_upgrading_in_production_removes_stored_names(tmp_path):
    path = str(tmp_path / "v1.db")
    make_v1(path, [("EMP-1", "Ada", vec(512), 1)])
    with DatabaseManager(path, dev_mode=False):
        pass
    assert raw(path).execute("SELECT display_name FROM enrolled_users").fetchall() == [(None,)]


def test_a_newer_schema_is_refused(db_path):
    with DatabaseManager(db_path):
        pass
    con = raw(db_path)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    with pytest.raises(StorageError, match="schema version 99, newer than this fr-edge"):
        DatabaseManager(db_path).initialize()


def test_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    from fr_sqlite.store import SqliteStorage

    # refused when asked to; by default moved aside and rebuilt (tests/test_corruption.py)
    with pytest.raises(StorageError, match=r"junk\.db is corrupt: .*file is not a database"):
        SqliteStorage(str(path), on_corruption="fail").initialize()


def test_use_before_initialize(db_path):
    with pytest.raises(StorageError, match="call initialize"):
        DatabaseManager(db_path).count_enrollments()


# --- enrolments -----------------------------------------------------------------------------


def test_readme_methods_and_more(db):
    e1, e2 = vec(), vec()
    db.upsert_enrollment("EMP-123", e1, "ArcFace")
    db.upsert_enrollment("EMP-456", e2, "ArcFace", detector="YuNet")
    got = db.get_all_enrollments()
    assert set(got) == {"EMP-123", "EMP-456"} and np.array_equal(got["EMP-123"], e1)
    assert got["EMP-123"].dtype == np.float32
    one = db.get_enrollment("EMP-456")
    assert one.model == "ArcFace" and one.detector == "YuNet" and one.dim == 128
    assert one.created_at.endswith("Z") and one.display_name is None
    e3 = vec()
    db.upsert_enrollment("EMP-123", e3, "ArcFace")  # replace
    assert np.array_equal(db.get_enrollment("EMP-123").embedding, e3)
    assert db.count_enrollments() == {"ArcFace": 2}
    assert db.delete_enrollment("EMP-123") is True
    assert db.delete_enrollment("EMP-123") is False
    assert db.get_enrollment("EMP-123") is None
    db.set_config("site", "HQ")
    db.set_config("site", "Lab")
    assert db.get_config("site") == "Lab" and db.get_config("nope", "x") == "x"


def test_models_are_kept_apart(db):
    db.upsert_enrollment("EMP-1", vec(128), "SFace")
    db.upsert_enrollment("EMP-2", vec(512), "ArcFace")
    assert db.count_enrollments() == {"SFace": 1, "ArcFace": 1}
    assert set(db.get_all_enrollments("SFace")) == {"EMP-1"}
    assert [e.user_id for e in db.iter_enrollments("ArcFace")] == ["EMP-2"]


def test_iteration_streams_everything_in_order(db):
    ids = [f"EMP-{i:04d}" for i in range(2500)]
    for uid in reversed(ids):
        db.upsert_enrollment(uid, vec(16), "tiny")
    assert [e.user_id for e in db.iter_enrollments(batch=300)] == ids


@pytest.mark.parametrize(
    ("embedding", "fragment"),
    [
        (np.zeros(128, np.float64), "dtype float32"),
        (np.zeros((2, 64), np.float32), "must be 1-D"),
        (np.zeros(0, np.float32), "empty"),
        (np.full(128, np.nan, np.float32), "NaN or infinite"),
        (np.array([np.inf] + [1.0] * 127, np.float32), "NaN or infinite"),
        (np.zeros(128, np.float32), "all zeros"),
        (np.ones(5000, np.float32), "at most 4096"),
        ([0.1] * 128, "numpy array"),
        (np.ones(64, np.float32), "dimension 64, expected 128"),
    ],
)
def test_bad_embeddings_are_refused(db, embedding, fragment):
    db.upsert_enrollment("EMP-0", vec(), "SFace")
    with pytest.raises(ValueError, match=fragment):
        db.upsert_enrollment("EMP-1", embedding, "SFace")
    assert db.count_enrollments() == {"SFace": 1}


@pytest.mark.parametrize(
    ("user_id", "model"),
    [
        ("", "SFace"),
        ("a\nb", "SFace"),
        ("x" * 129, "SFace"),
        ("EMP-1", ""),
        ("EMP-1", "bad model"),
        (7, "SFace"),
    ],
)
def test_bad_ids_and_models_are_refused(db, user_id, model):
    with pytest.raises(ValueError):
        db.upsert_enrollment(user_id, vec(), model)


def test_a_1xd_row_is_accepted(db):
    db.upsert_enrollment("EMP-1", vec()[None, :], "SFace")
    assert db.get_enrollment("EMP-1").dim == 128


# --- dev mode and privacy -------------------------------------------------------------------


def names_stored(path):
    return (
        raw(path)
        .execute("SELECT count(*) FROM enrolled_users WHERE display_name IS NOT NULL")
        .fetchone()[0]
        + raw(path)
        .execute("SELECT count(*) FROM enrolled_users_staging WHERE display_name IS NOT NULL")
        .fetchone()[0]
    )


def test_dev_mode_stores_names_and_enrols_locally(dev_db):
    dev_db.enroll_local("EMP-1", vec(), "SFace", display_name="Ada Lovelace")
    assert dev_db.get_enrollment("EMP-1").display_name == "Ada Lovelace"


def test_production_refuses_local_enrolment_and_names(db, db_path):
    with pytest.raises(DevModeError, match="local enrolment is refused in production"):
        db.enroll_local("EMP-1", vec(), "SFace", display_name="Ada")
    with pytest.raises(DevModeError, match="display names are stored only in dev mode"):
        db.upsert_enrollment("EMP-1", vec(), "SFace", display_name="Ada")
    db.upsert_enrollment("EMP-1", vec(), "SFace")  # the README's call: allowed, no name
    assert names_stored(db_path) == 0


def page(upserts, from_v=0, to_v=None, snapshot=False):
    to_v = to_v if to_v is not None else max(u["version"] for u in upserts)
    return parse_page(
        {
            "from_version": from_v,
            "to_version": to_v,
            "latest_version": to_v,
            "snapshot": snapshot,
            "upserts": upserts,
            "deletions": [],
        }
    )


def upsert(uid, version, name="Secret Name"):
    return {
        "user_id": uid,
        "model": "SFace",
        "dim": 128,
        "version": version,
        "embedding": encode_embedding(vec()),
        "display_name": name,
    }


def test_production_stores_no_name_on_any_sync_path(db, db_path):
    db.apply_changes(page([upsert("EMP-1", 1), upsert("EMP-2", 2)]))  # incremental
    assert names_stored(db_path) == 0
    db.begin_resync()
    db.apply_changes(page([upsert("EMP-3", 3)], to_v=3, snapshot=True))  # snapshot
    assert names_stored(db_path) == 0
    db.finish_resync(3)
    assert names_stored(db_path) == 0
    assert db.get_enrollment("EMP-3").display_name is None


def test_dev_mode_keeps_names_from_sync(dev_db):
    dev_db.apply_changes(page([upsert("EMP-1", 1, "Ada")]))
    assert dev_db.get_enrollment("EMP-1").display_name == "Ada"


@pytest.mark.parametrize("target", [":memory:", "sqlite://", "sqlite:///:memory:"])
def test_in_memory_databases_are_refused_with_the_reason(target):
    """Issue 12, item 8: each thread's connection got its own empty database, silently.
    (Refused when the storage is built, before any key is looked for.)"""
    from fr_core.errors import FrEdgeError

    with pytest.raises(FrEdgeError, match="in-memory SQLite database: every connection"):
        DatabaseManager(target).initialize()


def test_config_check_refuses_an_in_memory_db_path(tmp_path):
    from click.testing import CliRunner

    from fr_core.app.cli import main

    path = tmp_path / "d.yaml"
    path.write_text("device_id: cam-1\nbroker_url: https://b.example\ndb_path: ':memory:'\n")
    out = CliRunner().invoke(main, ["config", "check", str(path)])
    assert out.exit_code == 2 and "db_path" in out.output and "in-memory SQLite" in out.output


def test_optional_storage_parts_have_defaults(tmp_path):
    """A storage plugin without the optional parts (ClockedStorage, LeaseRenewingStorage,
    SealingStorage in fr_core.interfaces) still serves DatabaseManager: it says so."""
    from fr_core.interfaces import ClockedStorage, LeaseRenewingStorage, SealingStorage

    db = DatabaseManager(str(tmp_path / "o.db"))
    db.initialize()
    real = db.storage
    assert isinstance(real, ClockedStorage | LeaseRenewingStorage | SealingStorage)
    assert db.sealing_status()["sealed"] and "lifetime_seconds" in db.clock_status()

    class Bare:  # the Storage methods alone would be here; the optional ones are not
        pass

    db.storage = Bare()
    assert db.clock_status() == {} and db.sealing_status() == {"sealed": False}
    assert db.outbox_renew(["e"], 10.0) == 0
    db.storage = real
    db.close()
