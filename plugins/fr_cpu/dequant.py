"""Float ONNX graphs from the OpenCV Zoo's int8bq files, for runtimes that cannot read them.

The shipped YuNet and SFace files store every weight as INT8, block-quantized (blocks of
9-64 values along one axis, each with its own scale and a non-zero zero point), behind
``DequantizeLinear`` nodes of opset 21. TensorRT takes symmetric INT8 only, block
quantization only for INT4, and its 8.6 parser reads opsets up to 17; OpenCV 4.8 (JetPack 6's)
cannot parse the files at all. The weights are constants, so the dequantization can be done
once, here: each ``DequantizeLinear`` (and the ``Reshape`` of its constant output) is
evaluated with numpy and replaced by a float32 initializer, graph inputs that only shadow
initializers are dropped, and the opset is lowered to 17 (none of the remaining operators
changed meaning between 17 and 21 for the attributes these graphs use: checked by
:func:`check_lowering`). The float graph computes what OpenCV computes from the int8bq one,
which dequantizes the same way at load (tests/test_float_models.py: cosine >= 0.999999).

Converted files are cached by the source's SHA-256 under ``cache_root()/models``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from fr_core.errors import FrEdgeError
from fr_core.files import atomic_write, cache_root

TARGET_OPSET = 17
CONVERTER_VERSION = "1"  # part of the cache key: a fixed converter makes new files
# attributes added to these operators after opset 17: a graph using them cannot be lowered
_NEWER_ATTRIBUTES = {"Resize": {"antialias", "axes", "keep_aspect_ratio_policy"}}


class ConversionError(FrEdgeError):
    """A graph that cannot be turned into a float one (says why)."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ConversionError(
            "converting the int8bq models needs the onnx package: pip install 'fr-edge[jetson]'"
        ) from None
    return onnx


def dequantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block: int
) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21): per tensor, per axis, or blocked along ``axis``."""
    xf = x.astype(np.float32)
    s = scale.astype(np.float32)
    z = np.zeros_like(s) if zero_point is None else zero_point.astype(np.float32)
    if s.ndim == 0 or s.size == 1:
        return (xf - z.reshape(())) * s.reshape(())
    axis = axis % x.ndim
    if block == 0:  # one scale per slice along axis
        shape = [1] * x.ndim
        shape[axis] = x.shape[axis]
        return (xf - z.reshape(shape)) * s.reshape(shape)
    n = x.shape[axis]
    s = np.repeat(s, block, axis=axis).take(range(n), axis=axis)
    z = np.repeat(z, block, axis=axis).take(range(n), axis=axis)
    return (xf - z) * s


def _reshape(data: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    dims = [int(d) for d in shape]
    if not allowzero:
        dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return data.reshape(dims)


def check_lowering(model: Any, target: int = TARGET_OPSET) -> None:
    """Refuse to lower a graph that uses operator attributes newer than ``target``."""
    for node in model.graph.node:
        newer = _NEWER_ATTRIBUTES.get(node.op_type, set())
        used = {a.name for a in node.attribute} & newer
        if used:
            raise ConversionError(
                f"node {node.name or node.op_type} uses {sorted(used)}, which opset {target} "
                "does not have: the graph cannot be lowered"
            )


def fold_to_float(data: bytes, target_opset: int = TARGET_OPSET) -> bytes:
    """The float graph of an ONNX model whose quantized weights are constants."""
    onnx = _onnx()
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    kept = []
    folded = 0
    for node in graph.node:
        inputs = [i for i in node.input if i]
        constant = all(i in consts for i in inputs)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear" and constant:
            zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            consts[node.output[0]] = dequantize(
                consts[node.input[0]],
                consts[node.input[1]],
                zp,
                int(attrs.get("axis", 1)),
                int(attrs.get("block_size", 0)),
            )
            folded += 1
        elif node.op_type == "Reshape" and constant and folded:
            consts[node.output[0]] = _reshape(
                consts[node.input[0]], consts[node.input[1]], int(attrs.get("allowzero", 0))
            )
        else:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                raise ConversionError(
                    f"{node.op_type} {node.name!r} quantizes a computed tensor, not a weight: "
                    "only constant weights can be folded"
                )
            kept.append(node)
    if not folded:
        raise ConversionError("the graph has no DequantizeLinear of constant weights to fold")
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    initializers = [
        numpy_helper.from_array(
            consts[name].astype(np.float32) if consts[name].dtype.kind == "f" else consts[name],
            name,
        )
        for name in consts
        if name in used
    ]
    # graph inputs that shadow initializers, or that nothing reads (SFace declares 29)
    inputs = [i for i in graph.input if i.name not in consts and i.name in used]
    new_graph = helper.make_graph(
        kept, graph.name, inputs, list(graph.output), initializers, value_info=[]
    )
    out = helper.make_model(
        new_graph,
        opset_imports=[helper.make_opsetid("", target_opset)],
        producer_name="fr-edge dequant",
        ir_version=8,
    )
    check_lowering(out, target_opset)
    onnx.checker.check_model(out)
    return bytes(out.SerializeToString())


def float_model(path: Path, cache_dir: Path | None = None) -> Path:
    """The float, opset-17 version of the int8bq model at ``path``, converted once and
    cached by the source's SHA-256 (and the converter's version)."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data + CONVERTER_VERSION.encode()).hexdigest()[:16]
    folder = cache_dir or cache_root() / "models"
    target = folder / f"{Path(path).stem}-float-{digest}.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(target, fold_to_float(data))
    return target
