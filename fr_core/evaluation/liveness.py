"""How well the liveness cues tell live faces from presentation attacks, per face, measured on
a folder of labelled photos and optional videos of live people (``fr-edge
evaluate-liveness``; docs/liveness.md).

**Ground truth is per face.** The folder holds ``real/`` (live people) and ``fake/``
(printed photos, screens held to a camera). Many attack photos also show the live person who
holds the phone, so a photo's folder is not the label of every face in it. A ``labels.csv``
(:func:`read_labels`; by default ``FOLDER/labels.csv``) gives ``file,x,y,w,h,label[,note]``
rows, ``label`` one of ``live``, ``attack`` or ``ignore`` (a region that is not a judgeable
face). Each face the detector finds is matched to the labelled box it overlaps most (IoU >=
0.3). A photo without rows: in ``real/`` every face is live; in ``fake/`` its one face is the
attack, and a second face is an error that asks for labels. A labelled face the detector does
not find is counted apart: it cannot produce an identity event either way.

**Every face is scored**, by every cue (:mod:`fr_core.pipeline.liveness`), through the gate
the device runs:

* per image: each frame cue's score of the photo as it is;
* per track, still: the photo delivered as a track of frames with Gaussian sensor noise,
  re-detected in each frame, observed by the gate and judged by each cue, as the
  recognition stage judges a track being confirmed; ``tracks_per_photo`` noise draws;
* per track, moved (attacks only): the photo moved by smooth perspective warps as a hand
  moves a phone or a print (:func:`fr_core.evaluation.tracks.warped_track`; **synthetic**);
* per track, video: windows of the real tracks of videos of live people.

**Thresholds are chosen by a rule that never sees an attack** (:func:`rule_thresholds`):
one cue's threshold is the highest that refuses at most ``bpcer_target`` of the live tracks
it has evidence on; several cues share one quantile level of their live scores, the largest
at which the fused gate refuses at most ``bpcer_target`` of the live tracks. Because the
rule sees no attack, its APCER on this set is already out of sample for the attacks; the
report still computes leave-one-attack-out
(threshold set on every other photo) and leave-one-live-photo-out figures, and, for
comparison, the leave-one-attack-out figure of the old rule ("least threshold refusing every
attack of the set"), which does see the attacks.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fr_core.evaluation.tracks import video_tracks, warped_track
from fr_core.files import IMAGE_EXTENSIONS
from fr_core.interfaces import Detection, FrameResult, ReadStatus
from fr_core.pipeline.liveness import (
    LivenessGate,
    TrackLiveness,
    cue_name,
    rule_all,
)
from fr_core.pipeline.tracker import iou

#: The model authors' published verdicts on their sample images (their README).
PUBLISHED_SAMPLES = {
    "image_F1.jpg": ("attack", 0.73),
    "image_F2.jpg": ("attack", 0.82),
    "image_T1.jpg": ("live", 0.99),
}
LABELS = ("live", "attack", "ignore")
MATCH_IOU = 0.3
MAX_LABELS_BYTES = 4 << 20
MAX_LABEL_ROWS = 100_000
MAX_IMAGE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 50_000_000  # read from the header before decoding
MAX_VIDEO_FRAMES = 900  # per --live-video (30 s at 30 fps): its frames are held in memory
DEFAULT_BPCER_TARGET = 0.03
BPCER_TARGETS = (0.01, 0.02, 0.03, 0.04, 0.05)  # the report's sweep of the rule
NO_EVIDENCE_THRESHOLD = 0.5  # a cue with no score on any live track (nothing to choose from)
FUSED = "fused"

WAITING = "waiting"  # a cue with fewer usable frames than it needs: the device waits
Scores = dict[str, float | str | None]  # cue -> its score for one track, None, WAITING


def score_of(value: float | str | None) -> float | None:
    """The number in a track's score for one cue, or None (abstained or waiting)."""
    return value if isinstance(value, float) else None


class LabelsError(ValueError):
    """A labels file, or a photo, that the evaluation cannot use; says what and where."""


# --- ground truth ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    file: str  # relative to the folder, "real/x.jpg" or "fake/y.jpg"
    box: tuple[float, float, float, float]
    label: str
    note: str = ""
    line: int = 0


