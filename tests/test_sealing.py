"""Face templates sealed at rest (issue 16): no template byte readable from the data folder
without the device key; the migration from schema 4 survives SIGKILL at any point; a lost or
wrong key is a clear error and a full resync, never a crash loop; the key providers."""

from __future__ import annotations

import base64
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fr_sqlite.templates import TemplateSealer

from fr_core import DatabaseManager, StorageError, SyncManager
from fr_core.app.cli import main
from fr_core.errors import FrEdgeError
from fr_core.keys import (
    CredentialKeyProvider,
    EnvKeyProvider,
    FileKeyProvider,
    KeyUnavailableError,
    parse_key,
)
from fr_core.logsetup import redact
from fr_core.testing.syncsource import MemoryBroker

REPO = Path(__file__).resolve().parents[1]
MODELS = {"SFace": 128}
rng = np.random.default_rng(16)


def vec() -> np.ndarray:
    return rng.standard_normal(128).astype(np.float32)


def key_options(path: Path, **extra: object) -> dict:
    return {"key": {"provider": "file", "options": {"path": str(path)}}, **extra}


def open_db(data: Path, key_file: Path, **extra: object) -> DatabaseManager:
    db = DatabaseManager(str(data / "faces.db"), storage_options=key_options(key_file, **extra))
    db.initialize()
    return db


def windows(embedding: np.ndarray) -> set[bytes]:
    """Every run of 4 consecutive float32 values of a template, as stored before issue 16."""
    raw = embedding.astype("<f4").tobytes()
    return {raw[i : i + 16] for i in range(0, len(raw) - 15, 4)}


