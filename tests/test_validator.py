"""EventValidator: the spec's behaviour, its invariants, and bounded memory."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fr_core import EventValidator, FacialIdEvent


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make(**kw):
    clock = FakeClock()
    v = EventValidator(
        device_id="cam-001",
        clock=clock,
        now=lambda: datetime(2026, 1, 15, 10, tzinfo=timezone.utc),
        **kw,
    )
    return v, clock


def feed(v, track, users, start=0, distance=0.28):
    return [
        v.process_recognition(track_id=track, user_id=u, distance=distance, frame_id=start + i)
        for i, u in enumerate(users)
    ]


def test_spec_example():
    validator = EventValidator(
        device_id="cam-001", confirmation_frames=5, consistency_threshold=0.8, cooldown_seconds=30
    )
    events = [
        validator.process_recognition(
            track_id="face_0", user_id="EMP-123", distance=0.28, frame_id=100 + i
        )
        for i in range(5)
    ]
    assert events[:4] == [None] * 4
    event = events[4]
    assert isinstance(event, FacialIdEvent)
    assert (event.user_id, event.device_id, event.event_type) == ("EMP-123", "cam-001", "facial_id")
    assert event.metadata.frames_tracked == 5 and event.metadata.distance == 0.28
    assert event.confidence == pytest.approx(0.92, abs=0.01)


def test_needs_n_consecutive_frames():
    v, _ = make(confirmation_frames=5)
    assert feed(v, "t", ["A"] * 4) == [None] * 4
    # frame 5 is skipped: the count starts again at frame 6
    assert feed(v, "t", ["A"] * 4, start=6) == [None] * 4
    assert feed(v, "t", ["A"], start=10)[0] is not None


def test_frame_gap_tolerance_is_configurable():
    v, _ = make(confirmation_frames=3, max_frame_gap=2)
    assert v.process_recognition("t", "A", 0.3, 0) is None
    assert v.process_recognition("t", "A", 0.3, 2) is None
    assert v.process_recognition("t", "A", 0.3, 4) is not None


def test_frame_going_backwards_restarts_the_track():
    v, _ = make(confirmation_frames=3)
    feed(v, "t", ["A", "A"], start=10)
    assert feed(v, "t", ["A", "A"], start=5) == [None, None]
    assert feed(v, "t", ["A"], start=7)[0] is not None


def test_consistency_ratio():
    v, _ = make(confirmation_frames=5, consistency_threshold=0.8)
    assert feed(v, "t", ["A", "B", "A", "B", "A"]) == [None] * 5  # 3/5 < 0.8
    event = feed(v, "t", ["A"], start=5)[0]  # window B A B A A ... still 3/5
    assert event is None
    assert feed(v, "t", ["A"], start=6)[0] is not None  # A B A A A: 4/5


def test_mean_distance_of_the_winning_votes():
    v, _ = make(confirmation_frames=4, consistency_threshold=0.75)
    for i, (u, d) in enumerate([("A", 0.2), ("B", 0.5), ("A", 0.3), ("A", 0.4)]):
        event = v.process_recognition("t", u, d, i)
    assert event.metadata.distance == pytest.approx(0.3)


def test_unknown_faces_never_produce_events():
    v, _ = make(confirmation_frames=3, consistency_threshold=0.5)
    assert all(e is None for e in feed(v, "t", [None] * 50))
    assert feed(v, "u", [None, "A", None, "A"])[-1] is not None  # 2 of 3 for A


def test_cooldown_per_user_across_tracks():
    v, clock = make(confirmation_frames=2, cooldown_seconds=30)
    assert feed(v, "t1", ["A", "A"])[-1] is not None
    assert v.in_cooldown("A")
    clock.t += 29.9
    assert all(e is None for e in feed(v, "t2", ["A"] * 10, start=2))
    assert feed(v, "t3", ["B", "B"], start=12)[-1] is not None  # other users are not held up
    clock.t += 0.2
    assert feed(v, "t2", ["A"], start=12)[0] is not None


def test_one_event_per_cooldown_for_a_person_who_stays():
    v, clock = make(confirmation_frames=5, cooldown_seconds=30)
    events = []
    for frame in range(3000):  # 100 s at 30 fps
        clock.t += 1 / 30
        events.append(v.process_recognition("t", "A", 0.3, frame))
    got = [e for e in events if e]
    assert len(got) == 4  # t = 0, 30, 60, 90 s


def test_vanished_tracks_are_forgotten():
    v, _ = make(confirmation_frames=5, track_expiry_frames=30)
    for t in range(100):
        v.process_recognition(f"track-{t}", "A", 0.3, frame_id=t)
    assert v.active_tracks <= 31
    v.forget_track("track-99")
    assert v.active_tracks <= 30


def test_memory_is_bounded_even_without_expiry():
    v, clock = make(confirmation_frames=2, max_tracks=50, cooldown_seconds=1)
    for i in range(5000):
        clock.t += 0.01
        v.process_recognition(f"t{i % 997}", f"user-{i}", 0.3, frame_id=i // 1000)
    assert v.active_tracks <= 50
    assert v.cooldown_entries <= 64 + 100  # entries older than the cooldown are pruned


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"confirmation_frames": 0}, "confirmation_frames must be an integer >= 1"),
        ({"confirmation_frames": 2.5}, "confirmation_frames must be an integer >= 1"),
        ({"consistency_threshold": 0}, r"consistency_threshold must be a number in \(0, 1\]"),
        ({"consistency_threshold": 1.1}, "consistency_threshold"),
        ({"cooldown_seconds": -1}, "cooldown_seconds must be a number >= 0"),
        ({"device_id": ""}, "device_id must be a non-empty string"),
    ],
)
def test_bad_constructor_arguments(kwargs, fragment):
    args = {"device_id": "cam-001", **kwargs}
    with pytest.raises(ValueError, match=fragment):
        EventValidator(**args)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("", "A", 0.3, 1), "track_id"),
        (("t", "", 0.3, 1), "user_id"),
        (("t", "A", float("nan"), 1), "distance"),
        (("t", "A", 2.5, 1), "distance"),
        (("t", "A", 0.3, -1), "frame_id"),
        (("t", "A", 0.3, 1.5), "frame_id"),
    ],
)
def test_bad_recognitions(args, fragment):
    v, _ = make()
    with pytest.raises(ValueError, match=fragment):
        v.process_recognition(*args)


# --- against an oracle written from the documented rules --------------------------------

steps = st.lists(
    st.tuples(
        st.integers(0, 2),  # frame advance
        st.sampled_from(["t0", "t1", "t2"]),
        st.sampled_from(["A", "B", None]),
        st.floats(0, 2),  # distance
        st.floats(0, 20),  # seconds that pass
    ),
    max_size=150,
)


@given(
    steps,
    st.integers(1, 6),
    st.sampled_from([0.5, 0.6, 0.8, 1.0]),
    st.sampled_from([0, 5, 30]),
    st.integers(1, 3),
    st.integers(1, 8),
)
def test_matches_the_documented_rules(steps, n, ratio, cooldown, gap, expiry):
    v, clock = make(
        confirmation_frames=n,
        consistency_threshold=ratio,
        cooldown_seconds=cooldown,
        max_frame_gap=gap,
        track_expiry_frames=expiry,
    )
    needed = math.ceil(ratio * n - 1e-9)
    history = {}  # track -> list of (frame, user, distance, evented)
    last_event = {}
    frame, latest = 0, -1
    for advance, track, user, dist, dt in steps:
        frame += advance
        clock.t += dt
        latest = max(latest, frame)
        got = v.process_recognition(track, user, dist, frame)

        # the run of consecutive observations this one extends
        run = history.get(track, [])
        if run and not (0 < frame - run[-1][0] <= gap and run[-1][0] >= latest - expiry):
            run = []
        run = [*run, (frame, user, dist, False)]
        since_event = []
        for obs in reversed(run[:-1]):
            if obs[3]:
                break
            since_event.append(obs)
        window = ([*reversed(since_event), run[-1]])[-n:]
        expected_user = None
        if len(window) == n:
            votes = Counter(u for _, u, _, _ in window if u is not None)
            if votes:
                winner, count = votes.most_common(1)[0]
                cooling = winner in last_event and clock.t - last_event[winner] < cooldown
                if count >= needed and not cooling:
                    expected_user = winner
        if expected_user is None:
            assert got is None
        else:
            assert got is not None and got.user_id == expected_user
            assert got.metadata.frames_tracked == len(run)
            wins = [d for _, u, d, _ in window if u == expected_user]
            assert got.metadata.distance == pytest.approx(sum(wins) / len(wins), abs=1e-4)
            last_event[expected_user] = clock.t
            run[-1] = (frame, user, dist, True)
        history[track] = run
