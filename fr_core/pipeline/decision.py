"""Open-set identification: who, if anyone, an embedding belongs to.

Attendance is 1:N identification in an open set: most faces a door camera sees belong to an
employee, but a visitor or a new hire who is not enrolled must never be clocked in as one. A
fixed cosine threshold cannot promise that: a stranger is compared with every enrolment, so
the chance that *some* employee scores above a fixed threshold grows with the gallery (on
LFW photos, SFace's pair-verification point 0.363 accepted 18% of strangers against 250
enrolments). This module turns a **target false-accept rate per decision** into the cosine
threshold that keeps it for the gallery in force.

The model (docs/recognition.md has the measurements behind it): a stranger's cosine
similarity to one enrolment of another person follows the gallery's own impostor distribution,
which for SFace is close to a normal distribution N(mu, sd) far into its tail (measured on
500,000 LFW pairs up to 4 standard deviations). The gallery's pairs of different employees
estimate mu and sd (all pairs up to 400 enrolments, a fixed sample of 20,000 pairs above, so a
100,000 gallery costs milliseconds); a small gallery borrows strength from the embedding
model's prior. A stranger is accepted when the best of N comparisons reaches the threshold t,
so ``P(false accept) = 1 - Phi((t - mu) / sd) ** N``; the threshold solves that for the
target. The threshold never drops below the model's pair-verification point.

One function decides: :func:`decide`. The recognition stage, ``fr-edge enroll``,
``fr-edge evaluate`` and ``fr-edge calibrate`` call it and nothing else, so none of them can
decide differently. A matcher plugin provides ``identify`` (its nearest enrolments with the
operating point of the same gallery snapshot, see docs/writing_plugins.md) and recomputes
the operating point with :func:`calibrate` whenever its gallery changes.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from fr_core.interfaces import Match
from fr_core.storage import check_embedding, check_model, check_user_id
from fr_core.syncpage import decode_embedding

_NORMAL = NormalDist()

# Impostor statistics of the embedding models we ship, as prior for small galleries:
# measured on ../shared/data/lfw-dev (tests/bench/recognition_rules.py): its 31,125 gallery
# pairs have mean 0.090, sd 0.088; its 250,000 stranger-gallery pairs mean 0.085, sd 0.089;
# the prior takes the middle. In-sample figures: docs/recognition.md says what that means.
# verification: the model's published pair-verification threshold (cosine similarity), the
# most lenient threshold a decision ever uses. fusion_shift: how much higher a stranger's
# fused embedding scores against other people than one photo does (impostor mean 0.090 ->
# 0.103 for 3 photos fused, 0.107 for 5, the same sd, on lfw-dev); the threshold for fused
# decisions is raised by the larger shift, so that tracks keep the target too.
MODEL_PRIORS: dict[str, dict[str, float]] = {
    "SFace": {"mean": 0.087, "sd": 0.088, "verification": 0.363, "fusion_shift": 0.017},
}


def register_prior(
    model: str, *, mean: float, sd: float, verification: float, fusion_shift: float = 0.0
) -> None:
    """Declare an embedding model's impostor statistics (measure them with
    ``fr-edge evaluate`` or tests/bench/recognition_rules.py on labelled photos), so that its
    small galleries are calibrated too. An embedder plugin calls this when it is imported."""
    if not (-1 < mean < 1 and 0 < sd < 1 and -1 < verification < 1 and 0 <= fusion_shift < 1):
        raise DecisionError(
            f"prior for {model!r}: need -1 < mean, verification < 1, 0 < sd < 1 and "
            f"0 <= fusion_shift < 1, got mean={mean}, sd={sd}, verification={verification}, "
            f"fusion_shift={fusion_shift}"
        )
    MODEL_PRIORS[model] = {
        "mean": mean,
        "sd": sd,
        "verification": verification,
        "fusion_shift": fusion_shift,
    }


PRIOR_WEIGHT_PAIRS = 500  # a gallery's own pairs outweigh the prior from ~32 enrolments on
ALL_PAIRS_UP_TO = 400  # enrolments; larger galleries use a fixed sample of pairs
SAMPLED_PAIRS = 20_000
MIN_OWN_PAIRS = 190  # a model without a prior needs 20 enrolments before calibration
DEFAULT_TARGET_FAR = 0.001
UNCALIBRATED = 1.0 + 1e-6  # a similarity no embedding reaches: nobody is accepted


class DecisionError(ValueError):
    """A decision policy or operating point that cannot be used."""


@dataclass(frozen=True)
class DecisionPolicy:
    """How the operating point is chosen.

    ``target_far``: the chance that one decision on a stranger's face names an employee.
    ``match_threshold``: a fixed cosine *distance* (the original module's key); when set it
    wins over the target and the operating point is reported as ``fixed``.
    """

    target_far: float = DEFAULT_TARGET_FAR
    match_threshold: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.target_far, (int, float)) and 1e-9 <= self.target_far < 1):
            raise DecisionError(f"target_far must be in [1e-9, 1), got {self.target_far!r}")
        if self.match_threshold is not None and not 0 < self.match_threshold <= 2:
            raise DecisionError(
                f"match_threshold must be a cosine distance in (0, 2], got {self.match_threshold!r}"
            )

    @classmethod
    def from_config(cls, config: Any) -> DecisionPolicy:
        """From an :class:`fr_core.config.AppConfig`: its ``match_threshold`` when set (not
        null), otherwise ``recognition.target_far``."""
        return cls(target_far=config.recognition.target_far, match_threshold=config.match_threshold)


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold in force for one model's gallery, and where it came from."""

    model: str
    gallery_size: int
    threshold: float  # cosine similarity the nearest enrolment must reach
    track_threshold: float  # the same for a fused embedding (a track's frames together)
    method: str  # "calibrated", "fixed" (match_threshold), "floor" (verification point), ...
    target_far: float | None  # None for a fixed threshold
    impostor_mean: float
    impostor_sd: float
    pairs: int  # pairs of the gallery the impostor statistics came from
    expected_false_accepts_per_1000: float  # strangers accepted per 1,000, predicted

    @property
    def distance(self) -> float:
        """The threshold as a cosine distance (1 - similarity), as events report it."""
        return 1.0 - self.threshold

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("threshold", "track_threshold", "impostor_mean", "impostor_sd"):
            d[k] = round(d[k], 4)
        d["expected_false_accepts_per_1000"] = round(d["expected_false_accepts_per_1000"], 3)
        return d


@dataclass(frozen=True)
class Candidates:
    """What a matcher's ``identify`` returns: the nearest enrolments, nearest first and not
    thresholded, and the operating point of the same gallery snapshot."""

    matches: Sequence[Match]
    point: OperatingPoint


@dataclass(frozen=True)
class Decision:
    user_id: str | None  # the employee, or None: nobody
    similarity: float  # cosine similarity of the nearest enrolment (-1 when none)
    threshold: float  # the similarity it had to reach
    reason: str  # "match", "below_threshold", "empty_gallery"

    @property
    def distance(self) -> float:
        return min(2.0, max(0.0, 1.0 - self.similarity))


def false_accept_rate(threshold: float, mean: float, sd: float, n: int) -> float:
    """Chance that a stranger's best of ``n`` impostor comparisons reaches ``threshold``."""
    if n <= 0:
        return 0.0
    p = 1.0 - _NORMAL.cdf((threshold - mean) / sd)  # one comparison
    return -math.expm1(n * math.log1p(-p)) if p < 1 else 1.0


def threshold_for(target_far: float, mean: float, sd: float, n: int) -> float:
    """The similarity at which a stranger's best of ``n`` comparisons is accepted with
    probability ``target_far``."""
    per_comparison = -math.expm1(math.log1p(-target_far) / max(n, 1))
    return mean + sd * -_NORMAL.inv_cdf(per_comparison)


def impostor_stats(matrix: np.ndarray) -> tuple[float, float, int]:
    """Mean and standard deviation of the cosine similarity between different enrolments
    (rows L2-normalised), and the number of pairs used: all pairs up to
    ``ALL_PAIRS_UP_TO`` rows, else a fixed pseudo-random sample of ``SAMPLED_PAIRS``."""
    n = int(matrix.shape[0])
    if n < 2:
        return 0.0, 0.0, 0
    if n <= ALL_PAIRS_UP_TO:
        scores = matrix @ matrix.T
        x = scores[np.triu_indices(n, 1)].astype(np.float64)
    else:
        rng = np.random.default_rng(n)  # the same sample for the same gallery size
        i = rng.integers(0, n, SAMPLED_PAIRS)
        j = (i + rng.integers(1, n, SAMPLED_PAIRS)) % n  # never i itself
        x = np.einsum("ij,ij->i", matrix[i], matrix[j], dtype=np.float64)
    return float(x.mean()), float(x.std()), int(x.size)


def calibrate(
    model: str, matrix: np.ndarray, policy: DecisionPolicy | None = None
) -> OperatingPoint:
    """The operating point for ``model``'s gallery ``matrix`` (rows L2-normalised float32).

    Cheap (milliseconds for 100,000 rows) so that a matcher can call it on every change."""
    policy = policy or DecisionPolicy()
    n = int(matrix.shape[0])
    if n:
        probe = np.asarray(matrix[:: max(1, n // 64)], dtype=np.float64)
        norms = np.linalg.norm(probe, axis=1)
        if not np.all(np.abs(norms - 1.0) < 1e-3):
            raise DecisionError(
                f"calibrate needs L2-normalised rows; {model!r} has rows of norm "
                f"{float(norms.min()):.3g}-{float(norms.max()):.3g}"
            )
    own_mean, own_sd, pairs = impostor_stats(matrix)
    prior = MODEL_PRIORS.get(model)
    if prior is not None:
        w = PRIOR_WEIGHT_PAIRS
        mean = (w * prior["mean"] + pairs * own_mean) / (w + pairs)
        var = (w * prior["sd"] ** 2 + pairs * own_sd**2) / (w + pairs)
        sd = math.sqrt(var)
        floor = prior["verification"]
    else:
        mean, sd, floor = own_mean, own_sd, -1.0
    if policy.match_threshold is not None:
        threshold, method = 1.0 - policy.match_threshold, "fixed"
    elif prior is None and pairs < MIN_OWN_PAIRS:
        # nothing to calibrate from: accept nobody rather than guess (set match_threshold)
        threshold, method = UNCALIBRATED, "uncalibrated"
    else:
        threshold, method = threshold_for(policy.target_far, mean, sd, n), "calibrated"
        if threshold < floor:
            threshold, method = floor, "floor"
    fa = false_accept_rate(threshold, mean, sd, n) if sd > 0 else float(threshold <= mean)
    shift = prior.get("fusion_shift", 0.0) if prior is not None and method != "fixed" else 0.0
    return OperatingPoint(
        model=model,
        gallery_size=n,
        threshold=float(threshold),
        track_threshold=float(threshold + shift),
        method=method,
        target_far=None if method == "fixed" else policy.target_far,
        impostor_mean=mean,
        impostor_sd=sd,
        pairs=pairs,
        expected_false_accepts_per_1000=1000.0 * fa,
    )


def decide(candidates: Candidates, *, fused: bool = False) -> Decision:
    """The one open-set decision: the nearest enrolment if it reaches the operating point's
    threshold (its ``track_threshold`` for a ``fused`` embedding of several frames or
    photos), else nobody."""
    point = candidates.point
    threshold = point.track_threshold if fused else point.threshold
    if not candidates.matches:
        return Decision(None, -1.0, threshold, "empty_gallery")
    for m in candidates.matches:
        if not (math.isfinite(m.distance) and -1e-6 <= m.distance <= 2 + 1e-6):
            raise DecisionError(
                f"the matcher returned distance {m.distance!r} for {m.user_id!r}: a cosine "
                "distance is a finite number in [0, 2]"
            )
    best = min(candidates.matches, key=lambda m: m.distance)  # whatever order they came in
    similarity = 1.0 - float(best.distance)
    if similarity >= threshold:
        return Decision(best.user_id, similarity, threshold, "match")
    return Decision(None, similarity, threshold, "below_threshold")


def identify(matcher: Any, model: str, embedding: np.ndarray, *, fused: bool = False) -> Decision:
    """Decide ``embedding`` (``fused``: the :func:`fuse` of several) against ``matcher``'s
    gallery of ``model``."""
    return decide(matcher.identify(model, embedding), fused=fused)


def fuse(embeddings: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """One embedding for several of the same face (a track): the mean of the normalised
    embeddings, normalised. On LFW, three different photos fused were the right person 99.9%
    of the time where single photos were 96.6% (250 enrolled, docs/recognition.md)."""
    rows = np.asarray(embeddings, dtype=np.float32)
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)  # each counts the same
    m = np.mean(rows, axis=0)
    norm = float(np.linalg.norm(m))
    if not math.isfinite(norm) or norm == 0:
        raise ValueError("cannot fuse embeddings that cancel out")
    return (m / norm).astype(np.float32)


def confusable_pairs(
    matrix: np.ndarray, ids: Sequence[str], threshold: float, *, limit: int = 100
) -> tuple[list[tuple[str, str, float]], int]:
    """Pairs of enrolments similar enough that a photo of one may be taken for the other
    (twins, or one person enrolled twice): similarity >= ``threshold``. Returns the ``limit``
    most similar, most similar first, and how many pairs there are in all. Computed in
    blocks of 512 rows: O(n^2) time, O(512 n + limit) memory whatever the threshold."""
    n = int(matrix.shape[0])
    best: list[tuple[float, int, int]] = []
    total = 0
    block = 512
    for start in range(0, n, block):
        rows = matrix[start : start + block]
        s = rows @ matrix[start:].T  # only j >= start: each pair once
        s[np.tril_indices(len(rows), 0, s.shape[1])] = -np.inf  # j <= i: self and repeats
        flat = s.ravel()
        hits = np.flatnonzero(flat >= threshold)
        total += int(hits.size)
        if hits.size > limit:
            hits = hits[np.argpartition(-flat[hits], limit - 1)[:limit]]
        for h in hits.tolist():
            a, b = divmod(h, s.shape[1])
            best.append((float(flat[h]), start + a, start + b))
        if len(best) > 4 * limit:
            best = heapq.nlargest(limit, best)
    best = heapq.nlargest(limit, best)
    return [(ids[i], ids[j], round(v, 4)) for v, i, j in best], total


# --- reports (fr-edge calibrate) ------------------------------------------------------------

REPORT_TARGETS = (1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


def calibrate_report(
    model: str, ids: Sequence[str], rows: np.ndarray, matcher: Any, policy: DecisionPolicy
) -> dict[str, Any]:
    """What ``fr-edge calibrate`` shows for one model's gallery, through ``matcher`` (the
    configured one, so the point is the one the device would use)."""
    matrix = np.asarray(rows, dtype=np.float32)
    matcher.replace_gallery(model, list(ids), matrix)
    dim = matrix.shape[1] if matrix.ndim == 2 and matrix.shape[1] else 1
    point = matcher.identify(model, np.ones(dim, np.float32)).point
    normalised = matrix / np.linalg.norm(matrix, axis=1, keepdims=True) if len(ids) else matrix
    n = len(ids)
    prior = MODEL_PRIORS.get(model)
    floor = prior["verification"] if prior is not None else -1.0
    targets = (
        [  # as the device would use them: never below the verification point
            {
                "target_far": t,
                "threshold": round(
                    max(floor, threshold_for(t, point.impostor_mean, point.impostor_sd, n)), 4
                ),
            }
            for t in REPORT_TARGETS
        ]
        if point.impostor_sd > 0
        else []
    )
    fixed = None
    if prior is not None and point.impostor_sd > 0:
        v = prior["verification"]
        fixed = {
            "threshold": v,
            "expected_false_accepts_per_1000": round(
                1000 * false_accept_rate(v, point.impostor_mean, point.impostor_sd, n), 2
            ),
        }
    pairs, total = (
        confusable_pairs(normalised, ids, point.threshold, limit=1000) if n > 1 else ([], 0)
    )
    return {
        "operating_point": point.as_dict(),
        "policy": {"target_far": policy.target_far, "match_threshold": policy.match_threshold},
        "targets": targets,
        "fixed_verification_point": fixed,
        "confusable_pairs": [{"a": a, "b": b, "similarity": s} for a, b, s in pairs],
        "confusable_pairs_total": total,
    }


def read_gallery_file(path: Any) -> dict[str, tuple[list[str], np.ndarray]]:
    """A central-side gallery: JSON lines ``{"user_id", "model", "embedding"}`` (embedding:
    standard base64 of little-endian float32, as in sync upserts; ``dim`` optional), checked
    by the rules sync applies. A bad line is an error that names it and what is allowed."""

    per: dict[str, dict[str, np.ndarray]] = {}
    with Path(path).open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {line_no}"
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("must be a JSON object")
                uid, model = check_user_id(rec.get("user_id")), check_model(rec.get("model"))
                text = rec.get("embedding")
                if not isinstance(text, str):
                    raise ValueError("embedding must be standard base64 of little-endian float32")
                dim = rec.get("dim", max(1, (len(text) * 3 // 4 - text.count("=")) // 4))
                if not isinstance(dim, int) or dim < 1:
                    raise ValueError(f"dim must be a positive integer, got {dim!r}")
                vec = check_embedding(decode_embedding(text, dim))
            except json.JSONDecodeError as exc:
                raise DecisionError(f"{where}: not JSON ({exc.msg})") from None
            except ValueError as exc:
                raise DecisionError(f"{where}: {exc}") from None
            gallery = per.setdefault(model, {})
            if gallery and (have := next(iter(gallery.values())).size) != vec.size:
                raise DecisionError(f"{where}: {vec.size} values where {model} has {have}")
            if uid in gallery:
                raise DecisionError(f"{where}: {uid} appears twice for {model}")
            gallery[uid] = vec
    return {m: (list(g), np.stack(list(g.values()))) for m, g in per.items()}
