"""IoU tracker: stable ids, new faces, vanishing faces, crossing faces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fr_core.interfaces import Detection
from fr_core.pipeline.tracker import IouTracker, iou


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


def test_a_stable_identity_is_carried_and_rechecked():
    tr = IouTracker(reembed_every=15, stable_after=5, unknown_recheck=4)
    t = tr.update([det(0, 0)], 0)[0][0]
    t.user_id, t.embedded_frame = "EMP-1", 10
    for streak in range(1, 5):  # fewer agreeing embeddings than the validator needs
        t.streak = streak
        assert tr.needs_embedding(t, 11)
    t.streak = 5  # as many as the validator needs: carried, checked every 15 frames
    assert not tr.needs_embedding(t, 24) and tr.needs_embedding(t, 25)
    t.user_id = None  # nobody, stably: checked sooner, the person may turn to the camera
    assert not tr.needs_embedding(t, 13) and tr.needs_embedding(t, 14)


def test_the_stage_counts_agreeing_embeddings_and_resets_on_a_change(fr_data):
    """Real models on the Hamilton clip: the streak grows while the embeddings agree, a
    different answer starts it again and un-confirms the track."""
    import cv2
    from fr_numpy import NumpyMatcher

    from fr_core import EventValidator
    from fr_core.interfaces import ComponentKind, FrameResult, ReadStatus
    from fr_core.pipeline.recognition import RecognitionStage
    from fr_core.plugins import build_registry

    reg = build_registry()
    d, e = reg.create(ComponentKind.DETECTOR, "yunet"), reg.create(ComponentKind.EMBEDDER, "sface")
    photo = cv2.imread(str(fr_data / "faces" / "obama.jpg"))
    face = d.detect(photo)[0]
    m = NumpyMatcher(threshold=0.637)
    m.replace_gallery("SFace", ["EMP-OBAMA"], e.embed(photo, face)[None, :])
    stage = RecognitionStage(d, e, m, EventValidator("cam-001", 5, 0.8, 3600))
    for i in range(8):
        stage(None, FrameResult(ReadStatus.FRAME, photo, i, i / 10))
    (track,) = stage.tracker.tracks.values()
    assert track.user_id == "EMP-OBAMA" and track.streak == 5 and track.confirmed
    assert stage.stats.embeddings == 5  # frames 5-7 carried the identity
    m.replace_gallery("SFace", ["EMP-OTHER"], -e.embed(photo, face)[None, :])
    for i in range(8, 8 + 16):
        stage(None, FrameResult(ReadStatus.FRAME, photo, i, i / 10))
    assert track.user_id is None and not track.confirmed and 1 <= track.streak <= 5


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
