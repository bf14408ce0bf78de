"""The decision rules tried for open-set identification, side by side on one labelled folder
(default ../shared/data/lfw-dev): ``python -m tests.bench.recognition_rules [FOLDER]``, or
``make recognition``. Prints a Markdown table (docs/recognition.md).

Two views of each rule:

- **best case**: the rule's own score, with its threshold set *after the fact* so that at
  most 5 of the strangers are accepted (an oracle: what the rule could give if its threshold
  were known). This ranks the scores themselves.
- **calibrated**: the rule the product uses (fr_core.pipeline.decision, threshold from the target
  false-accept rate and the gallery alone) at several targets, with random galleries of 10
  and 50 and the full one, to see whether the predicted rate holds.

Rules: the raw cosine of the nearest enrolment; T-norm (the nearest score standardised by the
probe's scores against the rest of the gallery, a cohort); Z-norm (standardised by the
enrolment's own scores against the other enrolments); a top-1/top-2 margin bonus; a
per-employee threshold raised by the enrolment's nearest neighbour in the gallery; and fusion
of three photos of a person (a track) before the decision.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fr_core.evaluation.identification import embed_photos, read_manifest
from fr_core.interfaces import ComponentKind
from fr_core.pipeline.decision import DecisionPolicy, calibrate, fuse
from fr_core.plugins import build_registry

STRANGERS_ALLOWED = 5


def load(folder: Path) -> dict[str, np.ndarray]:
    photos = read_manifest(folder)
    registry = build_registry()
    det = registry.create(ComponentKind.DETECTOR, "yunet")
    emb = registry.create(ComponentKind.EMBEDDER, "sface")
    E, _ = embed_photos(folder, photos, det, emb, progress=sys.stderr.isatty())
    ids = np.array([p.identity for p in photos])
    roles = np.array([p.role for p in photos])
    return {"E": E, "ids": ids, "roles": roles}


def scores(name: str, S: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 index, the rule's score) for query rows of S (queries x gallery)."""
    top = S.argmax(axis=1)
    s1 = S[np.arange(len(S)), top]
    if name == "raw cosine":
        return top, s1
    rest = np.sort(S, axis=1)[:, :-1]
    if name == "T-norm (probe's cohort)":
        return top, (s1 - rest.mean(1)) / rest.std(1)
    GG = G @ G.T
    np.fill_diagonal(GG, np.nan)
    if name == "Z-norm (enrolment's cohort)":
        z = (S - np.nanmean(GG, 1)) / np.nanstd(GG, 1)
        top = z.argmax(axis=1)
        return top, z[np.arange(len(S)), top]
    if name == "top-1/top-2 margin (+0.5 x margin)":
        return top, s1 + 0.5 * (s1 - rest[:, -1])
    if name == "per-employee threshold (nearest neighbour)":
        nn = np.nanmax(GG, 1)
        adj = S - np.maximum(nn - 0.3, 0)
        top = adj.argmax(axis=1)
        return top, adj[np.arange(len(S)), top]
    raise ValueError(name)


RULES = (
    "raw cosine",
    "T-norm (probe's cohort)",
    "Z-norm (enrolment's cohort)",
    "top-1/top-2 margin (+0.5 x margin)",
    "per-employee threshold (nearest neighbour)",
)


