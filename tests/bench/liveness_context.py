"""What the context cue (``liveness_context``, fr_cpu.context) makes of the shared photos.

    python -m tests.bench.liveness_context [DATA] > report.md

DATA is the shared data folder (../shared/data by default): ``antispoof-dev/real``,
``antispoof-dev/fake`` and ``faces/short_hamilton_clip.mp4``. Every face YuNet (default
settings) finds in every photo is scored by the cue with its default settings; faces whose
box is smaller than the cue's ``min_face_size`` are counted apart (the gate never shows them
to the cue).

**The threshold never sees an attack.** It is the largest live-score threshold at which at
most 2% of the live faces score below it (refused), rounded down to 0.01: with n live faces,
the (floor(0.02 n) + 1)-th lowest live score. Leave-one-out: for each live photo, the
threshold is set the same way on the other photos' faces, and the photo counts as refused
when one of its faces scores below it. Then the attacks are scored at the default threshold.

The synthetic sets (drawn here, fixed seed) were used while designing the cue, so they are
not an independent measure: phones and prints showing a live photo's face pasted on another
live photo (the boundary encloses the face), and phone-like rectangles drawn *beside* a live
face (they must not count).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from fr_cpu.context import DEFAULT_THRESHOLD, ContextAnalyzer

from fr_core.interfaces import ComponentKind, Detection
from fr_core.plugins import build_registry

REFUSED_AT_MOST = 0.02
SEED = 7
TRACKS_PER_PHOTO = 4  # noisy tracks of each photo: 5 frames each, Gaussian noise
TRACK_FRAMES = 5  # the gate's window (confirmation_frames)
NOISE_SIGMA = 3.0  # grey levels, as docs/liveness.md's per-track figures


@dataclass
class Face:
    source: str  # photo name or clip frame
    bbox: tuple[float, float, float, float]
    score: float | None  # None: smaller than min_face_size, not judged
    supports: tuple[float | None, ...] = ()
    area_ratio: float = 0.0
    reason: str = ""


def rule_threshold(scores: list[float]) -> float:
    """The largest threshold (rounded down to 0.01) with at most 2% of ``scores`` below it."""
    ordered = sorted(scores)
    allowed = math.floor(REFUSED_AT_MOST * len(ordered))
    t = math.floor(ordered[allowed] * 100) / 100
    return min(0.99, max(0.01, t))


def score_faces(
    analyzer: ContextAnalyzer, image: np.ndarray, faces: list[Detection], source: str
) -> list[Face]:
    out = []
    for det in faces:
        if min(det.bbox[2], det.bbox[3]) < analyzer.min_face_size:
            out.append(Face(source, det.bbox, None))
            continue
        found = analyzer.enclosure(image, det.bbox)
        out.append(
            Face(
                source,
                det.bbox,
                1.0 - found.evidence,
                found.supports,
                found.area_ratio,
                found.reason,
            )
        )
    return out


def track_scores(
    analyzer: ContextAnalyzer, image: np.ndarray, bbox: tuple[float, ...], rng: np.random.Generator
) -> list[float]:
    """Mean live scores of TRACKS_PER_PHOTO tracks of TRACK_FRAMES noisy copies of ``image``
    (the same face box each frame), as the gate averages a track's frames. Only the part of
    the image the cue reads is copied (the cue's context, and a margin)."""
    x, y, w, h = bbox
    m = analyzer.config.context + 0.5
    x0, y0 = max(0, int(x - m * w)), max(0, int(y - m * h))
    image = image[y0 : int(y + h + m * h) + 1, x0 : int(x + w + m * w) + 1]
    bbox = (x - x0, y - y0, w, h)
    out = []
    for _ in range(TRACKS_PER_PHOTO):
        frames = []
        for _ in range(TRACK_FRAMES):
            noise = rng.standard_normal(image.shape, dtype=np.float32) * NOISE_SIGMA
            noisy = np.clip(image + noise, 0, 255)
            frames.append(1.0 - analyzer.enclosure(noisy.astype(np.uint8), bbox).evidence)
        out.append(float(np.mean(frames)))
    return out


def photos(folder: Path) -> list[tuple[str, np.ndarray | None]]:
    return [(p.name, cv2.imread(str(p))) for p in sorted(folder.iterdir()) if p.is_file()]


# --- synthetic presentations (design aid) ------------------------------------------------


def _instrument(
    rng: np.random.Generator, content: np.ndarray, box: tuple[float, ...], phone: bool
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A phone (dark or light bezel) or a print (white border) showing ``content`` round the
    face ``box``; the face's box in the instrument's picture."""
    x, y, w, h = box
    height, width = content.shape[:2]
    x0 = int(max(0, x - rng.uniform(0.3, 1.1) * w))
    y0 = int(max(0, y - rng.uniform(0.3, 0.9) * h))
    x1 = int(min(width, x + w + rng.uniform(0.3, 1.1) * w))
    y1 = int(min(height, y + h + rng.uniform(0.4, 1.4) * h))
    screen = content[y0:y1, x0:x1]
    sh, sw = screen.shape[:2]
    if phone:
        side = int(rng.uniform(0.03, 0.10) * sw) + 2
        colour = int(rng.choice([15, 30, 60, 200, 225]))
        above, below = int(side * rng.uniform(1, 3)), int(side * rng.uniform(1, 3))
    else:
        side = int(rng.uniform(0.04, 0.15) * sw) + 2
        colour = int(rng.uniform(200, 250))
        above = below = side
    out = np.full((sh + above + below, sw + 2 * side, 3), colour, np.uint8)
    out[above : above + sh, side : side + sw] = screen
    return out, (x - x0 + side, y - y0 + above, w, h)


def _paste(
    rng: np.random.Generator, live: list[tuple[np.ndarray, tuple[float, ...]]], i: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Live photo ``i`` shown on an instrument held in front of another live photo (tilted,
    sometimes a hand over an edge, noise, JPEG); the face's expected centre."""
    content, box = live[i]
    background = live[(i * 7 + 3) % len(live)][0]
    device, face = _instrument(rng, content, box, phone=bool(rng.random() < 0.7))
    s = rng.uniform(60, 140) / face[3]
    device = cv2.resize(device, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    face = (face[0] * s, face[1] * s, face[2] * s, face[3] * s)
    portrait = background.shape[0] > background.shape[1]
    canvas = cv2.resize(background, (480, 640) if portrait else (640, 480))
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 3))
    ch, cw = canvas.shape[:2]
    dh, dw = device.shape[:2]
    angle = rng.uniform(-12, 12)
    m = cv2.getRotationMatrix2D((dw / 2, dh / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(dh * sin + dw * cos) + 2, int(dh * cos + dw * sin) + 2
    if nh >= ch or nw >= cw:
        return None
    m[0, 2] += nw / 2 - dw / 2
    m[1, 2] += nh / 2 - dh / 2
    mask = cv2.warpAffine(np.full((dh, dw), 255, np.uint8), m, (nw, nh)) > 127
    turned = cv2.warpAffine(device, m, (nw, nh))
    ox, oy = int(rng.uniform(0, cw - nw)), int(rng.uniform(0, ch - nh))
    region = canvas[oy : oy + nh, ox : ox + nw]
    canvas[oy : oy + nh, ox : ox + nw] = np.where(mask[..., None], turned, region)
    if rng.random() < 0.6:  # a hand over part of an edge
        hx = ox + nw * float(rng.choice([0.0, 1.0, rng.uniform(0.2, 0.8)]))
        hy = oy + nh * rng.uniform(0.6, 1.0)
        skin = (int(rng.uniform(80, 140)), int(rng.uniform(120, 170)), int(rng.uniform(170, 220)))
        axes = (int(nw * 0.18), int(nh * 0.12))
        cv2.ellipse(canvas, (int(hx), int(hy)), axes, rng.uniform(0, 180), 0, 360, skin, -1)
    canvas = np.clip(canvas + rng.normal(0, 3, canvas.shape), 0, 255).astype(np.uint8)
    jpeg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    canvas = np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
    centre = m @ np.array([face[0] + face[2] / 2, face[1] + face[3] / 2, 1.0]) + (ox, oy)
    return canvas, centre


def _beside(
    rng: np.random.Generator, image: np.ndarray, box: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """A phone-like rectangle (bezel and screen) drawn beside the face, not enclosing it."""
    out = image.copy()
    x, y, w, h = box
    pw, ph = rng.uniform(0.6, 1.4) * w, rng.uniform(1.2, 2.5) * h
    gap = rng.uniform(0.1, 0.8) * w
    px = x - gap - pw if rng.random() < 0.5 else x + w + gap
    py = y + rng.uniform(-0.8, 0.8) * h
    angle = rng.uniform(-15, 15)
    centre = (px + pw / 2, py + ph / 2)
    colour = [int(v) for v in rng.choice([[20, 20, 20], [230, 230, 230], [200, 120, 160]])]
    cv2.fillPoly(out, [cv2.boxPoints((centre, (pw, ph), angle)).astype(np.int32)], colour)
    screen = cv2.boxPoints((centre, (pw * 0.85, ph * 0.85), angle)).astype(np.int32)
    cv2.fillPoly(out, [screen], [int(v) for v in rng.integers(60, 220, 3)])
    return out, np.array([x + w / 2, y + h / 2])


def _face_at(detector: object, image: np.ndarray, centre: np.ndarray) -> Detection | None:
    for det in detector.detect(image):  # type: ignore[attr-defined]
        x, y, w, h = det.bbox
        if x <= centre[0] <= x + w and y <= centre[1] <= y + h:
            return det
    return None


def synthetic(
    detector: object, analyzer: ContextAnalyzer, live: list[tuple[np.ndarray, tuple[float, ...]]]
) -> tuple[list[float], list[float]]:
    """Live scores of the synthetic enclosing and beside presentations YuNet finds."""
    rng = np.random.default_rng(SEED)
    enclosed, beside = [], []
    for i in range(len(live)):
        made = _paste(rng, live, i)
        if made is not None:
            det = _face_at(detector, *made)
            if det is not None and min(det.bbox[2:]) >= analyzer.min_face_size:
                enclosed.append(1.0 - analyzer.enclosure(made[0], det.bbox).evidence)
    for image, box in live:
        drawn, centre = _beside(rng, image, box)
        det = _face_at(detector, drawn, centre)
        if det is not None and min(det.bbox[2:]) >= analyzer.min_face_size:
            beside.append(1.0 - analyzer.enclosure(drawn, det.bbox).evidence)
    return enclosed, beside


# --- the report ---------------------------------------------------------------------------


def pct(k: int, n: int) -> str:
    return f"{k} of {n} ({100 * k / n:.1f}%)" if n else "0 of 0"


def row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def header(*names: str) -> None:
    row(*names)
    row(*("---" for _ in names))


def fmt_supports(face: Face) -> str:
    """The best hypothesis's side supports (left / right / top / bottom; "frame": the
    frame's edge), or why there is none."""
    if not face.supports:
        return face.reason or "-"
    sides = " / ".join("frame" if s is None else f"{s:.2f}" for s in face.supports)
    return f"{sides} ({face.reason})" if face.reason else sides


def leave_one_out(judged: list[Face]) -> tuple[list[tuple[str, float, float]], list[float]]:
    """For each live photo, the rule's threshold on the other photos' faces: the photos
    refused by it (name, least score, threshold), and the thresholds seen."""
    by_photo: dict[str, list[float]] = {}
    for f in judged:
        if f.score is not None:
            by_photo.setdefault(f.source, []).append(f.score)
    refused, seen = [], set()
    for name, own in by_photo.items():
        t = rule_threshold([s for other, ss in by_photo.items() if other != name for s in ss])
        seen.add(t)
        if min(own) < t:
            refused.append((name, min(own), t))
    return refused, sorted(seen)


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    root = data / "antispoof-dev"
    detector = build_registry().create(ComponentKind.DETECTOR, "yunet")
    analyzer = ContextAnalyzer()

    live_faces: list[Face] = []
    live_images: list[tuple[np.ndarray, tuple[float, ...]]] = []
    live_photos = unreadable = no_face = 0
    timings: list[float] = []
    for name, image in photos(root / "real"):
        if image is None:
            unreadable += 1
            continue
        live_photos += 1
        dets = detector.detect(image)
        no_face += not dets
        t0 = time.perf_counter()
        live_faces += score_faces(analyzer, image, dets, name)
        if dets:
            timings.append((time.perf_counter() - t0) * 1000 / len(dets))
        live_images += [(image, d.bbox) for d in dets if min(d.bbox[2:]) >= analyzer.min_face_size]
    judged = [f for f in live_faces if f.score is not None]
    scores = [f.score for f in judged if f.score is not None]
    threshold = rule_threshold(scores)
    refused = [f for f in judged if f.score is not None and f.score < threshold]
    loo, loo_thresholds = leave_one_out(judged)

    print("# The context cue (`liveness_context`) on antispoof-dev\n")
    print(f"`python -m tests.bench.liveness_context {data}`; cue and YuNet defaults.\n")
    print("## Live faces and the threshold (chosen without the attacks)\n")
    header("quantity", "value")
    row("live photos read", f"{live_photos} ({unreadable} unreadable)")
    small = len(live_faces) - len(judged)
    row("live faces judged", f"{len(judged)} ({no_face} photos without a face, {small} small)")
    qs = [float(q) for q in np.quantile(scores, [0.0, 0.02, 0.05, 0.5])] if scores else []
    row("live score: least, 2nd pct, 5th pct, median", ", ".join(f"{q:.3f}" for q in qs))
    row("live faces with any boundary (score < 1)", pct(sum(s < 1 for s in scores), len(scores)))
    row("threshold by the rule (at most 2% refused, rounded down)", f"{threshold:.2f}")
    same = "same" if abs(threshold - DEFAULT_THRESHOLD) < 1e-9 else "DIFFERS"
    row("the module's DEFAULT_THRESHOLD", f"{DEFAULT_THRESHOLD:.2f} ({same})")
    row("live faces refused at the default, in sample", pct(len(refused), len(judged)))
    by_photo = {f.source for f in judged}
    row(
        "leave-one-out: live photos refused (threshold on the others)", pct(len(loo), len(by_photo))
    )
    row("leave-one-out thresholds", ", ".join(f"{t:.2f}" for t in loo_thresholds))
    if timings:
        ms = f"{np.median(timings):.1f} ms, {max(timings):.1f} ms"
        row("time a face (median, max over the photos; this machine)", ms)
    print()
    if refused or loo:
        print("Live photos refused (in sample at the default, or left out):\n")
        header("photo", "live score", "at default", "left-out threshold", "sides L/R/T/B", "area")
        names = {f.source for f in refused} | {n for n, _, _ in loo}
        left_out = {n: t for n, _, t in loo}
        for f in sorted(judged, key=lambda f: 1.0 if f.score is None else f.score):
            if f.source in names and f.score is not None:
                at_default = "refused" if f.score < threshold else "live"
                lo = f"{left_out[f.source]:.2f}" if f.source in left_out else "-"
                row(
                    f.source,
                    f"{f.score:.3f}",
                    at_default,
                    lo,
                    fmt_supports(f),
                    f"{f.area_ratio:.1f}x",
                )
        print()

    rng = np.random.default_rng(SEED)
    live_tracks = [track_scores(analyzer, image, bbox, rng) for image, bbox in live_images]
    flat = [t for ts in live_tracks for t in ts]
    bad = sum(t < DEFAULT_THRESHOLD for t in flat)
    photos_hit = sum(any(t < DEFAULT_THRESHOLD for t in ts) for ts in live_tracks)
    print(
        f"Per track: {TRACKS_PER_PHOTO} tracks of each live face, {TRACK_FRAMES} frames each with "
        f"Gaussian noise (sigma {NOISE_SIGMA:g}), same box, mean score: "
        f"{pct(bad, len(flat))} live tracks refused at the default "
        f"({photos_hit} photos with a refused track).\n"
    )

    print(f"## Attacks at the default threshold ({DEFAULT_THRESHOLD:.2f})\n")
    header(
        "photo",
        "faces (YuNet)",
        "live score",
        "caught",
        f"noisy tracks caught (of {TRACKS_PER_PHOTO})",
        "best boundary: sides L/R/T/B",
        "area",
    )
    caught = with_face = 0
    attacks = photos(root / "fake")
    for name, image in attacks:
        if image is None:
            row(name, "unreadable", "", "", "", "", "")
            continue
        faces = score_faces(analyzer, image, detector.detect(image), name)
        if not faces:
            row(name, 0, "-", "no face: nothing to judge", "", "", "")
            continue
        with_face += 1
        hit = any(f.score is not None and f.score < DEFAULT_THRESHOLD for f in faces)
        caught += hit
        for f in faces:
            score = "small" if f.score is None else f"{f.score:.3f}"
            area = f"{f.area_ratio:.1f}x" if f.supports else "-"
            tracks = "-"
            if f.score is not None:
                ts = track_scores(analyzer, image, f.bbox, rng)
                tracks = str(sum(t < DEFAULT_THRESHOLD for t in ts))
            row(name, len(faces), score, "yes" if hit else "no", tracks, fmt_supports(f), area)
    print(
        f"\nCaught: {caught} of the {with_face} attack photos with a face "
        f"({len(attacks) - with_face} give YuNet no face).\n"
    )

    cap = cv2.VideoCapture(str(data / "faces" / "short_hamilton_clip.mp4"))
    ham: list[Face] = []
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % 5 == 0:
            ham += score_faces(analyzer, frame, detector.detect(frame), f"frame {index}")
        index += 1
    cap.release()
    ham_scores = [f.score for f in ham if f.score is not None]
    print("## The Hamilton clip (live broadcast video), every 5th frame\n")
    header("frames read", "faces", "judged (>= min_face_size)", "refused at default", "least")
    least = f"{min(ham_scores):.3f}" if ham_scores else "-"
    ham_refused = pct(sum(s < DEFAULT_THRESHOLD for s in ham_scores), len(ham_scores))
    row(index, len(ham), len(ham_scores), ham_refused, least)
    print()

    enclosed, beside = synthetic(detector, analyzer, live_images)
    print("## Synthetic presentations (drawn on the live photos; used while designing)\n")
    header("set", "faces judged", "refused at default", "median live score")
    for label, ss in (
        ("phone or print enclosing the face (attacks)", enclosed),
        ("phone-like rectangle beside a live face (live)", beside),
    ):
        med = f"{np.median(ss):.3f}" if ss else "-"
        row(label, len(ss), pct(sum(s < DEFAULT_THRESHOLD for s in ss), len(ss)), med)


if __name__ == "__main__":
    main()
