"""The TensorRT plugin off Jetson: its list of TensorRT calls checked against the real
bindings of TensorRT 8.6.1 and 10.7, the engine cache keys, and the plugin's own code run on
the simulated TensorRT (OpenCV DNN over the same ONNX) giving what the CPU plugin gives."""

from __future__ import annotations

import json
import re
import zipfile

import cv2
import numpy as np
import pytest
from fr_cpu.emotion import EmotionAnalyzer, EmotionConfig
from fr_cpu.models import SFaceConfig, SFaceEmbedder, YuNetConfig, YuNetDetector
from fr_hal_sim.accelerator import NumpyAccelerator
from fr_tensorrt import api
from fr_tensorrt.cache import EngineCache, engine_key
from fr_tensorrt.models import (
    EmotionTrt,
    EmotionTrtConfig,
    SFaceTrt,
    TrtConfig,
    YuNetTrt,
    YuNetTrtConfig,
)
from fr_tensorrt.runner import TrtModel
from fr_tensorrt.simulated import SimulatedTensorRT

from fr_core.interfaces import AcceleratorInfo, ComponentKind
from fr_core.plugins import build_registry

from .conftest import REPO

TRT_API = REPO / ".venv" / "trt-api"


def surface(wheel_glob):
    wheels = sorted(TRT_API.glob(wheel_glob))
    assert wheels, f"{TRT_API}/{wheel_glob} missing: `make venv` downloads the TensorRT bindings"
    with zipfile.ZipFile(wheels[0]) as z:
        blob = b"".join(
            z.read(n) for n in z.namelist() if n.endswith(("tensorrt.so", "__init__.py"))
        )

    def has(name):
        # a whole identifier, or the tail of a longer string (the linker merges "INPUT" into
        # "CONDITIONAL_INPUT\0")
        word = re.search(rb"(?<![A-Za-z0-9_])" + name.encode() + rb"(?![A-Za-z0-9_])", blob)
        return word is not None or (name.encode() + b"\x00") in blob

    return has


@pytest.fixture(
    scope="module", params=["tensorrt_bindings-8.6.1-*.whl", "tensorrt_cu12_bindings-10.7.0-*.whl"]
)
def trt_surface(request):
    return request.param, surface(request.param)


def test_every_call_we_make_exists_in_tensorrt_8_6_and_10(trt_surface):
    which, has = trt_surface
    missing = [n for n in api.TRT_NAMES if not has(n)]
    assert missing == [], f"{which} lacks {missing}"


def test_the_scan_tells_the_versions_apart():
    """The check above can fail: the binding-index API 10.0 removed is found in 8.6's
    bindings and not in 10.7's, and the progress monitor only in 10.7's."""
    old, new = (
        surface("tensorrt_bindings-8.6.1-*.whl"),
        surface("tensorrt_cu12_bindings-10.7.0-*.whl"),
    )
    for name in api.REMOVED_IN_10:
        assert old(name) and not new(name), name
        assert name not in api.TRT_NAMES
    for name in api.TRT_OPTIONAL:
        assert new(name) and not old(name), name
    assert not old("no_such_tensorrt_call_xyz")


def test_only_the_api_module_touches_tensorrt():
    for path in (REPO / "plugins" / "fr_tensorrt").glob("*.py"):
        text = path.read_text()
        if path.name != "api.py":
            assert not re.search(r"^\s*(import tensorrt|from tensorrt)", text, re.M), path


def test_the_simulator_offers_only_listed_names():
    """Code calling a TensorRT name missing from the list fails on the simulator."""
    allowed = set(api.TRT_NAMES) | set(api.TRT_OPTIONAL) | {"OUTPUT"}
    from fr_tensorrt import simulated

    offered = {n for n in vars(SimulatedTensorRT) if not n.startswith("_")} | {"__version__"}
    for cls in (
        simulated._Builder,
        simulated._Parser,
        simulated._Network,
        simulated._Config,
        simulated._Profile,
        simulated._Engine,
        simulated._Context,
        simulated._Runtime,
        simulated._Tensor,
        simulated._Logger,
    ):
        offered |= {n for n in vars(cls) if not n.startswith("_")}
    offered |= {"EXPLICIT_BATCH", "FP16", "WORKSPACE", "INPUT", "OUTPUT"}
    extra = (
        offered
        - allowed
        - {
            "builds",
            "net",
            "engine",
            "addresses",
            "shapes",
            "onnx",
            "model",
            "flags",
            "profiles",
            "errors",
            "network",
            "severity",
            "workspace",
            "HEADER",
        }
    )
    assert extra == set()


