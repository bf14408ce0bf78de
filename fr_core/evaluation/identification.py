"""Open-set identification measured on a labelled folder of photos (``fr-edge evaluate``).

The folder holds a ``manifest.csv`` with the columns ``identity,file,role``: role ``gallery``
(the photo an employee is enrolled with, one per identity), ``probe`` (the same person's
other photos) or ``unknown`` (a person who is never enrolled, and who may also be enrolled as
a distractor to grow a gallery). ``../shared/data/lfw-dev`` has this format.

Every photo goes through the configured detector and embedder once (the face nearest the
photo's centre, as in LFW, or the largest one), and every decision through the product's own
matcher and :func:`fr_core.pipeline.decision.decide`, the function the device uses. Scenarios:

- ``enrolled N``: N of the gallery identities enrolled (several random draws for N smaller
  than all of them; the default 125, half of lfw-dev's, leaves people with several photos
  as strangers, so strangers' tracks are measured against a gallery of that size too).
  Their probes measure right-person acceptance and wrong-employee matches; strangers are
  the ``unknown`` people and the gallery identities not drawn.
- ``grown N``: every gallery identity plus ``unknown`` people enrolled as distractors (one
  photo of each); the remaining ``unknown`` people, all their photos, are the strangers.
- tracks: three photos of one person fused into one decision
  (:func:`fr_core.pipeline.decision.fuse`), as the recognition stage fuses a track's frames.

Each scenario also records every top-1 score, for the DET curve (false accepts against
false rejects when the threshold sweeps) and for the comparison with a fixed threshold.
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fr_core.errors import FrEdgeError
from fr_core.pipeline.decision import Decision, DecisionPolicy, decide, fuse

ROLES = ("gallery", "probe", "unknown")
FACE_CHOICES = ("central", "largest")
TRACK_LENGTH = 3
TRACKS_PER_PERSON = 10  # at most, of the C(k, 3) combinations of a person's photos


class EvaluationError(FrEdgeError):
    exit_code = 2


@dataclass(frozen=True)
class Photo:
    identity: str
    file: str
    role: str


def read_manifest(folder: Path) -> list[Photo]:
    """The manifest's rows, checked: known columns and roles, files inside the folder that
    exist, one gallery photo per identity, no identity both enrolled and unknown."""
    path = folder / "manifest.csv"
    if not path.is_file():
        raise EvaluationError(
            f"{folder} has no manifest.csv (columns identity,file,role; role is one of "
            + ", ".join(ROLES)
            + ")"
        )
    out: list[Photo] = []
    root = folder.resolve()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"identity", "file", "role"} <= set(reader.fieldnames):
            raise EvaluationError(
                f"{path}: the header must name identity,file,role; found {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            identity, file, role = (row.get(k) or "" for k in ("identity", "file", "role"))
            if not identity or not file:
                raise EvaluationError(f"{path} line {line}: identity and file must not be empty")
            if role not in ROLES:
                raise EvaluationError(
                    f"{path} line {line}: role {role!r} is not one of " + ", ".join(ROLES)
                )
            target = (folder / file).resolve()
            if root not in target.parents:
                raise EvaluationError(f"{path} line {line}: {file!r} is outside {folder}")
            if not target.is_file():
                raise EvaluationError(f"{path} line {line}: {file} does not exist")
            out.append(Photo(identity, file, role))
    galleries: dict[str, int] = {}
    for p in out:
        if p.role == "gallery":
            galleries[p.identity] = galleries.get(p.identity, 0) + 1
    twice = sorted(i for i, n in galleries.items() if n > 1)
    if twice:
        raise EvaluationError(f"{path}: identities with more than one gallery photo: {twice[:5]}")
    orphans = sorted({p.identity for p in out if p.role == "probe"} - set(galleries))
    if orphans:
        raise EvaluationError(
            f"{path}: probe photos of identities with no gallery photo: {orphans[:5]}"
        )
    both = sorted({p.identity for p in out if p.role == "unknown"} & set(galleries))
    if both:
        raise EvaluationError(f"{path}: identities both enrolled and unknown: {both[:5]}")
    if not galleries:
        raise EvaluationError(f"{path}: no gallery photo, nothing to enrol")
    return out


def choose_face(detections: Sequence[Any], shape: tuple[int, ...], how: str) -> Any:
    if how == "largest":
        return max(detections, key=lambda d: d.bbox[2] * d.bbox[3])
    h, w = shape[:2]
    return min(
        detections,
        key=lambda d: (
            (d.bbox[0] + d.bbox[2] / 2 - w / 2) ** 2 + (d.bbox[1] + d.bbox[3] / 2 - h / 2) ** 2
        ),
    )


def embed_photos(
    folder: Path,
    photos: Sequence[Photo],
    detector: Any,
    embedder: Any,
    *,
    face: str = "central",
    progress: bool = True,
) -> tuple[np.ndarray, list[str | None]]:
    """One embedding per photo (a row of NaN where none could be made) and, per photo, why
    not (None when it worked)."""
    import cv2
    from tqdm import tqdm

    if face not in FACE_CHOICES:
        raise EvaluationError(f"face must be one of {FACE_CHOICES}, got {face!r}")
    rows = np.full((len(photos), int(embedder.dim)), np.nan, np.float32)
    problems: list[str | None] = []
    for i, p in enumerate(tqdm(photos, desc="embedding", unit="photo", disable=not progress)):
        image = cv2.imread(str(folder / p.file), cv2.IMREAD_COLOR)
        if image is None:
            problems.append("not an image OpenCV can read")
            continue
        faces = detector.detect(image)
        if not faces:
            problems.append("no face found")
            continue
        rows[i] = embedder.embed(image, choose_face(faces, image.shape, face))
        problems.append(None)
    return rows, problems


# --- scenarios ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Decisions of one scenario under one policy."""

    genuine: list[Decision] = field(default_factory=list)  # probes of enrolled people
    genuine_truth: list[str] = field(default_factory=list)
    strangers: list[Decision] = field(default_factory=list)  # photos of strangers
    stranger_people: list[str] = field(default_factory=list)  # whose photo each one is
    stranger_files: list[str] = field(default_factory=list)
    genuine_tracks: list[Decision] = field(default_factory=list)
    genuine_track_truth: list[str] = field(default_factory=list)
    stranger_tracks: list[Decision] = field(default_factory=list)
    stranger_track_people: list[str] = field(default_factory=list)
    point: dict[str, Any] = field(default_factory=dict)
    # top-1 (identity, similarity) of every query, for the DET curve
    genuine_top: list[tuple[str | None, float]] = field(default_factory=list)
    stranger_top: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        g = self.genuine
        right = sum(d.user_id == t for d, t in zip(g, self.genuine_truth, strict=True))
        wrong = sum(
            d.user_id is not None and d.user_id != t
            for d, t in zip(g, self.genuine_truth, strict=True)
        )
        accepted_people = {
            who for d, who in zip(self.strangers, self.stranger_people, strict=True) if d.user_id
        }
        people = set(self.stranger_people)
        gt = self.genuine_tracks
        t_right = sum(d.user_id == t for d, t in zip(gt, self.genuine_track_truth, strict=True))
        t_wrong = sum(
            d.user_id is not None and d.user_id != t
            for d, t in zip(gt, self.genuine_track_truth, strict=True)
        )
        return {
            "operating_point": self.point,
            "probes": len(g),
            "right_person": right,
            "right_person_rate": _rate(right, len(g)),
            "wrong_employee": wrong,
            "wrong_employee_rate": _rate(wrong, len(g)),
            "strangers": len(people),
            "strangers_accepted": len(accepted_people),
            "strangers_accepted_rate": _rate(len(accepted_people), len(people)),
            "stranger_photos": len(self.strangers),
            "stranger_photos_accepted": sum(d.user_id is not None for d in self.strangers),
            "tracks": len(gt),
            "tracks_right_person": t_right,
            "tracks_right_person_rate": _rate(t_right, len(gt)),
            "tracks_wrong_employee": t_wrong,
            "stranger_tracks": len(self.stranger_tracks),
            "stranger_tracks_accepted": sum(d.user_id is not None for d in self.stranger_tracks),
            "stranger_track_people": len(set(self.stranger_track_people)),
            "stranger_track_people_accepted": len(
                {
                    w
                    for d, w in zip(self.stranger_tracks, self.stranger_track_people, strict=True)
                    if d.user_id is not None
                }
            ),
        }


