"""The liveness gate of the recognition stage, frame by frame, with scripted faces: each frame
says who is in which box, how big, and what the liveness analyzer scores them. The real
stage, tracker, EventValidator and matcher run; only the models are scripted, so each rule
is checked where it can fail: handover, scores of another identity, re-confirmation after a
cooldown, faces too small, several faces, a failing analyzer, emotion attribution."""

from __future__ import annotations

import numpy as np
import pytest
from fr_numpy import NumpyMatcher

from fr_core import EventValidator
from fr_core.config import EmotionSettings
from fr_core.interfaces import AnalysisResult, Detection, FrameResult, ReadStatus
from fr_core.pipeline.emotions import EmotionPersistence
from fr_core.pipeline.recognition import RecognitionStage

RNG = np.random.default_rng(7)
FACES = {
    u: v / np.linalg.norm(v)
    for u, v in ((u, RNG.normal(size=128).astype(np.float32)) for u in "ABC")
}


class Frame(np.ndarray):
    """A blank frame carrying its script: [(who, live score, face size, x)]."""

    faces: list[tuple[str, float, int, int]]


def frame(*faces):
    f = np.zeros((480, 640, 3), np.uint8).view(Frame)
    f.faces = [(who, live, size, x) for who, live, size, x in faces]
    return f


def face(who, live, size=100, x=100):
    return (who, live, size, x)


class Detector:
    def detect(self, f):
        return [Detection((x, 100, size, size), 0.99, None) for _, _, size, x in f.faces]


def _scripted(f, detection):
    for who, live, _, x in f.faces:
        if x == detection.bbox[0]:
            return who, live
    raise AssertionError("no such face")


class Embedder:
    model_name, dim = "SFace", 128

    def embed(self, f, detection):
        return FACES[_scripted(f, detection)[0]]


class Liveness:
    threshold, min_face_size, gates_identity = 0.6, 64.0, True

    def __init__(self):
        self.calls = 0

    def analyze(self, f, detection):
        self.calls += 1
        live = _scripted(f, detection)[1]
        if isinstance(live, Exception):
            raise live
        return AnalysisResult("live" if live >= 0.6 else "attack", live, {})


class Emotion:
    name = "emotion"

    def analyze(self, f, detection):
        return AnalysisResult("happy", 0.99, {"happy": 0.99})


def run(frames, *, cooldown=30.0, fps=10.0, emotion=False, liveness=None):
    matcher = NumpyMatcher(threshold=0.5)
    matcher.replace_gallery("SFace", list("AB"), np.stack([FACES["A"], FACES["B"]]))
    clock = {"t": 0.0}
    validator = EventValidator("cam-1", 5, 0.8, cooldown, clock=lambda: clock["t"])
    out = []
    liveness = liveness or Liveness()
    stage = RecognitionStage(
        Detector(),
        Embedder(),
        matcher,
        validator,
        liveness=liveness,
        attack_events=True,
        emotion_analyzer=Emotion() if emotion else None,
        emotions=EmotionPersistence(
            EmotionSettings(min_duration_seconds=0, cooldown_seconds=0, unknown_faces=True)
        )
        if emotion
        else None,
        on_event=lambda e, t: out.append(
            (e.event_type, getattr(e, "user_id", None) or getattr(e, "claimed_user_id", None))
        ),
    )
    for i, f in enumerate(frames):
        clock["t"] = i / fps
        stage(None, FrameResult(ReadStatus.FRAME, f, i, i / fps))
    return out, stage.stats, validator


def test_a_live_face_is_let_in_after_enough_scored_frames():
    events, stats, _ = run([frame(face("A", 0.95))] * 8)
    assert events == [("facial_id", "A")] and stats.live == 1 and stats.liveness_checks >= 5


def test_a_photo_is_refused_reported_and_its_cooldown_withdrawn():
    events, stats, validator = run([frame(face("B", 0.05))] * 30)
    assert events == [("presentation_attack", "B")]
    assert stats.attacks == 1 and not validator.in_cooldown("B")
    # the verdict holds for the track: no second decision while the photo stays in view
    assert stats.liveness_checks == 5


def test_a_photo_taking_over_a_live_face_s_box_is_judged_anew():
    events, *_ = run([frame(face("A", 0.95))] * 8 + [frame(face("B", 0.05))] * 20)
    assert events == [("facial_id", "A"), ("presentation_attack", "B")]


