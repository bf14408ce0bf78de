"""The ``liveness_motion`` cue (plugins/fr_cpu/motion.py): a held photo or screen moves as one
plane, a head in 3-D. Checked on real video of live people (the Hamilton clip), on photos
moved as a hand moves a print (synthetic warps, fr_core.evaluation.tracks), on still photos,
on broken input, and through the real recognition stage with a second, texture-like cue."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fr_cpu.motion import MotionAnalyzer, MotionConfig, MotionObservation, measure
from fr_numpy import NumpyMatcher
from pydantic import ValidationError

from fr_core import EventValidator
from fr_core.evaluation.tracks import plane_homography, video_tracks, warped_track
from fr_core.interfaces import AnalysisResult, ComponentKind, Detection, FrameResult, ReadStatus
from fr_core.pipeline.liveness import LivenessGate
from fr_core.pipeline.recognition import RecognitionStage
from fr_core.pipeline.tracker import iou
from fr_core.plugins import build_registry

MIRANDA_COSINE = 0.363
FPS = 29.97


@pytest.fixture(scope="module")
def models():
    registry = build_registry()
    return (
        registry.create(ComponentKind.DETECTOR, "yunet"),
        registry.create(ComponentKind.EMBEDDER, "sface"),
    )


@pytest.fixture(scope="module")
def cue():
    return MotionAnalyzer()


def _largest(detector, image):
    faces = detector.detect(image)
    return max(faces, key=lambda d: d.bbox[2] * d.bbox[3]) if faces else None


def _small(image, side=640):
    f = side / max(image.shape[:2])
    return image if f >= 1 else cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def _observed(cue, frames, detector):
    """The cue's observations of a sequence of frames, following the face by overlap."""
    out, prev = [], None
    for i, frame in enumerate(frames):
        faces = detector.detect(frame)
        if not faces:
            continue
        det = (
            max(faces, key=lambda d: iou(d.bbox, prev.bbox))
            if prev is not None
            else max(faces, key=lambda d: d.bbox[2] * d.bbox[3])
        )
        prev = det
        ob = cue.observe(FrameResult(ReadStatus.FRAME, frame, i), det)
        if ob is not None:
            out.append(ob)
    return out


def _verdicts(cue, observations, stride):
    out = []
    for s in range(0, max(1, len(observations) - cue.window + 1), stride):
        score = cue.judge(observations[s : s + cue.window])
        out.append("abstain" if score is None else "live" if score >= cue.threshold else "attack")
    return out