def _rate(n: int, of: int) -> float | None:
    return round(n / of, 5) if of else None


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "enrolled" or "grown"
    gallery_size: int
    enrolled: tuple[int, ...]  # photo indices enrolled (one per identity)
    strangers: tuple[int, ...]  # photo indices of people never enrolled in this scenario
    draw: int = 0


def scenarios(
    photos: Sequence[Photo],
    usable: np.ndarray,
    *,
    sizes: Iterable[int] = (10, 50, 125),
    draws: int = 5,
    distractors: Iterable[int] = (250, 500, 1000),
    seed: int = 0,
) -> list[Scenario]:
    """The scenarios for a manifest (indices of photos with an embedding only)."""
    gallery = [i for i, p in enumerate(photos) if p.role == "gallery" and usable[i]]
    unknown = [i for i, p in enumerate(photos) if p.role == "unknown" and usable[i]]
    by_identity: dict[str, list[int]] = {}
    for i, p in enumerate(photos):
        if p.role != "unknown" and usable[i]:
            by_identity.setdefault(p.identity, []).append(i)
    rng = np.random.default_rng(seed)
    out: list[Scenario] = []
    for n in sorted({int(s) for s in sizes}):
        if n >= len(gallery) or n < 1:
            continue
        for d in range(draws):
            pick = sorted(rng.choice(len(gallery), n, replace=False).tolist())
            chosen = [gallery[k] for k in pick]
            names = {photos[i].identity for i in chosen}
            others = [i for ident, idx in by_identity.items() if ident not in names for i in idx]
            out.append(
                Scenario(
                    f"enrolled {n}",
                    "enrolled",
                    n,
                    tuple(chosen),
                    tuple(sorted(others + unknown)),
                    d,
                )
            )
    out.append(
        Scenario(
            f"enrolled {len(gallery)}", "enrolled", len(gallery), tuple(gallery), tuple(unknown)
        )
    )
    # distractors are people: one photo of each is enrolled, none of theirs is a stranger
    unknown_people: dict[str, list[int]] = {}
    for i in unknown:
        unknown_people.setdefault(photos[i].identity, []).append(i)
    people = list(unknown_people)
    order = [people[j] for j in rng.permutation(len(people))]
    for k in sorted({int(x) for x in distractors}):
        k = min(k, len(order))
        if k < 1:
            continue
        extra = [unknown_people[who][0] for who in order[:k]]
        rest = [i for who in order[k:] for i in unknown_people[who]]
        out.append(
            Scenario(
                f"grown {len(gallery) + k}",
                "grown",
                len(gallery) + k,
                tuple(gallery + extra),
                tuple(sorted(rest)),
            )
        )
        if k == len(order):
            break
    return out


