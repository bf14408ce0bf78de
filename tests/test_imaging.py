"""compress_image_for_event: crop, size target, few encodes, clear errors."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fr_core import compress_image_for_event
from fr_core.delivery.imaging import compress_face_jpeg, crop_box

from .faces import face_crops, large_frames


def decode(b64: str) -> np.ndarray:
    raw = base64.b64decode(b64, validate=True)
    assert raw[:2] == b"\xff\xd8"
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img


@pytest.fixture(scope="module")
def crops(fr_data):
    found = face_crops(fr_data)
    assert len(found) >= 15, "YuNet should find a face in most shared photos"
    return found


@pytest.mark.parametrize("target_kb", [2, 5, 10, 20, 50, 100])
def test_real_faces_never_exceed_the_target(crops, target_kb):
    encodes = []
    for name, img, bbox in crops:
        result = compress_face_jpeg(img, target_kb, bbox)
        assert result.size <= target_kb * 1024, name
        encodes.append(result.encodes)
        assert decode(base64.b64encode(result.data).decode()).shape[:2] == (
            result.height,
            result.width,
        )
    assert np.mean(encodes) <= 1.5


def test_full_frames_never_exceed_the_target(fr_data):
    frames = large_frames(fr_data)
    assert any(img.shape[:2] == (1080, 1920) for _, img in frames)
    for name, img in frames:
        for target in (20, 50):
            jpeg = compress_face_jpeg(img, target)
            assert jpeg.size <= target * 1024, (name, target)
            assert jpeg.quality >= 40, "a full frame is shrunk before its quality collapses"


def test_a_small_face_keeps_full_resolution(crops):
    _, img, bbox = next(c for c in crops if c[0] == "obama-240p.jpg")
    jpeg = compress_face_jpeg(img, 50, bbox)
    assert jpeg.scale == 1.0 and jpeg.quality == 90


def test_crop_is_the_bbox_plus_margin_clipped_to_the_frame():
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[40:120, 50:110] = 255  # the "face"
    img = decode(compress_image_for_event(frame, 50, [50, 40, 60, 80]))
    # margin 0.4 of the box on each side: x 26..134, y 8..152
    assert img.shape[:2] == (144, 108)
    # the face sits where the margin says it should
    assert img[32 + 5, 24 + 5].mean() > 200 and img[10, 10].mean() < 50
    assert crop_box(frame.shape, [280, 180, 40, 40], 0.4) == (264, 164, 300, 200)
    assert crop_box(frame.shape, [-20, -10, 40, 30], 0.0) == (0, 0, 20, 20)


def test_no_bbox_encodes_the_whole_frame():
    frame = np.full((120, 160, 3), 128, np.uint8)
    assert decode(compress_image_for_event(frame)).shape[:2] == (120, 160)


@pytest.mark.parametrize(
    ("bbox", "fragment"),
    [
        ([400, 10, 20, 20], "wholly outside the 300x200 frame"),
        ([-50, 10, 20, 20], "wholly outside"),
        ([10, 10, 0, 20], "degenerate"),
        ([10, 10, 20, -5], "degenerate"),
        ([10, 10, float("nan"), 5], "finite"),
        ([10, 10, 20], "four numbers"),
        ("face", "four numbers"),
    ],
)
def test_bad_bboxes(bbox, fragment):
    with pytest.raises(ValueError, match=fragment):
        compress_image_for_event(np.zeros((200, 300, 3), np.uint8), 50, bbox)


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (np.zeros((10, 10, 3), np.float32), "dtype uint8"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 4, 3), np.uint8), "shape"),
        ([[0, 1], [2, 3]], "numpy array"),
    ],
)
def test_bad_frames(frame, fragment):
    with pytest.raises(ValueError, match=fragment):
        compress_image_for_event(frame)


@pytest.mark.parametrize("target", [0, 1.9, -5, float("nan"), "50", True])
def test_bad_targets(target):
    with pytest.raises(ValueError, match="target_size_kb"):
        compress_image_for_event(np.zeros((10, 10, 3), np.uint8), target)


def test_gray_and_bgra_frames_are_accepted():
    gray = np.tile(np.arange(64, dtype=np.uint8), (48, 1))
    assert decode(compress_image_for_event(gray)).ndim == 2
    bgra = np.zeros((48, 64, 4), np.uint8)
    assert decode(compress_image_for_event(bgra)).shape == (48, 64, 3)


def test_noise_the_model_cannot_predict_still_fits():
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    for target in (2, 10, 50):
        assert compress_face_jpeg(noise, target).size <= target * 1024


images = hnp.arrays(
    np.uint8,
    st.tuples(st.integers(1, 160), st.integers(1, 160), st.just(3)),
    elements=st.integers(0, 255),
)


@given(
    images,
    st.floats(2, 80),
    st.tuples(st.floats(-200, 300), st.floats(-200, 300), st.floats(-10, 200), st.floats(-10, 200))
    | st.none(),
)
def test_any_input_is_a_jpeg_within_target_or_a_value_error(image, target, bbox):
    try:
        out = compress_image_for_event(image, target, bbox)
    except ValueError as exc:
        assert str(exc)
        return
    raw = base64.b64decode(out)
    assert len(raw) <= target * 1024
    assert decode(out) is not None