def test_scores_of_another_identity_never_count():
    """A live A scored on 3 frames, then a photo of B too small to score: B is never judged
    on A's scores, so it is never let in."""
    events, stats, _ = run([frame(face("A", 0.95))] * 3 + [frame(face("B", 0.05, 60))] * 20)
    assert events == [] and stats.liveness_deferred >= 1


def test_after_the_cooldown_the_next_confirmation_is_scored_afresh():
    """Employee A clocks in live; a photo of A then stays in front of the camera past the
    cooldown: its confirmation is judged on its own frames, and refused."""
    frames = [frame(face("A", 0.95))] * 8 + [frame(face("A", 0.05))] * 60
    events, stats, _ = run(frames, cooldown=2.0)
    assert events == [("facial_id", "A"), ("presentation_attack", "A")]
    assert stats.live == 1 and stats.attacks == 1


def test_a_face_too_small_holds_the_event_until_it_comes_closer():
    frames = [frame(face("A", 0.95, 40))] * 12 + [frame(face("A", 0.95, 100))] * 8
    events, stats, _ = run(frames)
    assert events == [("facial_id", "A")] and stats.liveness_deferred >= 1
    assert stats.liveness_checks <= 8  # the small frames were never scored


def test_several_faces_are_decided_each_on_its_own():
    both = frame(face("A", 0.95, 100, 50), face("B", 0.05, 100, 400))
    events, *_ = run([both] * 10)
    assert sorted(events) == [("facial_id", "A"), ("presentation_attack", "B")]


def test_a_failing_analyzer_leaves_faces_unscored_and_others_unaffected():
    """An analyzer raising (or returning NaN) on B's face: B is never decided (no score, no
    event), and A in the same frames gets its event."""
    frames = [frame(face("A", 0.95, 100, 50), face("B", RuntimeError("boom"), 100, 400))] * 6
    frames += [frame(face("A", 0.95, 100, 50), face("B", float("nan"), 100, 400))] * 6
    events, stats, _ = run(frames)
    assert events == [("facial_id", "A")]
    assert stats.liveness_errors == 12 and stats.liveness_deferred >= 1 and stats.attacks == 0


@pytest.mark.parametrize("live", [0.95, 0.05])
def test_emotions_name_an_employee_only_once_the_face_is_judged_live(live):
    """Before its verdict (and for an attack, ever) a face's emotion events carry no
    employee id; only after a live verdict may one name the employee."""
    events, *_ = run([frame(face("A", live))] * 40, emotion=True)
    named = [i for i, (kind, user) in enumerate(events) if kind == "emotion" and user == "A"]
    assert events[0] == ("emotion", None)  # analysed before any verdict: nobody named
    if live >= 0.6:
        let_in = events.index(("facial_id", "A"))
        assert all(i > let_in for i in named)
    else:
        assert named == [] and ("facial_id", "A") not in events
        assert ("emotion", None) in events  # analysed as an unknown face instead


class Veto:
    """A second frame cue with its own threshold, scripted to call every face an attack
    (``score``) or to fail."""

    gates_identity, min_face_size = True, 64.0

    def __init__(self, score, name="context", threshold=0.5):
        self.score, self.name, self.threshold = score, name, threshold

    def analyze(self, f, detection):
        return AnalysisResult("x", self.score, {})


class Abstaining:
    """A track cue that keeps one value per frame and never has evidence (a head that did
    not move, for a motion cue)."""

    name, threshold, gates_identity, window, min_observations = "motion", 0.5, True, 8, 4

    def observe(self, result, detection):
        assert result.frame is not None and detection.bbox[2] > 0  # given both
        return 0.0

    def judge(self, observations):
        assert len(observations) >= 4
        return None


def run_cues(frames, cues):
    """The stage with several liveness cues; returns the events themselves and the stats."""
    matcher = NumpyMatcher(threshold=0.5)
    matcher.replace_gallery("SFace", list("AB"), np.stack([FACES["A"], FACES["B"]]))
    clock = {"t": 0.0}
    validator = EventValidator("cam-1", 5, 0.8, 30.0, clock=lambda: clock["t"])
    out = []
    stage = RecognitionStage(
        Detector(),
        Embedder(),
        matcher,
        validator,
        liveness=cues,
        attack_events=True,
        on_event=lambda e, t: out.append(e),
    )
    for i, f in enumerate(frames):
        clock["t"] = i / 10
        stage(None, FrameResult(ReadStatus.FRAME, f, i, i / 10))
    return out, stage.stats


