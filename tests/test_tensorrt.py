"""The TensorRT plugin off Jetson: its list of TensorRT calls checked against the real
bindings of TensorRT 8.6.1 and 10.7, the engine cache keys, and the plugin's own code run on
the simulated TensorRT (OpenCV DNN over the same ONNX) giving what the CPU plugin gives."""

from __future__ import annotations

import json
import os
import re

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
SURFACES = REPO / "tests" / "trt_surfaces"
RELEASES = {
    "8.6.1": "tensorrt_bindings-8.6.1-*.whl",
    "10.3.0": "tensorrt_cu12_bindings-10.3.0-*.whl",
}


def load_surface(version):
    return json.loads((SURFACES / f"tensorrt-{version}.json").read_text())


def member(surface, qualified):
    """The signature of "Class.member" / presence of "module.name" or "Enum.MEMBER" in a
    surface (None: absent)."""
    owner, name = qualified.split(".", 1)
    if owner == "module":
        return "" if name in surface["module"] else None
    if owner in surface["enums"]:
        return "" if name in surface["enums"][owner] else None
    return surface["classes"].get(owner, {}).get(name)


def gives(signature):
    """The result types of a signature (one per pybind11 overload)."""
    return {part.rsplit("->", 1)[1].strip() for part in signature.split(" | ") if "->" in part}


@pytest.mark.parametrize("version", sorted(RELEASES))
def test_the_surfaces_are_what_the_bindings_export(version):
    """tests/trt_surfaces is read from NVIDIA's wheels (tests/trt_surface.py): reading them
    again gives the committed files, so the checks below rest on the real bindings."""
    import shutil

    from tests.trt_surface import read_surface

    if not all(shutil.which(t) for t in ("cc", "nm", "objdump")):
        if os.environ.get("CI"):
            pytest.fail("CI needs a C compiler and binutils (apt-get install -y gcc)")
        pytest.skip("no C compiler here: the committed surfaces are checked as they are")
    wheels = sorted(TRT_API.glob(RELEASES[version]))
    assert wheels, f"{TRT_API} lacks {RELEASES[version]}: `make venv` downloads the bindings"
    again = read_surface(wheels[0])
    assert again == load_surface(version)


@pytest.mark.parametrize("version", sorted(RELEASES))
def test_every_call_we_make_exists_in_both_releases_with_its_type(version):
    surface = load_surface(version)
    missing, wrong = [], []
    for qualified, result in api.TRT_CALLS.items():
        signature = member(surface, qualified)
        if signature is None:
            missing.append(qualified)
        elif result and result not in gives(signature) and signature != f"property -> {result}":
            wrong.append(f"{qualified}: {signature}")
    assert missing == [] and wrong == [], f"TensorRT {version}: {missing} {wrong}"


def test_the_check_tells_releases_and_classes_apart():
    """The check above can fail: the binding-index API is in 8.6 only, the progress monitor
    in 10.3 only, a member looked up on the wrong class is absent, and a wrong result type
    is caught."""
    old, new = load_surface("8.6.1"), load_surface("10.3.0")
    for name in api.REMOVED_IN_10:
        assert member(old, name) is not None and member(new, name) is None, name
        assert name not in api.TRT_CALLS
    for name in api.TRT_OPTIONAL:
        assert member(new, name) is not None and member(old, name) is None, name
    assert member(new, "Builder.execute_async_v3") is None  # exists, on IExecutionContext
    assert member(new, "IExecutionContext.execute_async_v3") is not None
    assert "ICudaEngine" in gives(member(new, "Runtime.deserialize_cuda_engine"))
    assert "INetworkDefinition" not in gives(member(new, "Builder.create_builder_config"))


def test_only_the_api_module_touches_tensorrt():
    for path in (REPO / "plugins" / "fr_tensorrt").glob("*.py"):
        text = path.read_text()
        if path.name != "api.py":
            assert not re.search(r"^\s*(import tensorrt|from tensorrt)", text, re.M), path


