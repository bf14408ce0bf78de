"""The liveness gate: several independent cues, each its own analyzer plugin, fused into one
decision per track (docs/liveness.md, "Cues and their fusion").

A **cue** is an analyzer whose ``gates_identity`` is true. It has a ``threshold`` and may
have a ``min_face_size`` (faces whose box's shorter side is smaller are not shown to it).
Two shapes of cue exist:

* **frame cues** (MiniFASNet's texture, the context around the face, an IR or depth
  plane) score one face in one frame: ``analyze(frame, detection)`` returns an
  :class:`~fr_core.interfaces.AnalysisResult` whose ``score`` is the live score in
  [0, 1]; the track's score is the mean over its last ``window`` scored frames.
* **track cues** (the head's motion over the track) implement
  :class:`~fr_core.interfaces.LivenessCue`: ``observe(result, detection)`` keeps what it
  needs of one frame (``None``: nothing usable in this frame), and ``judge(observations)``
  gives the track's live score, or ``None`` to abstain (no evidence either way, e.g. a head
  that did not move). A frame cue may implement ``observe`` too, to read the frame's IR or
  depth plane from the :class:`~fr_core.interfaces.FrameResult`.

**The fusion rule** (``all``, :func:`decide`): a track is live when at least one cue is
conclusive and every conclusive cue scores it at or above its own threshold. An attack
therefore has to fool every cue that has something to say (docs/liveness.md, "Honest
thresholds" for how the thresholds are chosen). A cue with enough observations that
refuses decides at once; otherwise a cue that has fewer than ``min_observations`` usable
frames keeps the decision waiting, as does a set of cues that all abstain. The
fused score, for reports and DET curves, is the least of the cues' *calibrated* scores,
each mapped piecewise-linearly so that its threshold lands on 0.5; with one cue it is that
cue's own score and threshold, so a one-cue device reports what it always did.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fr_core.interfaces import Detection, FrameResult

FUSION_RULES = ("all",)
FUSED_THRESHOLD = 0.5


def calibrated(score: float, threshold: float) -> float:
    """``score`` mapped so that 0 -> 0, ``threshold`` -> 0.5 and 1 -> 1 (linear between):
    scores of cues with different thresholds become comparable."""
    if score < threshold:
        return 0.5 * score / threshold
    return 0.5 + 0.5 * (score - threshold) / (1.0 - threshold) if threshold < 1 else 1.0


def cue_name(cue: Any) -> str:
    return str(getattr(cue, "name", type(cue).__name__))


class CueError(ValueError):
    """A cue's output that cannot be used (a score that is not a number in [0, 1])."""


@dataclass(frozen=True)
class CueScore:
    cue: str
    score: float | None  # None: the cue abstained (no evidence either way), or is waiting
    threshold: float
    observations: int
    waiting: bool = False  # fewer usable frames than the cue needs to judge

    @property
    def live(self) -> bool | None:
        return None if self.score is None else self.score >= self.threshold


@dataclass(frozen=True)
class Verdict:
    """A track's liveness decision: ``live``, ``attack`` or ``wait`` (not enough yet)."""

    state: str
    score: float  # the fused score (one cue: its own score)
    threshold: float  # what ``score`` is compared with (one cue: its own threshold)
    frames: int  # frames behind the decision (the most any cue used)
    cues: tuple[CueScore, ...] = ()
    deciding: str | None = None  # the cue furthest below its threshold, for an attack

    def cue(self, name: str) -> CueScore | None:
        return next((c for c in self.cues if c.cue == name), None)


@dataclass
class TrackLiveness:
    """What the gate keeps of one track: each cue's last observations."""

    observations: dict[str, deque[Any]] = field(default_factory=dict)

    def clear(self) -> None:
        self.observations.clear()


@dataclass
class ObserveOutcome:
    scored: int = 0  # cues that kept an observation of this frame
    unscored: int = 0  # cues that found nothing usable (None)
    errors: list[tuple[str, BaseException | str]] = field(default_factory=list)
    ms: float = 0.0


def _score_of(value: Any, cue: str) -> float:
    score = float(getattr(value, "score", value))
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise CueError(f"{cue}: score {score!r} is not a number in [0, 1]")
    return score