def run_scenario(
    scenario: Scenario,
    photos: Sequence[Photo],
    embeddings: np.ndarray,
    model: str,
    make_matcher: Callable[[], Any],
    *,
    seed: int = 0,
) -> Outcome:
    """Every decision of one scenario, through a matcher built by ``make_matcher``."""
    matcher = make_matcher()
    enrolled = list(scenario.enrolled)
    ids = [photos[i].identity for i in enrolled]
    matcher.replace_gallery(model, ids, embeddings[enrolled])
    names = set(ids)
    out = Outcome()

    def one(vec: np.ndarray, fused: bool = False) -> tuple[Decision, str | None]:
        candidates = matcher.identify(model, vec)
        top = candidates.matches[0].user_id if candidates.matches else None
        return decide(candidates, fused=fused), top

    out.point = matcher.identify(model, embeddings[enrolled[0]]).point.as_dict()
    per_person: dict[str, list[int]] = {}
    for i, p in enumerate(photos):
        if p.role == "probe" and p.identity in names and not np.isnan(embeddings[i, 0]):
            per_person.setdefault(p.identity, []).append(i)
    for who, idx in sorted(per_person.items()):
        for i in idx:
            d, top = one(embeddings[i])
            out.genuine.append(d)
            out.genuine_truth.append(who)
            out.genuine_top.append((top, d.similarity))
    for i in scenario.strangers:
        d, _ = one(embeddings[i])
        out.strangers.append(d)
        out.stranger_people.append(photos[i].identity)
        out.stranger_files.append(photos[i].file)
        out.stranger_top.append(d.similarity)
    rng = np.random.default_rng(seed)
    for who, idx in sorted(per_person.items()):
        for combo in _combos(idx, rng):
            out.genuine_tracks.append(one(fuse(embeddings[list(combo)]), fused=True)[0])
            out.genuine_track_truth.append(who)
    by_stranger: dict[str, list[int]] = {}
    for i in scenario.strangers:
        by_stranger.setdefault(photos[i].identity, []).append(i)
    for who, idx in by_stranger.items():
        for combo in _combos(idx, rng):
            out.stranger_tracks.append(one(fuse(embeddings[list(combo)]), fused=True)[0])
            out.stranger_track_people.append(who)
    return out


