"""Hardware liveness cues: the ``liveness_ir`` and ``liveness_depth`` analyzers read the
near-infrared and depth planes an RGB-IR or depth camera delivers with each frame
(:attr:`fr_core.interfaces.FrameResult.planes`, docs/liveness-hardware.md).

* ``liveness_ir``: a phone or tablet screen emits visible light only, so under the camera's
  near-infrared illuminator the face it shows is a dark, flat patch; live skin reflects the
  illuminator and keeps its structure (eyes, brows, nostrils and mouth darker than the skin).
* ``liveness_depth``: a print or a screen is a plane; a live face has relief (the nose tip
  2-4 cm nearer than the cheeks, the face's rim further still).

Both are *frame cues* of the liveness gate (:mod:`fr_core.pipeline.liveness`):
``observe(result, detection)`` scores the face in one frame (a live score in [0, 1]) or
returns ``None`` when the frame holds nothing usable (no plane, too few depth readings);
the track's score is the mean of its last ``confirmation_frames`` scores. Input that breaks
the planes' contract (a plane not aligned with the frame, a wrong dtype, infinite depth)
raises :class:`ValueError` naming what came and what is allowed; the gate counts it as a
per-frame error. Work and memory per face are bounded: the face box is clipped to the frame
and read on a grid of at most ``MAX_GRID`` x ``MAX_GRID`` pixels, whatever the frame's size.

A camera that does not declare the plane a cue reads (its config's ``planes``) is refused
when the device starts (:func:`require_camera_plane`); a declared plane missing from one
frame only leaves that frame unscored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fr_core.errors import ConfigError
from fr_core.interfaces import AnalysisResult, ComponentKind, Detection, FrameResult

PLANE_IR = "ir"
PLANE_DEPTH = "depth"
MAX_GRID = 64  # face boxes are sampled on at most 64 x 64 points (4,096 values)
MIN_DEPTH_POINTS = 32  # fewer usable depth readings than this: no plane fit


# --- configuration ---------------------------------------------------------------------------


class IrLivenessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="least IR live score (mean over a track's confirming frames) of a live "
        "face; the score is the least of the brightness, ring and structure terms "
        "(docs/liveness-hardware.md)",
    )
    min_face_size: float = Field(
        32.0,
        ge=8.0,
        le=1024.0,
        description="faces whose box's shorter side is smaller (pixels) are not judged",
    )
    dark_level: float = Field(
        30.0,
        ge=1.0,
        le=200.0,
        description="mean IR level (0-255) of the face box at or below which it counts as "
        "dark, as a screen is; the brightness term is 0 there and 1 at twice this level",
    )
    min_ring_ratio: float = Field(
        0.5,
        gt=0.0,
        le=4.0,
        description="the face box's mean IR level must reach this share of the surrounding "
        "ring's for the ring term to be 1 (a screen's face is far darker than its "
        "surroundings); 0 when the face box is black",
    )
    ring_width: float = Field(
        0.25,
        gt=0.0,
        le=2.0,
        description="width of the ring around the face box, as a share of the box's width "
        "and height on each side (clipped to the frame)",
    )
    min_contrast: float = Field(
        6.0,
        gt=0.0,
        le=128.0,
        description="standard deviation of the face box's IR levels (grey levels) at which "
        "the structure term is 1 (eyes, brows, nostrils, mouth against skin); a flat patch "
        "scores proportionally less",
    )


class DepthLivenessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="least depth live score (mean over a track's confirming frames) of a live "
        "face; the score is relief / (2 x min_relief_mm), so the default 0.5 means a relief "
        "of at least min_relief_mm",
    )
    min_face_size: float = Field(
        32.0,
        ge=8.0,
        le=1024.0,
        description="faces whose box's shorter side is smaller (pixels) are not judged",
    )
    min_relief_mm: float = Field(
        12.0,
        gt=0.0,
        le=200.0,
        description="relief (mm) of the face box's depth about the best-fitting plane, as the "
        "spread between its 5th and 95th percentile residuals, that scores 0.5; a print or "
        "a screen measures only the sensor's noise, about 3.3 x its standard deviation (10 mm "
        "at 3 mm of noise); the sim camera's synthetic 3 cm face measures about 23 mm",
    )
    max_depth_spread_m: float = Field(
        0.15,
        gt=0.0,
        le=2.0,
        description="readings further than this (metres) from the median depth of the box's "
        "central half are background or hair, left out of the fit",
    )
    min_valid_fraction: float = Field(
        0.4,
        gt=0.0,
        le=1.0,
        description="least share of the face box's sampled pixels with a usable reading "
        "(finite, > 0, within max_depth_spread_m of the face); fewer: no evidence in this "
        "frame (unscored)",
    )


# --- what the cues check ---------------------------------------------------------------------


def face_window(bbox: Iterable[float], height: int, width: int) -> tuple[int, int, int, int]:
    """The face box ``(x, y, w, h)`` clipped to an H x W frame as ``(x0, y0, x1, y1)``;
    raises ValueError for a box that is not finite or leaves nothing inside the frame."""
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError(f"face box {(x, y, w, h)} is not a finite box of positive size")
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {(x, y, w, h)} lies outside the {height} x {width} frame")
    return x0, y0, x1, y1


def _grid(x0: int, y0: int, x1: int, y1: int) -> tuple[slice, slice]:
    """Row and column slices reading the window on at most MAX_GRID points a side."""
    sy = max(1, math.ceil((y1 - y0) / MAX_GRID))
    sx = max(1, math.ceil((x1 - x0) / MAX_GRID))
    return slice(y0, y1, sy), slice(x0, x1, sx)


def plane_of(
    result: FrameResult, name: str, dtype: type[np.generic], cue: str
) -> np.ndarray | None:
    """The frame's ``name`` plane, checked: ``None`` when this frame has none; ValueError when
    it is not an H x W array of ``dtype`` aligned with the frame."""
    planes = result.planes or {}
    plane = planes.get(name)
    if plane is None:
        return None
    frame = result.frame
    if frame is None or getattr(frame, "ndim", 0) < 2:
        raise ValueError(f"{cue}: a {name!r} plane came with no image frame to align it with")
    if not isinstance(plane, np.ndarray):
        raise ValueError(
            f"{cue}: the {name!r} plane is a {type(plane).__name__}; allowed: a numpy array"
        )
    want = tuple(frame.shape[:2])
    if plane.shape != want:
        raise ValueError(
            f"{cue}: the {name!r} plane's shape {tuple(plane.shape)} differs from the frame's "
            f"H x W {want}; planes must be H x W arrays aligned pixel for pixel with the frame"
        )
    if plane.dtype != dtype:
        allowed = {
            np.uint8: "uint8 (near-infrared levels 0-255)",
            np.float32: "float32 (metres; 0 or NaN: no reading)",
        }.get(dtype, np.dtype(dtype).name)
        raise ValueError(f"{cue}: the {name!r} plane's dtype is {plane.dtype}; allowed: {allowed}")
    return plane


def ir_score(ir: np.ndarray, bbox: Iterable[float], cfg: IrLivenessConfig) -> float:
    """The IR live score of the face in ``bbox`` on an H x W uint8 IR plane (already checked):
    ``min(brightness, ring, structure)`` with, for the face box's mean level ``m``, the ring's
    mean ``r`` and the box's standard deviation ``s`` (grey levels):

    * brightness = clip((m - dark_level) / dark_level, 0, 1): a screen is near black;
    * ring = clip(m / (min_ring_ratio x r), 0, 1), 1 when there is no ring (the face fills
      the frame): a screen's face is far darker than the hand, bezel or room around it;
    * structure = clip(s / min_contrast, 0, 1): skin under IR keeps the face's features.
    """
    height, width = ir.shape
    x0, y0, x1, y1 = face_window(bbox, height, width)
    rows, cols = _grid(x0, y0, x1, y1)
    face = ir[rows, cols].astype(np.float32)
    m, s = float(face.mean()), float(face.std())
    # the ring: the box grown by ring_width on each side, less the box, on the same grid
    gx = round((x1 - x0) * cfg.ring_width)
    gy = round((y1 - y0) * cfg.ring_width)
    ox0, oy0 = max(0, x0 - gx), max(0, y0 - gy)
    ox1, oy1 = min(width, x1 + gx), min(height, y1 + gy)
    orow, ocol = _grid(ox0, oy0, ox1, oy1)
    outer = ir[orow, ocol].astype(np.float32)
    yy = np.arange(oy0, oy1, orow.step)[:, None]
    xx = np.arange(ox0, ox1, ocol.step)[None, :]
    ring_mask = ~((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1))
    ring = outer[ring_mask]
    brightness = min(1.0, max(0.0, (m - cfg.dark_level) / cfg.dark_level))
    if ring.size and float(ring.mean()) > 0:
        ring_term = min(1.0, max(0.0, m / (cfg.min_ring_ratio * float(ring.mean()))))
    else:
        ring_term = 1.0
    structure = min(1.0, s / cfg.min_contrast)
    return float(min(brightness, ring_term, structure))


def depth_relief_mm(
    depth: np.ndarray, bbox: Iterable[float], cfg: DepthLivenessConfig
) -> float | None:
    """The relief (mm) of the face in ``bbox`` on an H x W float32 depth plane in metres
    (already checked), or ``None`` when too few readings are usable.

    Readings are valid when finite and > 0 (0 and NaN mean no reading; an infinite or negative
    value raises ValueError). Those within ``max_depth_spread_m`` of the median of the box's
    central half are the face; with fewer than ``min_valid_fraction`` of the sampled pixels,
    ``None``. A plane is fitted to them by least squares in inverse depth (a plane in space
    is linear in 1/z over image coordinates, so a tilted print fits exactly); the relief is
    the spread between the 5th and 95th percentiles of the depth residuals."""
    height, width = depth.shape
    x0, y0, x1, y1 = face_window(bbox, height, width)
    # every pixel of the box is checked, by reductions that allocate nothing box-sized
    # (fmax/fmin skip NaN, which means no reading)
    box = depth[y0:y1, x0:x1]
    hi, lo = float(np.fmax.reduce(box, axis=None)), float(np.fmin.reduce(box, axis=None))
    if math.isinf(hi) or math.isinf(lo):
        raise ValueError(
            "liveness_depth: the depth plane holds infinite values in the face box; allowed: "
            "finite metres, with 0 or NaN for no reading"
        )
    if lo < 0:
        raise ValueError(
            f"liveness_depth: the depth plane holds negative values in the face box (least "
            f"{lo:g}); allowed: metres >= 0, with 0 or NaN for no reading"
        )
    rows, cols = _grid(x0, y0, x1, y1)
    z = depth[rows, cols].astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z > 0)
    h, w = z.shape
    centre = valid[h // 4 : h - h // 4, w // 4 : w - w // 4]
    core = z[h // 4 : h - h // 4, w // 4 : w - w // 4][centre]
    if core.size == 0:
        return None
    median = float(np.median(core))
    with np.errstate(invalid="ignore"):
        usable = valid & (np.abs(z - median) <= cfg.max_depth_spread_m)
    count = int(usable.sum())
    if count < MIN_DEPTH_POINTS or count < cfg.min_valid_fraction * z.size:
        return None
    vy, vx = np.nonzero(usable)
    ys = (rows.start + vy * rows.step).astype(np.float64)
    xs = (cols.start + vx * cols.step).astype(np.float64)
    zs = z[usable]
    # centred, scaled coordinates keep the normal equations well conditioned
    u = (xs - xs.mean()) / max(1.0, float(x1 - x0))
    v = (ys - ys.mean()) / max(1.0, float(y1 - y0))
    design = np.stack([u, v, np.ones_like(u)], axis=1)
    coef, *_ = np.linalg.lstsq(design, 1.0 / zs, rcond=None)
    fitted = design @ coef
    if not (fitted > 0).all():
        return None  # a fit through infinity: no usable plane
    residual_mm = (zs - 1.0 / fitted) * 1000.0
    p5, p95 = np.percentile(residual_mm, [5.0, 95.0])
    return float(p95 - p5)


# --- the cues --------------------------------------------------------------------------------


class _PlaneCue:
    name = ""
    plane = ""
    gates_identity = True  # the recognition stage holds identity events on the gate's verdict
    threshold: float
    min_face_size: float

    def analyze(self, frame: np.ndarray, detection: Detection) -> AnalysisResult:
        raise ValueError(
            f"{self.name} reads the frame's {self.plane!r} plane: the recognition stage calls "
            f"observe(result, detection) with the whole FrameResult; analyze(frame, detection) "
            f"has no plane to read (docs/liveness-hardware.md)"
        )

    def result(self, score: float) -> AnalysisResult:
        label = "live" if score >= self.threshold else "attack"
        return AnalysisResult(label, score, {"live": score, "attack": 1.0 - score})


class IrLivenessCue(_PlaneCue):
    """``observe(result, detection)`` -> the IR live score of the face (see :func:`ir_score`),
    or ``None`` when the frame has no IR plane."""

    name = "liveness_ir"
    plane = PLANE_IR

    def __init__(self, config: IrLivenessConfig) -> None:
        self.config = config
        self.threshold = config.threshold
        self.min_face_size = config.min_face_size

    def observe(self, result: FrameResult, detection: Detection) -> float | None:
        ir = plane_of(result, PLANE_IR, np.uint8, self.name)
        return None if ir is None else ir_score(ir, detection.bbox, self.config)

    def score(self, result: FrameResult, detection: Detection) -> AnalysisResult | None:
        """``observe`` as an AnalysisResult (for reports), ``None`` without a plane."""
        value = self.observe(result, detection)
        return None if value is None else self.result(value)


class DepthLivenessCue(_PlaneCue):
    """``observe(result, detection)`` -> clip(relief_mm / (2 x min_relief_mm), 0, 1) of the
    face (see :func:`depth_relief_mm`), or ``None`` when the frame has no depth plane or the
    face box too few usable readings."""

    name = "liveness_depth"
    plane = PLANE_DEPTH

    def __init__(self, config: DepthLivenessConfig) -> None:
        self.config = config
        self.threshold = config.threshold
        self.min_face_size = config.min_face_size

    def observe(self, result: FrameResult, detection: Detection) -> float | None:
        depth = plane_of(result, PLANE_DEPTH, np.float32, self.name)
        if depth is None:
            return None
        relief = depth_relief_mm(depth, detection.bbox, self.config)
        if relief is None:
            return None
        return float(min(1.0, max(0.0, relief / (2.0 * self.config.min_relief_mm))))

    def score(self, result: FrameResult, detection: Detection) -> AnalysisResult | None:
        value = self.observe(result, detection)
        return None if value is None else self.result(value)


# --- the start-time check --------------------------------------------------------------------


def declared_planes(camera: Any) -> tuple[str, ...]:
    """The planes a camera object (or its validated config) declares: its ``planes``
    attribute, empty when it has none."""
    return tuple(getattr(camera, "planes", ()) or ())


def require_camera_plane(ctx: Any, plane: str, cue: str) -> None:
    """Refuse to build ``cue`` when the configured camera does not declare ``plane``.

    Run by the cue's factory when the engine builds it (``ctx.app_config`` is the device's
    config): the camera block's options are validated with the camera plugin's config model
    and its ``planes`` read (the sim and opencv cameras' models expose the tuple their camera
    object declares as ``planes``; a camera plugin without it delivers none). A cue built
    outside an engine (``fr-edge evaluate-liveness``, tests) has no camera to check."""
    app = getattr(ctx, "app_config", None)
    block = getattr(app, "camera", None) if app is not None else None
    registry = getattr(ctx, "registry", None)
    if block is None or registry is None:
        return
    try:
        options = registry.validate_options(
            ComponentKind.CAMERA, block.plugin, block.options, "camera"
        )
    except Exception:  # the engine reports a bad camera block itself
        return
    declared = declared_planes(options)
    if plane not in declared:
        has = ", ".join(repr(p) for p in declared) if declared else "no plane"
        raise ConfigError(
            f"analyzer {cue} reads the camera's {plane!r} plane, but camera "
            f"{block.plugin!r} as configured delivers {has}; use a camera that delivers it "
            f"(sim: planes: [{plane}]; opencv: {plane}_device: /dev/videoN) or remove the "
            f"{cue} analyzer (docs/liveness-hardware.md)",
            [("camera", f"declares {has}; {cue} needs {plane!r}")],
        )


def build_ir_cue(config: IrLivenessConfig, ctx: Any) -> IrLivenessCue:
    require_camera_plane(ctx, PLANE_IR, IrLivenessCue.name)
    return IrLivenessCue(config)


def build_depth_cue(config: DepthLivenessConfig, ctx: Any) -> DepthLivenessCue:
    require_camera_plane(ctx, PLANE_DEPTH, DepthLivenessCue.name)
    return DepthLivenessCue(config)
