"""A small IoU tracker: stable track ids for faces across frames.

Each frame's detections are matched to the live tracks greedily by box overlap (intersection
over union, highest first, at least ``iou_threshold``). A detection left over starts a new
track; a track not matched for more than ``max_missed`` frames ends, and its id is reported
so that the EventValidator can forget it at once. Ids are never reused.

A track remembers the identity it was last recognised as and when, so the pipeline can skip
re-embedding a face whose identity is confirmed (``needs_embedding``).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fr_core.interfaces import Detection
from fr_core.pipeline.liveness import TrackLiveness


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: str
    detection: Detection
    first_frame: int
    last_frame: int
    hits: int = 1
    missed: int = 0
    user_id: str | None = None  # last recognised identity
    distance: float = 1.0
    confirmed: bool = False  # the EventValidator confirmed user_id on this track
    embedded_frame: int = -(10**9)  # frame of the last embedding
    streak: int = 0  # consecutive embeddings that gave user_id (a user, or nobody)
    labels: dict[str, float] = field(default_factory=dict)
    threshold_distance: float | None = None  # operating point of the last decision
    embeddings: deque[Any] = field(default_factory=deque)  # the last ones, for fusion
    live_state: TrackLiveness = field(default_factory=TrackLiveness)  # cues' observations
    liveness: str | None = None  # "live" or "attack" once decided

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return self.detection.bbox


class IouTracker:
    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_missed: int = 10,
        reembed_every: int = 15,
        *,
        stable_after: int = 5,
        unknown_recheck: int = 5,
    ) -> None:
        if (
            not 0 < iou_threshold < 1
            or max_missed < 0
            or reembed_every < 1
            or stable_after < 1
            or unknown_recheck < 1
        ):
            raise ValueError(
                "need 0 < iou_threshold < 1, max_missed >= 0, and reembed_every, "
                "stable_after, unknown_recheck >= 1"
            )
        self.stable_after, self.unknown_recheck = stable_after, unknown_recheck
        self.iou_threshold, self.max_missed, self.reembed_every = (
            iou_threshold,
            max_missed,
            reembed_every,
        )
        self.tracks: dict[str, Track] = {}
        self._ids = itertools.count(1)

    def update(self, detections: Sequence[Detection], frame: int) -> tuple[list[Track], list[str]]:
        """Match this frame's detections; returns (tracks seen in this frame, ended ids)."""
        pairs = sorted(
            (
                (iou(t.bbox, d.bbox), tid, i)
                for tid, t in self.tracks.items()
                for i, d in enumerate(detections)
            ),
            reverse=True,
        )
        used_t: set[str] = set()
        used_d: set[int] = set()
        seen: list[Track] = []
        for score, tid, i in pairs:
            if score < self.iou_threshold:
                break
            if tid in used_t or i in used_d:
                continue
            used_t.add(tid)
            used_d.add(i)
            t = self.tracks[tid]
            t.detection, t.last_frame, t.hits, t.missed = detections[i], frame, t.hits + 1, 0
            seen.append(t)
        for i, d in enumerate(detections):
            if i not in used_d:
                t = Track(f"t{next(self._ids)}", d, frame, frame)
                self.tracks[t.id] = t
                seen.append(t)
        ended = []
        for tid, t in list(self.tracks.items()):
            if tid not in used_t and t.last_frame != frame:
                t.missed += 1
                if t.missed > self.max_missed:
                    ended.append(tid)
                    del self.tracks[tid]
        return seen, ended

    def needs_embedding(self, track: Track, frame: int) -> bool:
        """Embed every frame until the track's identity is settled; then only now and then,
        carrying the identity in between.

        Settled means confirmed (an event was emitted for it) or stable: ``stable_after``
        consecutive embeddings gave the same answer. A recognised identity is then checked
        every ``reembed_every`` frames; "nobody" every ``unknown_recheck`` frames (sooner:
        the person may turn towards the camera). One lucky frame never stands in for many:
        an identity is carried only after as many agreeing embeddings as the EventValidator
        needs to confirm it (both default to 5).
        """
        since = frame - track.embedded_frame
        if track.confirmed:
            return since >= self.reembed_every
        if track.streak >= self.stable_after:
            return since >= (self.reembed_every if track.user_id else self.unknown_recheck)
        return True
