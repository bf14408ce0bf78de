"""Tracks of faces for measuring liveness cues that judge a track rather than one frame.

* :func:`warped_track`: **synthetic** attack tracks. A still photo (a print or a phone
  screen, or any photo at all) moved as a hand moves it in front of the camera: a smooth
  sequence of perspective warps of the whole image (tilt about the vertical and the
  horizontal axis, in-plane rotation, translation, scale) plus Gaussian sensor noise. Every
  point of the image moves by one homography per frame, exactly as a flat object does; the
  hand's tremor, motion blur, the screen's moire and a real camera's compression are not
  simulated. These frames are generated, not filmed: figures measured on them say how a cue
  treats a planar object, not how often a real attack gets through.
* :func:`video_tracks`: real tracks of a video, faces linked across frames by the
  pipeline's own :class:`~fr_core.pipeline.tracker.IouTracker`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fr_core.interfaces import Detection, FrameResult, ReadStatus
from fr_core.pipeline.tracker import IouTracker

#: at ``strength`` 1: the largest tilt about the vertical (yaw) and horizontal (pitch) axes
#: and the largest in-plane rotation (degrees), translation (share of the image's larger
#: side) and relative scale change of the held photo over a track.
MAX_YAW_DEG = 20.0
MAX_PITCH_DEG = 15.0
MAX_ROLL_DEG = 8.0
MAX_SHIFT = 0.06
MAX_SCALE = 0.08
SENSOR_NOISE = 3.0  # grey levels, Gaussian sigma (as the liveness evaluation's tracks)
SWAY_HZ = (0.2, 1.0)  # frequencies of the hand's sway
CUT_THRESHOLD = 20.0  # grey levels: mean change of a thumbnail that is a shot cut

Track = list[tuple[FrameResult, Detection]]


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return r_roll @ r_pitch @ r_yaw


def plane_homography(
    width: int,
    height: int,
    *,
    yaw: float,
    pitch: float,
    roll: float,
    shift: tuple[float, float],
    scale: float,
    focal: float | None = None,
) -> np.ndarray:
    """The 3 x 3 homography that shows an image of ``width`` x ``height`` as a flat object
    facing a pinhole camera (focal length ``focal`` pixels, default the larger side: a field
    of view of about 53 degrees), turned by ``yaw``/``pitch``/``roll`` radians about its
    centre, moved by ``shift`` pixels and scaled by ``scale``. All zero and scale 1 give the
    identity."""
    f = float(focal if focal is not None else max(width, height))
    cx, cy = width / 2.0, height / 2.0
    rot = _rotation(yaw, pitch, roll)
    # the plane z = 0 in object coordinates (pixels about the centre) placed at depth f/scale
    # and projected: [u v 1] ~ K [r1 r2 t] [x y 1]
    k = np.array([[f, 0, cx + shift[0]], [0, f, cy + shift[1]], [0, 0, 1]])
    t = np.array([0.0, 0.0, f / scale])
    m = np.column_stack([rot[:, 0], rot[:, 1], t])
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    h = k @ m @ to_centre
    return h / h[2, 2]


def _smooth_path(rng: np.random.Generator, frames: int, amplitude: float, fps: float) -> np.ndarray:
    """A smooth random trajectory in [-amplitude, amplitude]: two sines with random phases
    at 0.2-1 Hz (a hand sways a held object about once a second or slower)."""
    t = np.arange(frames) / fps
    out = np.zeros(frames)
    for weight in (0.7, 0.3):
        hertz = rng.uniform(*SWAY_HZ)
        out += weight * np.sin(2 * math.pi * hertz * t + rng.uniform(0, 2 * math.pi))
    return amplitude * out


def warped_track(
    image: np.ndarray,
    frames: int,
    rng: np.random.Generator,
    *,
    strength: float = 1.0,
    noise: float = SENSOR_NOISE,
    fps: float = 30.0,
) -> list[np.ndarray]:
    """``frames`` SYNTHETIC frames of ``image`` held and moved as a flat photo or screen:
    each a perspective warp (:func:`plane_homography`) along smooth random trajectories of
    tilt (up to ``strength`` x 20 degrees about the vertical axis, x 15 about the
    horizontal), in-plane rotation (x 8 degrees), translation (x 6% of the larger side) and
    scale (x 8%), each the sum of two sines of 0.2-1 Hz at ``fps`` frames a second, then
    Gaussian sensor noise of sigma ``noise`` grey levels (rounded, clipped to 0-255). What
    the warp uncovers is filled with the image's edge pixels repeated (streaks that move off
    the plane, as the background behind a real print would; no artificial frame edge).
    ``strength`` 0 gives the still photo with noise only."""
    import cv2

    if frames < 1:
        raise ValueError("frames must be >= 1")
    if strength < 0 or noise < 0 or fps <= 0:
        raise ValueError("strength and noise must be >= 0, fps > 0")
    height, width = image.shape[:2]
    side = max(width, height)
    yaw = _smooth_path(rng, frames, math.radians(MAX_YAW_DEG) * strength, fps)
    pitch = _smooth_path(rng, frames, math.radians(MAX_PITCH_DEG) * strength, fps)
    roll = _smooth_path(rng, frames, math.radians(MAX_ROLL_DEG) * strength, fps)
    dx = _smooth_path(rng, frames, MAX_SHIFT * side * strength, fps)
    dy = _smooth_path(rng, frames, MAX_SHIFT * side * strength, fps)
    scale = 1.0 + _smooth_path(rng, frames, MAX_SCALE * strength, fps)
    out = []
    for i in range(frames):
        h = plane_homography(
            width,
            height,
            yaw=float(yaw[i]),
            pitch=float(pitch[i]),
            roll=float(roll[i]),
            shift=(float(dx[i]), float(dy[i])),
            scale=float(scale[i]),
        )
        warped = cv2.warpPerspective(
            image, h, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        if noise > 0:
            grain = np.asarray(rng.normal(0.0, noise, warped.shape), np.float32)
            warped = np.clip(np.rint(warped.astype(np.float32) + grain), 0, 255).astype(np.uint8)
        out.append(warped)
    return out


def video_tracks(
    path: Path,
    detector: Any,
    *,
    min_face_size: float,
    max_frames: int | None = None,
    iou_threshold: float = 0.3,
    max_missed: int = 10,
    cut_threshold: float | None = CUT_THRESHOLD,
) -> list[Track]:
    """Every face track of the video at ``path``: ``detector.detect`` on each frame (the
    first ``max_frames``), faces linked across frames by the pipeline's IouTracker (the
    recognition stage's defaults), each track the list of (FrameResult with the frame and
    its index, Detection) of the frames where its face's box has a shorter side of at least
    ``min_face_size``; tracks with no such frame are left out. Tracks are ordered by their
    first frame.

    Edited video (a broadcast) has shot cuts, where the tracker would link two people whose
    boxes happen to overlap; a camera at a door has none. With ``cut_threshold``, a frame
    whose 64 x 36 grey thumbnail differs from the previous one's by more than that many grey
    levels on average is a cut: every track ends there (on the Hamilton clip the three cuts
    measure 28-31, the largest other frame-to-frame change 14). ``None``: no cuts.

    The full frames are kept (a texture cue needs them), each once however many faces it
    holds, and only frames holding a kept face: memory is bounded by ``max_frames`` frames
    of the video's size (the 275 frames of 640 x 360 of the Hamilton clip: about 190 MB)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
    tracker = IouTracker(iou_threshold=iou_threshold, max_missed=max_missed)
    found: dict[str, Track] = {}
    index, shot = 0, 0
    previous: np.ndarray | None = None
    try:
        while max_frames is None or index < max_frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            if cut_threshold is not None:
                grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
                thumb = cv2.resize(grey, (64, 36), interpolation=cv2.INTER_AREA)
                thumb = thumb.astype(np.float32)
                if previous is not None and float(np.abs(thumb - previous).mean()) > cut_threshold:
                    tracker = IouTracker(iou_threshold=iou_threshold, max_missed=max_missed)
                    shot += 1
                previous = thumb
            seen, _ended = tracker.update(detector.detect(frame), index)
            result = FrameResult(ReadStatus.FRAME, frame, index, index / fps)
            for track in seen:
                det = track.detection
                if min(det.bbox[2], det.bbox[3]) >= min_face_size:
                    found.setdefault(f"{shot}:{track.id}", []).append((result, det))
            index += 1
    finally:
        capture.release()
    return sorted(found.values(), key=lambda t: t[0][0].index)