def read_labels(path: Path, folder: Path) -> dict[str, list[Label]]:
    """``labels.csv``: a header ``file,x,y,w,h,label`` (``note`` optional), then one row per
    face: ``file`` relative to ``folder`` (under ``real/`` or ``fake/``), the box in pixels of
    that image, ``label`` one of live, attack, ignore. A row naming a missing file, a box
    outside its image or of no area, an unknown label or a repeated box is an error naming
    the line and what is allowed."""

    with Path(path).open("rb") as f:
        raw = f.read(MAX_LABELS_BYTES + 1)
    if len(raw) > MAX_LABELS_BYTES:
        raise LabelsError(f"{path}: larger than {MAX_LABELS_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text), strict=True)
    need = ["file", "x", "y", "w", "h", "label"]
    header = [h.strip() for h in reader.fieldnames or []]
    if header[:6] != need or not set(header[6:]) <= {"note"}:
        raise LabelsError(
            f"{path}: the header must be {','.join(need)} (and optionally note), "
            f"got {','.join(header) or 'nothing'}"
        )
    reader.fieldnames = header
    out: dict[str, list[Label]] = {}
    boxes: set[tuple[str, tuple[float, ...]]] = set()
    sizes: dict[str, tuple[int, int]] = {}
    root = folder.resolve()
    n = 1
    try:
        for n, row in enumerate(reader, start=2):
            if n - 1 > MAX_LABEL_ROWS:
                raise LabelsError(f"{path}: more than {MAX_LABEL_ROWS} rows")
            _label_row(f"{path} line {n}", row, folder, root, out, boxes, sizes)
    except csv.Error as exc:
        raise LabelsError(f"{path} line {n + 1}: not CSV ({exc})") from None
    return out


def _label_row(
    where: str,
    row: Mapping[str, Any],
    folder: Path,
    root: Path,
    out: dict[str, list[Label]],
    boxes: set[tuple[str, tuple[float, ...]]],
    sizes: dict[str, tuple[int, int]],
) -> None:
    raw = row.get("file")
    name = raw.strip() if isinstance(raw, str) else ""
    if not name or "\x00" in name or len(name) > 4096:
        raise LabelsError(f"{where}: file {name[:80]!r} must be a path under real/ or fake/")
    target = (folder / name).resolve()
    if not target.is_relative_to(root):
        raise LabelsError(f"{where}: file {name!r} must be a path under real/ or fake/")
    rel = target.relative_to(root).as_posix()  # real/./a.jpg and real//a.jpg: real/a.jpg
    parts = rel.split("/")
    if len(parts) != 2 or parts[0] not in ("real", "fake"):
        raise LabelsError(f"{where}: file {name!r} must be an image directly in real/ or fake/")
    if target.suffix.lower() not in IMAGE_EXTENSIONS:
        raise LabelsError(f"{where}: {name}: allowed image types {', '.join(IMAGE_EXTENSIONS)}")
    if not target.is_file():
        raise LabelsError(f"{where}: {name} does not exist in {folder}")
    try:
        box = tuple(float(row[k]) for k in ("x", "y", "w", "h"))
    except (TypeError, ValueError, KeyError):
        raise LabelsError(f"{where}: x, y, w, h must be numbers (pixels)") from None
    x, y, w, h = box
    if not all(math.isfinite(v) for v in box) or w <= 0 or h <= 0:
        raise LabelsError(f"{where}: the box needs finite x, y and w, h > 0, got {box}")
    if rel not in sizes:
        image = _read_image(target)
        if image is None:
            raise LabelsError(f"{where}: {name} is not a readable image")
        sizes[rel] = (image.shape[1], image.shape[0])
    width, height = sizes[rel]
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise LabelsError(f"{where}: box {box} reaches outside {rel} ({width} x {height} pixels)")
    label = (row.get("label") or "").strip()
    if label not in LABELS:
        raise LabelsError(f"{where}: label {label!r}: allowed {', '.join(LABELS)}")
    if (rel, box) in boxes:
        raise LabelsError(f"{where}: box {box} of {rel} is labelled twice")
    boxes.add((rel, box))
    note = row.get("note")
    out.setdefault(rel, []).append(
        Label(rel, (x, y, w, h), label, note.strip() if isinstance(note, str) else "")
    )


def _read_image(path: Path) -> np.ndarray | None:
    """The image at ``path``, or None when it is not a readable image; its size is checked
    (bytes, and pixels from its header where Pillow can read it) before it is decoded."""
    import cv2

    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise LabelsError(f"{path}: larger than {MAX_IMAGE_BYTES >> 20} MiB")
    pixels = _header_pixels(path)
    if pixels is not None and pixels > MAX_IMAGE_PIXELS:
        raise LabelsError(f"{path}: {pixels:,} pixels, more than {MAX_IMAGE_PIXELS:,} allowed")
    data = np.frombuffer(path.read_bytes(), np.uint8)
    if not data.size:
        return None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return image if image is not None and image.size else None


def _header_pixels(path: Path) -> int | None:
    """Width x height from the image's header (Pillow reads only the header), or None where
    Pillow is missing or does not know the file (OpenCV's own cap then applies)."""
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib, the eval extra
        return None
    try:
        with Image.open(path) as header:
            w, h = header.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return int(w) * int(h)


def photos(folder: Path) -> list[tuple[Path, bool]]:
    """(path, is under real/) of every image under ``real/`` and ``fake/``."""
    out = []
    for sub, live in (("real", True), ("fake", False)):
        base = folder / sub
        if not base.is_dir():
            raise FileNotFoundError(f"{base} missing: the folder needs real/ and fake/")
        out += [(p, live) for p in sorted(base.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    return out


def faces_of(
    rel: str, under_real: bool, detections: Sequence[Detection], labels: Sequence[Label]
) -> tuple[list[tuple[Label, Detection | None]], int]:
    """The faces of one photo with their ground truth: (label, its detection or None) for
    every judged face, and how many detections were ignored (``ignore`` rows)."""
    if not labels:
        if not under_real and len(detections) > 1:
            raise LabelsError(
                f"{rel}: {len(detections)} faces found in an attack photo without labels: "
                "add a row per face (file,x,y,w,h,label with label live, attack or ignore) "
                "to labels.csv"
            )
        kind = "live" if under_real else "attack"
        if not detections:  # no face for the detector: no identity event either way
            return [(Label(rel, (0, 0, 0, 0), kind, "no face found"), None)], 0
        return [(Label(rel, d.bbox, kind), d) for d in detections], 0
    matched: dict[int, Detection] = {}
    ignored = 0
    for d in detections:
        overlaps = [iou(d.bbox, lab.box) for lab in labels]
        best = int(np.argmax(overlaps))
        if overlaps[best] < MATCH_IOU:
            raise LabelsError(
                f"{rel}: the detector found a face at {tuple(round(v) for v in d.bbox)} "
                f"that no row of labels.csv covers (IoU >= {MATCH_IOU}): label it"
            )
        if labels[best].label == "ignore":
            ignored += 1
        elif best not in matched or iou(d.bbox, labels[best].box) > iou(
            matched[best].bbox, labels[best].box
        ):
            matched[best] = d
    return [(lab, matched.get(i)) for i, lab in enumerate(labels) if lab.label != "ignore"], ignored


# --- scoring --------------------------------------------------------------------------------


@dataclass
class Face:
    """One labelled face and what every cue made of it."""

    file: str
    box: tuple[float, float, float, float]
    live: bool
    source: str = "photo"  # "photo" or "video"
    detected: bool = True
    note: str = ""
    image: Scores = field(default_factory=dict)  # the photo as it is (frame cues)
    still: list[Scores] = field(default_factory=list)  # noisy still tracks
    moved: list[Scores] = field(default_factory=list)  # synthetic hand-held tracks

    def tracks(self, kind: str = "all") -> list[Scores]:
        if kind == "image":
            return [self.image] if self.image else []
        if kind == "still":
            return self.still
        if kind == "moved":
            return self.moved
        return self.still + self.moved


def _matching(
    detections: Sequence[Detection], box: Sequence[float], least: float = MATCH_IOU
) -> Detection | None:
    best = max(detections, key=lambda d: iou(d.bbox, box), default=None)
    return best if best is not None and iou(best.bbox, box) >= least else None


def judge_track(
    gate: LivenessGate,
    detector: Any,
    frames: Iterable[np.ndarray],
    box: Sequence[float],
    *,
    follow: bool = False,
    errors: dict[str, int] | None = None,
) -> Scores:
    """Observe one face through ``frames`` (re-detected in each, the detection that overlaps
    the face's last box) with every cue of ``gate``, then each cue's score for the track:
    what the recognition stage would judge. ``follow``: the face moves, track its box."""
    state = TrackLiveness()
    last = tuple(box)
    for index, frame in enumerate(frames):
        d = _matching(detector.detect(frame), last)
        if d is None:
            continue
        if follow:
            last = d.bbox
        outcome = gate.observe(state, FrameResult(ReadStatus.FRAME, frame, index, index / 15.0), d)
        if errors is not None:
            for cue, exc in outcome.errors:
                key = f"{cue}: {type(exc).__name__}"
                errors[key] = errors.get(key, 0) + 1
    return track_scores(gate, state)


def track_scores(gate: LivenessGate, state: TrackLiveness) -> Scores:
    """Each cue's score of a track as the device's gate computes it
    (:meth:`~fr_core.pipeline.liveness.LivenessGate.cue_scores`): a number, None (the cue
    abstained) or WAITING (too few usable frames)."""
    return {
        c.cue: WAITING if c.waiting else (None if c.score is None else float(c.score))
        for c in gate.cue_scores(state)
    }


def track_length(gate: LivenessGate, at_least: int) -> int:
    return max([at_least, *(gate.window(c) for c in gate.cues)])


def _noisy(image: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.rint(image + rng.normal(0.0, noise, image.shape)), 0, 255).astype(np.uint8)


def score_face(
    gate: LivenessGate,
    detector: Any,
    image: np.ndarray,
    face: Face,
    detection: Detection,
    *,
    frames: int,
    noise: float,
    rng: np.random.Generator,
    tracks: int,
    moved: int,
    errors: dict[str, int] | None = None,
) -> None:
    """Score one labelled face: per image (each frame cue), ``tracks`` still noisy tracks and,
    for an attack, ``moved`` synthetic hand-held tracks."""
    for cue in gate.cues:
        name = cue_name(cue)
        if hasattr(cue, "observe") or min(detection.bbox[2:]) < getattr(cue, "min_face_size", 0):
            face.image[name] = None  # a track cue, or a face too small for this cue
        else:
            face.image[name] = float(cue.analyze(image, detection).score)
    for _ in range(tracks):
        still = (_noisy(image, noise, rng) for _ in range(frames))
        face.still.append(judge_track(gate, detector, still, face.box, errors=errors))
    if moved and not face.live:
        for _ in range(moved):
            warped = warped_track(image, frames, rng)
            face.moved.append(
                judge_track(gate, detector, warped, face.box, follow=True, errors=errors)
            )


def video_faces(
    gate: LivenessGate, detector: Any, path: Path, frames: int, errors: dict[str, int] | None = None
) -> list[Face]:
    """Every window of ``frames`` frames of every track of a video of live people, judged by
    the gate's cues (one :class:`Face` per track, one score set per window); the first
    ``MAX_VIDEO_FRAMES`` frames only, since their frames are held in memory (cut a longer
    video into clips)."""
    out = []
    errors = {} if errors is None else errors
    tracks = video_tracks(
        path, detector, min_face_size=gate.min_face_size, max_frames=MAX_VIDEO_FRAMES
    )
    for n, track in enumerate(tracks):
        face = Face(f"{path.name}#track{n}", track[0][1].bbox, True, "video")
        for start in range(0, len(track) - frames + 1, frames):
            state = TrackLiveness()
            for result, detection in track[start : start + frames]:
                outcome = gate.observe(state, result, detection)
                for cue, exc in outcome.errors:
                    key = f"{cue}: {type(exc).__name__}"
                    errors[key] = errors.get(key, 0) + 1
            face.still.append(track_scores(gate, state))
        if face.still:
            out.append(face)
    return out


# --- decisions and rules ---------------------------------------------------------------------


def decide(scores: Scores, thresholds: Mapping[str, float], cue: str = FUSED) -> bool | None:
    """One track's verdict at ``thresholds``, by the gate's rule
    (:func:`fr_core.pipeline.liveness.rule_all`): True live, False attack, None undecided (the
    device would wait). ``cue``: that cue alone, or the fused gate."""
    if cue != FUSED:
        s = score_of(scores.get(cue))
        return None if s is None else s >= thresholds[cue]
    return rule_all((score_of(raw), thresholds[k], raw == WAITING) for k, raw in scores.items())


def rule_threshold(live_scores: Sequence[float], bpcer: float) -> float | None:
    """The highest threshold (3 decimals, rounded down) at which at most ``bpcer`` of
    ``live_scores`` fall below it; None without scores."""
    values = sorted(live_scores)
    if not values:
        return None
    k = math.floor(bpcer * len(values) + 1e-9)  # scores allowed below the threshold
    t = values[k] if k < len(values) else 1.0
    return max(0.001, min(0.999, math.floor(t * 1000) / 1000))


def _quantile_thresholds(faces: Sequence[Face], cues: Sequence[str], q: float) -> dict[str, float]:
    out = {}
    for cue in cues:
        values = [v for f in faces for s in f.tracks() if (v := score_of(s.get(cue))) is not None]
        t = rule_threshold(values, q)
        out[cue] = t if t is not None else NO_EVIDENCE_THRESHOLD
    return out


def rule_thresholds(
    faces: Iterable[Face], cues: Sequence[str], bpcer: float = DEFAULT_BPCER_TARGET
) -> dict[str, float]:
    """The cues' thresholds by the BPCER rule, from live tracks only (never an attack).

    One cue: the highest threshold refusing at most ``bpcer`` of the live tracks it has
    evidence on. Several: every cue's threshold at one common level ``q`` (the ``q``-quantile
    of its live scores), ``q`` the largest multiple of 0.001 up to ``bpcer`` at which the
    fused gate refuses at most ``bpcer`` of the live tracks: a cue that never refuses a live
    face leaves the whole budget to the others."""
    live = [f for f in faces if f.live]
    if len(cues) <= 1:
        return _quantile_thresholds(live, cues, bpcer)
    best = _quantile_thresholds(live, cues, 0.0)
    for step in range(1, round(bpcer * 1000) + 1):
        t = _quantile_thresholds(live, cues, step / 1000)
        r = rates(live, t, FUSED, "all")
        if r["bpcer"] is not None and r["bpcer"] > bpcer:
            break
        best = t
    return best


def rates(faces: Sequence[Face], thresholds: Mapping[str, float], cue: str, kind: str) -> dict:
    """APCER and BPCER of ``cue`` (or the fused gate) over the ``kind`` tracks of ``faces``."""
    out: dict[str, Any] = {"cue": cue, "kind": kind}
    for live, key in ((False, "attack"), (True, "live")):
        every = [
            (f, decide(s, thresholds, cue)) for f in faces if f.live == live for s in f.tracks(kind)
        ]
        # undecided: no cue had evidence (a face too small to judge, every cue abstaining);
        # the device waits on such a track, so it is neither let in nor refused: counted apart
        verdicts = [(f, v) for f, v in every if v is not None]
        n = len(verdicts)
        accepted = sum(1 for _, v in verdicts if v)
        out[f"{key}_tracks"] = n
        out[f"{key}_undecided"] = len(every) - n
        if live:
            out["live_refused"] = n - accepted
            out["bpcer"] = (n - accepted) / n if n else None
        else:
            out["attacks_accepted"] = accepted
            out["apcer"] = accepted / n if n else None
            out["attack_faces"] = len({f.file + str(f.box) for f, _ in every})
            out["attack_faces_ever_accepted"] = len({f.file + str(f.box) for f, v in verdicts if v})
    return out


def leave_one_attack_out(
    faces: Sequence[Face], cues: Sequence[str], bpcer: float, cue: str
) -> dict[str, Any]:
    """For each attack face: thresholds chosen on every other face (the BPCER rule, and for
    a single cue the old rule: just above every other attack's track scores), then is any of
    its tracks accepted? The count is the APCER to expect."""
    attacks = [f for f in faces if not f.live and f.tracks()]
    accepted_rule, accepted_old, names_rule, names_old = 0, 0, [], []
    for f in attacks:
        others = [g for g in faces if g is not f]
        t = rule_thresholds(others, cues, bpcer)
        if any(decide(s, t, cue) is True for s in f.tracks()):
            accepted_rule += 1
            names_rule.append(f.file)
        if cue != FUSED:
            other_scores = [
                v for g in others if not g.live for s in g.tracks() if (v := score_of(s.get(cue)))
            ]
            old = dict(t)
            old[cue] = (
                math.floor(max(v for v in other_scores if v is not None) * 1000) / 1000 + 0.001
                if other_scores
                else 0.5
            )
            if any(decide(s, old, cue) is True for s in f.tracks()):
                accepted_old += 1
                names_old.append(f.file)
    out: dict[str, Any] = {
        "attack_faces": len(attacks),
        "accepted_bpcer_rule": accepted_rule,
        "accepted_bpcer_rule_files": names_rule,
    }
    if cue != FUSED:
        out["accepted_refuse_every_attack_rule"] = accepted_old
        out["accepted_refuse_every_attack_rule_files"] = names_old
    return out


def leave_one_live_out(
    faces: Sequence[Face], cues: Sequence[str], bpcer: float, cue: str
) -> dict[str, Any]:
    """For each live face: thresholds chosen on the other faces, then the share of its tracks
    refused; summed over faces, the BPCER to expect."""
    refused = total = 0
    for f in faces:
        if not f.live or not f.tracks():
            continue
        t = rule_thresholds([g for g in faces if g is not f], cues, bpcer)
        verdicts = [v for v in (decide(s, t, cue) for s in f.tracks()) if v is not None]
        refused += sum(1 for v in verdicts if not v)
        total += len(verdicts)
    return {
        "live_tracks": total,
        "live_refused": refused,
        "bpcer": refused / total if total else None,
    }


# --- the report -------------------------------------------------------------------------------


@dataclass
class LivenessReport:
    cues: list[str]
    configured: dict[str, float]  # each cue's threshold as configured
    faces: list[Face] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    ignored_detections: int = 0
    observe_errors: dict[str, int] = field(default_factory=dict)  # "cue: Error" -> frames
    track_frames: int = 5
    noise: float = 3.0
    tracks_per_photo: int = 10
    moved_per_photo: int = 0
    bpcer_target: float = DEFAULT_BPCER_TARGET

    def judged(self) -> list[Face]:
        return [f for f in self.faces if f.detected]

    def decisions(self) -> list[str]:
        return [*self.cues, FUSED] if len(self.cues) > 1 else list(self.cues)

    def summary(self) -> dict[str, Any]:
        """The report's figures (computed once: the leave-one-out figures take a while)."""
        cached = getattr(self, "_summary", None)
        if cached is None:
            cached = self._summary = self._summarise()
        return cached

    def _summarise(self) -> dict[str, Any]:
        faces = self.judged()
        chosen = rule_thresholds(faces, self.cues, self.bpcer_target)
        counts = {
            "live_faces": sum(1 for f in self.faces if f.live),
            "attack_faces": sum(1 for f in self.faces if not f.live),
            "live_faces_not_detected": sum(1 for f in self.faces if f.live and not f.detected),
            "attack_faces_not_detected": sum(
                1 for f in self.faces if not f.live and not f.detected
            ),
            "video_tracks": sum(1 for f in self.faces if f.source == "video"),
            "unreadable_photos": len(self.unreadable),
            "ignored_detections": self.ignored_detections,
            "observe_errors": self.observe_errors,
        }
        out: dict[str, Any] = {
            "cues": self.cues,
            "configured_thresholds": self.configured,
            "rule": (
                f"the highest threshold refusing at most {self.bpcer_target:g} of the live "
                "tracks (no attack seen)"
                if len(self.cues) == 1
                else "every cue at the same quantile of its live scores, the largest at which "
                f"the fused gate refuses at most {self.bpcer_target:g} of the live tracks "
                "(no attack seen)"
            ),
            "rule_thresholds": chosen,
            "track_frames": self.track_frames,
            "tracks_per_photo": self.tracks_per_photo,
            "moved_tracks_per_attack": self.moved_per_photo,
            "noise": self.noise,
            "counts": counts,
            "unreadable": self.unreadable,
            "decisions": {},
            "samples": self.samples,
        }
        for cue in self.decisions():
            entry: dict[str, Any] = {}
            for label, t in (("configured", self.configured), ("rule", chosen)):
                entry[label] = {
                    kind: rates(faces, t, cue, kind) for kind in ("image", "still", "moved", "all")
                }
            entry["leave_one_attack_out"] = leave_one_attack_out(
                faces, self.cues, self.bpcer_target, cue
            )
            entry["leave_one_live_out"] = leave_one_live_out(
                faces, self.cues, self.bpcer_target, cue
            )
            out["decisions"][cue] = entry
        final = self.decisions()[-1]  # the fused gate, or the one cue
        out["targets"] = []
        for q in BPCER_TARGETS:
            t = rule_thresholds(faces, self.cues, q)
            r = rates(faces, t, final, "all")
            loo = leave_one_attack_out(faces, self.cues, q, final)
            lol = leave_one_live_out(faces, self.cues, q, final)
            out["targets"].append(
                {
                    "bpcer_target": q,
                    "thresholds": t,
                    "attacks_accepted": r["attacks_accepted"],
                    "attack_tracks": r["attack_tracks"],
                    "attack_faces_ever_accepted": r["attack_faces_ever_accepted"],
                    "attack_faces": r["attack_faces"],
                    "live_refused": r["live_refused"],
                    "live_tracks": r["live_tracks"],
                    "loo_attack_faces_accepted": loo["accepted_bpcer_rule"],
                    "loo_live_refused": lol["live_refused"],
                    "loo_live_tracks": lol["live_tracks"],
                }
            )
        out["faces"] = [
            {
                "file": f.file,
                "box": [round(v) for v in f.box],
                "label": "live" if f.live else "attack",
                "source": f.source,
                "detected": f.detected,
                "note": f.note,
                "image": f.image,
                **{
                    f"{kind}_{cue}": _spread([score_of(s.get(cue)) for s in f.tracks(kind)])
                    for kind in ("still", "moved")
                    for cue in self.cues
                    if f.tracks(kind)
                },
            }
            for f in self.faces
        ]
        return out


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    if not v:
        return {"n": len(values), "conclusive": 0}
    return {
        "n": len(values),
        "conclusive": len(v),
        "min": round(min(v), 4),
        "median": round(float(np.median(v)), 4),
        "max": round(max(v), 4),
    }


def evaluate(
    folder: Path,
    detector: Any,
    cues: Sequence[Any] | Any,
    *,
    labels: Path | None = None,
    samples: Path | None = None,
    live_videos: Sequence[Path] = (),
    track_frames: int = 5,
    tracks_per_photo: int = 10,
    moved_per_photo: int = 3,
    noise: float = 3.0,
    seed: int = 0,
    bpcer_target: float = DEFAULT_BPCER_TARGET,
    progress: Callable[[Iterable[Any]], Iterable[Any]] = lambda x: x,
) -> LivenessReport:
    cues = list(cues) if isinstance(cues, (list, tuple)) else [cues]
    gate = LivenessGate(cues, track_frames)
    frames = track_length(gate, track_frames)
    names = [cue_name(c) for c in cues]
    rng = np.random.default_rng(seed)
    label_file = labels if labels is not None else folder / "labels.csv"
    truth = read_labels(label_file, folder) if labels is not None or label_file.is_file() else {}
    report = LivenessReport(
        names,
        {cue_name(c): float(c.threshold) for c in cues},
        track_frames=frames,
        noise=noise,
        tracks_per_photo=tracks_per_photo,
        moved_per_photo=moved_per_photo,
        bpcer_target=bpcer_target,
    )
    for path, under_real in progress(photos(folder)):
        rel = path.relative_to(folder).as_posix()
        image = _read_image(path)
        if image is None:
            report.unreadable.append(rel)
            continue
        found, ignored = faces_of(rel, under_real, detector.detect(image), truth.get(rel, []))
        report.ignored_detections += ignored
        for label, detection in found:
            face = Face(rel, label.box, label.label == "live", note=label.note)
            report.faces.append(face)
            if detection is None:
                face.detected = False
                continue
            face.box = detection.bbox
            score_face(
                gate,
                detector,
                image,
                face,
                detection,
                frames=frames,
                noise=noise,
                rng=rng,
                tracks=tracks_per_photo,
                moved=moved_per_photo,
                errors=report.observe_errors,
            )
    for video in live_videos:
        report.faces += video_faces(gate, detector, video, frames, report.observe_errors)
    texture = next(
        (c for c in cues if cue_name(c) == "liveness"),
        next((c for c in cues if not hasattr(c, "observe")), None),
    )
    if samples is not None and texture is not None:
        report.samples = _samples(samples, detector, texture)
    return report


def _samples(folder: Path, detector: Any, analyzer: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, (verdict, published) in PUBLISHED_SAMPLES.items():
        image = _read_image(folder / name) if (folder / name).is_file() else None
        faces = detector.detect(image) if image is not None else []
        if not faces:
            out.append({"image": name, "published": verdict, "ours": None})
            continue
        face = max(faces, key=lambda d: d.bbox[2] * d.bbox[3])
        result = analyzer.analyze(image, face)
        # the authors' rule: the arg-max of the two models' mean softmax (1 = live)
        classes = {k: v for k, v in result.scores.items() if k.startswith("class_")}
        top = max(classes, key=lambda k: classes[k]) if classes else None
        live = top == "class_1" if top is not None else result.score >= 0.5
        ours = "live" if live else "attack"
        out.append(
            {
                "image": name,
                "published": verdict,
                "published_score": published,
                "ours": ours,
                "live_score": round(float(result.score), 3),
                "agrees": ours == verdict,
            }
        )
    return out


# --- writing ----------------------------------------------------------------------------------


def _pct(n: int, d: int) -> str:
    return f"{n} of {d} ({100 * n / d:.1f}%)" if d else "none"


def markdown(summary: dict[str, Any], source: str) -> str:
    c = summary["counts"]
    rule, conf = summary["rule_thresholds"], summary["configured_thresholds"]
    lines = [
        f"# Liveness on {source}",
        "",
        f"Faces: {c['live_faces']} live ({c['live_faces_not_detected']} not found by the "
        f"detector; {c['video_tracks']} of them tracks of live video), {c['attack_faces']} "
        f"attacks ({c['attack_faces_not_detected']} not found by the detector: they cannot "
        f"produce an identity event). Unreadable photos: {c['unreadable_photos']}. "
        f"Still tracks: {summary['tracks_per_photo']} per face, {summary['track_frames']} "
        f"frames each with sensor noise sigma {summary['noise']}; moved tracks (synthetic "
        f"perspective warps of the photo, as a hand moves it): "
        f"{summary['moved_tracks_per_attack']} per attack face.",
        "",
        f"Rule: {summary['rule']}.",
        "",
        "| cue | configured threshold | rule's threshold |",
        "| --- | --- | --- |",
        *(f"| {k} | {conf[k]} | {rule[k]} |" for k in summary["cues"]),
        "",
        "Per track, all tracks (still and moved), over the tracks decided; a track on which no "
        "cue had evidence (a face too small to judge, every cue abstaining) is undecided: the "
        "device waits on it, so it is neither let in nor refused.",
        "",
        "| decision | thresholds | attack tracks accepted (APCER) | attack faces ever "
        "accepted | live tracks refused (BPCER) | leave-one-attack-out: attack faces "
        "accepted | leave-one-live-out BPCER |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cue, entry in summary["decisions"].items():
        loo, lol = entry["leave_one_attack_out"], entry["leave_one_live_out"]
        for label in ("rule", "configured"):
            r = entry[label]["all"]
            lines.append(
                f"| {cue} | {label} | {_pct(r['attacks_accepted'], r['attack_tracks'])} | "
                f"{r['attack_faces_ever_accepted']} of {r['attack_faces']} | "
                f"{_pct(r['live_refused'], r['live_tracks'])}"
                f" ({r['live_undecided']} undecided) | "
                + (
                    f"{loo['accepted_bpcer_rule']} of {loo['attack_faces']}"
                    + (
                        f" (old rule: {loo['accepted_refuse_every_attack_rule']})"
                        if "accepted_refuse_every_attack_rule" in loo
                        else ""
                    )
                    + f" | {_pct(lol['live_refused'], lol['live_tracks'])} |"
                    if label == "rule"
                    else "| |"
                )
            )
    lines += [
        "",
        f"The rule at other BPCER targets ({list(summary['decisions'])[-1]}, per track; "
        "leave-one-out figures beside the in-sample ones):",
        "",
        "| BPCER target | thresholds | attack tracks accepted | attack faces ever accepted "
        "(leave-one-attack-out) | live tracks refused | leave-one-live-out |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary["targets"]:
        lines.append(
            f"| {r['bpcer_target']:g} | "
            + ", ".join(f"{k} {v}" for k, v in r["thresholds"].items())
            + f" | {_pct(r['attacks_accepted'], r['attack_tracks'])} | "
            f"{r['attack_faces_ever_accepted']} of {r['attack_faces']} "
            f"({r['loo_attack_faces_accepted']}) | {_pct(r['live_refused'], r['live_tracks'])} | "
            f"{_pct(r['loo_live_refused'], r['loo_live_tracks'])} |"
        )
    lines += [
        "",
        "By kind of track, at the rule's thresholds:",
        "",
        "| decision | per image: attacks accepted | per image: live refused | still: attacks "
        "accepted | still: live refused | moved: attacks accepted |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for cue, entry in summary["decisions"].items():
        im, st, mv = (entry["rule"][k] for k in ("image", "still", "moved"))
        lines.append(
            f"| {cue} | {_pct(im['attacks_accepted'], im['attack_tracks'])} | "
            f"{_pct(im['live_refused'], im['live_tracks'])} | "
            f"{_pct(st['attacks_accepted'], st['attack_tracks'])} | "
            f"{_pct(st['live_refused'], st['live_tracks'])} | "
            f"{_pct(mv['attacks_accepted'], mv['attack_tracks'])} |"
        )
    lines += ["", "Attack faces (median score of their tracks per cue):", ""]
    lines += ["| face | " + " | ".join(summary["cues"]) + " | note |"]
    lines += ["| --- |" + " --- |" * (len(summary["cues"]) + 1)]
    for f in summary["faces"]:
        if f["label"] != "attack":
            continue
        if not f["detected"]:
            cells = ["not detected"] * len(summary["cues"])
        else:
            cells = []
            for cue in summary["cues"]:
                parts = []
                for kind in ("still", "moved"):
                    s = f.get(f"{kind}_{cue}")
                    if s:
                        parts.append(
                            f"{kind} {s['median']}" if s.get("conclusive") else f"{kind} -"
                        )
                cells.append(", ".join(parts))
        lines.append(f"| {f['file']} | " + " | ".join(cells) + f" | {f['note']} |")
    if summary["samples"]:
        lines += ["", "| sample | published | ours (live score) |", "| --- | --- | --- |"]
        for s in summary["samples"]:
            ours = "no face" if s["ours"] is None else f"{s['ours']} ({s['live_score']})"
            lines.append(
                f"| {s['image']} | {s['published']} {s.get('published_score', '')} | {ours} |"
            )
    return "\n".join(lines) + "\n"


def det_points(report: LivenessReport, cue: str) -> list[tuple[float, float]]:
    """(BPCER, APCER) per track across thresholds: a cue alone swept over its scores; the
    fused gate swept over the rule's BPCER target."""
    faces = report.judged()
    if cue == FUSED:
        targets = np.linspace(0.0, 0.5, 51)
        grid = [rule_thresholds(faces, report.cues, float(q)) for q in targets]
    else:
        values = sorted(
            {v for f in faces for s in f.tracks() if (v := score_of(s.get(cue))) is not None}
        )
        grid = [{**report.configured, cue: v} for v in [0.0, *values, 1.0001]]
    points = []
    for t in grid:
        r = rates(faces, t, cue, "all")
        if r["bpcer"] is not None and r["apcer"] is not None:
            points.append((float(r["bpcer"]), float(r["apcer"])))
    return sorted(set(points))


def plots(report: LivenessReport, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    chosen = rule_thresholds(report.judged(), report.cues, report.bpcer_target)
    fig, axes = plt.subplots(1, len(report.cues), figsize=(4.2 * len(report.cues), 3.4))
    axes = np.atleast_1d(axes)
    for ax, cue in zip(axes, report.cues, strict=True):
        for live, colour, label in ((True, "tab:green", "live"), (False, "tab:red", "attack")):
            values = [
                s[cue]
                for f in report.judged()
                if f.live == live
                for s in f.tracks()
                if score_of(s.get(cue)) is not None
            ]
            jitter = np.random.default_rng(1).uniform(-0.15, 0.15, len(values))
            ax.scatter(values, (1 if live else 0) + jitter, s=10, c=colour, label=label, alpha=0.6)
        ax.axvline(chosen[cue], color="k", ls="--", lw=1, label=f"rule: {chosen[cue]}")
        ax.set_xlim(0, 1)
        ax.set_yticks([0, 1], ["attack", "live"])
        ax.set_xlabel(f"{cue}: live score per track")
        ax.legend(loc="center left", fontsize=7)
    fig.tight_layout()
    path = out / "scores.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for cue in report.decisions():
        pts = det_points(report, cue)
        if pts:
            ax.step(*zip(*pts, strict=True), where="post", label=cue, lw=2 if cue == FUSED else 1)
    ax.axvline(report.bpcer_target, color="grey", ls=":", lw=1, label="BPCER target")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("live tracks refused (BPCER)")
    ax.set_ylabel("attack tracks accepted (APCER)")
    ax.set_title("DET per track")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "det.png"
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
