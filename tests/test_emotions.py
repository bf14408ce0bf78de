"""Emotion events: the persistence rules (fr_core.pipeline.emotions) on scripted analyses, their
invariants on random ones, and the recognition stage emitting them with the real models."""

from __future__ import annotations

import base64
import math

import cv2
import numpy as np
import pytest
from fr_numpy import NumpyMatcher
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fr_core import EventValidator
from fr_core.config import DEFAULT_EMOTIONS, EmotionSettings
from fr_core.events import EMOTION_CODES, parse_event
from fr_core.interfaces import AnalysisResult, ComponentKind, FrameResult, ReadStatus
from fr_core.pipeline.emotions import EmotionPersistence
from fr_core.pipeline.recognition import RecognitionStage
from fr_core.plugins import build_registry


def said(label, score=0.8):
    return AnalysisResult(label, score, {label: score})


def feed(p, seq, track="t1", who="EMP-1", step=0.5, start=0.0):
    """Analyses at ``step`` seconds apart; returns [(time, decision)] of the decisions."""
    out = []
    for i, (label, score) in enumerate(seq):
        d = p.update(track, who, said(label, score), start + i * step)
        if d is not None:
            out.append((start + i * step, d))
    return out


def test_an_emotion_is_reported_once_when_it_has_lasted():
    p = EmotionPersistence(EmotionSettings(min_duration_seconds=2.0, min_intensity=0.5))
    got = feed(
        p,
        [("happy", 0.6), ("happy", 0.8), ("happy", 0.7), ("happy", 0.9), ("happy", 1.0)]
        + [("happy", 0.9)] * 5,
    )
    assert len(got) == 1
    when, d = got[0]
    assert when == 2.0 and d.emotion == "happy"
    assert d.intensity == pytest.approx((0.6 + 0.8 + 0.7 + 0.9 + 1.0) / 5)
    assert d.confidence == 1.0 and d.duration_ms == pytest.approx(2000)


def test_one_disagreeing_analysis_is_tolerated_two_end_the_episode():
    s = EmotionSettings(min_duration_seconds=2.0, max_misses=1)
    p = EmotionPersistence(s)
    ((when, d),) = feed(
        p, [("sad", 0.9), ("neutral", 0.9), ("sad", 0.9), ("sad", 0.9), ("sad", 0.9)]
    )
    assert when == 2.0 and d.confidence == pytest.approx(4 / 5)
    p = EmotionPersistence(s)
    got = feed(p, [("sad", 0.9), ("neutral", 0.9), ("neutral", 0.9), ("sad", 0.9), ("sad", 0.9)])
    assert got == []  # the second episode started at 1.5 s and lasted 0.5 s


def test_weak_or_unlisted_emotions_never_start_an_episode():
    p = EmotionPersistence(EmotionSettings(min_duration_seconds=0.5, min_intensity=0.6))
    assert feed(p, [("angry", 0.59)] * 10) == []
    assert feed(p, [("neutral", 0.99)] * 10, track="t2") == []  # not listed by default
    assert "neutral" not in DEFAULT_EMOTIONS and len(DEFAULT_EMOTIONS) == 6


def test_cooldown_is_per_person_and_emotion():
    p = EmotionPersistence(EmotionSettings(min_duration_seconds=1.0, cooldown_seconds=30))
    assert len(feed(p, [("happy", 0.9)] * 3, track="a", who="EMP-1")) == 1
    # a new track of the same person, same emotion, within the cooldown: nothing
    assert feed(p, [("happy", 0.9)] * 3, track="b", who="EMP-1", start=5) == []
    # another person, or another emotion: reported
    assert len(feed(p, [("happy", 0.9)] * 3, track="c", who="EMP-2", start=5)) == 1
    assert len(feed(p, [("surprise", 0.9)] * 3, track="d", who="EMP-1", start=5)) == 1
    # after the cooldown: reported again
    assert len(feed(p, [("happy", 0.9)] * 3, track="e", who="EMP-1", start=40)) == 1