@pytest.mark.parametrize(("version", "real"), [("8.6.2", "8.6.1"), ("10.3.0", "10.3.0")])
def test_the_simulator_offers_only_what_the_release_has(version, real):
    """Code calling a name the release lacks fails on the simulator: every public name of
    the simulated module, of its classes and of its enums is in that release's bindings."""
    from fr_tensorrt.simulated import simulated_trt

    trt, surface = simulated_trt(version), load_surface(real)
    extra = []
    for name, value in vars(trt).items():
        if name.startswith("_") and name != "__version__":
            continue
        if member(surface, f"module.{name}") is None:
            extra.append(name)
        if isinstance(value, type):
            for klass in value.__mro__[:-1]:
                for attr in vars(klass):
                    if not attr.startswith("_") and member(surface, f"{name}.{attr}") is None:
                        extra.append(f"{name}.{attr}")
        elif name in surface["enums"]:
            extra += [f"{name}.{m}" for m in vars(value) if m not in surface["enums"][name]]
    assert extra == []
    # and the release's own absences hold: no progress monitor before 10
    config = trt.Builder(None).create_builder_config()
    if version.startswith("8."):
        with pytest.raises(AttributeError, match="progress_monitor"):
            config.progress_monitor = object()
        assert not hasattr(trt, "IProgressMonitor")
    else:
        config.progress_monitor = object()


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
    before, phases = simulated.STATS["builds"], len(simulated.PROGRESS_SEEN)
    first = TrtModel(onnx, SimGpu(), cache_dir=cache, trt=trt(), progress=False)
    second = TrtModel(onnx, SimGpu(), cache_dir=cache, trt=trt(), progress=False)
    assert simulated.STATS["builds"] == before + 1 and first.built_now and not second.built_now
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


INT8BQ = ["face_detection_yunet_2023mar_int8bq.onnx", "face_recognition_sface_2021dec_int8bq.onnx"]


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
@pytest.mark.parametrize("model", INT8BQ)
def test_the_static_check_refuses_the_int8bq_files_and_passes_what_the_plugin_builds(
    version, model, tmp_path
):
    """Issue 13: the int8bq graphs fail the check for both releases (opset 21, INT8 blocks,
    non-zero zero points); the float graphs the plugin builds pass it, as does the emotion
    graph, with the shapes the plugin gives."""
    import onnx as onnx_lib
    from fr_cpu.dequant import float_model
    from fr_cpu.emotion import resolve_emotion_model
    from fr_cpu.models import resolve_model
    from fr_tensorrt import compat

    source = resolve_model(model, None, None)
    refusals = compat.refusals(onnx_lib.load(str(source)), version)
    assert any("opset 21 outside" in r for r in refusals)
    assert any("INT8 block quantization" in r for r in refusals)
    assert any("zero point must be 0" in r for r in refusals)
    converted = float_model(source, cache_dir=tmp_path)
    assert compat.refusals(onnx_lib.load(str(converted)), version) == []
    emotion = resolve_emotion_model(None, None, tmp_path)
    shapes = {"input": (1, 1, 64, 64)}
    assert compat.refusals(onnx_lib.load(str(emotion)), version, shapes) == []


def _graph(nodes, inputs, outputs, inits=(), opset=17):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tensor(name, elem, shape):
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, shape)