def _combos(idx: Sequence[int], rng: np.random.Generator) -> list[tuple[int, ...]]:
    if len(idx) < TRACK_LENGTH:
        return []
    combos = list(itertools.combinations(idx, TRACK_LENGTH))
    if len(combos) > TRACKS_PER_PERSON:
        pick = rng.choice(len(combos), TRACKS_PER_PERSON, replace=False)
        combos = [combos[int(k)] for k in sorted(pick)]
    return combos


def det_curve(outcomes: Sequence[Outcome], points: int = 200) -> dict[str, list[float]]:
    """False-accept rate of strangers' photos against false-reject rate of probes (not the
    right person at or above the threshold) as the threshold sweeps."""
    gen = [top for o in outcomes for top in o.genuine_top]
    truth = [w for o in outcomes for w in o.genuine_truth]
    right = np.array([s if t == w else -np.inf for (t, s), w in zip(gen, truth, strict=True)])
    stranger = np.array([s for o in outcomes for s in o.stranger_top])
    if not len(right) or not len(stranger):
        return {"threshold": [], "far": [], "frr": []}
    thresholds = np.linspace(0.2, 0.8, points)
    far = [(stranger >= t).mean() for t in thresholds]
    frr = [1.0 - (right >= t).mean() for t in thresholds]
    return {
        "threshold": [round(float(t), 4) for t in thresholds],
        "far": [float(x) for x in far],
        "frr": [float(x) for x in frr],
    }


