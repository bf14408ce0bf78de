"""EventValidator: turns per-frame recognitions into confirmed ``facial_id`` events.

For every track (a face followed across frames by the tracker) it keeps the last
``confirmation_frames`` recognitions. An event is emitted when

1. the track has been seen in ``confirmation_frames`` consecutive frames (frame ids that differ
   by at most ``max_frame_gap``; a larger gap, or a frame id that goes backwards, starts the
   count again),
2. at least ``consistency_threshold`` of those frames name the same user (unknown faces,
   ``user_id=None``, count as votes for nobody and can never win), and
3. that user has had no event in the last ``cooldown_seconds`` (per user, across tracks).

After an event the track's window is cleared, so the same person standing in front of the
camera gives at most one event per cooldown. Memory is bounded: tracks not updated for
``track_expiry_frames`` frames are forgotten, at most ``max_tracks`` are kept (the least
recently updated are dropped first), and cooldown entries expire.

Both clocks are injectable for tests: ``clock`` (monotonic seconds, for cooldowns) and
``now`` (aware datetime, for the event timestamp).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fr_core.events import (
    DEFAULT_CONFIDENCE_STEEPNESS,
    DEFAULT_MATCH_THRESHOLD,
    FacialIdEvent,
    utc_now,
)

log = logging.getLogger(__name__)


@dataclass
class _Track:
    last_frame: int
    frames_tracked: int = 0
    threshold: float | None = None  # operating point (cosine distance) of the last decision
    window: deque[tuple[str | None, float]] = field(default_factory=deque)


class EventValidator:
    """Confirms identities across frames (README: "Event Validator")."""

    def __init__(
        self,
        device_id: str,
        confirmation_frames: int = 5,
        consistency_threshold: float = 0.8,
        cooldown_seconds: float = 30,
        *,
        max_frame_gap: int = 1,
        track_expiry_frames: int = 30,
        max_tracks: int = 256,
        match_threshold: float = DEFAULT_MATCH_THRESHOLD,
        confidence_steepness: float = DEFAULT_CONFIDENCE_STEEPNESS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        _require(
            isinstance(device_id, str) and bool(device_id),
            "device_id",
            device_id,
            "a non-empty string",
        )
        _require(
            _is_int(confirmation_frames) and confirmation_frames >= 1,
            "confirmation_frames",
            confirmation_frames,
            "an integer >= 1",
        )
        _require(
            _is_num(consistency_threshold) and 0 < consistency_threshold <= 1,
            "consistency_threshold",
            consistency_threshold,
            "a number in (0, 1]",
        )
        _require(
            _is_num(cooldown_seconds) and cooldown_seconds >= 0,
            "cooldown_seconds",
            cooldown_seconds,
            "a number >= 0",
        )
        _require(
            _is_int(max_frame_gap) and max_frame_gap >= 1,
            "max_frame_gap",
            max_frame_gap,
            "an integer >= 1",
        )
        _require(
            _is_int(track_expiry_frames) and track_expiry_frames >= 1,
            "track_expiry_frames",
            track_expiry_frames,
            "an integer >= 1",
        )
        _require(
            _is_int(max_tracks) and max_tracks >= 1, "max_tracks", max_tracks, "an integer >= 1"
        )
        self.device_id = device_id
        self.confirmation_frames = int(confirmation_frames)
        self.consistency_threshold = float(consistency_threshold)
        self.cooldown_seconds = float(cooldown_seconds)
        self.max_frame_gap = int(max_frame_gap)
        self.track_expiry_frames = int(track_expiry_frames)
        self.max_tracks = int(max_tracks)
        self.match_threshold = match_threshold
        self.confidence_steepness = confidence_steepness
        self._clock = clock
        self._now = now
        self._tracks: OrderedDict[str, _Track] = OrderedDict()  # least recently updated first
        self._last_event: dict[str, float] = {}  # user_id -> clock() of its last event
        self._latest_frame = -1
        self._lock = threading.Lock()
        # votes needed among the window for one user
        self._needed = math.ceil(self.consistency_threshold * self.confirmation_frames - 1e-9)

    # --- public API -------------------------------------------------------------------------

    def process_recognition(
        self,
        track_id: str,
        user_id: str | None,
        distance: float,
        frame_id: int,
        *,
        inference_ms: float = 0.0,
        match_threshold: float | None = None,
    ) -> FacialIdEvent | None:
        """Record one recognition; return a facial_id event when the identity is confirmed.

        ``distance`` is the cosine distance to ``user_id``'s enrolment (for unknown faces,
        to the nearest one): a finite number in [0, 2]. ``match_threshold`` is the cosine
        distance of the operating point that decided it (fr_core.pipeline.decision); the event's
        confidence is centred on it (default: the validator's ``match_threshold``).
        """
        _require(
            isinstance(track_id, (str, int)) and str(track_id) != "",
            "track_id",
            track_id,
            "a non-empty string",
        )
        _require(
            user_id is None or (isinstance(user_id, str) and user_id != ""),
            "user_id",
            user_id,
            "a non-empty string or None for an unknown face",
        )
        _require(
            _is_num(distance) and 0 <= distance <= 2,
            "distance",
            distance,
            "a cosine distance: a finite number in [0, 2]",
        )
        _require(_is_int(frame_id) and frame_id >= 0, "frame_id", frame_id, "an integer >= 0")
        track_id = str(track_id)
        frame_id = int(frame_id)
        with self._lock:
            self._latest_frame = max(self._latest_frame, frame_id)
            self._expire_tracks()
            track = self._tracks.get(track_id)
            if track is None or not (0 < frame_id - track.last_frame <= self.max_frame_gap):
                if track is not None:
                    log.debug(
                        "track %s: frame %d after %d, window restarted",
                        track_id,
                        frame_id,
                        track.last_frame,
                    )
                track = _Track(last_frame=frame_id)
                self._tracks[track_id] = track
                while len(self._tracks) > self.max_tracks:
                    self._tracks.popitem(last=False)
            self._tracks.move_to_end(track_id)
            track.last_frame = frame_id
            track.frames_tracked += 1
            if match_threshold is not None:
                track.threshold = float(match_threshold)
            track.window.append((user_id, float(distance)))
            if len(track.window) > self.confirmation_frames:
                track.window.popleft()
            return self._maybe_confirm(track, inference_ms)

    def forget_track(self, track_id: str) -> None:
        """Drop a track now (the tracker calls this when a track ends)."""
        with self._lock:
            self._tracks.pop(str(track_id), None)

    def withdraw(self, user_id: str) -> None:
        """Undo the cooldown the last event of ``user_id`` started: that event was not sent
        (the liveness check judged the face an attack), so the employee's own arrival must
        not wait out a cooldown it caused. An event is only returned when no cooldown ran,
        so removing the entry restores the state before it."""
        with self._lock:
            self._last_event.pop(user_id, None)

    def reset(self) -> None:
        with self._lock:
            self._tracks.clear()
            self._last_event.clear()
            self._latest_frame = -1

    @property
    def active_tracks(self) -> int:
        return len(self._tracks)

    @property
    def cooldown_entries(self) -> int:
        return len(self._last_event)

    def in_cooldown(self, user_id: str) -> bool:
        last = self._last_event.get(user_id)
        return last is not None and self._clock() - last < self.cooldown_seconds

    # --- internals --------------------------------------------------------------------------

    def _expire_tracks(self) -> None:
        horizon = self._latest_frame - self.track_expiry_frames
        while self._tracks:
            tid, oldest = next(iter(self._tracks.items()))
            if oldest.last_frame >= horizon:
                break
            del self._tracks[tid]
        now = self._clock()
        if len(self._last_event) > 64:
            for uid in [u for u, t in self._last_event.items() if now - t >= self.cooldown_seconds]:
                del self._last_event[uid]

    def _maybe_confirm(self, track: _Track, inference_ms: float) -> FacialIdEvent | None:
        if len(track.window) < self.confirmation_frames:
            return None
        votes = Counter(uid for uid, _ in track.window if uid is not None)
        if not votes:
            return None
        winner, count = votes.most_common(1)[0]
        if count < self._needed:
            return None
        now = self._clock()
        last = self._last_event.get(winner)
        if last is not None and now - last < self.cooldown_seconds:
            return None
        distances = [d for uid, d in track.window if uid == winner]
        mean_distance = sum(distances) / len(distances)
        event = FacialIdEvent.create(
            device_id=self.device_id,
            user_id=winner,
            distance=mean_distance,
            frames_tracked=track.frames_tracked,
            inference_ms=max(0.0, inference_ms),
            when=self._now(),
            threshold=self.match_threshold if track.threshold is None else track.threshold,
            steepness=self.confidence_steepness,
        )
        self._last_event[winner] = now
        track.window.clear()
        return event


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
