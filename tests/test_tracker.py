"""IoU tracker: stable ids, new faces, vanishing faces, crossing faces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fr_core.interfaces import Detection
from fr_core.tracker import IouTracker, iou


def det(x, y, w=50, h=60):
    return Detection((x, y, w, h), 0.9)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_a_moving_face_keeps_its_id():
    tr = IouTracker()
    ids = set()
    for f in range(30):
        seen, ended = tr.update([det(100 + 3 * f, 80)], f)
        ids.add(seen[0].id)
        assert ended == []
    assert len(ids) == 1 and tr.tracks[ids.pop()].hits == 30


def test_new_faces_get_new_ids_and_ids_are_never_reused():
    tr = IouTracker(max_missed=1)
    a = tr.update([det(0, 0)], 0)[0][0].id
    seen, _ = tr.update([det(0, 0), det(300, 0)], 1)
    b = next(t.id for t in seen if t.id != a)
    assert a != b
    tr.update([], 2)
    _, ended = tr.update([], 3)
    assert set(ended) == {a, b} and tr.tracks == {}
    c = tr.update([det(0, 0)], 4)[0][0].id
    assert c not in {a, b}


def test_a_short_gap_keeps_the_track():
    tr = IouTracker(max_missed=3)
    a = tr.update([det(10, 10)], 0)[0][0].id
    for f in (1, 2):
        assert tr.update([], f) == ([], [])
    assert tr.update([det(12, 10)], 3)[0][0].id == a


def test_two_faces_side_by_side_stay_apart():
    tr = IouTracker()
    first, _ = tr.update([det(0, 0), det(200, 0)], 0)
    left = next(t.id for t in first if t.bbox[0] == 0)
    for f in range(1, 20):
        seen, _ = tr.update([det(200 - 5 * f, 0), det(5 * f, 0)], f)
        assert next(t.id for t in seen if t.bbox[0] == 5 * f) == left


def test_embedding_is_skipped_for_known_faces():
    tr = IouTracker(reembed_every=10)
    t = tr.update([det(0, 0)], 0)[0][0]
    assert tr.needs_embedding(t, 0)
    t.user_id, t.embedded_frame = "EMP-1", 0
    assert tr.needs_embedding(t, 1)  # recognised but not confirmed: embed again
    t.confirmed = True
    assert not tr.needs_embedding(t, 9) and tr.needs_embedding(t, 10)


@given(
    st.lists(st.lists(st.tuples(st.integers(0, 600), st.integers(0, 400)), max_size=5), max_size=30)
)
def test_invariants(frames):
    tr = IouTracker(max_missed=2)
    for f, boxes in enumerate(frames):
        seen, ended = tr.update([det(x, y) for x, y in boxes], f)
        assert len(seen) == len(boxes)  # every detection belongs to exactly one track
        assert len({t.id for t in seen}) == len(seen)
        assert not set(ended) & set(tr.tracks)
        assert all(t.missed <= 2 for t in tr.tracks.values())
