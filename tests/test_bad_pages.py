"""A bad enrolment page never bricks a device (issue 12, item 10).

Before: `fr-edge sync` stored a page whose SFace embeddings had 64 values (and one for a model
the device does not run); afterwards `fr-edge run` exited with "query has dimension 128 but
model 'SFace' has 64" until the database was wiped. Now every sync path checks pages against
the models the device runs and refuses a bad page whole, naming the record; a database that
already holds such rows starts anyway, ignores them and replaces them by a full resync.
"""

from __future__ import annotations

import json

import numpy as np
import yaml
from click.testing import CliRunner

from fr_core import DatabaseManager
from fr_core.app.cli import main
from fr_core.broker import ReferenceBroker

BAD_PAGE_KEY = "bad-page-key-4455"


def unit(rng, d):
    v = rng.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def config(tmp_path, ref, frames=5, fps=0, **extra):
    cfg = {
        "device_id": "cam-bad",
        "broker_url": ref.url,
        "db_path": str(tmp_path / "device" / "faces.db"),
        "camera": {"plugin": "sim", "frames": frames, "fps": fps, "width": 64, "height": 48},
        "detector": "yunet",
        "embedder": "sface",
        "transport": {"plugin": "https", "ca_bundle": str(ref.ca_path)},
        **extra,
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fr_edge_sync_refuses_a_page_with_the_wrong_dimension_or_model(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    monkeypatch.setenv("FR_API_KEY", BAD_PAGE_KEY)
    with ReferenceBroker(tmp_path / "broker", api_key=BAD_PAGE_KEY) as ref:
        ref.store.enrol("EMP-GOOD", unit(rng, 128), "SFace")
        ref.store.enrol("EMP-SHORT", unit(rng, 64), "SFace")
        path = config(tmp_path, ref)
        out = CliRunner().invoke(main, ["sync", "--config", str(path), "--no-progress"])
        assert out.exit_code == 1
        assert "user_id 'EMP-SHORT'" in out.output
        assert "dim 64 does not match model 'SFace' (128)" in out.output
        with DatabaseManager(str(tmp_path / "device" / "faces.db")) as db:
            assert db.count_enrollments() == {}  # refused whole: not even EMP-GOOD
        ref.store.remove("EMP-SHORT")
        ref.store.enrol("EMP-ARC", unit(rng, 512), "ArcFace")
        out = CliRunner().invoke(main, ["sync", "--config", str(path), "--no-progress"])
        assert (
            out.exit_code == 1 and "unknown model 'ArcFace'; this device uses SFace" in out.output
        )
        ref.store.remove("EMP-ARC")
        out = CliRunner().invoke(main, ["sync", "--config", str(path), "--no-progress"])
        assert out.exit_code == 0, out.output
        with DatabaseManager(str(tmp_path / "device" / "faces.db")) as db:
            assert db.count_enrollments() == {"SFace": 1}


def test_a_database_left_with_unusable_rows_starts_and_is_repaired(tmp_path, monkeypatch):
    """The state the old version left: SFace rows of 64 values and an ArcFace row."""
    rng = np.random.default_rng(2)
    monkeypatch.setenv("FR_API_KEY", BAD_PAGE_KEY)
    db_path = tmp_path / "device" / "faces.db"
    (tmp_path / "device").mkdir()
    with DatabaseManager(str(db_path)) as db:
        db.upsert_enrollment("EMP-SHORT", unit(rng, 64), "SFace")
        db.upsert_enrollment("EMP-ARC", unit(rng, 512), "ArcFace")
    with ReferenceBroker(tmp_path / "broker", api_key=BAD_PAGE_KEY) as ref:
        ref.store.enrol("EMP-1", unit(rng, 128), "SFace")
        ref.store.enrol("EMP-2", unit(rng, 128), "SFace")
        # 3 s of camera: time for the first sync and two heartbeats
        path = config(tmp_path, ref, frames=90, fps=30, heartbeat_interval_seconds=1)
        out = CliRunner().invoke(main, ["run", "--config", str(path)])
        assert out.exit_code == 0, out.output  # before: "query has dimension 128 ..."
        assert "processed 90 frames" in out.output
        beats = ref.store.heartbeats()
    with DatabaseManager(str(db_path)) as db:
        assert sorted(db.get_all_enrollments()) == ["EMP-1", "EMP-2"]  # replaced by a resync
    assert "cannot use" in out.output and "SFace with 64 values" in out.output
    assert beats and beats[-1]["sync"]["models"] == {"SFace": 128}  # what it accepts
    print(json.dumps(beats[-1])[:500])
