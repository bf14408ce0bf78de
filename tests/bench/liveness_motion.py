"""What the ``liveness_motion`` cue says of live tracks and of flat ones (plugins/fr_cpu/motion.py).

    python -m tests.bench.liveness_motion [DATA] [--draws N] [--frames N] [--seed N]

* **live**: every track of the Hamilton clip (real people filmed; faces at least the cue's
  ``min_face_size``; tracks end at shot cuts), judged on every window of ``window``
  consecutive observations sliding along the track (stride 1). A track is Miranda's when
  the median SFace cosine of its faces to his portrait is at least 0.363.
* **warped**: every photo of antispoof-dev/fake and antispoof-dev/real moved as a held
  print or screen (fr_core.evaluation.tracks.warped_track: SYNTHETIC perspective warps and
  sensor noise; photos larger than 640 px scaled down first, as a camera frame), detected
  again in every frame (the face overlapping the previous frame's most, else the largest),
  ``--frames`` frames per track, ``--draws`` tracks per photo, judged on every window.
  Live photos warped are flat too: they must be judged attack or abstain, never live.
* **still**: each photo with sensor noise only (one window): nothing moved, so the cue
  should abstain.

Prints a markdown table: windows judged live / abstain / attack, and the cue's measures R
(residual off the plane) and D (perspective change), in % of the face's size; and, for
comparison, the 5-landmark nose parallax (nose tip off the homography of the eyes and mouth
corners, median over the window's frame pairs, in inter-ocular distances).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fr_cpu.motion import MotionAnalyzer, MotionObservation, measure, score_of

from fr_core.evaluation.tracks import video_tracks, warped_track
from fr_core.interfaces import ComponentKind, Detection, FrameResult, ReadStatus
from fr_core.pipeline.tracker import iou
from fr_core.plugins import build_registry

MIRANDA_COSINE = 0.363  # SFace's published threshold (data README)
MAX_SIDE = 640


@dataclass
class Tally:
    label: str
    verdicts: list[str] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)
    perspectives: list[float] = field(default_factory=list)
    parallax: list[float] = field(default_factory=list)
    tracks: int = 0
    notes: list[str] = field(default_factory=list)  # windows judged against the truth
    nearest: list[tuple[float, str]] = field(default_factory=list)  # (R, where)
    live: bool = True  # what the tracks are: live (never attack) or flat (never live)

    def add(self, verdict: str, r: float | None, d: float | None, p: float | None) -> None:
        self.verdicts.append(verdict)
        if r is not None and d is not None:
            self.residuals.append(r)
            self.perspectives.append(d)
        if p is not None and np.isfinite(p):
            self.parallax.append(p)

    def share(self, verdict: str) -> str:
        n = len(self.verdicts)
        k = self.verdicts.count(verdict)
        return f"{k} ({100 * k / n:.1f}%)" if n else "-"


def verdict_of(score: float | None, threshold: float) -> str:
    return "abstain" if score is None else "live" if score >= threshold else "attack"


def nose_parallax(landmarks: Sequence[np.ndarray]) -> float | None:
    """The 5-landmark test the cue does not use: median over frame pairs of the nose tip's
    distance from where the homography of the eyes and mouth corners puts it, in
    inter-ocular distances of the later frame."""
    pts = [np.asarray(lm, np.float64) for lm in landmarks if lm is not None]
    out = []
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            a, b = pts[i], pts[j]
            h, _ = cv2.findHomography(a[[0, 1, 3, 4]], b[[0, 1, 3, 4]], 0)
            if h is None:
                continue
            nose = cv2.perspectiveTransform(a[2].reshape(1, 1, 2), h).reshape(2)
            iod = float(np.linalg.norm(b[1] - b[0]))
            if iod > 0:
                out.append(float(np.linalg.norm(nose - b[2])) / iod)
    return float(np.median(out)) if out else None


def judge_windows(
    cue: MotionAnalyzer,
    observed: list[tuple[MotionObservation, np.ndarray]],
    tally: Tally,
    name: str,
    stride: int = 1,
) -> None:
    """Judge every window of ``cue.window`` consecutive observations (stride ``stride``);
    a track shorter than the window is one window of all of it, when it has at least
    ``min_observations``."""
    w = cue.window
    if len(observed) < cue.min_observations:
        return
    starts = range(0, max(1, len(observed) - w + 1), stride)
    tally.tracks += 1
    for s in starts:
        part = observed[s : s + w]
        m = measure([o for o, _ in part])
        score = None if m is None else score_of(m, cue.config)
        verdict = verdict_of(score, cue.threshold)
        where = f"{name} frames {part[0][0].index}-{part[-1][0].index}"
        if m is not None and verdict == ("attack" if tally.live else "live"):
            tally.notes.append(
                f"{where}: {verdict}, R {100 * m.residual:.2f}%, D {100 * m.perspective:.2f}%"
            )
        if m is not None and not tally.live:
            tally.nearest.append((m.residual, f"{where}: D {100 * m.perspective:.2f}%"))
            tally.nearest = sorted(tally.nearest, reverse=True)[:3]
        tally.add(
            verdict,
            None if m is None else m.residual,
            None if m is None else m.perspective,
            nose_parallax([lm for _, lm in part]),
        )


def _observe(cue: MotionAnalyzer, frame: Any, det: Detection, index: int) -> Any:
    if min(det.bbox[2], det.bbox[3]) < cue.min_face_size:
        return None
    ob = cue.observe(FrameResult(ReadStatus.FRAME, frame, index), det)
    return None if ob is None else (ob, np.asarray(det.landmarks))


def hamilton(data: Path, detector: Any, embedder: Any, cue: MotionAnalyzer) -> list[Tally]:
    portrait = cv2.imread(str(data / "faces" / "lin-manuel-miranda.png"))
    face = max(detector.detect(portrait), key=lambda d: d.bbox[2] * d.bbox[3])
    miranda = embedder.embed(portrait, face)
    miranda = miranda / np.linalg.norm(miranda)
    mine, others = Tally("Hamilton, Miranda's tracks (live)"), Tally("Hamilton, other people")
    tracks = video_tracks(
        data / "faces" / "short_hamilton_clip.mp4", detector, min_face_size=cue.min_face_size
    )
    for track in tracks:
        cosines = []
        for result, det in track:
            e = embedder.embed(result.frame, det)
            cosines.append(float(np.dot(e, miranda) / np.linalg.norm(e)))
        tally = mine if np.median(cosines) >= MIRANDA_COSINE else others
        observed = [o for o in (_observe(cue, r.frame, d, r.index) for r, d in track) if o]
        judge_windows(cue, observed, tally, f"Hamilton track from frame {track[0][0].index}")
    return [mine, others]


def _downscaled(image: np.ndarray) -> np.ndarray:
    side = max(image.shape[:2])
    if side <= MAX_SIDE:
        return image
    f = MAX_SIDE / side
    return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def follow(detector: Any, frames: Iterable[np.ndarray], start: Detection) -> list[Any]:
    """Per frame: the detection overlapping the previous one's most (IoU >= 0.3), else the
    largest; None where the detector finds no face."""
    out: list[Any] = []
    prev = start
    for frame in frames:
        faces = detector.detect(frame)
        if not faces:
            out.append(None)
            continue
        best = max(faces, key=lambda d: iou(d.bbox, prev.bbox))
        if iou(best.bbox, prev.bbox) < 0.3:
            best = max(faces, key=lambda d: d.bbox[2] * d.bbox[3])
        out.append(best)
        prev = best
    return out


def photos(
    data: Path,
    detector: Any,
    cue: MotionAnalyzer,
    *,
    frames: int,
    draws: int,
    seed: int,
) -> tuple[list[Tally], dict[str, int]]:
    rng = np.random.default_rng(seed)
    warped = {
        "fake": Tally("warped attack photos (fake/)", live=False),
        "real": Tally("warped live photos (real/)", live=False),
    }
    still = Tally("still photos, noise only (fake/ + real/)", live=False)
    counts = {"photos": 0, "no face": 0, "unreadable": 0}
    for sub in ("fake", "real"):
        for path in sorted((data / "antispoof-dev" / sub).iterdir()):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                counts["unreadable"] += 1
                continue
            image = _downscaled(image)
            faces = detector.detect(image)
            if not faces:
                counts["no face"] += 1
                continue
            counts["photos"] += 1
            start = max(faces, key=lambda d: d.bbox[2] * d.bbox[3])
            for strength, n, tally, repeat in (
                (1.0, frames, warped[sub], draws),
                (0.0, cue.window, still, 1),
            ):
                for _ in range(repeat):
                    seq = warped_track(image, n, rng, strength=strength)
                    dets = follow(detector, seq, start)
                    observed = [
                        o
                        for o in (
                            _observe(cue, f, d, i)
                            for i, (f, d) in enumerate(zip(seq, dets, strict=True))
                            if d is not None
                        )
                        if o
                    ]
                    judge_windows(cue, observed, tally, f"{sub}/{path.name}")
    return [warped["fake"], warped["real"], still], counts


def _pct(values: list[float], q: float, scale: float = 100.0) -> str:
    return f"{np.percentile(values, q) * scale:.2f}" if values else "-"


def table(tallies: list[Tally]) -> str:
    lines = [
        "| tracks | windows | live | abstain | attack | R median / max (%) "
        "| D median / max (%) | 5-point nose parallax median / p90 (IOD) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in tallies:
        lines.append(
            f"| {t.label}: {t.tracks} | {len(t.verdicts)} | {t.share('live')} | "
            f"{t.share('abstain')} | {t.share('attack')} | "
            f"{_pct(t.residuals, 50)} / {_pct(t.residuals, 100)} | "
            f"{_pct(t.perspectives, 50)} / {_pct(t.perspectives, 100)} | "
            f"{_pct(t.parallax, 50, 1)} / {_pct(t.parallax, 90, 1)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default="../shared/data", type=Path)
    parser.add_argument("--frames", type=int, default=30, help="frames per warped track")
    parser.add_argument("--draws", type=int, default=1, help="warped tracks per photo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    registry = build_registry()
    detector = registry.create(ComponentKind.DETECTOR, "yunet")
    embedder = registry.create(ComponentKind.EMBEDDER, "sface")
    cue = MotionAnalyzer()
    live = hamilton(args.data, detector, embedder, cue)
    flat, counts = photos(
        args.data, detector, cue, frames=args.frames, draws=args.draws, seed=args.seed
    )
    c = cue.config
    print("# The liveness_motion cue: live tracks and flat ones\n")
    print(
        f"`python -m tests.bench.liveness_motion {' '.join(sys.argv[1:])}`: window "
        f"{cue.window}, min_observations {cue.min_observations}, min_face_size "
        f"{cue.min_face_size:.0f} px; live at R >= {100 * c.live_residual:.2f}%, attack at "
        f"D >= {100 * c.min_perspective:.2f}% with R <= {100 * c.flat_residual:.2f}% and "
        f"R <= D/{c.flat_ratio:g}. Photos: {counts['photos']} with a face "
        f"({counts['no face']} without, "
        f"{counts['unreadable']} unreadable), {args.draws} warped track(s) of {args.frames} "
        f"frames each (seed {args.seed}; the warps are synthetic).\n"
    )
    tallies = [*live, *flat]
    print(table(tallies))
    print("\nFlat windows nearest to live (highest R):\n")
    for t in flat:
        print("\n".join(f"- {t.label}: R {100 * r:.3f}%, {w}" for r, w in t.nearest))
    wrong = [n for t in tallies for n in t.notes]
    if wrong:
        print("\nWindows judged against the truth (live judged attack, flat judged live):\n")
        print("\n".join(f"- {n}" for n in wrong))
    print(f"\n{time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
