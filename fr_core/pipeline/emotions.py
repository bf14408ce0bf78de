"""From per-frame emotion guesses to emotion events: an emotion is reported only when it
persists.

A classifier's answer for one frame is noisy; the README's emotion event stands for an
emotion that lasted (``metadata.duration_ms``) with an ``intensity``. Per track:

* an *episode* of emotion E starts at an analysis whose most probable class is E with a
  probability of at least ``min_intensity`` (E being one of the configured ``emotions``);
* it goes on while the analyses keep naming E at that intensity; one analysis that disagrees
  is tolerated (``max_misses``), more end the episode;
* when it has lasted ``min_duration_seconds`` an event is emitted, once per episode, unless
  the same person (or, for an unrecognised face, the same track) had an event for E within
  ``cooldown_seconds``.

The event's ``intensity`` is the mean probability of E over the analyses that named it; its
``confidence`` the share of the episode's analyses that named it; ``duration_ms`` the time
from the first to the last of them. Times are the camera's frame timestamps, so a replayed
video gives the same events at any processing speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from fr_core.config import EmotionSettings
from fr_core.interfaces import AnalysisResult


@dataclass
class _Episode:
    label: str
    started: float
    last: float
    score_sum: float
    named: int = 1
    analyses: int = 1
    misses: int = 0  # consecutive
    emitted: bool = False


@dataclass(frozen=True)
class EmotionDecision:
    emotion: str
    intensity: float
    confidence: float
    duration_ms: float


class EmotionPersistence:
    """Per-track episodes; :meth:`update` returns a decision when an event is due."""

    def __init__(self, settings: EmotionSettings, max_tracks: int = 256) -> None:
        self.settings = settings
        self.max_tracks = max_tracks
        self._episodes: dict[str, _Episode] = {}
        self._last_event: dict[tuple[str, str], float] = {}

    def forget_track(self, track_id: str) -> None:
        self._episodes.pop(track_id, None)

    def update(
        self, track_id: str, who: str, result: AnalysisResult, now: float
    ) -> EmotionDecision | None:
        """Record one analysis of a track's face at time ``now`` (seconds). ``who`` keys the
        cooldown: the user id, or the track for an unrecognised face."""
        s = self.settings
        strong = result.label in s.emotions and result.score >= s.min_intensity
        ep = self._episodes.get(track_id)
        if ep is not None and strong and result.label == ep.label:
            ep.last, ep.misses = now, 0
            ep.score_sum += result.score
            ep.named += 1
            ep.analyses += 1
        elif ep is not None and ep.misses < s.max_misses:
            ep.misses += 1
            ep.analyses += 1
            return None
        elif strong:
            if len(self._episodes) >= self.max_tracks and track_id not in self._episodes:
                oldest = min(self._episodes, key=lambda t: self._episodes[t].last)
                del self._episodes[oldest]
            self._episodes[track_id] = ep = _Episode(result.label, now, now, result.score)
        else:
            self._episodes.pop(track_id, None)
            return None
        if ep.emitted or ep.last - ep.started < s.min_duration_seconds:
            return None
        key = (who, ep.label)
        last = self._last_event.get(key)
        if last is not None and now - last < s.cooldown_seconds:
            return None
        ep.emitted = True
        self._last_event[key] = now
        if len(self._last_event) > 4 * self.max_tracks:
            self._last_event = {
                k: t for k, t in self._last_event.items() if now - t < s.cooldown_seconds
            }
        return EmotionDecision(
            ep.label,
            intensity=ep.score_sum / ep.named,
            confidence=ep.named / ep.analyses,
            duration_ms=(ep.last - ep.started) * 1000,
        )
