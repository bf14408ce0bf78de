"""fr_cpu on real faces: YuNet detection, SFace embeddings, checked weights."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest
from fr_cpu.models import KNOWN_MODELS, graph_file, resolve_model
from fr_cpu.opencv import reads_int8bq, version_problem

from fr_core import FrEdgeError, PluginError
from fr_core.interfaces import ComponentKind, Detector, Embedder
from fr_core.plugins import build_registry

REGISTRY = build_registry()


@pytest.fixture(scope="module")
def detector():
    d = REGISTRY.create(ComponentKind.DETECTOR, "yunet")
    assert isinstance(d, Detector)
    return d


@pytest.fixture(scope="module")
def embedder():
    e = REGISTRY.create(ComponentKind.EMBEDDER, "sface")
    assert isinstance(e, Embedder) and (e.model_name, e.dim) == ("SFace", 128)
    return e


def largest(detector, img):
    faces = detector.detect(img)
    assert faces
    return max(faces, key=lambda f: f.bbox[2] * f.bbox[3])


def embed(detector, embedder, path):
    img = cv2.imread(str(path))
    return embedder.embed(img, largest(detector, img))


def test_detects_every_face(detector, fr_data):
    two = cv2.imread(str(fr_data / "faces" / "two_people.jpg"))
    faces = detector.detect(two)
    assert len(faces) == 2 and all(f.landmarks.shape == (5, 2) for f in faces)
    for f in faces:
        x, y, w, h = f.bbox
        assert 0 <= x < two.shape[1] and 0 <= y < two.shape[0] and w > 50 and h > 50
        assert 0.6 <= f.score <= 1.0


def test_large_frames_are_downscaled_but_boxes_stay_in_frame_pixels(detector, fr_data):
    big = cv2.imread(str(fr_data / "faces" / "obama-1080p.jpg"))
    small = cv2.imread(str(fr_data / "faces" / "obama-480p.jpg"))
    fb, fs = largest(detector, big), largest(detector, small)
    scale = big.shape[1] / small.shape[1]
    assert np.allclose(np.array(fb.bbox), np.array(fs.bbox) * scale, rtol=0.15, atol=12)


def test_embeddings_separate_people(detector, embedder, fr_data):
    faces = fr_data / "faces"
    a = embed(detector, embedder, faces / "obama.jpg")
    a2 = embed(detector, embedder, faces / "obama2.jpg")
    b = embed(detector, embedder, faces / "biden.jpg")
    assert a.dtype == np.float32 and a.shape == (128,) and abs(np.linalg.norm(a) - 1) < 1e-5
    # the shared data's reference figures (YuNet + SFace int8bq): 0.730 and 0.125
    assert float(a @ a2) == pytest.approx(0.730, abs=0.03)
    assert float(a @ b) == pytest.approx(0.125, abs=0.05)
    assert float(a @ a2) > 0.363 > float(a @ b)  # SFace's threshold separates them


def test_model_files_are_checked(tmp_path):
    good = resolve_model("face_detection_yunet_2023mar_int8bq.onnx", None, None)
    bad = tmp_path / good.name
    shutil.copy(good, bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(PluginError, match=r"SHA-256 .* expected .* not loaded"):
        REGISTRY.create(ComponentKind.DETECTOR, "yunet", {"model_path": str(bad)})
    other = tmp_path / "mine.onnx"
    shutil.copy(good, other)
    with pytest.raises(FrEdgeError, match="unknown model file; give its sha256"):
        resolve_model("x", other, None)
    assert resolve_model("x", other, KNOWN_MODELS[good.name]) == other
    with pytest.raises(FrEdgeError, match="does not exist"):
        resolve_model("x", tmp_path / "none.onnx", None)


def test_this_is_the_opencv_ci_meant():
    """`make test-cv48` runs this file on OpenCV 4.8.1 (JetPack 6's) and says so with
    FR_EXPECT_OPENCV: the run fails if that venv got another OpenCV."""
    expected = os.environ.get("FR_EXPECT_OPENCV")
    if expected:
        assert cv2.__version__.startswith(expected), cv2.__version__
    assert version_problem(cv2.__version__) is None


def test_opencv_versions_and_graphs():
    assert version_problem("4.8.1") is None and version_problem("5.0.0") is None
    assert "older than 4.8" in version_problem("4.7.0")
    assert not reads_int8bq("4.8.1") and not reads_int8bq("4.10.0") and reads_int8bq("4.11.0")


def test_the_graph_follows_the_opencv(monkeypatch, tmp_path):
    """auto: int8bq on 4.11+, the float graph on 4.8-4.10; int8bq asked on 4.8 is refused."""
    source = resolve_model("face_recognition_sface_2021dec_int8bq.onnx", None, None)
    monkeypatch.setattr(cv2, "__version__", "4.8.1")
    derived = graph_file(source, "auto", tmp_path)
    assert derived.parent == tmp_path and "-float-" in derived.name
    with pytest.raises(FrEdgeError, match=r"graph: int8bq: OpenCV 4\.8\.1 cannot parse"):
        graph_file(source, "int8bq", tmp_path)
    monkeypatch.setattr(cv2, "__version__", "4.11.0")
    assert graph_file(source, "auto", tmp_path) == source
    assert graph_file(source, "float", tmp_path) == derived


def test_bad_frames(detector):
    with pytest.raises(ValueError, match="uint8 BGR"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_broker_enrols_from_a_photo(fr_data, tmp_path):
    from click.testing import CliRunner

    from fr_core.app.cli import main

    data = str(tmp_path / "b")
    out = CliRunner().invoke(
        main,
        [
            "broker",
            "enrol",
            "--data",
            data,
            "EMP-LMM",
            "--photo",
            str(fr_data / "faces" / "lin-manuel-miranda.png"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "enrolled EMP-LMM (SFace, 128 values) as version 1" in out.output
    out = CliRunner().invoke(
        main,
        [
            "broker",
            "enrol",
            "--data",
            data,
            "EMP-2",
            "--photo",
            str(fr_data / "faces" / "two_people.jpg"),
        ],
    )
    assert out.exit_code == 1
    assert "2 faces found; an enrolment photo shows exactly one" in out.output