def evaluate(
    photos: Sequence[Photo],
    embeddings: np.ndarray,
    model: str,
    make_matcher: Callable[[DecisionPolicy | None], Any],
    *,
    policy: DecisionPolicy,
    baseline: DecisionPolicy | None = None,
    sizes: Iterable[int] = (10, 50, 125),
    draws: int = 5,
    distractors: Iterable[int] = (250, 500, 1000),
    seed: int = 0,
    progress: bool = True,
    list_accepted: bool = False,
) -> dict[str, Any]:
    """The report: per scenario (draws averaged) the figures of the policy in force and of
    ``baseline`` (a fixed threshold, for comparison), and the DET curve per gallery size."""
    from tqdm import tqdm

    usable = ~np.isnan(embeddings[:, 0])
    plan = scenarios(photos, usable, sizes=sizes, draws=draws, distractors=distractors, seed=seed)
    rules = {"policy": policy}
    if baseline is not None:
        rules["baseline"] = baseline
    grouped: dict[str, dict[str, list[Outcome]]] = {}
    sizes_of: dict[str, int] = {}
    for sc in tqdm(plan, desc="deciding", unit="scenario", disable=not progress):
        sizes_of[sc.name] = sc.gallery_size
        for rule, pol in rules.items():
            out = run_scenario(
                sc,
                photos,
                embeddings,
                model,
                functools.partial(make_matcher, pol),
                seed=seed + sc.draw,
            )
            grouped.setdefault(sc.name, {}).setdefault(rule, []).append(out)
    report_scenarios = []
    for name, per_rule in grouped.items():
        entry: dict[str, Any] = {
            "name": name,
            "gallery_size": sizes_of[name],
            "draws": len(per_rule["policy"]),
        }
        for rule, outs in per_rule.items():
            entry[rule] = _pooled(outs)
        entry["det"] = det_curve(per_rule["policy"])
        if list_accepted:  # names the photos: for looking at, not for a published report
            entry["accepted_strangers"] = sorted(
                {
                    (f, d.user_id, round(d.similarity, 4))
                    for o in per_rule["policy"]
                    for d, f in zip(o.strangers, o.stranger_files, strict=True)
                    if d.user_id is not None
                }
            )
        report_scenarios.append(entry)
    failures = [
        {"file": p.file, "role": p.role} for p, ok in zip(photos, usable, strict=True) if not ok
    ]
    return {
        "photos": len(photos),
        "identities": len({p.identity for p in photos}),
        "roles": {r: sum(p.role == r for p in photos) for r in ROLES},
        "no_embedding": failures,
        "model": model,
        "policy": {"target_far": policy.target_far, "match_threshold": policy.match_threshold},
        "baseline": None
        if baseline is None
        else {"target_far": baseline.target_far, "match_threshold": baseline.match_threshold},
        "scenarios": report_scenarios,
    }


def _pooled(outs: Sequence[Outcome]) -> dict[str, Any]:
    """Counts summed over the draws of one scenario; operating points of every draw."""
    summaries = [o.summary() for o in outs]
    total: dict[str, Any] = {}
    for key in summaries[0]:
        if key == "operating_point" or key.endswith("_rate"):
            continue  # rates are recomputed from the pooled counts below
        total[key] = sum(s[key] for s in summaries)
    for key, of in (
        ("right_person", "probes"),
        ("wrong_employee", "probes"),
        ("strangers_accepted", "strangers"),
        ("tracks_right_person", "tracks"),
    ):
        total[key + "_rate"] = _rate(total[key], total[of])
    thresholds = [s["operating_point"]["threshold"] for s in summaries]
    expected = [s["operating_point"]["expected_false_accepts_per_1000"] for s in summaries]
    total["operating_point"] = summaries[0]["operating_point"] | {
        "threshold": round(float(np.mean(thresholds)), 4),
        "threshold_range": [min(thresholds), max(thresholds)],
        "expected_false_accepts_per_1000": round(float(np.mean(expected)), 3),
    }
    return total