def test_without_tensorrt_the_components_say_why():
    reg = build_registry()
    for kind, name in (
        (ComponentKind.DETECTOR, "yunet_trt"),
        (ComponentKind.EMBEDDER, "sface_trt"),
        (ComponentKind.ANALYZER, "emotion_trt"),
    ):
        reason = reg.get(kind, name).unavailable
        assert (
            reason and "TensorRT is not installed" in reason and "--system-site-packages" in reason
        )


# --- the engine cache ------------------------------------------------------------------------

BASE = dict(
    model_sha256="ab" * 32,
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability=(8, 7),
    precision="fp16",
    shapes={"input": (1, 3, 640, 640)},
)


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "cd" * 32},
        {"tensorrt_version": "8.6.2"},
        {"gpu_name": "NVIDIA H100"},
        {"compute_capability": (9, 0)},
        {"precision": "fp32"},
        {"shapes": {"input": (1, 3, 320, 320)}},
    ],
)
def test_every_key_field_changes_the_engine_file(change):
    a, b = engine_key(**BASE), engine_key(**{**BASE, **change})
    assert a.digest() != b.digest() and a.file_name("yunet") != b.file_name("yunet")


def test_cache_round_trip_and_refusals(tmp_path, caplog):
    cache, key = EngineCache(tmp_path), engine_key(**BASE)
    assert cache.load(key, "yunet") is None
    path = cache.store(key, "yunet", b"PLAN-BYTES", {"fp16": True})
    assert cache.load(key, "yunet") == b"PLAN-BYTES"
    path.write_bytes(b"PLAN-BYTEZ")  # damaged
    assert cache.load(key, "yunet") is None and "damaged" in caplog.text
    cache.store(key, "yunet", b"PLAN-BYTES", {"fp16": True})
    record = path.with_suffix(".json")
    meta = json.loads(record.read_text())
    meta["key"]["gpu_name"] = "another GPU"  # a file copied from elsewhere under this name
    record.write_text(json.dumps(meta))
    assert cache.load(key, "yunet") is None and "built for something else" in caplog.text
    with pytest.raises(ValueError, match="fp16 or fp32"):
        engine_key(**{**BASE, "precision": "int8"})


# --- the plugin's code on the simulated TensorRT -------------------------------------------------


class SimGpu(NumpyAccelerator):
    """Host memory with a GPU's identity, for the simulated TensorRT."""

    def info(self):
        return AcceleratorInfo("sim-gpu", "simulated Orin", (8, 7))


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "engines"


@pytest.mark.parametrize(
    ("version", "fast_fp16"),
    [("8.6.2", True), ("8.6.2", False), ("10.3.0", True), ("10.3.0", False)],
)
def test_an_engine_is_built_once_then_loaded(cache, version, fast_fp16):
    """As TensorRT 8.6 (JetPack 6.0) and 10.3 (JetPack 6.1/6.2), with and without fast
    FP16: the explicit-batch flag only before 10, the progress monitor only from 10."""
    from fr_cpu.dequant import float_model
    from fr_cpu.models import resolve_model
    from fr_tensorrt import simulated

    onnx = float_model(
        resolve_model("face_recognition_sface_2021dec_int8bq.onnx", None, None),
        cache_dir=cache.parent / "models",
    )
    trt = simulated.simulated_trt(version, fast_fp16)
    before, phases = SimulatedTensorRT.builds, len(simulated.PROGRESS_SEEN)
    first = TrtModel(onnx, SimGpu(), cache_dir=cache, trt=trt(), progress=False)
    second = TrtModel(onnx, SimGpu(), cache_dir=cache, trt=trt(), progress=False)
    assert SimulatedTensorRT.builds == before + 1 and first.built_now and not second.built_now
    assert (len(simulated.PROGRESS_SEEN) > phases) == version.startswith("10.")
    (record,) = cache.glob("*.json")
    meta = json.loads(record.read_text())
    assert meta["key"]["precision"] == "fp16" and meta["built"] == {"fp16": fast_fp16}
    assert meta["key"]["tensorrt_version"] == version
    assert list(first.inputs) == ["data"] and first.outputs["fc1"][0] == (1, 128)
    with pytest.raises(ValueError, match=r"input data is \(1, 3, 10, 10\), needs"):
        first.infer({"data": np.zeros((1, 3, 10, 10), np.float32)})


def test_a_cpu_accelerator_is_refused(cache):
    from fr_cpu.models import resolve_model

    onnx = resolve_model("face_recognition_sface_2021dec_int8bq.onnx", None, None)
    with pytest.raises(ValueError, match="no GPU compute capability"):
        TrtModel(onnx, NumpyAccelerator(), cache_dir=cache, trt=SimulatedTensorRT())