def folder_holds(folder: Path, needles: set[bytes]) -> list[str]:
    """Files under ``folder`` (every one: database, -wal, -shm, temporaries) holding a needle."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n in data for n in needles):
            found.append(path.name)
    return found


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, Path]:
    data, keys = tmp_path / "data", tmp_path / "keys"
    data.mkdir()
    return data, keys / "device.key"


def test_the_scan_finds_plaintext_where_it_is(tmp_path: Path) -> None:
    # the control for the scans below: a template written in clear is found
    e = vec()
    (tmp_path / "leak.bin").write_bytes(b"x" * 100 + e.astype("<f4").tobytes()[40:72] + b"y")
    assert folder_holds(tmp_path, windows(e)) == ["leak.bin"]


def test_no_template_byte_in_the_data_folder_after_sync_deletion_and_resync(place, caplog):
    data, key_file = place
    caplog.set_level(logging.DEBUG)
    broker = MemoryBroker()
    people = {f"EMP-{i:03d}": vec() for i in range(40)}
    for uid, e in people.items():
        broker.enrol(uid, e)
    db = open_db(data, key_file)
    mgr = SyncManager(db, broker, models=MODELS, page_size=15)
    assert mgr.sync_now().ok
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(3000)
    db.outbox_append(
        {"event_id": "ev-1", "event_type": "facial_id", "image": base64.b64encode(jpeg).decode()}
    )
    local = db.get_all_enrollments()  # the device reads them back: only in memory
    assert all(np.array_equal(local[u], e) for u, e in people.items())
    every = set().union(*(windows(e) for e in people.values()))
    assert folder_holds(data, every) == []
    assert folder_holds(data, {jpeg[4:40], base64.b64encode(jpeg)[8:60]}) == []

    for uid in list(people)[:5]:  # deletions, incremental
        broker.remove(uid)
    assert mgr.sync_now().ok
    assert db.count_enrollments() == {"SFace": 35}
    assert folder_holds(data, every) == []

    people["EMP-new"] = vec()
    broker.enrol("EMP-new", people["EMP-new"])
    every |= windows(people["EMP-new"])
    broker.compact()  # a full resync: snapshot pages go through the staging table
    result = mgr.sync_now()
    assert result.ok and result.snapshot
    assert folder_holds(data, every) == []
    db.close()
    assert folder_holds(data, every) == []
    # nor in the log, as text (base64 of the page) or as numbers
    text = "\n".join(r.getMessage() for r in caplog.records)
    for e in people.values():
        raw = e.astype("<f4").tobytes()
        assert base64.b64encode(raw)[:24].decode() not in text
        assert (
            raw[:16].hex() not in text and f"{e[0]:.6f}" not in text and f"{e[1]:.4g}" not in text
        )


def test_a_template_moved_to_another_employee_fails_and_is_resynced(place, caplog):
    data, key_file = place
    broker = MemoryBroker()
    a, b = vec(), vec()
    broker.enrol("EMP-A", a)
    broker.enrol("EMP-B", b)
    db = open_db(data, key_file)
    mgr = SyncManager(db, broker, models=MODELS)
    assert mgr.sync_now().ok
    with sqlite3.connect(data / "faces.db") as con:  # an attacker copies A's row onto B
        (blob,) = con.execute(
            "SELECT embedding FROM enrolled_users WHERE user_id='EMP-A'"
        ).fetchone()
        con.execute("UPDATE enrolled_users SET embedding=? WHERE user_id='EMP-B'", (blob,))
    with pytest.raises(StorageError, match=r"EMP-B.*fails authentication"):
        db.get_enrollment("EMP-B")
    caplog.set_level(logging.ERROR)
    blocks = list(db.iter_embedding_blocks())  # what a matcher is built from: B left out
    assert [ids for _, ids, _ in blocks] == [["EMP-A"]]
    assert "fail authentication" in caplog.text
    assert db.get_sync_state().version == 0
    assert mgr.sync_now().snapshot  # the next sync brings the real row back
    assert np.array_equal(db.get_enrollment("EMP-B").embedding, b)
    db.close()


def test_a_template_relabelled_to_another_model_fails(place):
    data, key_file = place
    db = open_db(data, key_file)
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    with sqlite3.connect(data / "faces.db") as con:
        con.execute("UPDATE enrolled_users SET model='ArcFace'")
    with pytest.raises(StorageError, match="fails authentication"):
        db.get_enrollment("EMP-1")  # asked for by name: the error
    assert db.get_all_enrollments() == {}  # in bulk: left out, deleted, a resync asked for
    assert db.get_enrollment("EMP-1") is None and db.get_sync_state().version == 0
    db.close()


# --- lost and wrong keys ------------------------------------------------------------------


def test_a_changed_key_forgets_what_the_old_sealed_and_resyncs(place, tmp_path, caplog):
    data, key_file = place
    broker = MemoryBroker()
    for i in range(10):
        broker.enrol(f"EMP-{i}", vec())
    db = open_db(data, key_file)
    assert SyncManager(db, broker, models=MODELS).sync_now().ok
    image = base64.b64encode(b"\xff\xd8" + os.urandom(500)).decode()
    db.outbox_append({"event_id": "ev-kept", "event_type": "facial_id", "n": 1, "image": image})
    old_id = db.sealing_status()["key_id"]
    db.close()

    key_file.unlink()  # the key is lost: a new one is made at the next start
    caplog.set_level(logging.ERROR)
    db = open_db(data, key_file)  # starts: no exception, no crash loop
    assert "is not the key this database was sealed with" in caplog.text
    assert "next sync is a full resync" in caplog.text
    status = db.sealing_status()
    assert status["sealed"] and status["key_id"] != old_id
    assert status["last_key_loss"] == {"templates": 10, "images": 1, "old_key_id": old_id}
    assert db.count_enrollments() == {} and db.get_sync_state().version == 0
    (item,) = db.outbox_claim()
    assert item.event_id == "ev-kept" and "image" not in item.payload  # kept, without its image
    result = SyncManager(db, broker, models=MODELS).sync_now()
    assert result.ok and result.snapshot and db.count_enrollments() == {"SFace": 10}
    db.close()
    db = open_db(data, key_file)  # and the next start is quiet
    assert db.sealing_status()["last_key_loss"] is None
    db.close()


def test_on_key_loss_fail_refuses_to_start_and_says_why(place, tmp_path):
    data, key_file = place
    db = open_db(data, key_file)
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    db.close()
    saved = key_file.read_bytes()
    key_file.chmod(0o600)
    key_file.write_bytes(os.urandom(32))  # the same file now holds another key
    with pytest.raises(StorageError, match=r"not the key this database was sealed with.*restore"):
        open_db(data, key_file, on_key_loss="fail")
    key_file.write_bytes(saved)
    db = open_db(data, key_file)  # nothing was changed: the right key still opens it
    assert db.count_enrollments() == {"SFace": 1}
    db.close()


def test_the_same_key_from_another_provider_is_the_same_key(place, monkeypatch):
    data, key_file = place
    db = open_db(data, key_file)
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    db.close()
    monkeypatch.setenv("FR_EDGE_DEVICE_KEY", key_file.read_bytes().hex())
    db = DatabaseManager(str(data / "faces.db"), storage_options={"key": {"provider": "env"}})
    db.initialize()
    assert db.count_enrollments() == {"SFace": 1}
    assert db.sealing_status()["key_source"] == "environment variable FR_EDGE_DEVICE_KEY"
    db.close()


def test_an_unreadable_key_is_a_clear_error(place, monkeypatch):
    data, _ = place
    monkeypatch.delenv("FR_EDGE_DEVICE_KEY", raising=False)
    db = DatabaseManager(str(data / "faces.db"), storage_options={"key": {"provider": "env"}})
    with pytest.raises(KeyUnavailableError, match="FR_EDGE_DEVICE_KEY is not set"):
        db.initialize()


# --- migration from schema 4 --------------------------------------------------------------


def downgrade_to_v4(db_path: Path, key: bytes) -> None:
    """Turn a schema-5 database into the schema-4 file an earlier fr-edge wrote: templates
    and image keys in clear, no key record."""
    sealer = TemplateSealer(key, "test")
    con = sqlite3.connect(db_path)
    with con:
        for table in ("enrolled_users", "enrolled_users_staging"):
            rows = con.execute(f"SELECT id, user_id, model, embedding FROM {table}").fetchall()
            con.executemany(
                f"UPDATE {table} SET embedding=? WHERE id=?",
                [(sealer.open(u, m, blob), i) for i, u, m, blob in rows],
            )
        keys = con.execute(
            "SELECT k.outbox_id, o.event_id, k.key FROM outbox_keys k "
            "JOIN outbox o ON o.id = k.outbox_id"
        ).fetchall()
        con.executemany(
            "UPDATE outbox_keys SET key=? WHERE outbox_id=?",
            [(sealer.unwrap(e, k), i) for i, e, k in keys],
        )
        con.execute("DROP TABLE key_check")
        con.execute("UPDATE schema_version SET version=4")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def state_of(db_path: Path, key: bytes, people: dict[str, np.ndarray]) -> int:
    """The schema version of a database, after checking it is wholly that version's form."""
    sealer = TemplateSealer(key, "test")
    con = sqlite3.connect(db_path)
    try:
        version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        rows = con.execute("SELECT user_id, model, embedding FROM enrolled_users").fetchall()
        keys = [k for (k,) in con.execute("SELECT key FROM outbox_keys")]
        tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    assert len(rows) == len(people)
    if version == 4:
        assert "key_check" not in tables
        assert all(np.array_equal(np.frombuffer(b, "<f4"), people[u]) for u, _, b in rows)
        assert all(len(k) == 32 for k in keys)
    else:
        assert version == 5 and "key_check" in tables
        opened = {u: np.frombuffer(sealer.open(u, m, b), "<f4") for u, m, b in rows}
        assert all(np.array_equal(opened[u], e) for u, e in people.items())
        assert all(len(k) == 61 for k in keys)
    return int(version)