def test_a_forgotten_track_starts_over():
    p = EmotionPersistence(EmotionSettings(min_duration_seconds=1.0))
    assert feed(p, [("fear", 0.9)] * 2) == []
    p.forget_track("t1")
    assert feed(p, [("fear", 0.9)] * 2, start=1.0) == []


def test_bad_settings_name_what_is_allowed():
    with pytest.raises(ValidationError, match="unknown emotion\\(s\\) 'joy'; known: happy, sad"):
        EmotionSettings(emotions=["happy", "joy"])
    with pytest.raises(ValidationError):
        EmotionSettings(min_intensity=0)


analyses = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),  # tracks
        st.sampled_from(["EMP-1", "EMP-2"]),
        st.sampled_from(list(EMOTION_CODES)),
        st.floats(0.0, 1.0),
        st.floats(0.0, 2.0),  # time step
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(analyses, st.floats(0.0, 3.0), st.floats(0.05, 1.0), st.floats(0.0, 20.0), st.integers(0, 3))
def test_invariants_of_the_emitted_events(seq, min_duration, min_intensity, cooldown, misses):
    s = EmotionSettings(
        min_duration_seconds=min_duration,
        min_intensity=min_intensity,
        cooldown_seconds=cooldown,
        max_misses=misses,
    )
    p = EmotionPersistence(s)
    now, last = 0.0, {}
    per_track_since: dict[str, float] = {}
    for track, who, label, score, step in seq:
        now += step
        per_track_since.setdefault(track, now)
        d = p.update(track, who, AnalysisResult(label, score, {}), now)
        if d is None:
            continue
        assert d.emotion in s.emotions
        assert d.intensity >= min_intensity - 1e-9
        assert 0 < d.confidence <= 1
        assert d.duration_ms >= min_duration * 1000 - 1e-6
        # the episode fits in the time this track has been analysed
        assert d.duration_ms <= (now - per_track_since[track]) * 1000 + 1e-6
        # the analysis that triggers an event names the emotion
        assert label == d.emotion and score >= min_intensity
        key = (who, d.emotion)
        assert key not in last or now - last[key] >= cooldown
        last[key] = now


# --- in the recognition stage, with the real models -------------------------------------------


@pytest.fixture(scope="module")
def models(fr_data, tmp_path_factory):
    reg = build_registry()
    det = reg.create(ComponentKind.DETECTOR, "yunet")
    emb = reg.create(ComponentKind.EMBEDDER, "sface")
    analyzer = reg.create(
        ComponentKind.ANALYZER, "emotion", {"cache_dir": str(tmp_path_factory.mktemp("c"))}
    )
    photo = cv2.imread(str(fr_data / "faces" / "lin-manuel-miranda.png"))
    face = max(det.detect(photo), key=lambda d: d.bbox[2] * d.bbox[3])
    return det, emb, analyzer, photo, face


def stage_for(models, settings, enrolled=True):
    det, emb, analyzer, photo, face = models
    matcher = NumpyMatcher(threshold=0.637)
    if enrolled:
        matcher.replace_gallery("SFace", ["EMP-MIRANDA"], emb.embed(photo, face)[None, :])
    got = []
    stage = RecognitionStage(
        det,
        emb,
        matcher,
        EventValidator("cam-001", 5, 0.8, 3600),
        emotion_analyzer=analyzer,
        emotions=EmotionPersistence(settings),
        on_event=lambda e, t: got.append(e),
    )
    return stage, got


def run_frames(stage, photo, n, step=0.1):
    for i in range(n):
        stage(None, FrameResult(ReadStatus.FRAME, photo, i, i * step))


