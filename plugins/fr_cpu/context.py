"""The ``liveness_context`` analyzer: is the face framed by a presentation instrument?

A phone or tablet held to the camera shows the face inside its screen, and the screen's
edge or the device's bezel is a straight-sided boundary all round it; a printed photo or an
ID card has its paper's edge round the face. A live face has no such boundary: the head is
in front of the scene and the body continues below the chin, so a door, a window or a chair
back behind the head is cut by the body, and a phone or a sheet of paper held *beside* the
face does not enclose it. This cue looks for that boundary, independently of MiniFASNet's
texture model (fr_cpu.liveness), and scores ``1 - evidence``.

**The method.** The region round the face box, ``context`` face widths and heights each side
(clipped to the frame), is scaled so that the face box's longer side is ``work_face_size``
pixels and turned grey. Canny edges and a probabilistic Hough transform give straight
segments; those within ``max_tilt_deg`` of vertical lying wholly left or wholly right of the
face box, and those near horizontal wholly above or below it, are the candidate sides (the
``max_lines`` longest of each, near-duplicates merged). Every choice of a left, right, top
and bottom side is a quadrilateral hypothesis. It counts when it is rectangle-like (opposite
sides within ``max_skew_deg`` of parallel, width and height within a factor 3.5 of each
other, its corners in view) and its area is ``min_area_ratio`` to ``max_area_ratio`` times
the face box's. Its **evidence** is the share of its perimeter lying on edge pixels whose
gradient is across the side (within 25 degrees, one polarity per side: one physical
boundary) and where the grey level 2-3 pixels either side differs by ``min_step`` (a step
between two regions, not a thin line such as a shirt's print or stripe), times a factor for
its weakest side: 1 when that side is supported on at least ``min_side_support`` of its
length, falling linearly to 0 at ``side_support_floor`` (a hand covering part of a side
still counts in part; a boundary with a side barely there is no evidence at all), and times
one minus the support its sides' lines have past the corners (a real corner ends both lines;
a window's frame or a shirt's stripe runs on). On antispoof-dev's live photos, windows, door
frames and blinds behind the head and stripes across the chest make boundaries whose weakest
side is supported on 0.14 of its length at most; with sensor noise added (sigma 3), a few
frames of one scene (a man before a window with blinds) reach 0.35-0.45: the floor, 0.4,
was set above what the live photos give, the attacks unseen.

One side, but never the bottom, may be the frame's edge where the region is cut by it (a
print whose top is out of view); such a three-sided hypothesis counts only when each of its
three sides is supported on at least ``open_side_support`` of its length. Live faces are
near the top of the frame all the time, and a window behind the head, a phone beside it
and a stripe across the chest make weak three-sided boundaries (tests/bench/
liveness_context.py). The bottom must be seen: a head in a doorway or in front of a window
is enclosed on three sides with the bottom cut by the body or the frame.

The face's evidence is its best hypothesis's; the live score is ``1 - evidence``, and the
liveness gate (fr_core.pipeline.liveness) averages it over the track's frames.

**Bounded work.** The region is decimated by an integer stride before it is resized, so a
huge frame or face costs what a small one does (the working image is at most
``(1 + 2 context) work_face_size`` pixels a side); the longest 256 segments are read, at most
``max_lines`` candidates a side kept, so at most (``max_lines`` + 1)^4 hypotheses, evaluated
together in numpy: about 2 ms a face (median over antispoof-dev's live faces on a shared
2-core machine; tests/bench/liveness_context.py). A frame that is not an 8-bit image,
a box that is not four finite numbers, one smaller than 4 pixels or mostly outside the frame
raise ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fr_core.interfaces import AnalysisResult, Detection

#: tests/bench/liveness_context.py: the largest live-score threshold refusing at most 2% of
#: the live faces of antispoof-dev (chosen without looking at the attacks), rounded down to
#: 0.01. No live face there has any evidence (all score 1.0), so the rule gives 0.99: any
#: boundary that passes the checks refuses the face.
DEFAULT_THRESHOLD = 0.99
MIN_BOX_SIDE = 4.0  # pixels: a smaller face box is refused (ValueError)
MIN_INSIDE = 0.25  # share of the face box that must lie inside the frame
MAX_ASPECT = 3.5  # a hypothesis's width over its height (or the reverse), at most
MAX_SEGMENTS = 256  # Hough segments read, longest first
GRADIENT_TOLERANCE_DEG = 25.0  # an edge pixel's gradient from the side's normal, at most
GAP = 0.05  # face sizes a side must clear the face box by
SIDES = ("left", "right", "top", "bottom")
WHERE = ("left of", "right of", "above", "below")


class ContextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        DEFAULT_THRESHOLD,
        gt=0,
        lt=1,
        description="least live score (1 - evidence of a boundary enclosing the face; mean "
        "over a track's confirming frames) of a live face",
    )
    min_face_size: float = Field(
        40.0,
        ge=16.0,
        le=1024.0,
        description="faces whose box's shorter side is smaller (pixels) are not judged: "
        "their surroundings hold too few pixels for straight edges",
    )
    context: float = Field(
        2.0,
        ge=0.5,
        le=4.0,
        description="how far round the face a boundary is looked for, in face widths "
        "(sideways) and heights (up and down) each side",
    )
    work_face_size: int = Field(
        40, ge=16, le=128, description="the face box's longer side in the working image (px)"
    )
    canny_low: float = Field(15.0, gt=0, le=255, description="Canny's lower threshold")
    canny_high: float = Field(45.0, gt=0, le=510, description="Canny's upper threshold")
    min_area_ratio: float = Field(
        1.3, ge=1.0, le=10.0, description="least area of a boundary over the face box's"
    )
    max_area_ratio: float = Field(
        20.0, ge=1.5, le=100.0, description="largest area of a boundary over the face box's"
    )
    max_tilt_deg: float = Field(
        30.0, ge=5.0, le=40.0, description="a side's largest angle from vertical/horizontal"
    )
    max_skew_deg: float = Field(
        15.0, ge=2.0, le=30.0, description="largest angle between opposite sides"
    )
    min_side_support: float = Field(
        0.6,
        gt=0.0,
        le=1.0,
        description="a boundary whose weakest side is supported on less of its length has "
        "its evidence lowered in proportion, down to none at side_support_floor",
    )
    side_support_floor: float = Field(
        0.4,
        ge=0.0,
        lt=1.0,
        description="a boundary whose weakest side is supported on this share of its length "
        "or less is no evidence at all",
    )
    open_side_support: float = Field(
        0.6,
        gt=0.0,
        le=1.0,
        description="a boundary with one side cut by the frame counts only when each of its "
        "three seen sides is supported on this much of its length",
    )
    extension: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="face heights past each corner where support of a side's line lowers "
        "the evidence (0: not looked at)",
    )
    min_step: float = Field(
        6.0,
        ge=0.0,
        le=255.0,
        description="grey levels between the two sides of a boundary, 2-3 working pixels "
        "from it, for a point of it to count (0: not looked at)",
    )
    max_lines: int = Field(6, ge=1, le=12, description="candidate lines kept for each side")

    @model_validator(mode="after")
    def _ordered(self) -> ContextConfig:
        if self.min_area_ratio >= self.max_area_ratio:
            raise ValueError("min_area_ratio must be less than max_area_ratio")
        if self.side_support_floor >= self.min_side_support:
            raise ValueError("side_support_floor must be less than min_side_support")
        if self.canny_low >= self.canny_high:
            raise ValueError("canny_low must be less than canny_high")
        return self


@dataclass(frozen=True)
class Enclosure:
    """The best boundary hypothesis round one face, in frame pixels."""

    evidence: float  # 0: nothing encloses the face; 1: a boundary supported all round
    corners: tuple[tuple[float, float], ...] = ()  # top-left, top-right, bottom-right, -left
    #: left, right, top, bottom (None: the frame's edge); of the best-supported hypothesis
    #: that passed the checks, even one of no evidence
    supports: tuple[float | None, ...] = ()
    area_ratio: float = 0.0  # the boundary's area over the face box's
    hypotheses: int = 0  # hypotheses that passed the geometric checks
    #: why there is no evidence: the side with no candidate line, no hypothesis passing the
    #: checks, or the best one's weakest side too weakly supported; "" when evidence > 0
    reason: str = ""


@dataclass(frozen=True)
class _Lines:
    """Candidate lines n . p = c: unit normal (pointing right for the left and right sides,
    down for the top and bottom ones), offset, unit direction (down / right), the point
    nearest the face's centre (where position 0 along the line is), the angle from the
    side's axis, whether it is the frame's edge, and which side it is a candidate for."""

    normal: np.ndarray
    offset: np.ndarray
    direction: np.ndarray
    origin: np.ndarray
    angle: np.ndarray
    virtual: np.ndarray
    side: np.ndarray


def _check_frame(frame: Any) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
        raise ValueError(f"frame must be H x W or H x W x 1/3/4, got shape {frame.shape}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ValueError(f"frame of shape {frame.shape} is empty")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    return frame


def _check_box(bbox: Any, width: int, height: int) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"face box must be four numbers (x, y, w, h), got {bbox!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"face box {bbox!r} is not finite")
    if min(w, h) < MIN_BOX_SIDE:
        raise ValueError(f"face box {w:g} x {h:g} is too small (sides >= {MIN_BOX_SIDE:g} px)")
    inside_w = min(x + w, width) - max(x, 0.0)
    inside_h = min(y + h, height) - max(y, 0.0)
    if inside_w <= 0 or inside_h <= 0 or inside_w * inside_h < MIN_INSIDE * w * h:
        raise ValueError(f"face box {bbox!r} lies mostly outside the {width} x {height} frame")
    return x, y, w, h


def _grey(patch: np.ndarray) -> np.ndarray:
    import cv2

    patch = np.ascontiguousarray(patch)
    if patch.ndim == 2:
        return patch
    if patch.shape[2] == 1:
        return np.ascontiguousarray(patch[:, :, 0])
    code = cv2.COLOR_BGRA2GRAY if patch.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return np.asarray(cv2.cvtColor(patch, code))


class ContextAnalyzer:
    """``analyze(frame, detection)`` -> AnalysisResult("live" | "attack", live score), the
    live score being 1 - the evidence of a boundary enclosing the face."""

    name = "liveness_context"
    gates_identity = True  # a cue of the liveness gate (fr_core.pipeline.liveness)

    def __init__(self, config: ContextConfig | None = None) -> None:
        self.config = config or ContextConfig()
        self.threshold = self.config.threshold
        self.min_face_size = self.config.min_face_size

    def analyze(self, frame: np.ndarray, detection: Detection) -> AnalysisResult:
        found = self.enclosure(frame, detection.bbox)
        live = float(min(1.0, max(0.0, 1.0 - found.evidence)))
        label = "live" if live >= self.threshold else "attack"
        return AnalysisResult(
            label,
            live,
            {"live": live, "enclosure": found.evidence, "hypotheses": float(found.hypotheses)},
        )

    def enclosure(self, frame: np.ndarray, bbox: tuple[float, float, float, float]) -> Enclosure:
        """The best boundary hypothesis round the face box ``bbox`` (x, y, w, h)."""
        import cv2

        frame = _check_frame(frame)
        box = _check_box(bbox, frame.shape[1], frame.shape[0])
        grey, face, cut, (left, top), (sx, sy) = self._region(frame, box)
        blurred = cv2.GaussianBlur(grey, (3, 3), 0)
        edges = cv2.Canny(blurred, self.config.canny_low, self.config.canny_high, L2gradient=True)
        face_h = float(face[3] - face[1])
        found = cv2.HoughLinesP(
            edges,
            1,
            np.pi / 180,
            threshold=max(8, round(0.3 * face_h)),
            minLineLength=max(8, round(0.4 * face_h)),
            maxLineGap=max(2, round(0.08 * face_h)),
        )
        segments = np.zeros((0, 4)) if found is None else found.reshape(-1, 4).astype(float)
        lines = self._candidates(segments, face, cut, grey.shape[1])
        if isinstance(lines, str):
            return Enclosure(0.0, reason=f"no candidate line {lines} the face")
        theta = np.full(edges.shape, np.nan, np.float32)  # gradient direction at edge pixels
        ys, xs = np.nonzero(edges)
        gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
        theta[ys, xs] = np.arctan2(gy[ys, xs], gx[ys, xs])
        best = self._best(lines, face, theta, blurred)
        if best is None:
            return Enclosure(0.0, reason="no boundary passes the shape, size and three-side checks")
        evidence, corners, supports, ratio, count = best
        in_frame = tuple((float(cx / sx + left), float(cy / sy + top)) for cx, cy in corners)
        weakest = min(v for v in supports if v is not None)
        if evidence > 0:
            reason = ""
        elif weakest <= self.config.side_support_floor:
            reason = f"weakest side supported on {weakest:.2f}"
        else:
            reason = "its sides' lines run on past its corners"
        return Enclosure(max(0.0, evidence), in_frame, supports, ratio, count, reason)

    # --- the working image ----------------------------------------------------------------

    def _region(
        self, frame: np.ndarray, bbox: tuple[float, float, float, float]
    ) -> tuple[
        np.ndarray, np.ndarray, tuple[bool, bool, bool], tuple[int, int], tuple[float, float]
    ]:
        """The grey working image; the face box in it (x0, y0, x1, y1); whether the frame
        cut the region on the left, the right, the top; the region's origin in the frame;
        the scale from frame to working pixels (x, y)."""
        import cv2

        height, width = frame.shape[:2]
        x, y, w, h = bbox
        m = self.config.context
        want = (x - m * w, y - m * h, x + w + m * w, y + h + m * h)
        left, top = max(0, math.floor(want[0])), max(0, math.floor(want[1]))
        right, bottom = min(width, math.ceil(want[2])), min(height, math.ceil(want[3]))
        cut = (want[0] < 0, want[2] > width, want[1] < 0)
        scale = min(2.0, self.config.work_face_size / max(w, h))
        out_w = max(2, round((right - left) * scale))
        out_h = max(2, round((bottom - top) * scale))
        stride = max(1, int(1.0 / scale) // 2)  # cheap decimation first, then an area resize
        grey = _grey(frame[top:bottom:stride, left:right:stride])
        shrink = out_w < grey.shape[1]
        grey = cv2.resize(
            grey, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        sx, sy = out_w / (right - left), out_h / (bottom - top)
        face = np.array([(x - left) * sx, (y - top) * sy, (x + w - left) * sx, (y + h - top) * sy])
        return grey, face, cut, (left, top), (sx, sy)

    # --- candidate sides ------------------------------------------------------------------

    def _candidates(
        self, segments: np.ndarray, face: np.ndarray, cut: tuple[bool, bool, bool], width: int
    ) -> _Lines | str:
        """The candidate lines of each side, longest first, near-duplicates merged, and the
        frame's edge for a side (not the bottom) where the frame cut the region; or, when a
        side has no candidate, where that side is ("left of", "above", ...)."""
        dx, dy = segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1]
        length = np.hypot(dx, dy)
        order = np.argsort(-length, kind="stable")[:MAX_SEGMENTS]
        segments, dx, dy, length = segments[order], dx[order], dy[order], length[order]
        tan_tilt = math.tan(math.radians(self.config.max_tilt_deg))
        centre = np.array([(face[0] + face[2]) / 2, (face[1] + face[3]) / 2])
        corners = np.array(
            [[face[0], face[1]], [face[2], face[1]], [face[2], face[3]], [face[0], face[3]]]
        )
        rows: list[tuple[float, float, float, float, float, float, float, int]] = []
        borders = {0: (1.0, 0.0, 0.0), 1: (1.0, 0.0, width - 1.0), 2: (0.0, 1.0, 0.0)}
        for side in range(4):
            vertical = side < 2
            along, across = (dy, dx) if vertical else (dx, dy)
            sign = np.where(along < 0, -1.0, 1.0)
            d = np.stack([dx * sign, dy * sign], axis=1) / np.maximum(length, 1e-9)[:, None]
            if vertical:
                n = np.stack([d[:, 1], -d[:, 0]], axis=1)
                tilt = np.arctan2(d[:, 0], d[:, 1])
            else:
                n = np.stack([-d[:, 1], d[:, 0]], axis=1)
                tilt = np.arctan2(d[:, 1], d[:, 0])
            c = np.einsum("ij,ij->i", n, segments[:, :2])
            signed = corners @ n.T - c  # (4, k): > 0 right of / below the line
            gap = GAP * (face[2] - face[0] if vertical else face[3] - face[1])
            clear = signed.min(axis=0) > gap if side in (0, 2) else signed.max(axis=0) < -gap
            keep = (np.abs(across) <= tan_tilt * np.abs(along)) & (length > 0) & clear
            at_centre = c - n @ centre
            kept: list[int] = []
            for i in np.flatnonzero(keep):
                if len(kept) >= self.config.max_lines:
                    break
                if all(
                    abs(at_centre[i] - at_centre[j]) > 2.0 or abs(tilt[i] - tilt[j]) > 0.05
                    for j in kept
                ):
                    kept.append(int(i))
                    rows.append((n[i, 0], n[i, 1], c[i], d[i, 0], d[i, 1], tilt[i], 0.0, side))
            if side in borders and cut[side]:
                nx, ny, off = borders[side]
                rows.append((nx, ny, off, ny, nx, 0.0, 1.0, side))
            if not any(r[7] == side for r in rows):
                return WHERE[side]
        table = np.array(rows, float)
        normal, offset = table[:, 0:2], table[:, 2]
        origin = centre[None, :] + (offset - normal @ centre)[:, None] * normal
        return _Lines(
            normal=normal,
            offset=offset,
            direction=table[:, 3:5],
            origin=origin,
            angle=table[:, 5],
            virtual=table[:, 6] > 0,
            side=table[:, 7].astype(int),
        )

    # --- hypotheses -----------------------------------------------------------------------

    def _best(
        self, lines: _Lines, face: np.ndarray, theta: np.ndarray, grey: np.ndarray
    ) -> tuple[float, np.ndarray, tuple[float | None, ...], float, int] | None:
        """The best-supported rectangle-like hypothesis, or None when none passes."""
        hr, wr = theta.shape
        half = math.ceil(math.hypot(wr, hr)) + 1
        cum = _support(lines, theta, grey, half, self.config.min_step)
        index = [np.flatnonzero(lines.side == side) for side in range(4)]
        shape = tuple(len(i) for i in index)
        # each side's candidates along its own axis of the (left, right, top, bottom) grid
        lft, rgt, top, bot = (
            i.reshape([-1 if axis == side else 1 for axis in range(4)])
            for side, i in enumerate(index)
        )
        n, c, d, o = lines.normal, lines.offset, lines.direction, lines.origin

        def meet(v: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Where the lines ``v`` (left/right) and ``h`` (top/bottom) meet, and the
            position of that point along each."""
            a11, a12, a21, a22 = n[v, 0], n[v, 1], n[h, 0], n[h, 1]
            det = a11 * a22 - a12 * a21
            det = np.where(np.abs(det) < 1e-9, 1e-9, det)
            px = (c[v] * a22 - a12 * c[h]) / det
            py = (a11 * c[h] - c[v] * a21) / det
            along_v = (px - o[v, 0]) * d[v, 0] + (py - o[v, 1]) * d[v, 1]
            along_h = (px - o[h, 0]) * d[h, 0] + (py - o[h, 1]) * d[h, 1]
            return np.stack(np.broadcast_arrays(px, py), -1), along_v, along_h

        p_tl, l_top, t_left = meet(lft, top)
        p_bl, l_bot, b_left = meet(lft, bot)
        p_tr, r_top, t_right = meet(rgt, top)
        p_br, r_bot, b_right = meet(rgt, bot)

        def run(k: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
            """Supported samples on lines ``k`` from ``start`` to ``stop``, in the better
            of the two polarities."""
            i0 = np.clip(np.rint(start).astype(int) + half, 0, 2 * half + 1)
            i1 = np.clip(np.rint(stop).astype(int) + half, 0, 2 * half + 1)
            k = np.broadcast_to(k, i0.shape)
            return np.maximum(cum[k, 0, i1] - cum[k, 0, i0], cum[k, 1, i1] - cum[k, 1, i0])

        ext = self.config.extension * (face[3] - face[1])
        spans = (
            (lft, l_top, l_bot),
            (rgt, r_top, r_bot),
            (top, t_left, t_right),
            (bot, b_left, b_right),
        )
        length, support, through = [], [], []
        for k, start, stop in spans:
            span = np.broadcast_to(stop - start, shape)
            length.append(span)
            support.append(np.broadcast_to(run(k, start, stop), shape) / np.maximum(span, 1.0))
            if ext > 0:
                past = run(k, start - ext, start) + run(k, stop, stop + ext)
                through.append(np.broadcast_to(past / (2 * ext), shape))
        virtual = [np.broadcast_to(lines.virtual[k], shape) for k in (lft, rgt, top, bot)]
        seen = [~v for v in virtual]
        opened = np.logical_or.reduce(virtual)
        quad = np.stack([np.broadcast_to(p, (*shape, 2)) for p in (p_tl, p_tr, p_br, p_bl)], -2)
        x, y = quad[..., 0], quad[..., 1]
        area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y, axis=-1))
        ratio = area / ((face[2] - face[0]) * (face[3] - face[1]))
        tol = 2.0
        in_view = np.all((x >= -tol) & (x <= wr - 1 + tol) & (y >= -tol) & (y <= hr - 1 + tol), -1)
        skew = math.radians(self.config.max_skew_deg)
        a = lines.angle
        parallel = (np.abs(a[lft] - a[rgt]) <= skew) & (np.abs(a[top] - a[bot]) <= skew)
        width, height = 0.5 * (length[2] + length[3]), 0.5 * (length[0] + length[1])
        aspect = np.maximum(width, height) / np.maximum(np.minimum(width, height), 1e-6)
        weakest = np.minimum.reduce(
            [np.where(s, sp, 1.0) for s, sp in zip(seen, support, strict=True)]
        )
        valid = (
            (np.minimum.reduce(length) > 0)
            & in_view
            & parallel
            & (aspect <= MAX_ASPECT)
            & (ratio >= self.config.min_area_ratio)
            & (ratio <= self.config.max_area_ratio)
            & (sum(v.astype(int) for v in virtual) <= 1)
            & (~opened | (weakest >= self.config.open_side_support))
        )
        if not valid.any():
            return None
        perimeter = np.maximum(
            np.sum([np.where(s, ln, 0.0) for s, ln in zip(seen, length, strict=True)], axis=0), 1e-6
        )
        covered = np.sum(
            [np.where(s, ln * sp, 0.0) for s, ln, sp in zip(seen, length, support, strict=True)],
            axis=0,
        )
        evidence = covered / perimeter
        floor, full = self.config.side_support_floor, self.config.min_side_support
        evidence = evidence * np.clip((weakest - floor) / (full - floor), 0.0, 1.0)
        if through:
            sides_seen = sum(s.astype(int) for s in seen)
            past = sum(np.where(s, t, 0.0) for s, t in zip(seen, through, strict=True))
            evidence = evidence * (1.0 - np.minimum(1.0, past / sides_seen))
        evidence = np.where(valid, evidence, -1.0)
        # the best evidence; among hypotheses of none, the best supported (for the reason)
        at = np.unravel_index(int(np.argmax(evidence + 1e-6 * covered / perimeter)), shape)
        supports = tuple(None if virtual[i][at] else float(support[i][at]) for i in range(4))
        return float(evidence[at]), quad[at], supports, float(ratio[at]), int(valid.sum())


