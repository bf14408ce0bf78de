"""`fr-edge run`: the main job end to end on the real video, to the reference broker over
real HTTPS: Miranda's facial_id event arrives with a JPEG of his face under 50 KB; nobody
else is reported; the heartbeat carries the figures. The config is the one docs/jetson.md
recommends (TensorRT components with ``fallback: cpu``): without TensorRT here, the CPU
components run instead, and the log, the heartbeats and the metrics say so."""

from __future__ import annotations

import importlib.util

import cv2
import yaml
from click.testing import CliRunner

from fr_core.app.cli import main
from fr_core.broker import ReferenceBroker
from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry

KEY = "run-key-1234567"


def test_run_delivers_recognitions_to_the_broker(fr_data, tmp_path, monkeypatch):
    registry = build_registry()
    det = registry.create(ComponentKind.DETECTOR, "yunet")
    emb = registry.create(ComponentKind.EMBEDDER, "sface")
    with ReferenceBroker(tmp_path / "broker", api_key=KEY) as ref:
        for uid, photo in (
            ("EMP-MIRANDA", "lin-manuel-miranda.png"),
            ("EMP-LACAMOIRE", "alex-lacamoire.png"),
        ):
            img = cv2.imread(str(fr_data / "faces" / photo))
            face = max(det.detect(img), key=lambda d: d.bbox[2] * d.bbox[3])
            ref.store.enrol(uid, emb.embed(img, face), "SFace")
        cfg = {
            "device_id": "cam-001",
            "broker_url": ref.url,
            "api_key": "${FR_TEST_KEY}",
            "db_path": str(tmp_path / "device" / "faces.db"),
            "heartbeat_interval_seconds": 1,
            "camera": {
                "plugin": "sim",
                "fps": 0,
                "source": str(fr_data / "faces" / "short_hamilton_clip.mp4"),
            },
            "detector": {"plugin": "yunet_trt", "fallback": "cpu", "score_threshold": 0.6},
            "embedder": {"plugin": "sface_trt", "fallback": "cpu", "precision": "fp16"},
            "matcher": "numpy",
            "transport": {"plugin": "https", "ca_bundle": str(ref.ca_path)},
            "telemetry": "sim",
            "analyzers": [
                {
                    "plugin": "emotion_trt",
                    "fallback": "cpu",
                    "cache_dir": str(tmp_path / "engines"),
                    "fallback_options": {"cache_dir": str(tmp_path / "models")},
                }
            ],
        }
        path = tmp_path / "device.yaml"
        path.write_text(yaml.safe_dump(cfg))
        monkeypatch.setenv("FR_TEST_KEY", KEY)
        # JSON logs, as a log collector would read them; printed so that the suite-wide
        # secret scan (tests/conftest.py) reads them too
        out = CliRunner().invoke(main, ["--log-format", "json", "run", "--config", str(path)])
        print(out.output)
        assert out.exit_code == 0, out.output
        assert "processed 275 frames" in out.output
        ledger = ref.store.ledger()
        beats = ref.store.heartbeats()
    facial = [e for e in ledger if e["event_type"] == "facial_id"]
    assert [e["user_id"] for e in facial] == ["EMP-MIRANDA"]
    # emotion events, if Miranda's expression persisted, are about him and nobody else
    assert {e["user_id"] for e in ledger if e["event_type"] == "emotion"} <= {"EMP-MIRANDA"}
    event = facial[0]
    assert 0 < event["image_bytes"] <= 50 * 1024
    assert event["event_type"] == "facial_id" and event["confidence"] > 0.5
    assert beats and beats[-1]["device_id"] == "cam-001" and "outbox" in beats[-1]
    assert "cpu_temp_c" in beats[-1]["telemetry"]
    clock = beats[-1]["clock"]
    assert clock["synchronised"] in (True, False, None) and clock["lifetime_seconds"] > 0
    sealing = beats[-1]["sealing"]  # templates sealed at rest (issue 16): the key's id only
    assert sealing["sealed"] and sealing["cipher"] == "AES-256-GCM"
    assert len(sealing["key_id"]) == 16 and sealing["key_source"].startswith("file ")
    assert beats[-1]["recognition"]["analyses"] > 0  # the emotion analyzer ran
    # the operating point in force: calibrated for the two enrolments from the default target
    point = beats[-1]["operating_point"]["SFace"]
    assert point["gallery_size"] == 2 and point["target_far"] == 0.001
    assert point["method"] in ("calibrated", "floor") and point["threshold"] >= 0.363
    assert point["confusable_pairs"] == 0  # Miranda and Lacamoire are far apart
    assert point["confusable_max_similarity"] is None
    assert KEY not in out.output
    # TensorRT components with fallback: cpu: here (no TensorRT) the CPU ones ran, and said so
    trt_here = importlib.util.find_spec("tensorrt") is not None
    fallbacks = beats[-1]["fallbacks"]
    if trt_here:
        assert fallbacks == {}
    else:
        assert {p: (f["configured"], f["running"]) for p, f in fallbacks.items()} == {
            "detector": ("yunet_trt", "yunet"),
            "embedder": ("sface_trt", "sface"),
            "analyzers.0": ("emotion_trt", "emotion"),
        }
        assert "TensorRT is not installed" in fallbacks["detector"]["reason"]
        assert "running 'yunet' instead (fallback)" in out.output


def test_run_needs_recognition_components(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("device_id: cam-001\nbroker_url: https://b.example\n")
    out = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert out.exit_code == 2 and "needs a detector and an embedder" in out.output
