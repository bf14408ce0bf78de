"""The Prometheus endpoint of `fr-edge run`, scraped over HTTP while the device runs on the
Hamilton clip, and the heartbeat's live figures."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time

import cv2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from fr_core.app.runner import DeviceRunner
from fr_core.broker import ReferenceBroker
from fr_core.config import default_config
from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry

KEY = "metrics-key-123456"


def samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):  # also checks the exposition format
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(scope="module")
def scraped(fr_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    registry = build_registry()
    det = registry.create(ComponentKind.DETECTOR, "yunet")
    emb = registry.create(ComponentKind.EMBEDDER, "sface")
    with ReferenceBroker(tmp / "broker", api_key=KEY) as ref:
        img = cv2.imread(str(fr_data / "faces" / "lin-manuel-miranda.png"))
        face = max(det.detect(img), key=lambda d: d.bbox[2] * d.bbox[3])
        ref.store.enrol("EMP-MIRANDA", emb.embed(img, face), "SFace")
        cfg = default_config(
            broker_url=ref.url,
            api_key=KEY,
            db_path=str(tmp / "device" / "faces.db"),
            heartbeat_interval_seconds=1,
            camera={
                "plugin": "sim",
                "fps": 30,
                "source": str(fr_data / "faces" / "short_hamilton_clip.mp4"),
            },
            # the Jetson config: without TensorRT here, the CPU detector runs instead
            detector={"plugin": "yunet_trt", "fallback": "cpu"},
            embedder="sface",
            matcher="numpy",
            telemetry="sim",
            transport={"plugin": "https", "ca_bundle": str(ref.ca_path)},
            metrics={"enabled": True, "port": 0},
        )
        runner = DeviceRunner(cfg, registry)
        texts: list[str] = []
        done = threading.Event()

        def scrape():
            while not done.is_set():
                if runner.metrics is not None and runner.metrics.url:
                    with contextlib.suppress(requests.RequestException):
                        texts.append(requests.get(runner.metrics.url, timeout=5).text)
                time.sleep(0.3)

        t = threading.Thread(target=scrape, daemon=True)
        result = runner.run(on_started=t.start)
        done.set()
        t.join()
        beats = ref.store.heartbeats()
        url = runner.metrics.url
    return texts, result, beats, url


def test_metrics_are_served_while_running(scraped):
    texts, _, _, url = scraped
    assert url.startswith("http://127.0.0.1:")  # loopback unless configured otherwise
    assert len(texts) >= 5
    last = samples(texts[-1])
    frames = [samples(t)[("fredge_frames_total", ())] for t in texts]
    assert last[("fredge_up", ())] == 1
    assert frames == sorted(frames) and frames[-1] > 0 and len(set(frames)) >= 3  # live
    assert last[("fredge_fps", ())] > 0
    assert last[("fredge_stage_latency_ms", (("stage", "recognition"),))] > 0
    assert last[("fredge_recognition_latency_ms", (("step", "detect"),))] > 0
    assert ("fredge_outbox_queue_depth", ()) in last
    assert ("fredge_telemetry", (("figure", "cpu_temp_c"),)) in last
    assert last[("fredge_frames_dropped_total", ())] >= 0
    assert last[("fredge_events_pending", ())] == 0
    # no liveness analyzer in this config: its decisions are there, at zero
    assert last[("fredge_liveness_decisions_total", (("verdict", "attack"),))] == 0
    fallback = (("component", "detector"), ("configured", "yunet_trt"), ("running", "yunet"))
    if importlib.util.find_spec("tensorrt") is None:
        assert last[("fredge_component_fallback", fallback)] == 1
    else:
        assert ("fredge_component_fallback", fallback) not in last
    # the operating point in force for the one enrolment (SFace's verification floor)
    assert last[("fredge_gallery_size", (("model", "SFace"),))] == 1
    threshold = last[("fredge_decision_threshold", (("model", "SFace"),))]
    assert threshold >= 0.363
    assert last[("fredge_track_decision_threshold", (("model", "SFace"),))] > threshold
    assert last[("fredge_decision_method", (("method", "floor"), ("model", "SFace")))] == 1
    assert last[("fredge_confusable_pairs", (("model", "SFace"),))] == 0
    assert 0 < last[("fredge_expected_false_accepts_per_1000", (("model", "SFace"),))] <= 1


def test_the_scrapes_saw_the_event_and_no_employee_id(scraped):
    texts, result, _, _ = scraped
    events = max(
        samples(t).get(("fredge_events_total", (("type", "facial_id"),)), 0) for t in texts
    )
    assert events == result["recognition"]["events"] >= 1
    assert not any("EMP-" in t for t in texts)  # figures about the device, not about people


def test_heartbeats_carry_live_camera_and_stage_figures(scraped):
    _, _, beats, _ = scraped
    live = [b for b in beats if b["frames"] > 0]
    assert live, "no heartbeat while frames were processed"
    b = live[-1]
    assert set(b["camera"]) == {"timeouts", "errors", "reopens", "stalls", "plane_failures"}
    assert b["camera"]["plane_failures"] == {}  # the clip delivers no IR or depth plane
    assert b["stage_ms_mean"].get("recognition", 0) > 0 and b["dropped_frames"] >= 0
    # a total grows, a mean does not: the names say which is which (issue 12, item 12)
    rec = b["recognition"]
    assert rec["detect_ms_total"] >= b["stage_ms_mean"]["recognition"] * 0.5
    assert not any(k.endswith("_ms") for k in rec) and "stage_ms" not in b