@pytest.fixture(scope="module")
def hamilton_verdicts(fr_data, models, cue):
    """Verdicts of every window (stride 3) of the clip's tracks, Miranda's and the others'."""
    detector, embedder = models
    portrait = cv2.imread(str(fr_data / "faces" / "lin-manuel-miranda.png"))
    ref = embedder.embed(portrait, _largest(detector, portrait))
    ref = ref / np.linalg.norm(ref)
    mine, others = [], []
    clip = fr_data / "faces" / "short_hamilton_clip.mp4"
    for track in video_tracks(clip, detector, min_face_size=cue.min_face_size):
        sample = track[:: max(1, len(track) // 8)]
        cos = [float(ref @ embedder.embed(r.frame, d)) for r, d in sample]
        obs = [o for o in (cue.observe(r, d) for r, d in track) if o is not None]
        if len(obs) < cue.min_observations:
            continue
        (mine if np.median(cos) >= MIRANDA_COSINE else others).extend(_verdicts(cue, obs, 3))
    return mine, others


def test_miranda_is_never_judged_an_attack_and_mostly_live(hamilton_verdicts):
    """Windows of Miranda's tracks in the real clip: none judged attack, and most (measured:
    all but a few, which abstain) judged live."""
    mine, _ = hamilton_verdicts
    assert len(mine) >= 20
    assert "attack" not in mine
    assert mine.count("live") >= 0.6 * len(mine)


def test_no_live_person_of_the_clip_is_judged_an_attack(hamilton_verdicts):
    """The audience (still people, laughing) abstains or is live, never an attack."""
    _, others = hamilton_verdicts
    assert len(others) >= 20 and "attack" not in others
    assert "abstain" in others  # the stillest faces carry no evidence: measured


@pytest.fixture(scope="module")
def warped_real_verdicts(fr_data, models, cue):
    """Windows (stride 5) of one 25-frame hand-held warp of every 8th live photo."""
    detector, _ = models
    rng = np.random.default_rng(11)
    photos = sorted((fr_data / "antispoof-dev" / "real").glob("*.jpg"))[::8]
    verdicts = []
    for path in photos:
        image = cv2.imread(str(path))
        if image is None or _largest(detector, _small(image)) is None:
            continue
        frames = warped_track(_small(image), 25, rng)
        verdicts += _verdicts(cue, _observed(cue, frames, detector), 5)
    return verdicts


def test_live_photos_moved_as_a_print_are_never_judged_live(warped_real_verdicts):
    """A photo of a live person is flat: moved in perspective it is judged attack or abstains,
    never live; and the perspective of the sway is evidence enough to refuse most windows."""
    assert len(warped_real_verdicts) >= 40
    assert "live" not in warped_real_verdicts
    assert warped_real_verdicts.count("attack") >= 0.5 * len(warped_real_verdicts)


def test_a_still_photo_abstains(fr_data, models, cue):
    """A photo that does not move (sensor noise only) says nothing either way: abstain."""
    detector, _ = models
    image = cv2.imread(str(fr_data / "faces" / "lin-manuel-miranda.png"))
    rng = np.random.default_rng(3)
    obs = _observed(cue, warped_track(image, cue.window, rng, strength=0.0), detector)
    assert len(obs) == cue.window
    m = measure(obs)
    assert m is not None and m.points >= 10  # measured, not refused for lack of texture
    assert cue.judge(obs) is None


def test_a_photo_shifted_and_turned_in_its_plane_abstains(fr_data, models, cue):
    """Moving without turning out of the image plane (shift, in-plane rotation, scale) looks
    the same for a head and for a print: abstain, not attack."""
    detector, _ = models
    image = cv2.imread(str(fr_data / "faces" / "lin-manuel-miranda.png"))
    h, w = image.shape[:2]
    frames = []
    for i in range(cue.window):
        t = i / (cue.window - 1)
        hom = plane_homography(
            w, h, yaw=0.0, pitch=0.0, roll=0.1 * t, shift=(20 * t, -10 * t), scale=1 + 0.05 * t
        )
        frames.append(cv2.warpPerspective(image, hom, (w, h), borderMode=cv2.BORDER_REPLICATE))
    assert cue.judge(_observed(cue, frames, detector)) is None


def waved(image, frames, rng, yaw_deg=25.0, pitch_deg=10.0, hertz=0.5):
    """A print waved in front of the camera: turned back and forth about its vertical
    (``yaw_deg``) and horizontal (``pitch_deg``) axes at ``hertz``, 30 frames a second,
    with sensor noise of sigma 3."""
    h, w = image.shape[:2]
    out = []
    for i in range(frames):
        phase = 2 * np.pi * hertz * i / 30.0
        hom = plane_homography(
            w,
            h,
            yaw=np.radians(yaw_deg) * np.sin(phase),
            pitch=np.radians(pitch_deg) * np.sin(0.8 * phase + 1.0),
            roll=0.0,
            shift=(0, 0),
            scale=1.0,
        )
        f = cv2.warpPerspective(image, hom, (w, h), borderMode=cv2.BORDER_REPLICATE)
        out.append(np.clip(np.rint(f + rng.normal(0, 3, f.shape)), 0, 255).astype(np.uint8))
    return out


def test_a_photo_turned_in_perspective_is_an_attack(fr_data, models, cue):
    """A print turned 25 degrees about its vertical axis (and a little about the horizontal)
    in half a second: the perspective changes, nothing leaves the plane: an attack."""
    detector, _ = models
    image = _small(cv2.imread(str(fr_data / "faces" / "lin-manuel-miranda.png")))
    frames = waved(image, cue.window, np.random.default_rng(2))
    m = measure(_observed(cue, frames, detector))
    assert m is not None and m.perspective >= 2 * cue.config.min_perspective
    score = cue.judge(_observed(cue, frames, detector))
    assert score is not None and score < cue.threshold


FRAME = np.full((360, 640, 3), 128, np.uint8)
GOOD = np.array([[300, 150], [340, 150], [320, 175], [305, 195], [335, 195]], np.float64)


def test_a_detection_without_landmarks_yields_nothing(cue):
    """No landmarks, no region to follow: observe returns None (the gate counts it unscored)."""
    result = FrameResult(ReadStatus.FRAME, FRAME, 0)
    assert cue.observe(result, Detection((280, 120, 80, 100), 0.9, None)) is None
    assert cue.observe(result, Detection((280, 120, 80, 100), 0.9, GOOD)) is not None


@pytest.mark.parametrize(
    "landmarks",
    [
        np.full((5, 2), 300.0),  # all coincident
        np.array([[300, 150], [300, 150], [320, 175], [305, 195], [335, 195]], float),
        np.array([[300, 150], [340, 150], [320, 150], [310, 150], [330, 150]], float),  # a line
        np.where(np.eye(5, 2, dtype=bool), np.nan, GOOD),
        np.where(np.eye(5, 2, dtype=bool), np.inf, GOOD),
        np.zeros((4, 2)),
        np.zeros(10),
        "not landmarks",
    ],
)
def test_degenerate_landmarks_yield_nothing(cue, landmarks):
    """Coincident, collinear, non-finite or misshapen landmarks: None, never a crash."""
    result = FrameResult(ReadStatus.FRAME, FRAME, 0)
    assert cue.observe(result, Detection((280, 120, 80, 100), 0.9, landmarks)) is None


@pytest.mark.parametrize(
    "bbox",
    [
        (float("nan"), 120, 80, 100),
        (280, 120, 0, 100),
        (280, 120, -5, 100),
        (5000, 5000, 80, 100),  # outside the frame
        (0, 0, 1e7, 1e7),  # absurdly large
    ],
)
def test_bad_boxes_and_frames_yield_nothing(cue, bbox):
    """A box that is not finite, empty, outside the frame or absurd, or no frame at all:
    None."""
    assert cue.observe(FrameResult(ReadStatus.FRAME, FRAME, 0), Detection(bbox, 0.9, GOOD)) is None
    none = FrameResult(ReadStatus.FRAME, None, 0)
    assert cue.observe(none, Detection((280, 120, 80, 100), 0.9, GOOD)) is None


def test_judging_too_little_or_blank_input_abstains(cue):
    """No observations, one, foreign objects, or a blank face with no texture to follow:
    the cue abstains (None) rather than guess or crash."""
    ob = cue.observe(
        FrameResult(ReadStatus.FRAME, FRAME, 0), Detection((280, 120, 80, 100), 0.9, GOOD)
    )
    assert isinstance(ob, MotionObservation)
    assert cue.judge([]) is None
    assert cue.judge([ob]) is None
    assert cue.judge(["junk", None, 3.0]) is None
    assert cue.judge([ob] * cue.window) is None  # a uniform grey face: no corners


def test_config_is_validated():
    """Unknown options and inconsistent bounds are refused; the registry builds the cue with
    its declared gates_identity."""
    with pytest.raises(ValidationError):
        MotionConfig(windw=15)
    with pytest.raises(ValidationError):
        MotionConfig(flat_residual=0.01, live_residual=0.005)
    with pytest.raises(ValidationError):
        MotionConfig(window=8, min_observations=10)
    built = build_registry().create(ComponentKind.ANALYZER, "liveness_motion", {"window": 20})
    assert isinstance(built, MotionAnalyzer) and built.gates_identity and built.window == 20
    with pytest.raises(NotImplementedError):
        built.analyze(FRAME, Detection((280, 120, 80, 100), 0.9, GOOD))


# --- through the real recognition stage ----------------------------------------------------


class FooledTexture:
    """A texture-like frame cue that a good print fools: it scores every face live."""

    name, threshold, min_face_size, gates_identity = "liveness", 0.7, 64.0, True

    def analyze(self, frame, detection):
        return AnalysisResult("live", 0.95, {})


def _stage(detector, embedder, portrait, events):
    matcher = NumpyMatcher()
    matcher.replace_gallery(
        "SFace", ["EMP-MIRANDA"], np.stack([embedder.embed(portrait, _largest(detector, portrait))])
    )
    clock = {"t": 0.0}
    validator = EventValidator("cam-1", 5, 0.8, 30.0, clock=lambda: clock["t"])
    gate = LivenessGate([FooledTexture(), MotionAnalyzer()], validator.confirmation_frames)
    verdicts = []
    judge = gate.judge

    def recorded(state):
        verdicts.append(judge(state))
        return verdicts[-1]

    gate.judge = recorded
    stage = RecognitionStage(
        detector,
        embedder,
        matcher,
        validator,
        liveness=gate,
        attack_events=True,
        on_event=lambda e, t: events.append((e.event_type, t.first_frame)),
    )
    return stage, clock, verdicts


def test_stage_lets_miranda_in_and_refuses_his_photo_moved_as_a_print(fr_data, models):
    """The gate holds a texture cue fooled by prints and the motion cue. Live Miranda in the
    clip: his facial_id event goes out. His enrolment photo waved in front of the camera as
    a print: the texture cue says live, the motion cue says attack, so the gate refuses it
    (a presentation_attack event naming the motion cue) and no facial_id goes out."""
    detector, embedder = models
    portrait = cv2.imread(str(fr_data / "faces" / "lin-manuel-miranda.png"))

    events: list[tuple[str, int]] = []
    stage, clock, verdicts = _stage(detector, embedder, portrait, events)
    capture = cv2.VideoCapture(str(fr_data / "faces" / "short_hamilton_clip.mp4"))
    index = 0
    while index < 211:  # Miranda's part of the clip (the audience follows)
        ok, frame = capture.read()
        if not ok:
            break
        clock["t"] = index / FPS
        stage(None, FrameResult(ReadStatus.FRAME, frame, index, index / FPS))
        index += 1
    capture.release()
    assert index == 211
    assert [kind for kind, _ in events] == ["facial_id"]
    assert stage.stats.live == 1 and stage.stats.attacks == 0
    motion = verdicts[-1].cue("liveness_motion")  # the decision rested on the motion too
    assert verdicts[-1].state == "live" and motion.score is not None and motion.live

    events.clear()
    stage, clock, verdicts = _stage(detector, embedder, portrait, events)
    frames = waved(_small(portrait), 60, np.random.default_rng(5))
    for i, frame in enumerate(frames):
        clock["t"] = i / FPS
        stage(None, FrameResult(ReadStatus.FRAME, frame, i, i / FPS))
    assert [kind for kind, _ in events] == ["presentation_attack"]
    assert stage.stats.attacks_by_cue == {"liveness_motion": 1}
    assert verdicts[-1].cue("liveness").live and not verdicts[-1].cue("liveness_motion").live


def test_video_tracks_end_at_shot_cuts(fr_data, models):
    """The clip's cut at frame 211 (Miranda -> the audience) ends every track: no track
    holds frames of both shots; each kept face is at least min_face_size."""
    detector, _ = models
    tracks = video_tracks(
        Path(fr_data / "faces" / "short_hamilton_clip.mp4"), detector, min_face_size=40
    )
    assert tracks
    for track in tracks:
        frames = [r.index for r, _ in track]
        assert frames == sorted(frames)
        assert all(f < 211 for f in frames) or all(f >= 211 for f in frames)
        assert all(min(d.bbox[2:]) >= 40 for _, d in track)
        assert all(r.frame is not None and r.frame.shape == (360, 640, 3) for r, _ in track)


def test_warped_track_is_planar_smooth_and_noisy():
    """warped_track: as many frames as asked, the image's size, sensor noise of about
    sigma 3, and strength 0 leaves the image in place."""
    image = np.full((120, 160, 3), 100, np.uint8)
    image[40:80, 60:100] = 200
    rng = np.random.default_rng(0)
    still = warped_track(image, 4, rng, strength=0.0)
    assert len(still) == 4 and all(f.shape == image.shape and f.dtype == np.uint8 for f in still)
    noise = still[0].astype(float) - image
    assert 2.7 < float(noise.std()) < 3.3 and abs(float(noise.mean())) < 0.2
    moved = warped_track(image, 10, rng, noise=0.0)
    assert not np.array_equal(moved[0], moved[-1])
    with pytest.raises(ValueError):
        warped_track(image, 0, rng)