def test_the_stage_emits_the_persisting_emotion_of_a_recognised_face(models):
    _, _, analyzer, photo, face = models
    expected = analyzer.analyze(photo, face)  # what the model sees in this portrait
    settings = EmotionSettings(
        emotions=list(EMOTION_CODES),
        min_intensity=expected.score * 0.9,
        min_duration_seconds=2.0,
        analyze_every_n_frames=3,
    )
    stage, got = stage_for(models, settings)
    run_frames(stage, photo, 40)  # 4 s of a still face
    emotions = [e for e in got if e.event_type == "emotion"]
    assert [e.event_type for e in got].count("facial_id") == 1
    assert len(emotions) == 1  # once per episode
    e = emotions[0]
    assert e.user_id == "EMP-MIRANDA" and e.emotion == expected.label
    assert e.emotion_code == EMOTION_CODES[expected.label]
    assert e.metadata.intensity == pytest.approx(expected.score, abs=1e-3)
    assert e.confidence == 1.0
    # analyses at frames 0, 3, ... 0.1 s apart: the first at >= 2 s is frame 21
    assert e.metadata.duration_ms == 2100
    assert parse_event(e.to_dict()) == e
    jpeg = base64.b64decode(e.image)
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) <= 50 * 1024
    assert stage.stats.analyses == math.ceil(40 / 3) and stage.stats.emotion_events == 1


def test_unrecognised_faces_are_analysed_only_when_configured(models):
    _, _, analyzer, photo, face = models
    expected = analyzer.analyze(photo, face)
    quiet = EmotionSettings(emotions=list(EMOTION_CODES), min_intensity=expected.score * 0.9)
    stage, got = stage_for(models, quiet, enrolled=False)
    run_frames(stage, photo, 30)
    assert got == [] and stage.stats.analyses == 0
    loud = quiet.model_copy(update={"unknown_faces": True})
    stage, got = stage_for(models, loud, enrolled=False)
    run_frames(stage, photo, 30)
    assert [(e.event_type, e.user_id) for e in got] == [("emotion", None)]


def test_nothing_below_the_intensity_threshold(models):
    _, _, analyzer, photo, face = models
    expected = analyzer.analyze(photo, face)
    if expected.score >= 0.999:
        pytest.fail("the portrait's emotion is certain; pick a threshold test differently")
    settings = EmotionSettings(
        emotions=list(EMOTION_CODES), min_intensity=min(1.0, expected.score + 1e-3)
    )
    stage, got = stage_for(models, settings)
    run_frames(stage, photo, 40)
    assert [e.event_type for e in got] == ["facial_id"] and stage.stats.analyses > 0
    assert np.isfinite(stage.stats.analyze_ms)


def test_a_replayed_clip_gives_the_same_emotion_events_at_any_speed(models, fr_data):
    """Issue 12, item 11: the sim camera stamped frames with their delivery time, so the
    Hamilton clip processed at two speeds gave different emotion events. Frames now carry
    the recording's own time; a second run, slowed by a handler that sleeps, must agree."""
    import time

    from fr_core.config import default_config
    from fr_core.pipeline.engine import Engine

    settings = EmotionSettings(
        emotions=list(EMOTION_CODES),
        min_intensity=0.3,
        min_duration_seconds=0.5,
        analyze_every_n_frames=2,
        unknown_faces=True,
    )

    def replay(delay):
        stage, got = stage_for(models, settings)
        cfg = default_config(
            camera={
                "plugin": "sim",
                "fps": 0,
                "source": str(fr_data / "faces" / "short_hamilton_clip.mp4"),
            }
        )

        def slow(engine, result):
            time.sleep(delay)

        handlers = [stage] + ([slow] if delay else [])
        with Engine(cfg, build_registry(), handlers=handlers) as engine:
            started = time.monotonic()
            engine.run(max_frames=150)
            took = time.monotonic() - started
        emotions = [
            (e.user_id, e.emotion, e.metadata.duration_ms, round(e.metadata.intensity, 3))
            for e in got
            if e.event_type == "emotion"
        ]
        return emotions, took

    fast, fast_took = replay(0.0)
    slow_events, slow_took = replay(0.03)
    assert slow_took > fast_took + 3  # really a different speed (150 x 30 ms)
    assert fast, "no emotion event: the comparison would prove nothing"
    assert slow_events == fast
