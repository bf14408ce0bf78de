"""MiniFASNet liveness models (minivision-ai/Silent-Face-Anti-Spoofing, Apache-2.0): read
without torch, translated to ONNX by our own converter, run on OpenCV DNN.

The checkpoints are PyTorch's legacy (pre-1.6) ``torch.save`` streams: pickles (magic number,
protocol version, system info, the state dict, the list of storage keys) followed by each
storage's raw bytes. :func:`read_checkpoint` reads them with an unpickler that builds nothing
but tensors (any other class in the stream is refused, so a hostile file cannot run code)
and returns the state dict as numpy arrays.

:func:`to_onnx` builds the network those tensors describe (MobileFaceNet-style: Conv-BN-PReLU
blocks, depthwise blocks with projections and residual adds, squeeze-excitation on the last
block of each residual stage in the SE variant, a 5x5 depthwise head, two linear layers),
folding every BatchNorm into the layer before it. Widths come from the tensors' shapes, so
V2 and V1SE share one converter. tests/minifasnet_reference.py runs the same network in plain
numpy from the unfolded tensors; the two agree on real faces.

The input is an 80 x 80 BGR crop as float32 *without* scaling (0-255), NCHW; the crop is a box
``scale`` times the face box around its centre, moved to stay in the frame (:func:`crop`). The
output is the softmax over 3 classes, 1 = live.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fr_core.errors import FrEdgeError
from fr_core.files import atomic_write

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
CONVERTER_VERSION = "2"  # part of the converted file's cache key
BN_EPS = 1e-5  # PyTorch's BatchNorm default, which the source models use
INPUT_SIDE = 80
LIVE_CLASS = 1
_ELEMENT = {"FloatStorage": ("<f4", np.float32), "LongStorage": ("<i8", np.int64)}
#: Bounds no MiniFASNet file comes near (each holds ~445,000 values): a file past them is
#: refused before anything is allocated for it.
MAX_STORAGE_ELEMENTS = 8_000_000
MAX_TOTAL_ELEMENTS = 16_000_000


class CheckpointError(FrEdgeError):
    """A checkpoint file that is not a readable legacy MiniFASNet checkpoint (says why)."""


class _Storage:
    def __init__(self, kind: str, key: str, size: int) -> None:
        self.kind, self.key, self.size = kind, key, size
        self.data: np.ndarray | None = None


class _Tensor:
    def __init__(
        self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def check(self, name: str) -> None:
        """Refuse a tensor that reaches outside its storage (no view is made otherwise)."""
        fields = (self.offset, *self.shape, *self.stride)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in fields):
            raise CheckpointError(f"tensor {name!r}: offset, shape and strides must be ints >= 0")
        if len(self.shape) != len(self.stride):
            raise CheckpointError(
                f"tensor {name!r}: {len(self.shape)} dims, {len(self.stride)} strides"
            )
        if math.prod(self.shape) > self.storage.size:
            raise CheckpointError(f"tensor {name!r} has more values than its storage")
        if any(d == 0 for d in self.shape):
            return
        last = self.offset + sum(
            (d - 1) * st for d, st in zip(self.shape, self.stride, strict=True)
        )
        if last >= self.storage.size:
            raise CheckpointError(f"tensor {name!r} reaches past its storage")

    def array(self) -> np.ndarray:
        base = self.storage.data
        assert base is not None
        if not self.shape:
            return np.array(base[self.offset])
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.shape,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor(storage: _Storage, offset: int, shape: Any, stride: Any, *rest: Any) -> Any:
    return _Tensor(storage, int(offset), tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Builds tensors and ordered dicts; refuses every other global (no code runs)."""

    def __init__(self, f: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _ELEMENT:
            return name
        raise CheckpointError(f"the checkpoint refers to {module}.{name}: not a plain state dict")

    def persistent_load(self, pid: Any) -> Any:
        # ("storage", type, key, location, size, view metadata)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        _, kind, key, _location, size = pid[:5]
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError("storage views are not supported")
        if kind not in _ELEMENT:
            raise CheckpointError(f"storage type {kind!r} is not supported")
        if not isinstance(size, int) or not 0 <= size <= MAX_STORAGE_ELEMENTS:
            raise CheckpointError(f"storage of {size!r} elements: at most {MAX_STORAGE_ELEMENTS}")
        if key not in self.storages:
            total = sum(s.size for s in self.storages.values()) + size
            if total > MAX_TOTAL_ELEMENTS:
                raise CheckpointError(f"storages of over {MAX_TOTAL_ELEMENTS} elements in all")
            self.storages[key] = _Storage(kind, str(key), int(size))
        return self.storages[key]


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The state dict of a legacy ``torch.save`` file, as numpy arrays (``module.`` prefixes
    of DataParallel removed, BatchNorm counters dropped)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    return _read_bytes(raw, Path(path))


def _read_bytes(raw: bytes, path: Path) -> dict[str, np.ndarray]:
    try:
        with io.BytesIO(raw) as f:
            head = f.read(2)
            if head == b"PK":
                raise CheckpointError(
                    f"{path}: a zip-format (torch >= 1.6) checkpoint; only the legacy format "
                    "the MiniFASNet files use is read"
                )
            f.seek(0)
            header = _Unpickler(f, {})
            if header.load() != LEGACY_MAGIC:
                raise CheckpointError(f"{path}: not a torch checkpoint (wrong magic number)")
            if header.load() != LEGACY_PROTOCOL:
                raise CheckpointError(f"{path}: unknown torch protocol version")
            info = header.load()
            if not isinstance(info, dict) or not info.get("little_endian", False):
                raise CheckpointError(f"{path}: not a little-endian checkpoint")
            storages: dict[str, _Storage] = {}
            state = _Unpickler(f, storages).load()
            keys = _Unpickler(f, storages).load()
            if not isinstance(state, dict) or not isinstance(keys, list):
                raise CheckpointError(f"{path}: no state dict in the checkpoint")
            for key in keys:
                storage = storages.get(str(key))
                if storage is None:
                    raise CheckpointError(f"{path}: storage {key} listed but never used")
                (count,) = struct.unpack("<q", f.read(8))
                if count != storage.size:
                    raise CheckpointError(
                        f"{path}: storage {key} holds {count}, not {storage.size}"
                    )
                code, dtype = _ELEMENT[storage.kind]
                chunk = f.read(count * np.dtype(code).itemsize)
                if len(chunk) != count * np.dtype(code).itemsize:
                    raise CheckpointError(f"{path}: truncated (storage {key})")
                storage.data = np.frombuffer(chunk, code).astype(dtype)
        out = {}
        for name, tensor in state.items():
            if not isinstance(name, str) or not isinstance(tensor, _Tensor):
                raise CheckpointError(f"{path}: entry {name!r} is not a named tensor")
            if tensor.storage.data is None:
                raise CheckpointError(f"{path}: the data of {name!r} is missing")
            tensor.check(name)
            if name.endswith("num_batches_tracked"):
                continue
            out[name.removeprefix("module.")] = tensor.array()
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        struct.error,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        MemoryError,
    ) as exc:
        raise CheckpointError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    return out


