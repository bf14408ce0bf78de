"""Engine skeleton: components by name, lifecycle hooks, the event hook, the frame loop."""

from __future__ import annotations

import threading

import pytest

from fr_core import ConfigError, FacialIdEvent, FrEdgeError, hookimpl
from fr_core.config import default_config
from fr_core.pipeline.engine import Engine
from fr_core.plugins import build_registry


def make_event(user="EMP-1"):
    return FacialIdEvent.create(device_id="demo-001", user_id=user, distance=0.3, frames_tracked=5)


class Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def fr_engine_started(self, engine):
        self.calls.append(("started", sorted(engine.components)))

    @hookimpl
    def fr_engine_stopping(self, engine):
        self.calls.append(("stopping", sorted(engine.components)))


def engine_with(*plugins, **camera):
    registry = build_registry(extra_plugins=[(type(p).__name__.lower(), p) for p in plugins])
    sink = []
    cfg = default_config(
        camera={"plugin": "sim", "frames": 20, "width": 64, "height": 48, **camera}, telemetry="sim"
    )
    return Engine(cfg, registry, event_sink=sink.append), sink


def test_runs_the_camera_through_the_handlers_and_calls_lifecycle_hooks():
    rec = Recorder()
    engine, _ = engine_with(rec)
    seen = []
    engine.handlers.append(lambda eng, frame: seen.append(frame.index))
    with engine:
        stats = engine.run()
    assert seen == list(range(20)) and stats.frames == 20
    assert rec.calls == [
        ("started", ["camera", "telemetry"]),
        ("stopping", ["camera", "telemetry"]),
    ]
    assert engine.components == {}  # closed and released
    assert "<lambda>" in stats.stage_ms


def test_max_frames_and_stop_request_from_another_thread():
    engine, _ = engine_with(frames=10_000_000, fps=200)
    with engine:
        assert engine.run(max_frames=5).frames == 5
        timer = threading.Timer(0.2, engine.request_stop)
        timer.start()
        stats = engine.run()
        timer.join()
    assert engine.stopping and 5 < stats.frames < 10_000


def test_camera_errors_reopen_the_source():
    engine, _ = engine_with(frames=6, script=[{"frame": 2, "action": "error"}])
    with engine:
        stats = engine.run()
    assert stats.camera_errors == 1 and stats.camera_reopens == 1
    assert stats.frames == 2 + 6  # two before the failure, then the whole reopened stream


def test_invalid_component_options_fail_before_anything_starts():
    rec = Recorder()
    registry = build_registry(extra_plugins=[("rec", rec)])
    cfg = default_config(camera={"plugin": "sim", "fps": -1}, telemetry={"plugin": "nope"})
    with pytest.raises(ConfigError) as exc:
        Engine(cfg, registry)
    assert {p for p, _ in exc.value.problems} == {"camera.fps", "telemetry.plugin"}
    assert rec.calls == []


def test_run_before_start_is_an_error():
    engine, _ = engine_with()
    with pytest.raises(FrEdgeError, match="not started"):
        engine.run()


def test_failed_start_closes_what_was_built(tmp_path):
    rec = Recorder()
    engine, _ = engine_with(rec, source=str(tmp_path))  # an empty folder: open() fails
    with pytest.raises(FrEdgeError, match="holds no image"):
        engine.start()
    assert engine.components == {} and rec.calls == []


# --- fr_event_before_queue ----------------------------------------------------------------


class Enricher:
    @hookimpl
    def fr_event_before_queue(self, event, engine):
        event.metadata.site = "HQ"


class Vetoer:
    @hookimpl
    def fr_event_before_queue(self, event):
        return event.user_id != "EMP-blocked" and None


class Crasher:
    @hookimpl(tryfirst=True)
    def fr_event_before_queue(self, event):
        event.metadata.half_done = True
        raise RuntimeError("boom")


class Corrupter:
    @hookimpl(trylast=True)
    def fr_event_before_queue(self, event):
        event.__dict__["confidence"] = 7.0  # bypasses assignment validation


def test_plugins_enrich_and_veto_events():
    engine, sink = engine_with(Enricher(), Vetoer())
    with engine:
        assert engine.queue_event(make_event()) is True
        assert engine.queue_event(make_event("EMP-blocked")) is False
    assert [e.user_id for e in sink] == ["EMP-1"]
    assert sink[0].metadata.site == "HQ"
    assert engine.stats.events_queued == 1 and engine.stats.events_vetoed == 1


def test_a_faulty_plugin_never_costs_an_event(caplog):
    engine, sink = engine_with(Crasher(), Enricher(), Corrupter())
    with engine:
        assert engine.queue_event(make_event()) is True
    (event,) = sink
    assert event.metadata.site == "HQ"  # the good plugin's change stays
    assert "half_done" not in event.to_dict()["metadata"]  # the crasher's is undone
    assert event.confidence <= 1.0  # the corrupter's is undone
    assert "plugin crasher failed in fr_event_before_queue" in caplog.text
    assert "plugin corrupter made event" in caplog.text


def test_the_iot_client_applies_the_same_hook_rules(tmp_path):
    from fr_core import DatabaseManager, IoTClient, IoTClientConfig

    registry = build_registry(
        extra_plugins=[
            ("crasher", Crasher()),
            ("enricher", Enricher()),
            ("corrupter", Corrupter()),
            ("vetoer", Vetoer()),
        ]
    )
    client = IoTClient(
        IoTClientConfig(device_id="demo-001", broker_url="https://b.example"),
        db=DatabaseManager(str(tmp_path / "c.db")),
        registry=registry,
    )
    event = client._prepare(make_event(), None, None)
    assert event.metadata.site == "HQ" and event.confidence <= 1.0
    assert "half_done" not in event.to_dict()["metadata"]
    assert client._prepare(make_event("EMP-blocked"), None, None) is None
