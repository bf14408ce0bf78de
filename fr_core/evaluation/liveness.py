"""How well the liveness check tells live faces from presentation attacks, measured on a
folder of labelled photos (``fr-edge evaluate-liveness``; docs/liveness.md).

The folder holds ``real/`` (live people) and ``fake/`` (printed photos, screens held to a
camera), as ``../shared/data/antispoof-dev`` does. Each photo's largest face (the detector of
the device) is scored two ways:

* **per image**: the liveness score of the photo as it is;
* **per track**: the photo delivered ``track_frames`` times with Gaussian sensor noise (the
  sim camera's ``noise``), detected again in each frame, the scores averaged, as the
  recognition stage decides a track over its confirming frames.

At a threshold t, APCER is the share of attacks (with a face found) scored >= t (accepted as
live), BPCER the share of live faces scored < t (refused). A photo in which the detector finds
no face (or one smaller than the analyzer's ``min_face_size``, which it does not judge) cannot
produce an identity event at all; those are counted apart. The report gives
both rates at the analyzer's threshold, a sweep, the least threshold that refuses every
attack of the set, and, with ``samples``, the verdicts on the model authors' sample images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fr_core.files import IMAGE_EXTENSIONS

#: The model authors' published verdicts on their sample images (their README).
PUBLISHED_SAMPLES = {
    "image_F1.jpg": ("attack", 0.73),
    "image_F2.jpg": ("attack", 0.82),
    "image_T1.jpg": ("live", 0.99),
}
SWEEP = (*(round(float(t), 2) for t in np.arange(0.05, 1.0, 0.05)), 0.96, 0.97, 0.98, 0.99)


@dataclass
class Scored:
    path: str
    live: bool  # ground truth
    image: float | None = None  # None: no face found / unreadable
    tracks: list[float] = field(default_factory=list)  # one per noise draw
    note: str = ""

    def values(self, kind: str) -> list[float]:
        if kind == "image":
            return [] if self.image is None else [self.image]
        return self.tracks


@dataclass
class LivenessReport:
    threshold: float
    items: list[Scored] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    track_frames: int = 5
    noise: float = 3.0
    tracks_per_photo: int = 10

    def _values(self, kind: str, live: bool) -> list[float]:
        return [v for s in self.items if s.live == live for v in s.values(kind)]

    def rates(self, t: float, kind: str) -> dict[str, Any]:
        """APCER and BPCER at ``t``: per image over the photos, per track over every
        (photo, noise draw); plus how many attack photos had any track accepted."""
        live, fake = self._values(kind, True), self._values(kind, False)
        accepted = sum(1 for v in fake if v >= t)
        refused = sum(1 for v in live if v < t)
        photos = [s for s in self.items if not s.live and s.values(kind)]
        return {
            "threshold": t,
            "attacks": len(fake),
            "attacks_accepted": accepted,
            "apcer": accepted / len(fake) if fake else None,
            "attack_photos": len(photos),
            "attack_photos_ever_accepted": sum(
                1 for s in photos if any(v >= t for v in s.values(kind))
            ),
            "live": len(live),
            "live_refused": refused,
            "bpcer": refused / len(live) if live else None,
        }

    def least_safe_threshold(self, kind: str) -> float | None:
        """The least threshold (to 3 decimals) above every attack's score."""
        fake = self._values(kind, False)
        if not fake:
            return None
        return round(math.floor(max(fake) * 1000) / 1000 + 0.001, 3)

    def summary(self) -> dict[str, Any]:
        counts = {
            "live_photos": sum(1 for s in self.items if s.live),
            "attack_photos": sum(1 for s in self.items if not s.live),
            "live_without_face": sum(1 for s in self.items if s.live and s.image is None),
            "attacks_without_face": sum(1 for s in self.items if not s.live and s.image is None),
        }
        out: dict[str, Any] = {
            "threshold": self.threshold,
            "track_frames": self.track_frames,
            "tracks_per_photo": self.tracks_per_photo,
            "noise": self.noise,
            "counts": counts,
        }
        for kind in ("image", "track"):
            safe = self.least_safe_threshold(kind)
            out[kind] = {
                "at_threshold": self.rates(self.threshold, kind),
                "sweep": [self.rates(t, kind) for t in SWEEP],
                "least_threshold_refusing_every_attack": safe,
                "at_least_safe_threshold": self.rates(safe, kind) if safe is not None else None,
            }
        out["samples"] = self.samples
        scored = [s for s in self.items if s.image is not None]

        def row(s: Scored) -> dict[str, Any]:
            t = s.tracks or [float("nan")]
            return {
                "path": s.path,
                "image": s.image,
                "tracks_min": min(t),
                "tracks_median": float(np.median(t)),
                "tracks_max": max(t),
            }

        out["lowest_scores"] = {
            "live": [
                row(s)
                for s in sorted((s for s in scored if s.live), key=lambda s: s.image or 0.0)[:10]
            ],
            "attacks": [
                row(s)
                for s in sorted((s for s in scored if not s.live), key=lambda s: -(s.image or 0.0))
            ],
        }
        return out