# --- the network -----------------------------------------------------------------------------

#: Stages in order; the kind of each is read from the names of its tensors.
STAGES = (
    "conv1",
    "conv2_dw",
    "conv_23",
    "conv_3",
    "conv_34",
    "conv_4",
    "conv_45",
    "conv_5",
    "conv_6_sep",
    "conv_6_dw",
)


def layers(state: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The network as a list of layers: ``conv`` (weights, BN prefix, stride, padding, groups,
    PReLU prefix or None), ``block_start`` / ``residual_add`` markers, ``se`` (prefix), and the
    head. Strides and paddings follow the architecture: 3x3 convolutions pad 1, the first
    convolution and the depthwise step of each transition block (conv_23, conv_34, conv_45)
    have stride 2, the 5x5 head does not pad."""
    out: list[dict[str, Any]] = []
    channels = 3

    def conv(prefix: str, stride: int, act: bool) -> None:
        nonlocal channels
        w = state[f"{prefix}.conv.weight"]
        k = w.shape[2]
        pad = 0 if k in (1, 5) else k // 2
        groups = channels // w.shape[1]
        out.append(
            {
                "op": "conv",
                "weight": f"{prefix}.conv.weight",
                "bn": f"{prefix}.bn",
                "stride": stride,
                "pad": pad,
                "groups": groups,
                "prelu": f"{prefix}.prelu.weight" if act else None,
            }
        )
        channels = w.shape[0]

    def depthwise_block(prefix: str, stride: int, residual: bool) -> None:
        if residual:
            out.append({"op": "block_start"})
        conv(f"{prefix}.conv", 1, True)
        conv(f"{prefix}.conv_dw", stride, True)
        conv(f"{prefix}.project", 1, False)
        if f"{prefix}.se_module.fc1.weight" in state:
            out.append({"op": "se", "prefix": f"{prefix}.se_module"})
        if residual:
            out.append({"op": "residual_add"})

    for stage in STAGES:
        if f"{stage}.conv.conv.weight" in state:  # a transition: stride 2, no residual
            depthwise_block(stage, 2, False)
        elif f"{stage}.model.0.conv.conv.weight" in state:
            i = 0
            while f"{stage}.model.{i}.conv.conv.weight" in state:
                depthwise_block(f"{stage}.model.{i}", 1, True)
                i += 1
        elif f"{stage}.conv.weight" in state:
            conv(stage, 2 if stage == "conv1" else 1, f"{stage}.prelu.weight" in state)
        else:
            raise CheckpointError(f"stage {stage} missing: not a MiniFASNet checkpoint")
    for name in ("linear.weight", "bn.weight", "prob.weight"):
        if name not in state:
            raise CheckpointError(f"{name} missing: not a MiniFASNet checkpoint")
    out.append({"op": "head"})
    return out


def _fold(state: dict[str, np.ndarray], bn: str) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm as scale and shift: y = x * scale + shift."""
    scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + BN_EPS)
    shift = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def to_onnx(state: dict[str, np.ndarray], name: str = "minifasnet") -> bytes:
    """The ONNX graph (opset 13) of the network in ``state``: input ``input`` 1x3x80x80,
    output ``probs`` 1x3 (softmax)."""
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise CheckpointError(
            "translating the MiniFASNet checkpoints to ONNX needs the onnx package: "
            "pip install 'fr-edge[emotion]' (or onnx)"
        ) from None

    nodes: list[Any] = []
    inits: list[Any] = []
    count = 0

    def const(array: np.ndarray, hint: str) -> str:
        nonlocal count
        count += 1
        tensor_name = f"{hint}_{count}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), tensor_name))
        return tensor_name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        nonlocal count
        count += 1
        output = f"{op.lower()}_{count}"
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    x = "input"
    block_input: list[str] = []
    for layer in layers(state):
        op = layer["op"]
        if op == "conv":
            w = state[layer["weight"]]
            scale, shift = _fold(state, layer["bn"])
            k = w.shape[2]
            x = node(
                "Conv",
                [x, const(w * scale[:, None, None, None], "w"), const(shift, "b")],
                kernel_shape=[k, k],
                strides=[layer["stride"]] * 2,
                pads=[layer["pad"]] * 4,
                group=layer["groups"],
            )
            if layer["prelu"]:
                x = node("PRelu", [x, const(state[layer["prelu"]][:, None, None], "slope")])
        elif op == "block_start":
            block_input.append(x)
        elif op == "residual_add":
            x = node("Add", [block_input.pop(), x])
        elif op == "se":
            p = layer["prefix"]
            s1, b1 = _fold(state, f"{p}.bn1")
            s2, b2 = _fold(state, f"{p}.bn2")
            fc1, fc2 = state[f"{p}.fc1.weight"], state[f"{p}.fc2.weight"]
            g = node("GlobalAveragePool", [x])
            w1, w2 = (
                const(fc1 * s1[:, None, None, None], "w"),
                const(fc2 * s2[:, None, None, None], "w"),
            )
            g = node("Conv", [g, w1, const(b1, "b")], kernel_shape=[1, 1])  # OpenCV 4.8 needs it
            g = node("Relu", [g])
            g = node("Conv", [g, w2, const(b2, "b")], kernel_shape=[1, 1])
            x = node("Mul", [x, node("Sigmoid", [g])])
        else:  # head: flatten, linear + BatchNorm1d folded, (dropout), linear, softmax
            x = node("Flatten", [x], axis=1)
            scale, shift = _fold(state, "bn")
            linear = state["linear.weight"] * scale[:, None]
            x = node("Gemm", [x, const(linear, "w"), const(shift, "b")], transB=1)
            x = node("Gemm", [x, const(state["prob.weight"], "w")], transB=1)
            x = node("Softmax", [x], axis=1)
    nodes[-1].output[0] = "probs"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, INPUT_SIDE, INPUT_SIDE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fr-edge minifasnet"
    )
    model.ir_version = 8  # readable by OpenCV 4.8+ and TensorRT 8.6
    import onnx

    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def onnx_model(checkpoint: Path, cache_dir: Path, sha256: str | None = None) -> Path:
    """The ONNX translation of ``checkpoint`` in ``cache_dir``, named by the checkpoint's
    digest and the converter's version. The bytes read are checked against ``sha256`` (the
    pinned digest) when given, and translated afresh each time (tens of milliseconds): a
    cached file that differs from the translation (damaged, or written by someone else) is
    replaced, so the cache is never trusted."""
    raw = Path(checkpoint).read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if sha256 is not None and actual != sha256:
        raise CheckpointError(
            f"{checkpoint} has SHA-256 {actual[:16]}..., expected {sha256[:16]}...: not loaded"
        )
    digest = hashlib.sha256(raw + CONVERTER_VERSION.encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"{Path(checkpoint).stem}-{digest}.onnx"
    data = to_onnx(_read_bytes(raw, Path(checkpoint)), Path(checkpoint).stem)
    if not target.is_file() or target.read_bytes() != data:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
    return target


def crop_box(
    bbox: tuple[float, float, float, float], width: int, height: int, scale: float
) -> tuple[int, int, int, int]:
    """The model's crop of a face box (x, y, w, h) in a ``width`` x ``height`` frame: a box
    ``scale`` times the face around its centre (less where the frame is too small), moved,
    not shrunk, to stay inside the frame. Returns (left, top, right, bottom), inclusive."""
    x, y, w, h = (float(v) for v in bbox)
    w, h = max(w, 1.0), max(h, 1.0)
    scale = min(scale, (height - 1) / h, (width - 1) / w)
    cx, cy = x + w / 2, y + h / 2
    new_w, new_h = w * scale, h * scale
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > width - 1:
        left -= right - width + 1
        right = width - 1
    if bottom > height - 1:
        top -= bottom - height + 1
        bottom = height - 1
    return int(left), int(top), int(right), int(bottom)


def crop(frame: np.ndarray, bbox: tuple[float, float, float, float], scale: float) -> np.ndarray:
    """The 80 x 80 BGR crop the model takes, as its 1 x 3 x 80 x 80 float32 input."""
    import cv2

    h, w = frame.shape[:2]
    left, top, right, bottom = crop_box(bbox, w, h, scale)
    patch = cv2.resize(frame[top : bottom + 1, left : right + 1], (INPUT_SIDE, INPUT_SIDE))
    return np.ascontiguousarray(patch.transpose(2, 0, 1)[None], np.float32)


def scale_of(checkpoint: Path) -> float:
    """The crop scale a MiniFASNet file name states (``2.7_80x80_...`` -> 2.7,
    ``4_0_0_80x80_...`` -> 4.0)."""
    head = Path(checkpoint).name.split("_80x80_")[0]
    try:
        return float(head.replace("_", ".", 1).replace("_", ""))
    except ValueError:
        raise CheckpointError(
            f"{Path(checkpoint).name}: the crop scale must start the name (2.7_80x80_...)"
        ) from None