def test_a_second_cue_refuses_what_the_texture_cue_lets_in_and_says_which_cue():
    """Texture says live (0.95 >= 0.6), the context cue says attack (0.1 < 0.5): the fused
    gate refuses, the attack event carries every cue's score and the fused score against
    0.5, and the heartbeat counts the refusal under the cue that made it."""
    events, stats = run_cues([frame(face("A", 0.95))] * 12, [Liveness(), Veto(0.1)])
    assert [e.event_type for e in events] == ["presentation_attack"]
    meta = events[0].metadata
    assert meta.cues == {"Liveness": 0.95, "context": 0.1}
    assert meta.threshold == 0.5 and meta.liveness_score == pytest.approx(0.1)
    assert stats.attacks == 1 and stats.attacks_by_cue == {"context": 1}


def test_every_cue_saying_live_lets_the_employee_in():
    """Both cues at or above their own thresholds: the facial_id event goes out."""
    events, stats = run_cues([frame(face("A", 0.95))] * 12, [Liveness(), Veto(0.8)])
    assert [e.event_type for e in events] == ["facial_id"] and stats.live == 1


def test_an_abstaining_cue_is_no_veto_and_alone_it_holds_the_event():
    """A motion cue without evidence leaves the decision to the texture cue; configured
    alone, it holds the event (the track waits) and never lets anyone in."""
    events, stats = run_cues([frame(face("A", 0.95))] * 12, [Liveness(), Abstaining()])
    assert [e.event_type for e in events] == ["facial_id"]
    events, stats = run_cues([frame(face("A", 0.95))] * 20, [Abstaining()])
    assert events == [] and stats.liveness_deferred >= 1 and stats.live == 0


def test_a_failing_second_cue_costs_its_observations_and_holds_the_event():
    """A cue that raises on every frame: counted, logged, and the event waits (a cue that
    cannot judge never lets a face in), while the other cue's checks go on."""

    class Broken(Veto):
        def analyze(self, f, detection):
            raise RuntimeError("lens cap")

    events, stats = run_cues([frame(face("A", 0.95))] * 12, [Liveness(), Broken(0.9)])
    assert events == [] and stats.liveness_errors >= 5 and stats.liveness_deferred >= 1


def test_cues_need_distinct_names_and_thresholds_inside_0_1():
    """Two cues of one name, or a threshold outside (0, 1), are refused when the stage is
    built, naming the problem."""
    with pytest.raises(ValueError, match="distinct names"):
        run_cues([], [Veto(0.5), Veto(0.5)])
    with pytest.raises(ValueError, match="not in \\(0, 1\\)"):
        run_cues([], [Veto(0.5, threshold=1.5)])


def test_a_live_stranger_taking_over_a_photo_s_box_never_clocks_the_photo_in():
    """A photo of A too small to judge is recognised as A (its event waits); the attacker's
    own live face C, not enrolled, then takes over the box (the track goes on). The frames the
    cues judge must be frames whose identity was checked: C is never A, so no facial_id
    event for A, whether one cue or several judge (review of issue 23)."""
    frames = [frame(face("A", 0.05, 60))] * 6 + [frame(face("C", 0.95, 100))] * 30
    events, stats, _ = run(frames)
    assert ("facial_id", "A") not in events and stats.live == 0
    events, stats = run_cues(frames, [Liveness(), Abstaining()])
    assert all(e.event_type != "facial_id" for e in events) and stats.live == 0


def test_a_refusal_does_not_wait_for_a_slower_cue():
    """The texture cue refuses after its 5 frames while the motion cue still needs 10: the
    track is an attack at once, so the refusing frames cannot roll out of the window."""
    events, stats = run_cues([frame(face("B", 0.05))] * 12, [Liveness(), Abstaining()])
    assert [e.event_type for e in events] == ["presentation_attack"]
    assert stats.attacks == 1 and stats.attacks_by_cue == {"Liveness": 1}
    assert events[0].metadata.cues == {"Liveness": 0.05, "motion": None}


class Observing:
    """A frame cue that reads the FrameResult itself (as the IR and depth cues do) and
    returns a scripted value per frame, without a judge of its own."""

    name, threshold, gates_identity = "ir", 0.5, True

    def __init__(self, values):
        self.values = iter(values)

    def observe(self, result, detection):
        return next(self.values)


def test_values_of_a_frame_cue_without_judge_are_checked_like_scores():
    """9.0 or NaN from observe() is an error for that frame, never averaged into a pass."""
    bad = [9.0, float("nan")] * 3 + [0.01] * 30
    events, stats = run_cues([frame(face("A", 0.95))] * 20, [Observing(bad)])
    assert all(e.event_type != "facial_id" for e in events)
    assert stats.liveness_errors == 6 and stats.live == 0
