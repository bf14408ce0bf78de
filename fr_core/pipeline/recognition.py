"""The recognition stage of the engine: detector -> tracker -> embedder -> matcher ->
EventValidator -> face image -> event.

It is a frame handler (see :mod:`fr_core.pipeline.engine`). Faces too small to embed reliably are
skipped. A track already recognised is not embedded every frame: its identity is carried
until ``reembed_every`` frames have passed. Tracks that end are forgotten by the validator at
once.

With liveness analyzers (cues: ``gates_identity`` true, e.g. fr_cpu's ``liveness``), a track
that matches an employee is shown to every cue on each frame that goes to confirm it (never
on a track already refused, nor while that employee's cooldown runs, nor on a face smaller
than a cue's ``min_face_size``), and each such frame is embedded, so the cues only ever judge
frames whose identity was checked. When the EventValidator confirms it, the
:class:`~fr_core.pipeline.liveness.LivenessGate` decides (too few usable frames: the event
waits and the track is confirmed again later): live, the facial_id event goes out; an attack,
the track is refused until its identity changes (no event, the validator's cooldown
withdrawn, ``attacks`` counted, and with ``attack_events`` a ``presentation_attack`` event
with the face's image). docs/liveness.md.

With an emotion analyzer, each recognised face (and, if configured, each unrecognised one)
is analysed every ``analyze_every_n_frames`` processed frames;
:mod:`fr_core.pipeline.emotions` turns the analyses into emotion events when an emotion persists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fr_core.delivery.imaging import compress_image_for_event
from fr_core.events import EmotionEvent, PresentationAttackEvent
from fr_core.interfaces import FrameResult
from fr_core.pipeline.decision import fuse, identify
from fr_core.pipeline.emotions import EmotionPersistence
from fr_core.pipeline.faults import RateLimitedLog
from fr_core.pipeline.liveness import LivenessGate
from fr_core.pipeline.tracker import IouTracker
from fr_core.pipeline.validator import EventValidator

log = logging.getLogger(__name__)


@dataclass
class RecognitionStats:
    frames: int = 0
    faces: int = 0
    embeddings: int = 0
    recognised: int = 0
    events: int = 0
    analyses: int = 0
    emotion_events: int = 0
    liveness_checks: int = 0  # faces scored by the liveness analyzer
    live: int = 0  # confirmed tracks judged live (their facial_id event went out)
    attacks: int = 0  # confirmed tracks judged presentation attacks (no facial_id event)
    attack_events: int = 0  # presentation_attack events queued
    liveness_deferred: int = 0  # confirmations held: too few frames scored to judge yet
    liveness_errors: int = 0  # faces a liveness cue failed to score (raised, bad score)
    liveness_unscored: int = 0  # faces a cue found nothing usable in (e.g. no IR plane)
    attacks_by_cue: dict[str, int] = field(default_factory=dict)  # the cue that refused
    detect_ms: float = 0.0
    embed_ms: float = 0.0
    analyze_ms: float = 0.0
    liveness_ms: float = 0.0


class RecognitionStage:
    __name__ = "recognition"

    def __init__(
        self,
        detector: Any,
        embedder: Any,
        matcher: Any,
        validator: EventValidator,
        tracker: IouTracker | None = None,
        *,
        image_target_kb: float = 50,
        min_face_size: float = 32.0,
        on_event: Any = None,
        emotion_analyzer: Any = None,
        emotions: EmotionPersistence | None = None,
        fusion_frames: int = 5,
        liveness: Any = None,
        attack_events: bool = False,
    ) -> None:
        self.detector, self.embedder, self.matcher = detector, embedder, matcher
        self.validator = validator
        self.tracker = tracker or IouTracker()
        self.image_target_kb = image_target_kb
        self.min_face_size = min_face_size
        self.on_event = on_event  # called with (event, track) after queueing, for tests/demo
        self.emotion_analyzer = emotion_analyzer
        self.emotions = emotions
        if emotion_analyzer is not None and emotions is None:
            raise ValueError("an emotion analyzer needs an EmotionPersistence")
        if fusion_frames < 1:
            raise ValueError("fusion_frames must be >= 1")
        self.fusion_frames = fusion_frames
        # one analyzer or several cues (docs/liveness.md, "Cues and their fusion")
        if isinstance(liveness, LivenessGate) or liveness is None:
            self.gate = liveness
        else:  # one cue or a list of them; an empty list is refused by the gate
            cues = list(liveness) if isinstance(liveness, (list, tuple)) else [liveness]
            self.gate = LivenessGate(cues, validator.confirmation_frames)
        self.attack_events = attack_events
        self._faults = RateLimitedLog(log)
        self.stats = RecognitionStats()

    def __call__(self, engine: Any, result: FrameResult) -> None:
        frame = result.frame
        if frame is None:
            return
        # Frames are numbered as processed, not as the camera numbered them: when the camera
        # drops frames because we are slow, a face still present is "seen in consecutive
        # frames" by the tracker and the EventValidator.
        fid = self.stats.frames
        self.stats.frames += 1
        t0 = time.perf_counter()
        # Faces smaller than min_face_size (shorter box side, pixels) are not recognised: an
        # SFace embedding of a face upscaled from 20 px to 112 is noise, and on the test clip
        # such a face matched an enrolled employee above the threshold.
        detections = [
            d
            for d in self.detector.detect(frame)
            if min(d.bbox[2], d.bbox[3]) >= self.min_face_size
        ]
        t1 = time.perf_counter()
        self.stats.detect_ms += (t1 - t0) * 1000
        self.stats.faces += len(detections)
        tracks, ended = self.tracker.update(detections, fid)
        for tid in ended:
            self.validator.forget_track(tid)
            if self.emotions is not None:
                self.emotions.forget_track(tid)
        for track in tracks:
            spent = 0.0
            # While the liveness cues observe a track (it matches an employee and is being
            # confirmed), every frame is embedded: a frame the cues judge is a frame whose
            # identity was checked, so a face that took over the box (a live stranger after a
            # photo) is never judged for the identity the photo claimed.
            judging = (
                self.gate is not None
                and track.user_id is not None
                and track.liveness != "attack"
                and not self.validator.in_cooldown(track.user_id)
            )
            if judging or self.tracker.needs_embedding(track, fid):
                t2 = time.perf_counter()
                embedding = self.embedder.embed(frame, track.detection)
                # a track is decided on its last few embeddings fused (docs/recognition.md);
                # a face unlike the fused ones (another person took over the box) starts anew
                if track.embeddings and track.threshold_distance is not None:
                    mean = fuse(track.embeddings)
                    if float(mean @ embedding) < 1.0 - track.threshold_distance:
                        track.embeddings.clear()
                        self._reset_liveness(track)  # another face: its own decision
                track.embeddings.append(embedding)
                while len(track.embeddings) > self.fusion_frames:
                    track.embeddings.popleft()
                fused = len(track.embeddings) > 1
                query = fuse(track.embeddings) if fused else embedding
                decision = identify(self.matcher, self.embedder.model_name, query, fused=fused)
                spent = (time.perf_counter() - t2) * 1000
                self.stats.embed_ms += spent
                self.stats.embeddings += 1
                user = decision.user_id
                distance = 1.0 if decision.reason == "empty_gallery" else decision.distance
                track.threshold_distance = min(2.0, max(1e-6, 1.0 - decision.threshold))
                if user != track.user_id or track.streak == 0:
                    track.confirmed = False  # a different face, or a changed mind
                    track.streak = 1
                    self._reset_liveness(track)  # scores of another identity never count
                else:
                    track.streak += 1
                track.user_id, track.distance, track.embedded_frame = user, distance, fid
            if track.user_id is not None:
                self.stats.recognised += 1
            claimed = track.user_id
            if self.gate is not None:
                if track.liveness == "attack":
                    claimed = None  # an attack confirms nobody for the rest of the track
                elif claimed is not None and not self.validator.in_cooldown(claimed):
                    self._score_liveness(result, track)
            event = self.validator.process_recognition(
                track.id,
                claimed,
                min(max(track.distance, 0.0), 2.0),
                fid,
                inference_ms=(t1 - t0) * 1000 + spent,
                match_threshold=track.threshold_distance,
            )
            if (
                event is not None
                and self.gate is not None
                and not self._judge_liveness(engine, frame, track, event)
            ):
                event = None
            if event is not None:
                track.confirmed = True
                event.image = compress_image_for_event(frame, self.image_target_kb, track.bbox)
                if self._queue(engine, event, track):
                    self.stats.events += 1
            if self.emotion_analyzer is not None:
                self._emotion(engine, frame, track, fid, result.timestamp)

    @staticmethod
    def _reset_liveness(track: Any) -> None:
        track.liveness = None
        track.live_state.clear()

    def _score_liveness(self, result: FrameResult, track: Any) -> None:
        """Show the track's face in this frame to every liveness cue (each keeps its last
        observations). A face too small for a cue, a cue that fails or gives a score that
        is not a number in [0, 1] leaves the frame unscored for that cue; the decision
        waits for enough usable frames."""
        assert self.gate is not None
        if min(track.bbox[2], track.bbox[3]) < self.gate.min_face_size:
            return  # too small to judge: the decision waits for a nearer face
        outcome = self.gate.observe(track.live_state, result, track.detection)
        self.stats.liveness_ms += outcome.ms
        self.stats.liveness_checks += outcome.scored
        self.stats.liveness_unscored += outcome.unscored
        for cue, exc in outcome.errors:
            self.stats.liveness_errors += 1
            kind = f"liveness {cue}: {type(exc).__name__}"
            self._faults.error(
                kind,
                f"{kind}: {exc}; the face stays unscored",
                exc if isinstance(exc, BaseException) else None,
            )

    def _judge_liveness(self, engine: Any, frame: Any, track: Any, event: Any) -> bool:
        """Decide a track the validator just confirmed: True if live (send its event).

        The decision needs enough usable observations of this identity from every cue
        (``confirmation_frames`` scored frames for a frame cue); with fewer (faces too
        small, the employee's cooldown just ended, a failing cue, or every cue abstaining)
        the event is held: the validator's cooldown is withdrawn and the track is
        confirmed again later. A live verdict is spent by its event (the next confirmation
        is judged afresh); an attack verdict holds for the track until its identity
        changes."""
        assert self.gate is not None
        try:
            verdict = self.gate.judge(track.live_state)
        except Exception as exc:  # a cue that cannot judge holds the event, never lets it in
            self.stats.liveness_errors += 1
            kind = f"liveness judge: {type(exc).__name__}"
            self._faults.error(kind, f"{kind}: {exc}; the event is held", exc)
            verdict = None
        if verdict is None or verdict.state == "wait":
            self.validator.withdraw(event.user_id)
            self.stats.liveness_deferred += 1
            return False
        track.live_state.clear()
        if verdict.state == "live":
            track.liveness = "live"
            self.stats.live += 1
            return True
        track.liveness = "attack"
        self.stats.attacks += 1
        if verdict.deciding is not None:
            self.stats.attacks_by_cue[verdict.deciding] = (
                self.stats.attacks_by_cue.get(verdict.deciding, 0) + 1
            )
        self.validator.withdraw(event.user_id)
        log.warning(
            "presentation attack refused: track %s, live score %.3f < %.3f over %d frames "
            "(%s); no facial_id event",
            track.id,
            verdict.score,
            verdict.threshold,
            verdict.frames,
            ", ".join(
                f"{c.cue} {'abstained' if c.score is None else f'{c.score:.3f}/{c.threshold}'}"
                for c in verdict.cues
            ),
        )
        if self.attack_events:
            attack = PresentationAttackEvent.create(
                device_id=self.validator.device_id,
                claimed_user_id=event.user_id,
                liveness_score=verdict.score,
                threshold=verdict.threshold,
                frames=max(1, verdict.frames),
                image=compress_image_for_event(frame, self.image_target_kb, track.bbox),
                cues={c.cue: c.score for c in verdict.cues},
            )
            if self._queue(engine, attack, track):
                self.stats.attack_events += 1
        return False

    def _emotion(self, engine: Any, frame: Any, track: Any, fid: int, when: float) -> None:
        assert self.emotions is not None
        settings = self.emotions.settings
        if (fid - track.first_frame) % settings.analyze_every_n_frames:
            return
        user_id = track.user_id
        if self.gate is not None and track.liveness != "live":
            user_id = None  # not (yet) judged live: never attribute a face to an employee
        if user_id is None and not settings.unknown_faces:
            return
        t0 = time.perf_counter()
        analysis = self.emotion_analyzer.analyze(frame, track.detection)
        self.stats.analyze_ms += (time.perf_counter() - t0) * 1000
        self.stats.analyses += 1
        who = user_id or f"track:{track.id}"
        decision = self.emotions.update(track.id, who, analysis, when)
        if decision is None:
            return
        event = EmotionEvent.create(
            device_id=self.validator.device_id,
            user_id=user_id,
            emotion=decision.emotion,
            confidence=decision.confidence,
            intensity=decision.intensity,
            duration_ms=decision.duration_ms,
            image=compress_image_for_event(frame, self.image_target_kb, track.bbox),
        )
        if self._queue(engine, event, track):
            self.stats.emotion_events += 1

    def _queue(self, engine: Any, event: Any, track: Any) -> bool:
        """Hand an event to the engine (its hooks may veto it); True if it was queued."""
        if engine is not None and not engine.queue_event(event):
            return False
        if self.on_event is not None:
            self.on_event(event, track)
        return True