def test_each_rule_of_the_static_check_can_fail():
    from fr_tensorrt import compat
    from onnx import TensorProto, helper, numpy_helper

    x, y = _tensor("x", TensorProto.FLOAT, [1, 3, 8, 8]), _tensor("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")

    def refused(model, version="10.3.0", shapes=None):
        return " | ".join(compat.refusals(model, version, shapes))

    ok = _graph([helper.make_node("Conv", ["x", "w"], ["y"])], [x], [y], [w])
    assert refused(ok) == ""
    assert "opset 18 outside TensorRT 8.6" in refused(
        ok.__class__.FromString(
            _graph(
                [helper.make_node("Conv", ["x", "w"], ["y"])], [x], [y], [w], 18
            ).SerializeToString()
        ),
        "8.6.2",
    )
    conv_of_input = _graph(
        [helper.make_node("Conv", ["x", "v"], ["y"])], [x, _tensor("v", 1, [3, 3, 1, 1])], [y]
    )
    assert "weights must be an initializer" in refused(conv_of_input)
    assert "not in TensorRT 10.3's operator list" in refused(
        _graph([helper.make_node("Unique", ["x"], ["y"])], [x], [y])
    )
    assert "domain 'com.microsoft'" in refused(
        _graph(
            [helper.make_node("FusedConv", ["x", "w"], ["y"], domain="com.microsoft")],
            [x],
            [y],
            [w],
        )
    )
    pool = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], dilations=[2, 2])
    text = refused(_graph([pool], [x], [y, _tensor("i", TensorProto.INT64, None)]))
    assert "Indices output" in text and "dilations" in text
    pool1d = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2])
    assert "2-D or 3-D pooling only" in refused(_graph([pool1d], [x], [y]))
    odd = helper.make_node(
        "Resize", ["x", "", "s"], ["y"], coordinate_transformation_mode="tf_crop_and_resize"
    )
    scales0 = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    assert "coordinate_transformation_mode 'tf_crop_and_resize' not supported" in refused(
        _graph([odd], [x], [y], [scales0])
    )
    blocked = helper.make_node("DequantizeLinear", ["q", "sc"], ["y"], block_size=3, axis=0)
    assert "INT8 block quantization" in refused(
        _graph(
            [blocked],
            [],
            [_tensor("y", 1, [3])],
            [
                numpy_helper.from_array(np.ones(3, np.int8), "q"),
                numpy_helper.from_array(np.array([0.1], np.float32), "sc"),
            ],
            21,
        ),
        "10.3.0",
    )
    resize = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    assert "mode 'cubic' not supported" in refused(_graph([resize], [x], [y], [scales]))
    q = numpy_helper.from_array(np.ones((3,), np.int8), "q")
    zero = numpy_helper.from_array(np.array(1, np.int8), "z")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "sc")
    deq = helper.make_node("DequantizeLinear", ["q", "sc", "z"], ["y"])
    assert "zero point must be 0" in refused(
        _graph([deq], [], [_tensor("y", 1, [3])], [q, scale, zero])
    )
    dbl = _graph(
        [helper.make_node("Identity", ["d"], ["y"])],
        [_tensor("d", TensorProto.DOUBLE, [2])],
        [_tensor("y", TensorProto.DOUBLE, [2])],
    )
    assert "tensor 'd' is DOUBLE" in refused(dbl)
    i64 = _graph(
        [helper.make_node("Identity", ["d"], ["y"])],
        [_tensor("d", TensorProto.INT64, [2])],
        [_tensor("y", TensorProto.INT64, [2])],
    )
    assert refused(i64) == "" and refused(i64, "8.6.2") == ""  # 8.6 casts to INT32
    dyn = _graph([helper.make_node("Relu", ["x"], ["y"])], [_tensor("x", 1, ["n", 3])], [y])
    assert "dynamic shape and no shape is given" in refused(dyn)
    assert refused(dyn, shapes={"x": (1, 3)}) == ""
    assert "does not fit" in refused(dyn, shapes={"x": (1, 4)})
    # rules reach into control-flow bodies, and a Constant's value counts as a weight
    inner = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["u"])], "then", [], [_tensor("u", 1, None)]
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])], "else", [], [_tensor("e", 1, None)]
    )
    cond = numpy_helper.from_array(np.array(True), "c")
    branchy = _graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=other)],
        [x],
        [y],
        [cond],
    )
    assert "Unique 'u': not in TensorRT 10.3's operator list" in refused(branchy)
    zc = helper.make_node(
        "Constant", [], ["zc"], value=numpy_helper.from_array(np.array(5, np.int8))
    )
    deq_c = helper.make_node("DequantizeLinear", ["q", "sc", "zc"], ["y"])
    assert "zero point must be 0" in refused(
        _graph([zc, deq_c], [], [_tensor("y", 1, [3])], [q, scale])
    )
    with pytest.raises(ValueError, match=r"no ONNX parser data for TensorRT 7\.1\.3: known"):
        compat.refusals(ok, "7.1.3")


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_int32_and_float16_tensors_go_through_the_runner(cache, version, tmp_path):
    """Engines whose tensors are not float32: the runner allocates, copies and reads back
    each tensor in the dtype the engine reports (int32 in, float16 out; an int64 input is
    int32 on 8.6, which casts it down, and int64 on 10.3)."""
    from fr_tensorrt.simulated import simulated_trt
    from onnx import TensorProto, helper

    model = _graph(
        [
            helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", ["big"], ["g"], to=TensorProto.FLOAT16),
            helper.make_node("Add", ["f", "g"], ["out"]),
        ],
        [_tensor("ids", TensorProto.INT32, [2, 3]), _tensor("big", TensorProto.INT64, [2, 3])],
        [_tensor("out", TensorProto.FLOAT16, [2, 3])],
    )
    path = tmp_path / "typed.onnx"
    path.write_bytes(model.SerializeToString())
    trt_model = TrtModel(
        path, SimGpu(), cache_dir=cache, trt=simulated_trt(version)(), progress=False
    )
    assert trt_model.inputs["ids"][1] == np.int32 and trt_model.outputs["out"][1] == np.float16
    assert trt_model.inputs["big"][1] == (np.int32 if version.startswith("8.") else np.int64)
    ids = np.arange(6, dtype=np.int32).reshape(2, 3)
    out = trt_model.infer({"ids": ids, "big": np.full((2, 3), 1000, np.int64)})["out"]
    assert out.dtype == np.float16 and np.array_equal(out, (ids + 1000).astype(np.float16))


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_a_refused_model_or_a_failed_build_names_model_release_and_reason(cache, version):
    from fr_cpu.models import resolve_model
    from fr_tensorrt.runner import EngineError
    from fr_tensorrt.simulated import simulated_trt

    int8bq = resolve_model(INT8BQ[1], None, None)
    with pytest.raises(EngineError) as refused:
        TrtModel(int8bq, SimGpu(), cache_dir=cache, trt=simulated_trt(version)(), progress=False)
    text = str(refused.value)
    assert text.startswith("face_recognition_sface_2021dec_int8bq: TensorRT ")
    assert version in text and "opset 21 outside" in text
    from fr_cpu.dequant import float_model

    graph = float_model(int8bq, cache_dir=cache.parent / "models")
    trt = simulated_trt(version, build_error="out of memory building layer Conv_12")()
    with pytest.raises(EngineError, match=rf"no TensorRT {version} engine .*out of memory"):
        TrtModel(graph, SimGpu(), cache_dir=cache, trt=trt, progress=False)


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_liveness_engines_score_as_the_cpu_analyzer(cache, fr_models, version, tmp_path):
    """liveness_trt: the MiniFASNet ONNX translations pass the static check for both
    releases, and the engines (simulated) give the CPU analyzer's scores and verdicts on the
    authors' samples."""
    import onnx as onnx_lib
    from fr_cpu.liveness import LivenessAnalyzer, LivenessConfig, onnx_files
    from fr_tensorrt import compat
    from fr_tensorrt.models import LivenessTrt, LivenessTrtConfig
    from fr_tensorrt.simulated import simulated_trt

    folder = fr_models / "minifasnet"
    cpu_cfg = LivenessConfig(model_dir=folder, onnx_cache_dir=tmp_path / "onnx")
    for path, _ in onnx_files(cpu_cfg):
        shapes = {"input": (1, 3, 80, 80)}
        assert compat.refusals(onnx_lib.load(str(path)), version, shapes) == []
    cpu = LivenessAnalyzer(cpu_cfg)
    trt = LivenessTrt(
        LivenessTrtConfig(model_dir=folder, onnx_cache_dir=tmp_path / "onnx", cache_dir=cache),
        SimGpu(),
        simulated_trt(version, fast_fp16=True)(),
    )
    det = YuNetDetector(YuNetConfig())
    for name in ("image_F1.jpg", "image_F2.jpg", "image_T1.jpg"):
        image = cv2.imread(str(folder / "samples" / name))
        face = max(det.detect(image), key=lambda d: d.bbox[2] * d.bbox[3])
        a, b = cpu.analyze(image, face), trt.analyze(image, face)
        assert a.label == b.label and abs(a.score - b.score) < 1e-4, name


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_a_dynamic_input_is_built_through_an_optimization_profile(version):
    """build_plan's dynamic-shape branch: the parser takes a dynamic input (as TensorRT's
    does), the build needs an optimization profile giving its shape (as TensorRT's does),
    and build_plan gives one from the plugin's shapes, or says which input lacks one."""
    from fr_tensorrt.simulated import STATS, simulated_trt
    from onnx import helper

    model = _graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_tensor("x", 1, ["n", 3])],
        [_tensor("y", 1, ["n", 3])],
    )
    trt = simulated_trt(version)()
    logger = api.make_logger(trt)
    data = model.SerializeToString()
    before = STATS["builds"]
    plan, _ = api.build_plan(
        trt, data, fp16=False, shapes={"x": (2, 3)}, workspace_bytes=1 << 20, logger=logger
    )
    assert plan and STATS["builds"] == before + 1
    with pytest.raises(ValueError, match="input 'x' has a dynamic shape: give its shape"):
        api.build_plan(trt, data, fp16=False, shapes={}, workspace_bytes=1 << 20, logger=logger)
    # without build_plan's profile the (simulated) builder refuses, as TensorRT does
    builder = trt.Builder(logger)
    network = builder.create_network(
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if version.startswith("8") else 0
    )
    assert trt.OnnxParser(network, logger).parse(data)
    assert builder.build_serialized_network(network, builder.create_builder_config()) is None
    assert "no optimization profile has been defined for x" in " ".join(logger.errors)