def _largest(detector: Any, image: np.ndarray) -> Any:
    faces = detector.detect(image)
    return max(faces, key=lambda d: d.bbox[2] * d.bbox[3]) if faces else None


def score_photo(
    detector: Any,
    analyzer: Any,
    image: np.ndarray,
    *,
    track_frames: int,
    noise: float,
    rng: np.random.Generator,
    tracks: int = 1,
) -> tuple[float | None, list[float]]:
    """(per-image score, per-track scores: one per noise draw) of the largest face; None and
    [] where no face (big enough to judge) is found."""
    face = _largest(detector, image)
    small = float(getattr(analyzer, "min_face_size", 0.0))
    if face is None or min(face.bbox[2], face.bbox[3]) < small:
        return None, []  # no face, or one the analyzer does not judge
    single = float(analyzer.analyze(image, face).score)
    out = []
    for _ in range(tracks):
        scores = []
        for _ in range(track_frames):
            noisy = np.clip(image + rng.normal(0.0, noise, image.shape), 0, 255).astype(np.uint8)
            f = _largest(detector, noisy)
            if f is not None and min(f.bbox[2], f.bbox[3]) >= small:
                scores.append(float(analyzer.analyze(noisy, f).score))
        if scores:
            out.append(float(np.mean(scores)))
    return single, out