def main(folder: Path) -> None:
    d = load(folder)
    E, ids, roles = d["E"], d["ids"], d["roles"]
    G, gid = E[roles == "gallery"], ids[roles == "gallery"]
    P, pid = E[roles == "probe"], ids[roles == "probe"]
    U = E[roles == "unknown"]
    index = {g: i for i, g in enumerate(gid)}
    truth = np.array([index[p] for p in pid])
    tracks, track_truth = [], []
    for g in gid:
        idx = np.where(pid == g)[0]
        for a in range(0, len(idx) - 2):
            tracks.append(fuse(P[idx[a : a + 3]]))
            track_truth.append(index[g])
    T = np.array(tracks)
    print(f"# {len(G)} enrolled, {len(P)} probes, {len(U)} strangers, {len(T)} tracks of 3\n")
    print("## Best case: threshold chosen afterwards for <= 5 strangers accepted\n")
    print("| rule | right person, single photos | wrong employee |")
    print("| --- | --- | --- |")
    for name in RULES:
        tp, sp = scores(name, P @ G.T, G)
        _, su = scores(name, U @ G.T, G)
        t = np.sort(su)[-STRANGERS_ALLOWED - 1]
        right = ((tp == truth) & (sp > t)).mean()
        wrong = int(((tp != truth) & (sp > t)).sum())
        print(f"| {name} | {100 * right:.1f}% | {wrong} |")
    tp, sp = scores("raw cosine", T @ G.T, G)
    _, su = scores("raw cosine", U @ G.T, G)
    t = np.sort(su)[-STRANGERS_ALLOWED - 1]  # strangers have one photo each: not fused
    tt = np.array(track_truth)
    right = ((tp == tt) & (sp > t)).mean()
    wrong = int(((tp != tt) & (sp > t)).sum())
    print(f"| raw cosine, tracks of 3 photos fused | {100 * right:.1f}% (tracks) | {wrong} |")

    print("\n## Impostor statistics (the prior of fr_core.pipeline.decision.MODEL_PRIORS)\n")
    print("| pairs | count | mean | sd |")
    print("| --- | --- | --- | --- |")
    GG = G @ G.T
    gp = GG[np.triu_indices(len(G), 1)]
    ug = (U @ G.T).ravel()
    for name, x in (("gallery x gallery", gp), ("unknown x gallery", ug)):
        print(f"| {name} | {x.size} | {x.mean():.4f} | {x.std():.4f} |")

    print("\n## The impostor tail against a normal (pairs of the unknown people)\n")
    UU = U @ U.T
    x = UU[np.triu_indices(len(U), 1)]
    m, sd = x.mean(), x.std()
    print(f"{len(x)} pairs, mean {m:.4f}, sd {sd:.4f}\n")
    print("| z | share above mean + z sd | normal |")
    print("| --- | --- | --- |")
    from statistics import NormalDist

    for z in (2.0, 3.0, 4.0):
        above, normal = (x > m + z * sd).mean(), 1 - NormalDist().cdf(z)
        print(f"| {z:g} | {100 * above:.4f}% | {100 * normal:.4f}% |")

    print("\n## Strangers' scores, one photo and fused (half the identities as strangers)\n")
    print("| query | impostor mean | impostor sd |")
    print("| --- | --- | --- |")
    rng = np.random.default_rng(1)
    single, fused, fused5 = [], [], []
    for _ in range(10):
        perm = rng.permutation(len(gid))
        Gs = G[perm[: len(gid) // 2]]
        for g in gid[perm[len(gid) // 2 :]]:
            X = E[(ids == g) & (roles != "unknown")]
            single.append((X @ Gs.T).ravel())
            for a in range(0, len(X) - 2):
                fused.append(Gs @ fuse(X[a : a + 3]))
            if len(X) >= 5:
                fused5.append(Gs @ fuse(X[:5]))
    for name, x in (
        ("one photo", np.concatenate(single)),
        ("3 photos fused", np.ravel(fused)),
        ("5 photos fused", np.ravel(fused5)),
    ):
        print(f"| {name} | {x.mean():.4f} | {x.std():.4f} |")

    print(
        "\n## Calibrated (fr_core.pipeline.decision): threshold from the target and the gallery"
        " only\n"
    )
    print(
        "| target per decision | gallery | threshold | strangers' photos accepted "
        "(predicted) | right person | tracks of 3 right |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for target in (0.0005, 0.001, 0.002, 0.005):
        for n, draws in ((10, 20), (50, 10), (len(G), 1)):
            far, acc, tacc, thr, pred = [], [], [], [], []
            for _ in range(draws):
                sel = np.sort(rng.choice(len(G), n, replace=False)) if n < len(G) else None
                sel = np.arange(len(G)) if sel is None else sel
                Gs = G[sel]
                point = calibrate("SFace", Gs, DecisionPolicy(target_far=target))
                others = np.setdiff1d(np.arange(len(G)), sel)
                strangers = np.vstack([U, G[others]])
                far.append(((strangers @ Gs.T).max(1) >= point.threshold).mean())
                keep = np.isin(truth, sel)
                local = {g: i for i, g in enumerate(sel)}
                tt = np.array([local[x] for x in truth[keep]])
                S = P[keep] @ Gs.T
                acc.append(((S.argmax(1) == tt) & (S.max(1) >= point.threshold)).mean())
                tk = np.isin(track_truth, sel)
                ttt = np.array([local[x] for x in np.array(track_truth)[tk]])
                ST = T[tk] @ Gs.T
                tacc.append(((ST.argmax(1) == ttt) & (ST.max(1) >= point.track_threshold)).mean())
                thr.append(point.threshold)
                pred.append(point.expected_false_accepts_per_1000 / 1000)
            print(
                f"| {target:g} | {n}"
                + (f" ({draws} draws)" if draws > 1 else "")
                + f" | {np.mean(thr):.3f} | {100 * np.mean(far):.2f}% ({100 * np.mean(pred):.2f}%)"
                f" | {100 * np.mean(acc):.1f}% | {100 * np.mean(tacc):.1f}% |"
            )


if __name__ == "__main__":
    here = Path(__file__).resolve().parents[2]
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent / "shared" / "data" / "lfw-dev")
