"""Matcher plugin ``numpy``: exact cosine search over in-memory galleries, one per model.

Each gallery is an immutable snapshot: a matrix of L2-normalised float32 rows and the user ids
in row order. Readers take the current snapshot with one attribute read and search it without
a lock; writers build the next snapshot from the current one (rows patched, appended or
removed in one vectorised step, no re-normalisation of the others and no reload from the
database) and publish it with one assignment. A search therefore sees the gallery either
before or after a whole batch of changes, never half of one.

Embeddings of different models are never compared: a query names its model and only that
gallery is searched; a query of the wrong dimension is an error.

Each snapshot carries the operating point of its own gallery
(:func:`fr_core.pipeline.decision.calibrate`, computed when the snapshot is built), so a decision
never pairs a gallery with another gallery's threshold: ``identify`` returns both from one snapshot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fr_core import hookimpl
from fr_core.interfaces import Match
from fr_core.pipeline.decision import (
    Candidates,
    DecisionPolicy,
    OperatingPoint,
    calibrate,
    confusable_pairs,
)

log = logging.getLogger(__name__)

# Confusable pairs are found by an all-pairs search (O(n^2)); above this many enrolments a
# device leaves it to ``fr-edge calibrate``.
CONFUSABLE_UP_TO = 10_000


class NumpyMatcherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float | None = Field(
        None,
        gt=0,
        lt=2,
        description="a fixed cosine distance for this matcher, instead of the operating "
        "point calibrated from recognition.target_far (default: the top-level "
        "match_threshold when the config sets it)",
    )


@dataclass(frozen=True)
class _Gallery:
    matrix: np.ndarray  # (n, d) float32, rows L2-normalised, read-only
    ids: tuple[str, ...]
    point: OperatingPoint
    index: dict[str, int] = field(default_factory=dict)
    cache: dict[str, object] = field(default_factory=dict)  # derived figures, computed once

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[None, :]
    if not np.isfinite(rows).all():
        raise ValueError("embeddings must be finite")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("an embedding is all zeros")
    return rows / norms


class NumpyMatcher:
    """Thread-safe: any number of concurrent searches, writers serialised by a lock.

    ``threshold`` (a cosine distance) fixes the decision threshold; without it the operating
    point is calibrated for each gallery from ``policy`` (default: the default target
    false-accept rate)."""

    def __init__(
        self, threshold: float | None = None, *, policy: DecisionPolicy | None = None
    ) -> None:
        if threshold is not None and policy is not None:
            raise ValueError("give a fixed threshold or a policy, not both")
        self.policy = policy or DecisionPolicy(match_threshold=threshold)
        self._galleries: dict[str, _Gallery] = {}
        self._write = threading.Lock()
        self._derive = threading.Lock()  # figures derived from a snapshot, computed once

    @property
    def threshold(self) -> float | None:
        """The fixed cosine distance, or None when the threshold is calibrated."""
        return self.policy.match_threshold

    def _make(self, model: str, matrix: np.ndarray, ids: Sequence[str]) -> _Gallery:
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        matrix.setflags(write=False)
        point = calibrate(model, matrix, self.policy)
        if point.method == "uncalibrated" and matrix.shape[0]:
            log.warning(
                "model %r has no impostor prior and only %d enrolments: nobody is recognised "
                "until it has 20, or set match_threshold (docs/recognition.md)",
                model,
                matrix.shape[0],
            )
        return _Gallery(matrix, tuple(ids), point, {u: i for i, u in enumerate(ids)})

    # --- queries --------------------------------------------------------------------------

    def models(self) -> dict[str, int]:
        """Model name -> number of enrolments."""
        return {m: len(g.ids) for m, g in self._galleries.items()}

    def size(self, model: str) -> int:
        g = self._galleries.get(model)
        return len(g.ids) if g else 0

    def _gallery(self, model: str, dim: int) -> _Gallery | None:
        g = self._galleries.get(model)
        if g is not None and g.dim != dim:
            raise ValueError(
                f"query has dimension {dim} but model {model!r} has {g.dim}: embeddings of "
                "different models are never compared"
            )
        return g

    def operating_point(self, model: str) -> OperatingPoint | None:
        """The operating point of ``model``'s current gallery (None: no such gallery)."""
        g = self._galleries.get(model)
        return g.point if g is not None else None

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {m: g.point for m, g in self._galleries.items()}

    def confusable(self, model: str) -> tuple[int, float | None] | None:
        """How many pairs of enrolments of ``model`` reach its threshold against each other,
        and the highest similarity among them (computed once per gallery snapshot, by one
        caller at a time); None above ``CONFUSABLE_UP_TO`` enrolments. Which employees they
        are is for ``fr-edge calibrate``, not for heartbeats."""
        g = self._galleries.get(model)
        if g is None:
            return 0, None
        if len(g.ids) > CONFUSABLE_UP_TO:
            return None
        with self._derive:
            if "confusable" not in g.cache:
                pairs, total = confusable_pairs(g.matrix, g.ids, g.point.threshold, limit=1)
                g.cache["confusable"] = (total, pairs[0][2] if pairs else None)
        return g.cache["confusable"]  # type: ignore[return-value]

    def _nearest(self, g: _Gallery, q: np.ndarray, k: int) -> list[Match]:
        nq = float(np.linalg.norm(q))
        if not np.isfinite(nq) or nq == 0:
            raise ValueError("query embedding must be finite and non-zero")
        scores = g.matrix @ q
        if k == 1:
            i = int(np.argmax(scores))
            return [Match(g.ids[i], max(0.0, 1.0 - float(scores[i]) / nq))]
        k = min(k, len(g.ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Match(g.ids[int(i)], max(0.0, 1.0 - float(scores[i]) / nq)) for i in top]

    def identify(self, model: str, embedding: np.ndarray, k: int = 1) -> Candidates:
        """The ``k`` nearest enrolments, not thresholded, with the operating point of the
        same gallery snapshot: what :func:`fr_core.pipeline.decision.decide` needs."""
        q = np.asarray(embedding, dtype=np.float32).reshape(-1)
        g = self._gallery(model, q.size)
        if g is None:
            return Candidates((), calibrate(model, np.empty((0, q.size), np.float32), self.policy))
        return Candidates(self._nearest(g, q, k) if g.ids else (), g.point)

    def search(self, model: str, embedding: np.ndarray, k: int = 1) -> list[Match]:
        """The ``k`` nearest enrolments of ``model`` by cosine distance, nearest first,
        that reach the gallery's operating point."""
        q = np.asarray(embedding, dtype=np.float32).reshape(-1)
        g = self._gallery(model, q.size)
        if g is None or not g.ids:
            return []
        limit = g.point.distance + 1e-9
        return [m for m in self._nearest(g, q, k) if m.distance <= limit]

    def search_batch(self, model: str, embeddings: np.ndarray) -> list[Match | None]:
        """Top-1 for each row of ``embeddings`` (one matrix product for the whole batch)."""
        Q = np.asarray(embeddings, dtype=np.float32)
        if Q.ndim != 2:
            raise ValueError(f"a batch must be 2-D (n, dim), got shape {Q.shape}")
        g = self._gallery(model, Q.shape[1])
        if g is None or not g.ids:
            return [None] * len(Q)
        norms = np.linalg.norm(Q, axis=1)
        if not np.isfinite(norms).all() or (norms == 0).any():
            raise ValueError("query embeddings must be finite and non-zero")
        scores = Q @ g.matrix.T  # (b, n)
        best = np.argmax(scores, axis=1)
        limit = g.point.distance + 1e-9
        out: list[Match | None] = []
        for r, i in enumerate(best):
            dist = 1.0 - float(scores[r, i]) / float(norms[r])
            out.append(Match(g.ids[int(i)], max(0.0, dist)) if dist <= limit else None)
        return out

    # --- updates --------------------------------------------------------------------------

    def replace_gallery(self, model: str, user_ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Atomically replace the whole gallery of ``model`` (normalises the rows)."""
        ids = list(user_ids)
        if len(set(ids)) != len(ids):
            raise ValueError("user ids in a gallery must be unique")
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise ValueError(f"need an (n, dim) array for {len(ids)} ids, got shape {emb.shape}")
        gallery = self._make(model, _normalise(emb) if len(ids) else emb, ids)
        with self._write:
            self._galleries = {**self._galleries, model: gallery}

    def load(self, model: str, user_ids: Sequence[str], normalised: np.ndarray) -> None:
        """Install a gallery whose rows are already L2-normalised float32 (no copy made)."""
        with self._write:
            gallery = self._make(model, normalised, list(user_ids))
            self._galleries = {**self._galleries, model: gallery}

    def add(self, model: str, user_id: str, embedding: np.ndarray) -> None:
        self.apply(upserts=[(model, user_id, embedding)])

    def remove(self, model: str, user_id: str) -> bool:
        g = self._galleries.get(model)
        present = g is not None and user_id in g.index
        self.apply(removals=[user_id], models=[model])
        return present

    def apply(
        self,
        upserts: Iterable[tuple[str, str, np.ndarray]] = (),
        removals: Iterable[str] = (),
        models: Iterable[str] | None = None,
    ) -> None:
        """Apply a batch of changes and publish every affected gallery at once.

        ``upserts`` are ``(model, user_id, embedding)``; a user moving to another model
        leaves the old gallery. ``removals`` are user ids, removed from the galleries of
        ``models`` (default: all). A user may not be both upserted and removed in one batch.
        """
        ups: dict[str, dict[str, np.ndarray]] = {}
        for model, uid, emb in upserts:
            ups.setdefault(model, {})[uid] = emb
        gone = set(removals)
        upserted = {u for per in ups.values() for u in per}
        if gone & upserted:
            raise ValueError(
                f"users both upserted and removed in one batch: {sorted(gone & upserted)}"
            )
        scope = None if models is None else set(models)
        with self._write:
            current = self._galleries
            new = dict(current)
            for m in set(current) | set(ups):
                g = current.get(m)
                per = ups.get(m, {})
                drop = (gone if scope is None or m in scope else set()) | (upserted - per.keys())
                if per or (g is not None and drop & g.index.keys()):
                    new[m] = self._patched(m, g, per, drop)
            self._galleries = new

    def _patched(
        self, model: str, g: _Gallery | None, ups: dict[str, np.ndarray], drop: set[str]
    ) -> _Gallery:
        ids_up = list(ups)
        if ids_up:
            rows = _normalise(
                np.stack([np.asarray(v, np.float32).reshape(-1) for v in ups.values()])
            )
        else:
            rows = np.empty((0, g.dim if g else 0), np.float32)
        if g is None or not g.ids:
            return self._make(model, rows, ids_up)
        if ids_up and rows.shape[1] != g.dim:
            raise ValueError(
                f"embedding dimension {rows.shape[1]} differs from the gallery's {g.dim}"
            )
        keep = np.array([u not in drop for u in g.ids], dtype=bool)
        matrix = g.matrix[keep]  # a new array: the published snapshot stays untouched
        ids = [u for u, k in zip(g.ids, keep, strict=True) if k]
        pos = {u: i for i, u in enumerate(ids)}
        replace = [(pos[u], r) for r, u in enumerate(ids_up) if u in pos]
        if replace:
            matrix[[p for p, _ in replace]] = rows[[r for _, r in replace]]
        append = [r for r, u in enumerate(ids_up) if u not in pos]
        if append:
            matrix = np.concatenate([matrix, rows[append]])
            ids += [ids_up[r] for r in append]
        return self._make(model, matrix, ids)


@hookimpl
def fr_register_matchers(register: Any) -> None:
    def factory(cfg: NumpyMatcherConfig, ctx: Any) -> NumpyMatcher:
        app = getattr(ctx, "app_config", None)
        if cfg.threshold is not None:
            return NumpyMatcher(cfg.threshold)
        return NumpyMatcher(policy=DecisionPolicy.from_config(app) if app is not None else None)

    register(
        "numpy",
        factory,
        NumpyMatcherConfig,
        description="exact cosine search, one gallery per model, atomic batch updates, "
        "operating point calibrated per gallery",
    )