@pytest.fixture(scope="module")
def photos(fr_data):
    names = [
        "obama.jpg",
        "two_people.jpg",
        "biden.jpg",
        "lin-manuel-miranda.png",
        "obama-1080p.jpg",
    ]
    return [cv2.imread(str(fr_data / "faces" / n)) for n in names]


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_trt_models_report_what_the_cpu_plugin_reports(cache, photos, version):
    """As TensorRT 8.6 and 10.3 with fast FP16 (an Orin): the same faces, embeddings and
    emotions as the CPU plugin (the simulator computes in FP32: numerics are the Orin's to
    show)."""
    from fr_tensorrt.simulated import simulated_trt

    trt = simulated_trt(version, fast_fp16=True)()
    det_cpu, det_trt = (
        YuNetDetector(YuNetConfig()),
        YuNetTrt(YuNetTrtConfig(cache_dir=cache), SimGpu(), trt),
    )
    emb_cpu, emb_trt = (
        SFaceEmbedder(SFaceConfig()),
        SFaceTrt(TrtConfig(cache_dir=cache), SimGpu(), trt),
    )
    emo_cpu = EmotionAnalyzer(EmotionConfig(cache_dir=cache / "onnx"))
    emo_trt = EmotionTrt(
        EmotionTrtConfig(cache_dir=cache, onnx_cache_dir=cache / "onnx"), SimGpu(), trt
    )
    faces = 0
    for image in photos:
        a = sorted(det_cpu.detect(image), key=lambda d: d.bbox[0])
        b = sorted(det_trt.detect(image), key=lambda d: d.bbox[0])
        assert len(a) == len(b) >= 1
        # the engine's input is a fixed 640 x 640; FaceDetectorYN pads only to a multiple of
        # 32: the extra zero padding moves boxes by a fraction of a network pixel, i.e. up
        # to ~1 px of a 1080p frame scaled by 1/3
        scale = max(image.shape[:2]) / 640 if max(image.shape[:2]) > 640 else 1.0
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.bbox, y.bbox, atol=0.35 * scale)
            assert abs(x.score - y.score) < 2e-3
            np.testing.assert_allclose(x.landmarks, y.landmarks, atol=0.35 * scale)
            e1, e2 = emb_cpu.embed(image, x), emb_trt.embed(image, x)
            assert float(e1 @ e2) > 0.9999
            r1, r2 = emo_cpu.analyze(image, x), emo_trt.analyze(image, x)
            assert r1.label == r2.label and abs(r1.score - r2.score) < 1e-4
            faces += 1
    assert faces >= 6


def test_alignment_without_face_recognizer_sf_matches_align_crop(photos):
    """The TensorRT plugin aligns faces itself (JetPack's OpenCV cannot load the SFace file
    FaceRecognizerSF needs): the crops equal OpenCV's alignCrop to one grey level."""
    from fr_cpu.align import align_112, similarity

    det, emb = YuNetDetector(YuNetConfig()), SFaceEmbedder(SFaceConfig())
    n = 0
    for image in photos:
        for face in det.detect(image):
            ours, theirs = align_112(image, face.landmarks), emb.align(image, face)
            diff = np.abs(ours.astype(int) - theirs.astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01
            n += 1
    assert n >= 6
    # the estimate is exact for points that are a similarity of the template
    from fr_cpu.align import TEMPLATE

    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (TEMPLATE - shift) @ np.linalg.inv(rot).T
    np.testing.assert_allclose(similarity(src, TEMPLATE)[:, :2], rot, atol=1e-9)


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
@pytest.mark.parametrize(
    "model",
    ["face_detection_yunet_2023mar_int8bq.onnx", "face_recognition_sface_2021dec_int8bq.onnx"],
)
def test_the_parser_refuses_the_int8bq_files_and_takes_their_float_graphs(version, model, tmp_path):
    """Issue 13: what the real parsers refuse (opset 21, INT8 blocks, non-zero zero points),
    the simulated one refuses too, for both releases; the float graphs pass."""
    import onnx as onnx_lib
    from fr_cpu.dequant import float_model
    from fr_cpu.models import resolve_model
    from fr_tensorrt.simulated import parser_refusals

    source = resolve_model(model, None, None)
    major = int(version.split(".")[0])
    refusals = parser_refusals(onnx_lib.load(str(source)), major)
    assert any("opset 21 outside" in r for r in refusals)
    assert any("INT8 block quantization" in r for r in refusals)
    assert any("zero point must be 0" in r for r in refusals)
    converted = float_model(source, cache_dir=tmp_path)
    assert parser_refusals(onnx_lib.load(str(converted)), major) == []
