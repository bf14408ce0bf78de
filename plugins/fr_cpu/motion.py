"""The ``liveness_motion`` cue: a photo or a screen held to the camera moves as one rigid
plane, a head moves in 3-D. It judges a track (its last ``window`` frames), never one frame.

**Why not the 5 landmarks alone.** The plan was the nose tip's parallax against the
homography of the eyes and mouth corners. Measured (tests/bench/liveness_motion.py): YuNet's
landmarks are not equivariant to motion: a flat photo moved as a hand moves a print puts its
nose off that homography by 0.04-0.05 inter-ocular distances (median per window; 0.07-0.13
at the 90th percentile; 0.01 when the photo keeps still), as much as Miranda's real head in
the Hamilton clip (0.08; 0.15). Even a pure shift of a few pixels does it (the detector is
quantised and anchored on a grid). So the landmarks only place the face here; the plane
test runs on the face's own texture.

**The plane test** (plane + parallax):

1. ``observe`` keeps a 112 x 112 grey crop of each frame's face (a square 1.6 times the
   box's larger side, about the box's centre; beyond the frame, its edge repeated) and the
   landmarks' place in it. No landmarks, non-finite or degenerate ones (coincident eyes,
   eyes and mouth on a line), a box that is not finite or lies outside the frame: ``None``.
2. ``judge`` takes up to 80 corners (Shi-Tomasi) of the window's first crop inside the
   eyes-mouth quadrilateral, its eye corners 1.9 times and its mouth corners 1.3 times as
   far from its centre (brows and temples to just under the mouth: not the chin, where a
   print cut under the chin shows the background), and follows them frame to frame with
   pyramidal Lucas-Kanade, each step guessed from the boxes' motion.
3. For each later frame k: the homography H_k from the first crop's points to frame k's
   (RANSAC); the first crop **warped by H_k** and the points tracked again from it to frame
   k's (twice; forward-backward error under 0.3 px); H_k fitted again (least squares; then
   once more without the points over 3 times the median distance, so that a few points off
   the plane, an edge of the print against the background or a glint, do not count).
   Pre-warping removes the perspective distortion that Lucas-Kanade's window cannot follow:
   for a plane the points land on H_k to 0.02-0.05 crop pixels at any tilt up to 20 degrees
   (measured), where tracking without it is off by 0.2-0.5 px at 10-20 degrees.
4. Per frame, in shares of the face's size (the box's larger side): the **residual** r_k,
   the median distance of the points from H_k (a plane: noise; a head that turns: nose,
   brows, cheeks and eye sockets at their own depths; a face that changes expression:
   mouth and eyes; both are live), and the **perspective** d_k, the RMS distance between
   H_k and the similarity (shift, rotation, scale) nearest to it over the points: how far
   the motion turned the face out of the image plane (a print turned 20 degrees about its
   vertical axis: about 0.55%; 15 degrees about the horizontal: 0.6%).
   R and D are the 80th percentiles of r_k and d_k over the window's frames.

**The score** (``threshold`` 0.5):

* R >= ``live_residual`` (0.3%): **live**,
  score = 0.5 + 0.5 * min(1, (R - live_residual) / live_residual);
* else D >= ``min_perspective`` (0.4%), R <= ``flat_residual`` (0.1%) and
  R <= D / ``flat_ratio`` (8): the face turned out of its plane and nothing left the plane:
  **attack**, score = 0.45 * max(R / flat_residual, flat_ratio * R / D) (so in [0, 0.45]);
* else **abstain** (``None``): a still face, or one that only shifted, turned within the
  image plane or changed scale, looks the same live and printed; so does R between the
  bounds. Fewer than 10 corners to follow (a blank or tiny face) or fewer than 3 frames
  measured: abstain too.

**Measured** (``python -m tests.bench.liveness_motion /work/shared/data``, windows of 15
frames, stride 1): flat tracks, the 145 antispoof-dev photos with a face each warped as a
hand sways a print (fr_core.evaluation.tracks.warped_track, SYNTHETIC), 2,320 windows: R
0.03% (median), at most 0.14%, against 0.3% to be live: none live, 83% attack, 17% abstain;
the same photos kept still: all abstain. The real people of the Hamilton clip, 512 windows:
none an attack; Miranda live in 114 of 116 windows (R 0.7% median), the audience live in
55% and abstaining in the rest (still faces: R down to 0.05%, and a perspective change that
compression and small turns still bring to 0.3-1%, but with R at least 0.19 D, against
D / 8 to be an attack). On video of real attacks (camera noise, compression, motion blur,
rolling shutter) the noise floor is **not yet measured**.

**What it cannot catch:** a print that never turns out of its plane (the cue abstains and
the other cues decide); a video replay of a person turning their head (the screen shows
real 3-D motion); a print bent while it moves; fingers moving over a print's face; a 3-D
mask. It is one cue of the gate (fr_core.pipeline.liveness), never the only one.

Cost: ``observe`` copies a 12 kB crop (about 0.1 ms); ``judge`` follows and fits 15 frames
(about 45 ms on the shared 2-core development machine), only when a track is confirmed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fr_core.interfaces import AnalysisResult, Detection, FrameResult

CROP = 112  # side of the kept grey crop, pixels
SPAN = 1.6  # the crop's side over the box's larger side
FACE = CROP / SPAN  # the face's size in crop pixels (the unit of R and D)
#: where corners are taken: the eyes-mouth quadrilateral, its eye corners 1.9 times as far
#: from its centre (brows, temples), its mouth corners 1.3 times (not the chin: a print cut
#: or ending under the chin shows the background there, which is off the print's plane)
MASK_GROWTH = (1.9, 1.9, 1.3, 1.3)
MAX_CORNERS = 80
MIN_POINTS = 10  # fewer corners followed: abstain
MIN_FRAMES = 3  # fewer frames measured: abstain
FB_MAX = 0.3  # forward-backward error (crop pixels) above which a point is dropped
QUANTILE = 80.0  # R and D: this percentile of the per-frame values
_LK: dict[str, Any] = {"winSize": (15, 15), "maxLevel": 2}
#: landmark order (YuNet): right eye, left eye, nose tip, right and left mouth corners;
#: the quadrilateral eyes -> left mouth -> right mouth, in order round it
_QUAD = (0, 1, 4, 3)


class MotionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="least score of a live track (0.5: residual at live_residual; see the "
        "module's docstring for the score)",
    )
    min_face_size: float = Field(
        40.0,
        ge=16.0,
        le=1024.0,
        description="faces whose box's shorter side is smaller (pixels) are not observed",
    )
    window: int = Field(
        15, ge=4, le=120, description="frames kept per track (15: half a second at 30 fps)"
    )
    min_observations: int = Field(
        10, ge=3, le=120, description="frames a track needs before it is judged"
    )
    live_residual: float = Field(
        0.003,
        gt=0,
        lt=0.2,
        description="residual off the plane (share of the face's size) at or above which "
        "the track is live",
    )
    flat_residual: float = Field(
        0.001,
        gt=0,
        lt=0.2,
        description="residual at or below which a track that turned out of its plane is flat",
    )
    flat_ratio: float = Field(
        8.0,
        ge=1.0,
        le=100.0,
        description="a flat track's perspective change is at least this many times its residual",
    )
    min_perspective: float = Field(
        0.004,
        gt=0,
        lt=0.5,
        description="perspective change (share of the face's size) that shows an "
        "out-of-plane turn; less: the motion says nothing and the cue abstains",
    )

    @model_validator(mode="after")
    def _ordered(self) -> MotionConfig:
        if self.flat_residual >= self.live_residual:
            raise ValueError("flat_residual must be below live_residual")
        if self.min_observations > self.window:
            raise ValueError("min_observations must be at most window")
        return self


@dataclass(frozen=True)
class MotionObservation:
    """One frame's face as the cue keeps it: ``crop`` (CROP x CROP grey), the map from frame
    pixels to crop pixels (u = scale * x + origin[0], v = scale * y + origin[1]) and the
    landmarks in crop pixels."""

    crop: np.ndarray
    scale: float
    origin: tuple[float, float]
    landmarks: np.ndarray
    index: int = -1

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return points * self.scale + np.asarray(self.origin)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        return (points - np.asarray(self.origin)) / self.scale


@dataclass(frozen=True)
class MotionMeasure:
    """What :func:`measure` found in a window: R, D (shares of the face's size), the
    corners followed and the frames measured."""

    residual: float
    perspective: float
    points: int
    frames: int


def _usable_landmarks(landmarks: Any) -> np.ndarray | None:
    if landmarks is None:
        return None
    try:
        points = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if points.shape != (5, 2) or not np.isfinite(points).all():
        return None
    iod = float(np.linalg.norm(points[1] - points[0]))
    if iod < 2.0:
        return None  # coincident eyes
    quad = points[list(_QUAD)]
    x, y = quad[:, 0], quad[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    if area < 0.1 * iod * iod:
        return None  # eyes and mouth on a line: no face shape to place a region on
    return points


def observe_face(frame: Any, detection: Detection, index: int = -1) -> MotionObservation | None:
    """The face of ``detection`` in ``frame`` as the cue keeps it; ``None`` when nothing
    usable (no frame, no or degenerate landmarks, a box that is not finite or lies outside
    the frame)."""
    import cv2

    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or frame.size == 0:
        return None
    landmarks = _usable_landmarks(detection.landmarks)
    if landmarks is None:
        return None
    x, y, w, h = (float(v) for v in detection.bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    height, width = frame.shape[:2]
    cx, cy = x + w / 2, y + h / 2
    if not (0 <= cx < width and 0 <= cy < height):
        return None
    side = round(SPAN * max(w, h))
    if side < 8 or side > 4 * max(width, height):
        return None
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    pad = max(0, -x0, -y0, x0 + side - width, y0 + side - height)
    source = frame
    if pad:
        source = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    roi = source[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    if roi.ndim == 3:
        roi = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY if roi.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if roi.dtype != np.uint8:
        roi = np.clip(roi, 0, 255).astype(np.uint8)
    k = CROP / side
    crop = cv2.resize(
        roi, (CROP, CROP), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    )
    # cv2.resize: crop pixel u samples frame x = x0 + (u + 0.5) / k - 0.5
    origin = (k * (0.5 - x0) - 0.5, k * (0.5 - y0) - 0.5)
    lm = landmarks * k + np.asarray(origin)
    return MotionObservation(np.ascontiguousarray(crop), k, origin, lm, index)


def _face_mask(ob: MotionObservation) -> np.ndarray:
    import cv2

    quad = ob.landmarks[list(_QUAD)]
    centre = quad.mean(axis=0)
    growth = np.asarray(MASK_GROWTH)[:, None]
    polygon = np.round(centre + (quad - centre) * growth).astype(np.int32)
    mask = np.zeros((CROP, CROP), np.uint8)
    cv2.fillConvexPoly(mask, polygon, 255)
    return mask


def _similarity_gap(src: np.ndarray, dst: np.ndarray) -> float:
    """RMS distance between ``dst`` and the similarity of ``src`` nearest to it."""
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    zs0, zd0 = zs - zs.mean(), zd - zd.mean()
    energy = float(np.sum(np.abs(zs0) ** 2))
    if energy <= 0:
        return 0.0
    a = np.sum(np.conj(zs0) * zd0) / energy
    return float(np.sqrt(np.mean(np.abs(zd0 - a * zs0) ** 2)))


def _lk(prev: np.ndarray, nxt: np.ndarray, points: np.ndarray, guess: np.ndarray) -> Any:
    import cv2

    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    return cv2.calcOpticalFlowPyrLK(
        prev,
        nxt,
        points.astype(np.float32).reshape(-1, 1, 2),
        guess.astype(np.float32).reshape(-1, 1, 2).copy(),
        flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
        criteria=criteria,
        **_LK,
    )


def _plane_fit(
    ref: MotionObservation, nxt: MotionObservation, points: np.ndarray, guess: np.ndarray
) -> tuple[float, float] | None:
    """(residual, perspective) in crop pixels of ``points`` of ``ref``'s crop followed to
    ``nxt``'s crop (``guess``: where the chain put them), after pre-warping; None: lost."""
    import cv2

    h, _ = cv2.findHomography(points, guess, cv2.RANSAC, 1.5)
    if h is None or not np.isfinite(h).all():
        return None
    src = points.astype(np.float32).reshape(-1, 1, 2)
    for _ in range(2):
        warped = cv2.warpPerspective(
            ref.crop, h, (CROP, CROP), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        start = cv2.perspectiveTransform(src, h).reshape(-1, 2)
        tracked, status, _ = _lk(warped, nxt.crop, start, start)
        back, status_back, _ = _lk(nxt.crop, warped, tracked, start)
        tracked, back = tracked.reshape(-1, 2), back.reshape(-1, 2)
        ok = (
            (status.ravel() == 1)
            & (status_back.ravel() == 1)
            & (np.linalg.norm(back - start, axis=1) < FB_MAX)
        )
        if int(ok.sum()) < MIN_POINTS:
            return None
        h, _ = cv2.findHomography(points[ok], tracked[ok], 0)
        if h is None or not np.isfinite(h).all():
            return None
    kept, target = points[ok].astype(np.float64), tracked[ok].astype(np.float64)
    off = np.linalg.norm(_project(h, kept) - target, axis=1)
    # a few points off the plane (an edge of the print against the background, a glint)
    # must not make a print live: drop those over 3 x the median, fit again, take the median
    inliers = off <= max(3.0 * float(np.median(off)), 0.05)
    if int(inliers.sum()) >= MIN_POINTS:
        refit, _ = cv2.findHomography(kept[inliers], target[inliers], 0)
        if refit is not None and np.isfinite(refit).all():
            h = refit
    predicted = _project(h, kept)
    residual = float(np.median(np.linalg.norm(predicted - target, axis=1)))
    return residual, _similarity_gap(kept, predicted)


def _project(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.perspectiveTransform(points.reshape(-1, 1, 2), h).reshape(-1, 2)


def measure(observations: Sequence[MotionObservation]) -> MotionMeasure | None:
    """R and D of a window (see the module's docstring); ``None`` when it cannot be
    measured (fewer than 10 corners, fewer than 3 frames followed)."""
    import cv2

    obs = [o for o in observations if isinstance(o, MotionObservation)]
    if len(obs) < 2:
        return None
    ref = obs[0]
    corners = cv2.goodFeaturesToTrack(ref.crop, MAX_CORNERS, 0.01, 4, mask=_face_mask(ref))
    if corners is None or len(corners) < MIN_POINTS:
        return None
    points = corners.reshape(-1, 2).astype(np.float32)
    current = ref.to_frame(points.astype(np.float64))  # frame pixels, followed along
    alive = np.ones(len(points), bool)
    residuals: list[float] = []
    perspectives: list[float] = []
    for prev, nxt in itertools.pairwise(obs):
        moved, status, _ = _lk(prev.crop, nxt.crop, prev.to_crop(current), nxt.to_crop(current))
        alive &= status.ravel() == 1
        current = nxt.to_frame(moved.reshape(-1, 2).astype(np.float64))
        if not np.isfinite(current).all():
            alive &= np.isfinite(current).all(axis=1)
            current = np.nan_to_num(current)
        if int(alive.sum()) < MIN_POINTS:
            break
        fitted = _plane_fit(ref, nxt, points[alive], nxt.to_crop(current[alive]).astype(np.float32))
        if fitted is not None:
            residuals.append(fitted[0] / FACE)
            perspectives.append(fitted[1] / FACE)
    if len(residuals) < MIN_FRAMES:
        return None
    return MotionMeasure(
        float(np.percentile(residuals, QUANTILE)),
        float(np.percentile(perspectives, QUANTILE)),
        int(alive.sum()),
        len(residuals),
    )


def score_of(m: MotionMeasure, config: MotionConfig) -> float | None:
    """The live score of a measured window, or ``None`` to abstain (module docstring)."""
    r, d = m.residual, m.perspective
    if r >= config.live_residual:
        return 0.5 + 0.5 * min(1.0, (r - config.live_residual) / config.live_residual)
    if d >= config.min_perspective and r <= config.flat_residual and config.flat_ratio * r <= d:
        return 0.45 * max(r / config.flat_residual, config.flat_ratio * r / d)
    return None


class MotionAnalyzer:
    """The ``liveness_motion`` cue (fr_core.pipeline.liveness): ``observe`` a track's
    frames, ``judge`` them."""

    name = "liveness_motion"
    gates_identity = True

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self.threshold = self.config.threshold
        self.min_face_size = self.config.min_face_size
        self.window = self.config.window
        self.min_observations = self.config.min_observations

    def observe(self, result: FrameResult, detection: Detection) -> MotionObservation | None:
        return observe_face(result.frame, detection, result.index)

    def judge(self, observations: Sequence[Any]) -> float | None:
        m = measure(observations)
        return None if m is None else score_of(m, self.config)

    def analyze(self, frame: np.ndarray, detection: Detection) -> AnalysisResult:
        """One frame holds no motion: this cue judges tracks only (``observe``/``judge``,
        as the liveness gate calls it)."""
        raise NotImplementedError(
            "liveness_motion judges a track, not one frame: use observe() and judge() "
            "(fr_core.pipeline.liveness.LivenessGate)"
        )
