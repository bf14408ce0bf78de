"""`fr-edge doctor` on the simulated HAL (issue 13, item 6): every check runs against the
real parts it can reach here (the reference broker over TLS, a real SQLite file, the CPU
models, the sim camera) and says what it could not check; a broken set-up fails by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from fr_core import DatabaseManager
from fr_core.app.cli import main
from fr_core.broker import ReferenceBroker

DOCTOR_KEY = "doctor-key-3141592"


def config(tmp_path, url, ca, **extra):
    cfg = {
        "device_id": "cam-doc",
        "broker_url": url,
        "db_path": str(tmp_path / "device" / "faces.db"),
        "camera": {"plugin": "sim", "frames": 30, "width": 160, "height": 120},
        "detector": "yunet",
        "embedder": "sface",
        "transport": {"plugin": "https", "ca_bundle": str(ca)},
        **extra,
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_doctor_passes_a_working_device(tmp_path, monkeypatch):
    monkeypatch.setenv("FR_API_KEY", DOCTOR_KEY)
    (tmp_path / "device").mkdir(mode=0o700)
    with DatabaseManager(str(tmp_path / "device" / "faces.db")) as db:
        v = np.random.default_rng(0).standard_normal(128).astype(np.float32)
        db.upsert_enrollment("EMP-1", v / np.linalg.norm(v), "SFace")
    with ReferenceBroker(tmp_path / "broker", api_key=DOCTOR_KEY) as ref:
        path = config(tmp_path, ref.url, ref.ca_path)
        out = CliRunner().invoke(main, ["doctor", "--config", str(path), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    by = {c["name"]: c for c in report["checks"]}
    assert report["status"] in ("ok", "warn")
    for name in (
        "platform",
        "versions",
        "model detector",
        "model embedder",
        "camera",
        "data folder",
        "broker",
        "gallery",
    ):
        assert by[name]["status"] == "ok", (name, by[name])
    assert report["status"] == "warn"  # no liveness: the device works, but look at it
    assert "3 frames, 160 x 120" in by["camera"]["detail"]
    assert "credentials accepted" in by["broker"]["detail"]
    assert "SFace: 1" in by["gallery"]["detail"]
    assert "templates sealed, key " in by["gallery"]["detail"]
    assert "against the broker's Date" in by["clock"]["detail"]
    assert by["liveness"]["status"] == "warn" and "no liveness analyzer" in by["liveness"]["detail"]
    assert DOCTOR_KEY not in out.output


def test_doctor_names_what_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("FR_API_KEY", "a-wrong-key-2718")
    with ReferenceBroker(tmp_path / "broker", api_key=DOCTOR_KEY) as ref:
        path = config(
            tmp_path,
            ref.url,
            ref.ca_path,
            camera={"plugin": "sim", "frames": 1, "script": [{"frame": 0, "action": "error"}]},
        )
        out = CliRunner().invoke(main, ["doctor", "--config", str(path)])
    assert out.exit_code == 1
    lines = {
        line.split()[1]: line
        for line in out.output.splitlines()
        if line[:4] in ("FAIL", "WARN", "ok  ", "skip")
    }
    assert lines["camera"].startswith("FAIL") and "no frame" in lines["camera"]
    assert lines["broker"].startswith("FAIL")
    assert lines["gallery"].startswith("WARN") and "no database yet" in lines["gallery"]
    assert out.output.rstrip().endswith("doctor: fail")


def test_doctor_warns_of_a_model_running_on_its_fallback(tmp_path, monkeypatch):
    """The Jetson config (TensorRT with fallback: cpu) where TensorRT cannot start: a WARN
    naming both and why, not a FAIL; without a fallback it is a FAIL."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT starts here")
    monkeypatch.setenv("FR_API_KEY", DOCTOR_KEY)
    with ReferenceBroker(tmp_path / "broker", api_key=DOCTOR_KEY) as ref:
        path = config(
            tmp_path,
            ref.url,
            ref.ca_path,
            detector={"plugin": "yunet_trt", "fallback": "cpu"},
            embedder="sface_trt",
        )
        out = CliRunner().invoke(main, ["doctor", "--config", str(path), "--json"])
    by = {c["name"]: c for c in json.loads(out.output)["checks"]}
    detector, embedder = by["model detector"], by["model embedder"]
    assert detector["status"] == "warn", detector
    assert (
        "yunet_trt cannot start" in detector["detail"]
        and "fallback yunet loaded" in (detector["detail"])
    )
    assert embedder["status"] == "fail" and "TensorRT is not installed" in embedder["detail"]
    assert out.exit_code == 1


def test_doctor_checks_the_liveness_model(tmp_path, monkeypatch, fr_models):
    """With the liveness analyzer configured: its models load (ok) and the liveness check
    names it; with its model files missing, the model check fails with the fetch command."""
    monkeypatch.setenv("FR_API_KEY", DOCTOR_KEY)
    monkeypatch.setenv("FR_EDGE_CACHE", str(tmp_path / "cache"))
    with ReferenceBroker(tmp_path / "broker", api_key=DOCTOR_KEY) as ref:
        good = config(
            tmp_path,
            ref.url,
            ref.ca_path,
            analyzers=[{"plugin": "liveness", "model_dir": str(fr_models / "minifasnet")}],
        )
        by = {
            c["name"]: c
            for c in json.loads(
                CliRunner().invoke(main, ["doctor", "--config", str(good), "--json"]).output
            )["checks"]
        }
        assert by["model analyzers.0"]["status"] == "ok"
        assert by["liveness"]["status"] == "ok" and "analyzers.0" in by["liveness"]["detail"]
        missing = config(tmp_path, ref.url, ref.ca_path, analyzers=["liveness"])
        out = CliRunner().invoke(main, ["doctor", "--config", str(missing), "--json"])
    by = {c["name"]: c for c in json.loads(out.output)["checks"]}
    assert by["model analyzers.0"]["status"] == "fail"
    assert "fr-edge models fetch minifasnet" in by["model analyzers.0"]["detail"]
    assert by["liveness"]["status"] == "warn" and out.exit_code == 1