def photos(folder: Path) -> list[tuple[Path, bool]]:
    """(path, is live) of every image under ``real/`` and ``fake/``."""
    out = []
    for sub, live in (("real", True), ("fake", False)):
        base = folder / sub
        if not base.is_dir():
            raise FileNotFoundError(f"{base} missing: the folder needs real/ and fake/")
        out += [(p, live) for p in sorted(base.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    return out


def evaluate(
    folder: Path,
    detector: Any,
    analyzer: Any,
    *,
    samples: Path | None = None,
    track_frames: int = 5,
    tracks_per_photo: int = 10,
    noise: float = 3.0,
    seed: int = 0,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda x: x,
) -> LivenessReport:
    import cv2

    rng = np.random.default_rng(seed)
    report = LivenessReport(
        float(analyzer.threshold),
        track_frames=track_frames,
        noise=noise,
        tracks_per_photo=tracks_per_photo,
    )
    for path, live in progress(photos(folder)):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        rel = str(path.relative_to(folder))
        if image is None:
            report.items.append(Scored(rel, live, note="unreadable"))
            continue
        single, tracks = score_photo(
            detector,
            analyzer,
            image,
            track_frames=track_frames,
            noise=noise,
            rng=rng,
            tracks=tracks_per_photo,
        )
        report.items.append(
            Scored(rel, live, single, tracks, "" if single is not None else "no face")
        )
    if samples is not None:
        for name, (verdict, published) in PUBLISHED_SAMPLES.items():
            image = cv2.imread(str(samples / name), cv2.IMREAD_COLOR)
            face = _largest(detector, image) if image is not None else None
            if face is None:
                report.samples.append({"image": name, "published": verdict, "ours": None})
                continue
            result = analyzer.analyze(image, face)
            # the authors' rule: the arg-max of the two models' mean softmax (1 = live)
            classes = {k: v for k, v in result.scores.items() if k.startswith("class_")}
            top = max(classes, key=lambda k: classes[k]) if classes else None
            live = top == "class_1" if top is not None else result.score >= 0.5
            ours = "live" if live else "attack"
            report.samples.append(
                {
                    "image": name,
                    "published": verdict,
                    "published_score": published,
                    "ours": ours,
                    "live_score": round(float(result.score), 3),
                    "score_of_verdict": round(
                        float(classes[top] if top is not None else result.score), 3
                    ),
                    "agrees": ours == verdict,
                }
            )
    return report


def markdown(summary: dict[str, Any], source: str) -> str:
    c = summary["counts"]
    lines = [
        f"# Liveness on {source}",
        "",
        f"{c['live_photos']} live photos ({c['live_without_face']} without a face found), "
        f"{c['attack_photos']} attacks ({c['attacks_without_face']} without a face found: "
        "they cannot produce an identity event). Per track: each photo delivered "
        f"{summary['track_frames']} times with sensor noise sigma {summary['noise']}, "
        f"re-detected, the scores averaged; {summary['tracks_per_photo']} such tracks (noise "
        "draws) per photo, so per-track counts are over photos x draws.",
        "",
        "| | threshold | attacks accepted (APCER) | live refused (BPCER) |",
        "| --- | --- | --- | --- |",
    ]
    for kind in ("image", "track"):
        for label, rates in (
            ("default", summary[kind]["at_threshold"]),
            ("least refusing every attack", summary[kind]["at_least_safe_threshold"]),
        ):
            if rates is None:
                continue
            photos = (
                f"; {rates['attack_photos_ever_accepted']} of {rates['attack_photos']} photos"
                if kind == "track"
                else ""
            )
            lines.append(
                f"| per {kind}, {label} | {rates['threshold']} | "
                f"{rates['attacks_accepted']} of {rates['attacks']}{photos} | "
                f"{rates['live_refused']} of {rates['live']} ({100 * (rates['bpcer'] or 0):.1f}%) |"
            )
    if summary["samples"]:
        lines += ["", "| sample | published | ours (live score) |", "| --- | --- | --- |"]
        for s in summary["samples"]:
            ours = "no face" if s["ours"] is None else f"{s['ours']} ({s['live_score']})"
            lines.append(
                f"| {s['image']} | {s['published']} {s.get('published_score', '')} | {ours} |"
            )
    lines += [
        "",
        "Sweep (per track):",
        "",
        "| threshold | attack tracks accepted | attack photos ever accepted "
        "| live tracks refused |",
        "| --- | --- | --- | --- |",
    ]
    for r in summary["track"]["sweep"]:
        lines.append(
            f"| {r['threshold']} | {r['attacks_accepted']}/{r['attacks']} | "
            f"{r['attack_photos_ever_accepted']}/{r['attack_photos']} | "
            f"{r['live_refused']}/{r['live']} |"
        )
    return "\n".join(lines) + "\n"


def plots(report: LivenessReport, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, kind in zip(axes, ("image", "track"), strict=True):
        for live, colour, label in ((True, "tab:green", "live"), (False, "tab:red", "attack")):
            values = [v for s in report.items if s.live == live for v in s.values(kind)]
            jitter = np.random.default_rng(1).uniform(-0.15, 0.15, len(values))
            ax.scatter(values, (1 if live else 0) + jitter, s=12, c=colour, label=label, alpha=0.7)
        ax.axvline(
            report.threshold, color="k", ls="--", lw=1, label=f"threshold {report.threshold}"
        )
        ax.set_xlim(0, 1)
        ax.set_yticks([0, 1], ["attack", "live"])
        ax.set_xlabel(f"live score, per {kind}")
    axes[0].legend(loc="center left", fontsize=8)
    fig.tight_layout()
    path = out / "scores.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for kind, style in (("image", ":"), ("track", "-")):
        sweep = [report.rates(t, kind) for t in SWEEP]
        ax.plot(SWEEP, [r["apcer"] for r in sweep], "r" + style, label=f"APCER per {kind}")
        ax.plot(SWEEP, [r["bpcer"] for r in sweep], "g" + style, label=f"BPCER per {kind}")
    ax.axvline(report.threshold, color="k", ls="--", lw=1)
    ax.set_xlabel("threshold")
    ax.set_ylabel("rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "rates.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def write(report: LivenessReport, out: Path, source: str, with_plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    summary = report.summary()
    summary["source"] = source
    paths = [out / "report.json", out / "report.md"]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n")
    paths[1].write_text(markdown(summary, source))
    if with_plots:
        paths += plots(report, out)
    return paths