def _support(
    lines: _Lines, theta: np.ndarray, grey: np.ndarray, half: int, min_step: float
) -> np.ndarray:
    """Cumulative counts of supported samples along each line, at positions -half .. half
    one pixel apart from its point nearest the face's centre, for each polarity (gradient
    along or against the normal): shape (lines, 2, 2 * half + 2). A sample is supported by
    an edge pixel within one pixel across the line whose gradient is within
    GRADIENT_TOLERANCE_DEG of the normal, where the grey level 2-3 pixels on one side of the
    line differs from the other side's by ``min_step`` or more in the same direction (a step
    between two regions, not a thin line on one); the frame's edge is never supported."""
    hr, wr = theta.shape
    t = np.arange(-half, half + 1, dtype=float)
    cos_tol = math.cos(math.radians(GRADIENT_TOLERANCE_DEG))
    phi = np.arctan2(lines.normal[:, 1], lines.normal[:, 0])[:, None]
    ok = np.zeros((len(lines.offset), 2, len(t)), bool)
    base = lines.origin[:, None, :] + t[None, :, None] * lines.direction[:, None, :]
    for step in (-1.0, 0.0, 1.0):
        pts = base + step * lines.normal[:, None, :]
        xi, yi = np.rint(pts[..., 0]).astype(int), np.rint(pts[..., 1]).astype(int)
        inside = (xi >= 0) & (xi < wr) & (yi >= 0) & (yi < hr)
        ang = np.where(inside, theta[np.clip(yi, 0, hr - 1), np.clip(xi, 0, wr - 1)], np.nan)
        with np.errstate(invalid="ignore"):
            cos = np.cos(ang - phi)
            ok[:, 0] |= cos >= cos_tol
            ok[:, 1] |= cos <= -cos_tol
    if min_step > 0:
        level = grey.astype(np.float32)

        def band(sign: float) -> np.ndarray:
            total = np.zeros(base.shape[:2], np.float32)
            for k in (2.0, 3.0):
                pts = base + sign * k * lines.normal[:, None, :]
                xi = np.clip(np.rint(pts[..., 0]).astype(int), 0, wr - 1)
                yi = np.clip(np.rint(pts[..., 1]).astype(int), 0, hr - 1)
                total += level[yi, xi]
            return total / 2

        step = band(1.0) - band(-1.0)  # along the normal: brighter ahead is > 0
        ok[:, 0] &= step >= min_step
        ok[:, 1] &= step <= -min_step
    ok[lines.virtual] = False
    cum = np.zeros((len(lines.offset), 2, len(t) + 1))
    cum[:, :, 1:] = np.cumsum(ok, axis=2)
    return cum