class LivenessGate:
    """Observes the faces of tracks being confirmed, for every cue, and decides."""

    def __init__(
        self, cues: Sequence[Any], confirmation_frames: int = 5, *, rule: str = "all"
    ) -> None:
        if not cues:
            raise ValueError("a liveness gate needs at least one cue")
        if rule not in FUSION_RULES:
            raise ValueError(f"fusion rule {rule!r}: allowed {', '.join(FUSION_RULES)}")
        names = [cue_name(c) for c in cues]
        if len(set(names)) != len(names):
            raise ValueError(f"liveness cues need distinct names, got {names}")
        if confirmation_frames < 1:
            raise ValueError("confirmation_frames must be >= 1")
        self.cues = list(cues)
        self.rule = rule
        self.confirmation_frames = confirmation_frames
        for cue in self.cues:
            t = float(cue.threshold)
            if not 0.0 < t < 1.0:
                raise ValueError(f"cue {cue_name(cue)}: threshold {t} is not in (0, 1)")
            for key in ("window", "min_observations"):
                value = getattr(cue, key, 1)
                if not isinstance(value, int) or value < 1:
                    raise ValueError(f"cue {cue_name(cue)}: {key} must be an integer >= 1")

    # --- the cues' parameters -----------------------------------------------------------

    def window(self, cue: Any) -> int:
        return max(1, int(getattr(cue, "window", self.confirmation_frames)))

    def needed(self, cue: Any) -> int:
        return min(
            self.window(cue), int(getattr(cue, "min_observations", self.confirmation_frames))
        )

    @property
    def min_face_size(self) -> float:
        """Faces smaller than this are shown to no cue."""
        return min(float(getattr(c, "min_face_size", 0.0)) for c in self.cues)

    @property
    def threshold(self) -> float:
        return float(self.cues[0].threshold) if len(self.cues) == 1 else FUSED_THRESHOLD

    # --- per frame ------------------------------------------------------------------------

    def observe(
        self, state: TrackLiveness, result: FrameResult, detection: Detection
    ) -> ObserveOutcome:
        """Show this frame's face to every cue that judges a face of its size. A cue that
        raises or returns an unusable score costs only its own observation of this frame."""
        out = ObserveOutcome()
        side = min(detection.bbox[2], detection.bbox[3])
        t0 = time.perf_counter()
        for cue in self.cues:
            name = cue_name(cue)
            if side < float(getattr(cue, "min_face_size", 0.0)):
                continue
            try:
                if hasattr(cue, "observe"):
                    value = cue.observe(result, detection)
                    if value is not None and not hasattr(cue, "judge"):
                        value = _score_of(value, name)  # the gate averages these
                else:
                    value = _score_of(cue.analyze(result.frame, detection), name)
            except Exception as exc:  # a faulty cue costs its observation, not the frame
                out.errors.append((name, exc))
                continue
            if value is None:
                out.unscored += 1
                continue
            kept = state.observations.get(name)
            if kept is None:
                kept = state.observations[name] = deque(maxlen=self.window(cue))
            kept.append(value)
            out.scored += 1
        out.ms = (time.perf_counter() - t0) * 1000
        return out

    # --- per track ------------------------------------------------------------------------

    def cue_scores(self, state: TrackLiveness) -> list[CueScore]:
        """Each cue's score for the track: a number, ``None`` for a cue that abstained, and
        ``waiting`` for one with fewer than its ``min_observations`` usable frames. The
        evaluation (``fr-edge evaluate-liveness``) judges tracks with this same method."""
        scores: list[CueScore] = []
        for cue in self.cues:
            name = cue_name(cue)
            kept = list(state.observations.get(name, ()))
            threshold = float(cue.threshold)
            if len(kept) < self.needed(cue):
                scores.append(CueScore(name, None, threshold, len(kept), waiting=True))
                continue
            if hasattr(cue, "judge"):
                raw = cue.judge(kept)
                score = None if raw is None else _score_of(raw, name)
            else:  # every value was checked when it was observed
                score = sum(float(v) for v in kept) / len(kept)
            scores.append(CueScore(name, score, threshold, len(kept)))
        return scores

    def judge(self, state: TrackLiveness) -> Verdict:
        """The track's verdict from what the cues observed (see the module's docstring)."""
        return decide(self.cue_scores(state), single=len(self.cues) == 1)


def rule_all(cues: Iterable[tuple[float | None, float, bool]]) -> bool | None:
    """The fusion rule 'all' on (score or None, threshold, waiting) per cue: False (attack)
    as soon as one conclusive cue is below its threshold, None (wait) while a cue is waiting
    or none is conclusive, else True (live). The gate and the evaluation both decide by it."""
    waiting = conclusive = False
    for score, threshold, cue_waiting in cues:
        if score is not None:
            if score < threshold:
                return False  # a refusal never waits for a slower cue
            conclusive = True
        waiting = waiting or cue_waiting
    return None if waiting or not conclusive else True


def decide(scores: Sequence[CueScore], *, single: bool = False) -> Verdict:
    """The fusion rule 'all' on the cues' scores: **attack** as soon as one cue with enough
    observations scores the track below its threshold (a cue still waiting never delays a
    refusal); **live** only when no cue is waiting, at least one is conclusive and every
    conclusive cue is at or above its threshold; otherwise **wait**."""
    frames = max((c.observations for c in scores), default=0)
    conclusive = [c for c in scores if c.score is not None]
    refusing = [c for c in conclusive if not c.live]
    fused = {c.cue: calibrated(c.score, c.threshold) for c in conclusive if c.score is not None}
    if single and conclusive:
        only = conclusive[0]
        assert only.score is not None
        state = "live" if only.live else "attack"
        return Verdict(
            state,
            only.score,
            only.threshold,
            frames,
            tuple(scores),
            None if only.live else only.cue,
        )
    verdict = rule_all((c.score, c.threshold, c.waiting) for c in scores)
    if verdict is False:
        worst = min((c.cue for c in refusing), key=lambda k: fused[k])
        return Verdict("attack", fused[worst], FUSED_THRESHOLD, frames, tuple(scores), worst)
    if verdict is None:
        return Verdict("wait", 0.0, FUSED_THRESHOLD, frames, tuple(scores))
    worst = min(fused, key=lambda k: fused[k])
    return Verdict("live", fused[worst], FUSED_THRESHOLD, frames, tuple(scores))