@pytest.fixture(scope="module")
def v4_database(tmp_path_factory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A schema-4 database with 20,000 templates and queued images, and its key file."""
    folder = tmp_path_factory.mktemp("v4") / "data"
    folder.mkdir()
    key_file = folder.parent / "keys" / "device.key"
    broker = MemoryBroker()
    people = {f"EMP-{i:05d}": vec() for i in range(20_000)}
    for uid, e in people.items():
        broker.enrol(uid, e)
    db = open_db(folder, key_file)
    assert SyncManager(db, broker, models=MODELS, page_size=5000).sync_now().ok
    for i in range(20):
        image = base64.b64encode(b"\xff\xd8" + os.urandom(800)).decode()
        db.outbox_append({"event_id": f"ev-{i}", "event_type": "facial_id", "n": i, "image": image})
    db.close()
    downgrade_to_v4(folder / "faces.db", key_file.read_bytes())
    return folder / "faces.db", key_file, people


def copy_db(source: Path, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    target = to / "faces.db"
    target.write_bytes(source.read_bytes())
    return target


def test_an_existing_database_is_sealed_in_place(v4_database, tmp_path):
    source, key_file, people = v4_database
    path = copy_db(source, tmp_path / "data")
    key = key_file.read_bytes()
    assert state_of(path, key, people) == 4
    assert folder_holds(path.parent, windows(people["EMP-00007"]))  # in clear before
    db = open_db(path.parent, key_file)
    assert state_of(path, key, people) == 5
    assert db.outbox_stats().depth == 20 and all("image" in i.payload for i in db.outbox_claim())
    db.close()
    sample = set().union(*(windows(people[u]) for u in list(people)[::500]))
    assert folder_holds(path.parent, sample) == []  # and nothing in clear after


def test_a_sigkill_during_the_migration_leaves_the_old_form_or_the_new(v4_database, tmp_path):
    source, key_file, people = v4_database
    key = key_file.read_bytes()

    def start(path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "sealing_migrator.py"), str(path), str(key_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline() == "start\n"
        return proc

    timing = start(copy_db(source, tmp_path / "timing"))
    out, _ = timing.communicate(timeout=120)
    took = float(out.split()[1])
    seen = {4: 0, 5: 0}
    fractions = [*np.linspace(0.05, 1.0, 10), 1.5, 2.5, 4.0]  # the last ones: after the commit
    for i, fraction in enumerate(fractions):
        path = copy_db(source, tmp_path / f"kill{i}")
        proc = start(path)
        time.sleep(took * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        seen[state_of(path, key, people)] += 1
    # kills before the commit leave schema 4, after it schema 5; both must have happened
    # for the test to have tried both sides (the timing run measured where the commit is)
    assert seen[4] >= 1 and seen[5] >= 1, seen
    path = tmp_path / "kill0" / "faces.db"
    db = open_db(path.parent, key_file)  # and a later start finishes the job
    assert state_of(path, key, people) == 5 and db.count_enrollments() == {"SFace": 20_000}
    db.close()


# --- key providers ------------------------------------------------------------------------


def test_the_file_provider_creates_a_0400_key_in_a_0700_folder(tmp_path, caplog):
    path = tmp_path / "conf" / "fr-edge" / "device.key"
    caplog.set_level(logging.WARNING)
    key = FileKeyProvider(path).load()
    assert len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "created a new device key" in caplog.text and key.hex() not in caplog.text
    assert FileKeyProvider(path).load() == key  # and the same key the next time


def test_the_file_provider_refuses_a_missing_key_when_told_not_to_create(tmp_path):
    with pytest.raises(KeyUnavailableError, match=r"does not exist.*restore it"):
        FileKeyProvider(tmp_path / "none.key", create=False).load()


def test_a_key_file_readable_by_others_is_tightened(tmp_path, caplog):
    path = tmp_path / "k"
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    caplog.set_level(logging.WARNING)
    FileKeyProvider(path).load()
    assert stat.S_IMODE(path.stat().st_mode) == 0o400 and "readable by others" in caplog.text


@pytest.mark.parametrize(
    "content",
    [b"short", b"z" * 64, b"A" * 31, os.urandom(33)],
    ids=["short", "not-hex", "31", "33"],
)
def test_a_malformed_key_is_refused_without_showing_it(content):
    with pytest.raises(KeyUnavailableError, match="does not hold a device key: expected 32") as e:
        parse_key(content, "the device key file k")
    assert f"({len(content)} bytes found)" in str(e.value)
    assert content.hex() not in str(e.value) and repr(content) not in str(e.value)


def test_keys_are_read_as_raw_hex_or_base64():
    key = os.urandom(32)
    assert parse_key(key, "x") == parse_key(key.hex().encode() + b"\n", "x") == key
    assert parse_key(base64.b64encode(key), "x") == key


def test_the_env_provider_registers_the_key_as_a_secret(monkeypatch):
    key = os.urandom(32).hex()
    monkeypatch.setenv("MY_KEY", key)
    assert redact(f"leaked {key}") == f"leaked {key}"  # not a secret yet
    assert EnvKeyProvider("MY_KEY").load().hex() == key
    assert key not in redact(f"leaked {key}")  # every finished log line is masked now


def test_the_credential_provider_reads_systemds_folder(tmp_path, monkeypatch):
    key = os.urandom(32)
    (tmp_path / "fr-edge-device-key").write_bytes(key)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert CredentialKeyProvider().load() == key
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(KeyUnavailableError, match="LoadCredential=fr-edge-device-key"):
        CredentialKeyProvider().load()


def test_a_key_file_inside_the_data_folder_is_refused(place):
    data, _ = place
    with pytest.raises(FrEdgeError, match="inside the data folder"):
        DatabaseManager(str(data / "faces.db"), storage_options=key_options(data / "k.key"))


def test_status_says_templates_are_sealed_and_by_which_provider(tmp_path):
    key_file = tmp_path / "keys" / "device.key"
    config = tmp_path / "device.yaml"
    config.write_text(
        "device_id: cam-1\nbroker_url: https://broker.example\napi_key: k\n"
        f"db_path: {tmp_path / 'data' / 'faces.db'}\n"
        f"storage:\n  plugin: sqlite\n  key:\n    provider: file\n"
        f"    options: {{path: {key_file}}}\n"
    )
    db = open_db(tmp_path / "data", key_file)
    key_id = db.sealing_status()["key_id"]
    db.close()
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"templates: sealed (AES-256-GCM), key id {key_id} from file {key_file}" in result.output
    as_json = CliRunner().invoke(main, ["status", "--config", str(config), "--json"])
    assert f'"key_id": "{key_id}"' in as_json.output


# --- review findings (issue 16): what must never wipe, jam or leak -------------------------


def test_another_key_source_never_wipes(place, tmp_path):
    """A command run by another user, or a config naming another key, finds another key in
    another place: refused, nothing deleted (else it and the device would wipe each other)."""
    data, key_file = place
    db = open_db(data, key_file)
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    db.close()
    with pytest.raises(StorageError, match="another key source, not a lost key, so nothing"):
        open_db(data, tmp_path / "someone-elses.key")
    db = open_db(data, key_file)
    assert db.count_enrollments() == {"SFace": 1} and db.sealing_status()["last_key_loss"] is None
    db.close()


def test_the_default_key_file_follows_the_database_not_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home-a"))
    db = DatabaseManager(str(tmp_path / "site" / "data" / "faces.db"))
    db.initialize()
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    source = db.sealing_status()["key_source"]
    db.close()
    assert source == f"file {tmp_path / 'site' / 'data.key'}"
    monkeypatch.setenv("HOME", str(tmp_path / "home-b"))  # another user, same database
    db = DatabaseManager(str(tmp_path / "site" / "data" / "faces.db"))
    db.initialize()
    assert db.count_enrollments() == {"SFace": 1}
    db.close()


def test_status_never_makes_a_key_nor_wipes(tmp_path):
    data, key_file = tmp_path / "data", tmp_path / "keys" / "device.key"
    config = tmp_path / "device.yaml"
    config.write_text(
        "device_id: cam-1\nbroker_url: https://broker.example\napi_key: k\n"
        f"db_path: {data / 'faces.db'}\n"
        f"storage: {{plugin: sqlite, key: {{provider: file, options: {{path: {key_file}}}}}}}\n"
    )
    db = open_db(data, key_file)
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    db.close()
    saved = key_file.read_bytes()
    key_file.unlink()  # the key is missing when someone looks
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code != 0 and "does not exist" in result.output
    assert not key_file.exists()  # no new key made
    key_file.parent.mkdir(exist_ok=True)
    key_file.write_bytes(os.urandom(32))  # another key in its place
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert result.exit_code != 0 and "not the key this database was sealed with" in result.output
    key_file.chmod(0o600)
    key_file.write_bytes(saved)
    db = open_db(data, key_file)
    assert db.count_enrollments() == {"SFace": 1}  # nothing was deleted
    db.close()


def test_two_starts_racing_make_one_key(tmp_path):
    path = tmp_path / "keys" / "device.key"
    code = (
        "import sys; from fr_core.keys import FileKeyProvider; "
        "sys.stdout.write(FileKeyProvider(__import__('pathlib').Path(sys.argv[1])).load().hex())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    keys = {p.communicate(timeout=60)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert keys == {path.read_bytes().hex()}
    assert [p.name for p in path.parent.iterdir()] == ["device.key"]  # no temporary left


def test_a_dangling_or_empty_key_file_is_a_clear_error(tmp_path):
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "not-mounted" / "device.key")
    with pytest.raises(KeyUnavailableError, match="cannot read the device key file"):
        FileKeyProvider(link).load()
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"")
    with pytest.raises(KeyUnavailableError, match="empty file was never written: delete it"):
        FileKeyProvider(empty).load()


def test_a_text_variable_cannot_be_a_raw_key(monkeypatch):
    monkeypatch.setenv("FR_EDGE_DEVICE_KEY", "a 32-character passphrase, weak!")
    with pytest.raises(KeyUnavailableError, match="64 hex digits or base64"):
        EnvKeyProvider().load()


def test_a_relative_key_path_is_refused(place):
    data, _ = place
    with pytest.raises(FrEdgeError, match="is relative: give an absolute path"):
        DatabaseManager(
            str(data / "faces.db"),
            storage_options={"key": {"provider": "file", "options": {"path": "keys/d.key"}}},
        )


def test_a_key_file_inside_the_data_folder_is_refused_through_a_url_too(place):
    data, _ = place
    with pytest.raises(FrEdgeError, match="inside the data folder"):
        DatabaseManager(
            f"sqlite:///{data / 'faces.db'}", storage_options=key_options(data / "k.key")
        )


def test_a_lost_key_record_is_found_and_does_not_jam_the_outbox(place, caplog):
    data, key_file = place
    db = open_db(data, key_file)
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    image = base64.b64encode(b"\xff\xd8" + os.urandom(300)).decode()
    db.outbox_append({"event_id": "ev-1", "event_type": "facial_id", "n": 1, "image": image})
    db.close()
    with sqlite3.connect(data / "faces.db") as con:
        con.execute("DELETE FROM key_check")  # damaged: the record is gone
    key_file.chmod(0o600)
    key_file.write_bytes(os.urandom(32))  # and so is the key
    caplog.set_level(logging.ERROR)
    db = open_db(data, key_file)
    assert "id unknown" in caplog.text and db.count_enrollments() == {}
    (item,) = db.outbox_claim()
    assert item.event_id == "ev-1" and "image" not in item.payload
    db.close()


def test_a_row_without_a_template_is_skipped_not_fatal(place):
    data, key_file = place
    db = open_db(data, key_file)
    db.upsert_enrollment("EMP-1", vec(), "SFace")
    db.upsert_enrollment("EMP-2", vec(), "SFace")
    with sqlite3.connect(data / "faces.db") as con:
        con.execute("UPDATE enrolled_users SET embedding=NULL WHERE user_id='EMP-2'")
    assert [ids for _, ids, _ in db.iter_embedding_blocks()] == [["EMP-1"]]
    assert set(db.get_all_enrollments()) == {"EMP-1"}
    db.close()


def test_a_kill_between_the_commit_and_the_wal_truncation_leaves_no_plaintext(
    v4_database, tmp_path
):
    """The migration committed, then the process died before truncating the WAL: the old
    pages stay in the main file until a checkpoint. The next start truncates at once."""
    source, key_file, people = v4_database
    path = copy_db(source, tmp_path / "data")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "sealing_migrator.py"),
            str(path),
            str(key_file),
            "hang",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "start\n" and proc.stdout.readline() == "committed\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert state_of(path, key_file.read_bytes(), people) == 5
    db = open_db(path.parent, key_file)  # the next start, and while it runs
    sample = set().union(*(windows(people[u]) for u in list(people)[::400]))
    assert folder_holds(path.parent, sample) == []
    db.close()
