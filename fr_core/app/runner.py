"""``fr-edge run``: the device's main job, wired from one config file.

camera -> RecognitionStage (detector, tracker, embedder, matcher, EventValidator) -> event
with the face JPEG -> durable outbox -> OutboxWorker -> transport -> broker; a SyncManager
keeps the enrolments and the matcher current (periodic, and at once on the broker's "changes
available"); a heartbeat thread reports health. SIGTERM or SIGINT stops it all within a
bounded time; events already queued stay in the outbox for the next start.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from fr_core.app.metrics import MetricsServer
from fr_core.app.preview import PreviewWriter
from fr_core.config import AppConfig
from fr_core.delivery.client import IoTClient, IoTClientConfig
from fr_core.enrolment.sync import SyncManager
from fr_core.errors import ConfigError
from fr_core.events import DEFAULT_MATCH_THRESHOLD, format_timestamp, utc_now
from fr_core.interfaces import ComponentKind
from fr_core.pipeline.emotions import EmotionPersistence
from fr_core.pipeline.engine import Engine
from fr_core.pipeline.liveness import LivenessGate, cue_name
from fr_core.pipeline.recognition import RecognitionStage
from fr_core.pipeline.tracker import IouTracker
from fr_core.pipeline.validator import EventValidator
from fr_core.plugins import BuildContext, Registry
from fr_core.storage import DatabaseManager

log = logging.getLogger(__name__)


class DeviceRunner:
    def __init__(
        self, config: AppConfig, registry: Registry, *, preview: Path | None = None
    ) -> None:
        if config.detector is None or config.embedder is None:
            raise ConfigError(
                "fr-edge run needs a detector and an embedder block "
                "(for example detector: yunet, embedder: sface)"
            )
        self.config, self.registry = config, registry
        self.db = DatabaseManager.from_config(config, registry)
        transport = config.transport
        self.client = IoTClient(
            IoTClientConfig(
                device_id=config.device_id,
                broker_url=config.broker_url,
                api_key=config.api_key_value(),
                allow_insecure=config.allow_insecure,
                transport=transport.plugin if transport else None,
                transport_options=transport.options if transport else {},
                db_path=self.db.path,
                dev_mode=config.dev_mode,
            ),
            db=self.db,
            registry=registry,
        )
        self.engine = Engine(config, registry, event_sink=self._queue)
        self.sync: SyncManager | None = None
        self.stage: RecognitionStage | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.started_at = time.monotonic()
        self._names: dict[str, str | None] = {}
        self.metrics: MetricsServer | None = None
        # checked now (folder writable, known suffix), before anything starts
        self.preview = PreviewWriter(preview, None) if preview is not None else None

    def _queue(self, event: Any) -> None:
        self.db.outbox_append(event.to_dict())
        if self.client.worker is not None:
            self.client.worker.wake()

    def start(self) -> None:
        self.db.initialize()
        self.engine.start()
        detector = self.engine.component(ComponentKind.DETECTOR)
        embedder = self.engine.component(ComponentKind.EMBEDDER)
        assert detector is not None and embedder is not None  # checked in __init__
        matcher = self.engine.component(ComponentKind.MATCHER)
        if matcher is None:
            matcher = self.registry.create(
                ComponentKind.MATCHER,
                "numpy",
                context=BuildContext(registry=self.registry, app_config=self.config),
            )
        cfg = self.config
        validator = EventValidator(
            cfg.device_id,
            cfg.confirmation_frames,
            cfg.consistency_threshold,
            cfg.cooldown_seconds,
            match_threshold=cfg.match_threshold or DEFAULT_MATCH_THRESHOLD,
        )
        rec = cfg.recognition
        analyzers = [
            self.engine.components[path]
            for path, kind, _ in cfg.components()
            if kind is ComponentKind.ANALYZER
        ]
        emotion = next((a for a in analyzers if getattr(a, "name", None) == "emotion"), None)
        cues = [a for a in analyzers if getattr(a, "gates_identity", False)]
        for a in analyzers:
            if a is not emotion and a not in cues:
                log.warning(
                    "analyzer %r is built but only 'emotion' and liveness analyzers are used "
                    "by the recognition stage; a plugin can use the others through its hooks",
                    getattr(a, "name", type(a).__name__),
                )
        liveness = (
            LivenessGate(cues, cfg.confirmation_frames, rule=rec.liveness_fusion) if cues else None
        )
        if liveness is None:
            log.info("no liveness analyzer: a photo held to the camera is not detected")
        elif len(cues) > 1:
            log.info(
                "liveness: %d cues (%s), fused by rule %r",
                len(cues),
                ", ".join(cue_name(c) for c in cues),
                rec.liveness_fusion,
            )
        self.stage = RecognitionStage(
            detector,
            embedder,
            matcher,
            validator,
            IouTracker(
                rec.iou_threshold,
                rec.max_missed_frames,
                rec.reembed_every_frames,
                stable_after=rec.stable_after_frames or cfg.confirmation_frames,
                unknown_recheck=rec.unknown_recheck_frames,
            ),
            image_target_kb=rec.image_target_kb,
            min_face_size=rec.min_face_size,
            emotion_analyzer=emotion,
            emotions=EmotionPersistence(cfg.emotions) if emotion is not None else None,
            fusion_frames=rec.fusion_frames,
            liveness=liveness,
            attack_events=rec.attack_events,
        )
        self.engine.handlers.append(self.stage)
        if self.preview is not None:
            self.preview.stage = self.stage
            self.preview.fps = float(cfg.camera.options.get("fps") or 15.0)
            if cfg.dev_mode:  # names only in dev mode, as everywhere
                self.preview.name_of = self._display_name
            self.engine.handlers.append(self.preview)
        self.sync = SyncManager(
            self.db, self.client, matcher=matcher, models={embedder.model_name: embedder.dim}
        )
        self.client.on_changes = self.sync.notify_changes
        self.sync.load_matcher()
        self._warn_about_the_operating_point(matcher)
        self.client.start()
        self.sync.start_periodic_sync(cfg.sync_interval_minutes)
        self._heartbeat = threading.Thread(target=self._beat, name="fr-heartbeat", daemon=True)
        self._heartbeat.start()
        if cfg.metrics.enabled:
            self.metrics = MetricsServer(cfg.metrics, self)
            self.metrics.start()

    def _display_name(self, user_id: str) -> str | None:
        found = self._names.get(user_id, "")
        if found == "":
            enrolment = self.db.get_enrollment(user_id)
            found = self._names[user_id] = enrolment.display_name if enrolment else None
        return found

    def heartbeat_payload(self) -> dict[str, Any]:
        telemetry = self.engine.component(ComponentKind.TELEMETRY)
        stats = self.engine.refresh_stats()
        return {
            "device_id": self.config.device_id,
            "timestamp": format_timestamp(utc_now()),
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
            "fps": round(stats.fps, 2),
            "frames": stats.frames,
            "dropped_frames": stats.camera_dropped,
            "camera": {
                "timeouts": stats.timeouts,
                "errors": stats.camera_errors,
                "reopens": stats.camera_reopens,
                "stalls": stats.camera_stalls,
                # frames that went out without their IR or depth plane (docs/liveness-hardware.md)
                "plane_failures": dict(stats.camera_plane_failures),
            },
            # names say what a figure is: *_mean per frame, *_total since the start
            "stage_ms_mean": stats.stage_ms,
            # faults the loop went on through (docs/reliability.md): frames whose handler
            # failed, by kind; events lost, by why; failed attempts to store one; waiting now
            "frame_errors": dict(stats.frame_errors),
            "events_dropped": dict(stats.events_dropped),
            "events_refused": dict(stats.events_refused),
            "events_pending": stats.events_pending,
            "recognition": {
                (f"{k}_total" if k.endswith("_ms") else k): v
                for k, v in (vars(self.stage.stats) if self.stage else {}).items()
            },
            "operating_point": self.operating_point_report(),
            # components running in place of the configured one (fallback: cpu), and why
            "fallbacks": {p: dict(f) for p, f in self.engine.fallbacks.items()},
            # is the wall clock synchronised? (leases, retries and ages do not depend on it)
            "clock": self.db.clock_status(),
            # templates sealed at rest? with which key (its id) from where; never the key
            "sealing": self.db.sealing_status(),
            "telemetry": telemetry.sample() if telemetry is not None else {},
            "outbox": self.client.stats(),
            "sync": {
                k: v
                for k, v in (self.sync.get_sync_status() if self.sync else {}).items()
                if k in ("version", "age_seconds", "last_error")
            }
            | {
                # what this device accepts in sync pages, and rows it holds but cannot use
                "models": dict(self.sync.models or {}) if self.sync else {},
                "unusable_enrolments": dict(self.sync.unusable) if self.sync else {},
            },
        }

    def _warn_about_the_operating_point(self, matcher: Any) -> None:
        points: dict[str, Any] = getattr(matcher, "operating_points", dict)()
        for model, point in points.items():
            if point.method == "fixed":
                log.warning(
                    "the match threshold of %s is fixed at similarity %.3f (match_threshold); "
                    "with %d enrolled about %.1f of 1,000 strangers' faces would be accepted "
                    "as an employee; remove match_threshold to calibrate it from "
                    "recognition.target_far (docs/recognition.md)",
                    model,
                    point.threshold,
                    point.gallery_size,
                    point.expected_false_accepts_per_1000,
                )

    def operating_point_report(self) -> dict[str, Any]:
        """The decision threshold in force per model and how many pairs of enrolments reach
        it against each other (docs/recognition.md), for heartbeats and metrics."""
        matcher = self.stage.matcher if self.stage else None
        points = getattr(matcher, "operating_points", None)
        if points is None:
            return {}
        out: dict[str, Any] = {}
        confusable = getattr(matcher, "confusable", None)
        for model, point in points().items():
            entry = point.as_dict()
            found = confusable(model) if confusable is not None else None
            # counts only: which employees they are is biometric detail for fr-edge calibrate
            entry["confusable_pairs"] = None if found is None else found[0]
            entry["confusable_max_similarity"] = None if found is None else found[1]
            out[model] = entry
        return out

    def _beat(self) -> None:
        while not self._stop.wait(self.config.heartbeat_interval_seconds):
            self._send_heartbeat("heartbeat")

    def _send_heartbeat(self, what: str) -> None:
        try:
            if self.client.transport is not None:
                self.client.transport.send_heartbeat(self.heartbeat_payload())
        except Exception as exc:  # a missed heartbeat is not worth more than a warning
            log.warning("%s failed: %s", what, exc)

    def run(
        self, max_frames: int | None = None, drain_seconds: float = 10.0, on_started: Any = None
    ) -> dict[str, Any]:
        previous = {
            s: signal.signal(s, lambda *_: self.engine.request_stop())
            for s in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.start()
            if on_started is not None:
                on_started()
            stats = self.engine.run(max_frames=max_frames)
            # end of stream (a file source): give the worker a moment to deliver
            deadline = time.monotonic() + drain_seconds
            while (
                self.db.outbox_stats().depth
                and time.monotonic() < deadline
                and not self.engine.stopping
            ):
                time.sleep(0.1)
            return {
                "engine": stats.as_dict(),
                "recognition": vars(self.stage.stats) if self.stage else {},
                "outbox": self.client.stats(),
            }
        finally:
            self.stop()
            for s, h in previous.items():
                signal.signal(s, h)

    def stop(self) -> None:
        self._stop.set()
        if self.metrics is not None:
            self.metrics.stop()
        if self.sync is not None:
            self.sync.stop(timeout=5)
        beating = self._heartbeat
        if beating is not None:
            beating.join(timeout=5)
            self._heartbeat = None
            # a last heartbeat with the final counts, so the central side sees what the
            # device decided after its last periodic one
            self._send_heartbeat("last heartbeat")
        self.client.stop(timeout=5)
        self.engine.stop()
        if self.preview is not None:
            self.preview.close()
        self.db.close()
