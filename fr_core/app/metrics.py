"""A Prometheus endpoint for ``fr-edge run`` (``metrics.enabled: true``).

Figures are read when Prometheus scrapes (a custom collector), from the same sources as the
heartbeat, so the two never disagree and nothing is counted twice. The server listens on
loopback by default: expose it on purpose (``metrics.address``), behind whatever protects
the device's other ports. No label carries an employee id: the figures are about the device.

Metric names (all prefixed ``fredge_``): frames_total, camera_timeouts_total,
camera_errors_total, camera_reopens_total, camera_stalls_total, frames_dropped_total,
fps, frame_errors_total{kind}, events_dropped_total{reason}, events_pending,
stage_latency_ms{stage}, recognition_latency_ms{step} (detect, embed, analyze: mean per
processed frame, per embedding, per analysis), faces_total, embeddings_total,
events_total{type}, outbox_queue_depth, outbox_oldest_age_seconds, outbox_sent_total,
outbox_failed_sends_total, outbox_dropped_total, sync_version, sync_age_seconds,
decision_threshold{model} and track_decision_threshold{model} (cosine similarities),
decision_method{model, method} (1 for the method in force: calibrated, floor, fixed,
uncalibrated), gallery_size{model}, expected_false_accepts_per_1000{model},
confusable_pairs{model} (the open-set operating point in force, docs/recognition.md),
telemetry{figure}, up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fr_core.config import MetricsSettings
from fr_core.interfaces import ComponentKind

log = logging.getLogger(__name__)


class RunnerCollector:
    """A prometheus_client collector over a :class:`fr_core.app.runner.DeviceRunner`."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        r = self.runner
        s = r.engine.refresh_stats()

        def counter(name: str, doc: str, value: float) -> Any:
            c = CounterMetricFamily(f"fredge_{name}", doc)
            c.add_metric([], float(value))
            return c

        def gauge(name: str, doc: str, value: float | None) -> Any:
            g = GaugeMetricFamily(f"fredge_{name}", doc)
            if value is not None:
                g.add_metric([], float(value))
            return g

        yield gauge("up", "1 while the device runs", 1)
        yield counter("frames", "frames processed", s.frames)
        yield counter("camera_timeouts", "camera reads that timed out", s.timeouts)
        yield counter("camera_errors", "camera errors", s.camera_errors)
        yield counter("camera_reopens", "camera reopenings", s.camera_reopens)
        yield counter("camera_stalls", "silences that the watchdog ended", s.camera_stalls)
        yield counter("frames_dropped", "frames the camera dropped: we were busy", s.camera_dropped)
        yield gauge("fps", "frames processed per second since start", s.fps)
        errors = CounterMetricFamily(
            "fredge_frame_errors", "frames whose handler failed, by kind", labels=["kind"]
        )
        for kind, n in list(s.frame_errors.items()):
            errors.add_metric([kind], n)
        yield errors
        dropped = CounterMetricFamily(
            "fredge_events_dropped", "events lost, by why", labels=["reason"]
        )
        for reason, n in list(s.events_dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield gauge("events_pending", "events waiting in memory for the outbox", s.events_pending)
        fallback = GaugeMetricFamily(
            "fredge_component_fallback",
            "1 for a component running in place of the configured one (it could not start)",
            labels=["component", "configured", "running"],
        )
        for path, f in list(r.engine.fallbacks.items()):
            fallback.add_metric([path, f["configured"], f["running"]], 1)
        yield fallback
        stage = GaugeMetricFamily(
            "fredge_stage_latency_ms", "mean time per frame of each stage", labels=["stage"]
        )
        for name, ms in s.stage_ms.items():
            stage.add_metric([name], ms)
        yield stage
        rec = r.stage.stats if r.stage is not None else None
        if rec is not None:
            steps = GaugeMetricFamily(
                "fredge_recognition_latency_ms", "mean time of a recognition step", labels=["step"]
            )
            for step, total, n in (
                ("detect", rec.detect_ms, rec.frames),
                ("embed", rec.embed_ms, rec.embeddings),
                ("analyze", rec.analyze_ms, rec.analyses),
                ("liveness", rec.liveness_ms, rec.liveness_checks),
            ):
                if n:
                    steps.add_metric([step], total / n)
            yield steps
            yield counter("faces", "faces detected (at least min_face_size)", rec.faces)
            yield counter("embeddings", "faces embedded", rec.embeddings)
            events = CounterMetricFamily("fredge_events", "events queued", labels=["type"])
            events.add_metric(["facial_id"], rec.events)
            events.add_metric(["emotion"], rec.emotion_events)
            events.add_metric(["presentation_attack"], rec.attack_events)
            yield events
            liveness = CounterMetricFamily(
                "fredge_liveness_decisions",
                "confirmed tracks decided by the liveness check, by verdict",
                labels=["verdict"],
            )
            liveness.add_metric(["live"], rec.live)
            liveness.add_metric(["attack"], rec.attacks)
            yield liveness
        yield from self._operating_points(GaugeMetricFamily)
        box = r.client.stats()
        yield gauge("outbox_queue_depth", "events waiting in the outbox", box.get("queued"))
        yield gauge(
            "outbox_oldest_age_seconds",
            "age of the oldest waiting event",
            box.get("oldest_age_seconds"),
        )
        yield counter("outbox_sent", "events the broker acknowledged", box.get("sent", 0))
        yield counter("outbox_failed_sends", "failed sends", box.get("failed_sends", 0))
        yield counter(
            "outbox_dropped", "events dropped by the outbox policy", box.get("dropped_total", 0)
        )
        if r.sync is not None:
            status = r.sync.get_sync_status()
            yield gauge("sync_version", "enrolment version on the device", status.get("version"))
            yield gauge(
                "sync_age_seconds", "seconds since the last sync", status.get("age_seconds")
            )
        telemetry = r.engine.component(ComponentKind.TELEMETRY)
        if telemetry is not None:
            fam = GaugeMetricFamily("fredge_telemetry", "platform figures", labels=["figure"])
            try:
                for key, value in telemetry.sample().items():
                    fam.add_metric([key], float(value))
            except Exception as exc:  # a telemetry failure must not break the scrape
                log.warning("telemetry failed during a metrics scrape: %s", exc)
            yield fam

    def _operating_points(self, family: Any) -> Iterator[Any]:
        points = self.runner.operating_point_report()
        figures = (
            ("decision_threshold", "similarity the nearest enrolment must reach", "threshold"),
            (
                "track_decision_threshold",
                "the same for a track's fused embedding",
                "track_threshold",
            ),
            ("gallery_size", "enrolments the operating point was calibrated for", "gallery_size"),
            (
                "expected_false_accepts_per_1000",
                "strangers per 1,000 predicted to be accepted as an employee",
                "expected_false_accepts_per_1000",
            ),
        )
        for name, doc, key in figures:
            fam = family(f"fredge_{name}", doc, labels=["model"])
            for model, point in points.items():
                fam.add_metric([model], float(point[key]))
            yield fam
        method = family(
            "fredge_decision_method", "how the threshold was set", labels=["model", "method"]
        )
        for model, point in points.items():
            method.add_metric([model, point["method"]], 1.0)
        yield method
        pairs = family(
            "fredge_confusable_pairs",
            "pairs of enrolments that reach the threshold against each other",
            labels=["model"],
        )
        for model, point in points.items():
            if point.get("confusable_pairs") is not None:
                pairs.add_metric([model], float(point["confusable_pairs"]))
        yield pairs


class MetricsServer:
    """Serves the collector over HTTP; ``url`` once started."""

    def __init__(self, settings: MetricsSettings, runner: Any) -> None:
        self.settings, self.runner = settings, runner
        self.url: str | None = None
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(RunnerCollector(self.runner))
        self._server, self._thread = start_http_server(
            self.settings.port, addr=self.settings.address, registry=registry
        )
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/metrics"
        log.info("Prometheus metrics on %s", self.url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