# --- plots ----------------------------------------------------------------------------------


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """det.png (false accepts against false rejects per gallery size, operating points
    marked) and false_accepts.png (strangers accepted against gallery size: measured,
    predicted, and the fixed baseline)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EvaluationError(
            "plots need matplotlib: pip install 'fr-edge[eval]' (or run with --no-plots)"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    for sc in report["scenarios"]:
        det = sc["det"]
        if not det["far"] or sc["policy"]["strangers"] == 0:
            continue
        floor = 0.5 / max(1, sc["policy"]["stranger_photos"])
        far = [max(x, floor) for x in det["far"]]
        frr = [max(x, 1e-4) for x in det["frr"]]
        (line,) = ax.plot(far, frr, label=f"{sc['name']} ({sc['draws']} draws)")
        p = sc["policy"]
        ax.plot(
            [max(p["stranger_photos_accepted"] / max(1, p["stranger_photos"]), floor)],
            [max(1 - (p["right_person_rate"] or 0.0), 1e-4)],
            "o",
            color=line.get_color(),
        )
    ax.set_xlabel("strangers' photos accepted as an employee (false-accept rate)")
    ax.set_ylabel("probes not accepted as the right person")
    ax.set_title(f"DET, {report['model']}: dots = operating point in force")
    written.append(_save_log_log(plt, fig, ax, folder / "det.png"))

    rows = [sc for sc in report["scenarios"] if sc["policy"]["strangers"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    xs = [sc["gallery_size"] for sc in rows]

    def photo_rate(r: dict[str, Any]) -> float:  # per decision: the calibration's unit
        return max(100 * r["stranger_photos_accepted"] / r["stranger_photos"], 0.01)

    ax.plot(xs, [photo_rate(sc["policy"]) for sc in rows], "o-", label="measured, calibrated point")
    ax.plot(
        xs,
        [sc["policy"]["operating_point"]["expected_false_accepts_per_1000"] / 10 for sc in rows],
        "s--",
        label="predicted by the calibration",
    )
    if report.get("baseline"):
        mt = report["baseline"]["match_threshold"]
        ax.plot(
            xs,
            [photo_rate(sc["baseline"]) for sc in rows],
            "^-",
            label=f"measured, fixed cosine {1 - mt:.3f}",
        )
    ax.axhline(100 * report["policy"]["target_far"], color="grey", lw=0.8, ls=":", label="target")
    ax.set_xlabel("enrolled identities (gallery size)")
    ax.set_ylabel("strangers' photos accepted as an employee (%)")
    ax.set_title("False accepts against gallery size")
    written.append(_save_log_log(plt, fig, ax, folder / "false_accepts.png"))
    return written


def _save_log_log(plt: Any, fig: Any, ax: Any, path: Path) -> Path:
    """Both axes logarithmic, a grid and a legend; written to ``path`` and closed."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def table(report: dict[str, Any]) -> str:
    """The report's figures as a Markdown table."""
    lines = [
        "| scenario | threshold | right person | wrong employee | strangers accepted "
        "(photos; predicted) | tracks of 3: right / strangers' tracks accepted "
        "| baseline: right / wrong / strangers |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for sc in report["scenarios"]:
        p = sc["policy"]
        op = p["operating_point"]
        b = sc.get("baseline")
        base = (
            f"{_pct(b['right_person_rate'])} / {b['wrong_employee']} / "
            f"{b['strangers_accepted']} of {b['strangers']}"
            if b
            else "-"
        )
        lines.append(
            f"| {sc['name']}"
            + (f" ({sc['draws']} draws)" if sc["draws"] > 1 else "")
            + f" | {op['threshold']:.3f} | {_pct(p['right_person_rate'])} of {p['probes']} "
            f"| {p['wrong_employee']} | {p['strangers_accepted']} of {p['strangers']} "
            f"({p['stranger_photos_accepted']} of {p['stranger_photos']}; "
            f"{op['expected_false_accepts_per_1000'] * p['stranger_photos'] / 1000:.1f}) "
            f"| {_pct(p['tracks_right_person_rate'])} of {p['tracks']} / "
            f"{p['stranger_tracks_accepted']} of {p['stranger_tracks']} "
            f"({p['stranger_track_people_accepted']} of {p['stranger_track_people']} people) "
            f"| {base} |"
        )
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"
