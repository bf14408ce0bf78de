"""The static TensorRT check: would a TensorRT release's ONNX parser take this graph?

Run on every graph the plugin builds, before the builder sees it (so a refusal names the
model, the release and the rule), by CI for 8.6 (JetPack 6.0) and 10.3 (JetPack 6.1/6.2), and
by the simulated TensorRT's parser. What each release takes is data
(``onnx_support.json``: opset range, operators, I/O types, each with its source); the
rules below add what those lists state in words:

* an opset of the default domain inside the release's range; no operator of another domain
  (TensorRT has importers for ``ai.onnx`` only, plugins aside);
* every operator in the release's list;
* quantization TensorRT can run: ``DequantizeLinear``/``QuantizeLinear`` with zero points of
  0 only (symmetric), and no block quantization of INT8 (block sizes are for INT4 only);
* the restrictions the lists give for the operators of our graphs: ``Conv`` and
  ``ConvTranspose`` weights are initializers; pooling is 2-D or 3-D, without dilations,
  ``MaxPool`` without its ``Indices`` output; ``Resize`` in a mode the parser has;
* graph inputs and outputs of a type the release's DataType has;
* static input shapes, or shapes the plugin gives (of the input's rank, agreeing with its
  fixed dimensions): the engines are built for one shape.

It knows only these rules: passing it is necessary, not sufficient (a real parser can still
refuse, and a real build can still fail). docs/jetson.md says what was run where.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("onnx_support.json")

#: ONNX TensorProto element types by name (the subset TensorRT could have).
ONNX_TYPES = {
    1: "FLOAT",
    2: "UINT8",
    3: "INT8",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    9: "BOOL",
    10: "FLOAT16",
    11: "DOUBLE",
    16: "BFLOAT16",
}
_RESIZE = {
    "mode": {"nearest", "linear"},
    "coordinate_transformation_mode": {
        "half_pixel",
        "pytorch_half_pixel",
        "tf_half_pixel_for_nn",
        "asymmetric",
        "align_corners",
    },
    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
}


@cache
def support() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text())["releases"]
    return data


def release_of(version: str) -> str:
    """The release line of ``version`` ("10.3.0.30" -> "10.3"); ValueError for one this check
    has no data for, naming those it has."""
    parts = str(version).split(".")
    line = ".".join(parts[:2])
    if line not in support():
        known = ", ".join(sorted(support()))
        raise ValueError(f"no ONNX parser data for TensorRT {version}: known releases {known}")
    return line


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _all_graphs(graph: Any) -> Any:
    """``graph`` and every graph nested in its nodes' attributes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _all_graphs(a.g)
            for g in a.graphs:
                yield from _all_graphs(g)


def _all_nodes(graph: Any) -> Any:
    for g in _all_graphs(graph):
        yield from g.node


def refusals(
    model: Any,
    version: str,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    parser_only: bool = False,
) -> list[str]:
    """Why TensorRT ``version``'s parser would refuse ``model`` (an ``onnx.ModelProto``), one
    line per problem; empty when it passes every rule known here. ``shapes``: the input
    shapes the plugin will build for. ``parser_only``: the parser's rules alone (it takes
    dynamic inputs: their shapes come later, from an optimization profile)."""
    from onnx import numpy_helper

    line = release_of(version)
    rel = support()[line]
    name = f"TensorRT {line}"
    errors: list[str] = []
    low, high = rel["opsets"]
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and not low <= o.version <= high:
            errors.append(f"opset {o.version} outside {name}'s range {low}-{high}")
    graph = model.graph
    nodes = list(_all_nodes(graph))  # control-flow bodies (If, Loop, Scan) included
    inits = {i.name: i for g in _all_graphs(graph) for i in g.initializer}
    for n in nodes:  # a Constant's value counts as an initializer (weights, zero points)
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    inits[n.output[0]] = a.t
    constants = {o for n in nodes if n.op_type == "Constant" for o in n.output}
    ops = set(rel["ops"])
    for node in nodes:
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            errors.append(f"{where}: operator of domain {node.domain!r} ({name} parses ai.onnx)")
            continue
        if node.op_type not in ops:
            errors.append(f"{where}: not in {name}'s operator list")
            continue
        attrs = _attrs(node)
        if node.op_type in ("DequantizeLinear", "QuantizeLinear"):
            x = inits.get(node.input[0])
            int8 = x is not None and x.data_type == 3
            if node.op_type == "DequantizeLinear" and int8 and "block_size" in attrs:
                errors.append(f"{where}: INT8 block quantization (INT4 only)")
            zero = inits.get(node.input[2]) if len(node.input) > 2 else None
            if zero is not None and numpy_helper.to_array(zero).any():
                errors.append(f"{where}: zero point must be 0 (symmetric quantization)")
        elif node.op_type in ("Conv", "ConvTranspose"):
            if node.input[1] not in inits and node.input[1] not in constants:
                errors.append(f"{where}: weights must be an initializer")
        elif node.op_type in ("MaxPool", "AveragePool", "LpPool"):
            if len(attrs.get("kernel_shape", [])) not in (2, 3):
                errors.append(f"{where}: 2-D or 3-D pooling only")
            if any(d != 1 for d in attrs.get("dilations", [])):
                errors.append(f"{where}: dilations must be empty or all ones")
            if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
                errors.append(f"{where}: the Indices output is not supported")
        elif node.op_type == "Resize":
            for key, allowed in _RESIZE.items():
                if key in attrs and attrs[key] not in allowed:
                    errors.append(f"{where}: {key} {attrs[key]!r} not supported")
    io_types = set(rel["io_types"])
    inner = set(inits) | {o for n in graph.node for o in n.output}
    inputs = [i for i in graph.input if i.name not in inner]
    for value in [*inputs, *graph.output]:
        kind = ONNX_TYPES.get(value.type.tensor_type.elem_type, "an unknown type")
        if kind not in io_types:
            errors.append(f"tensor {value.name!r} is {kind}: {name} takes {sorted(io_types)}")
    given = dict(shapes or {})
    for value in inputs if not parser_only else ():
        dims = [
            d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
        ]
        shape = given.get(value.name)
        if shape is None:
            if any(d <= 0 for d in dims):
                errors.append(f"input {value.name!r} has a dynamic shape and no shape is given")
        elif len(shape) != len(dims) or any(
            d > 0 and d != s for d, s in zip(dims, shape, strict=True)
        ):
            errors.append(
                f"input {value.name!r} is {dims}: the given shape {list(shape)} does not fit"
            )
    return errors


def check(
    model: Any, version: str, shapes: Mapping[str, tuple[int, ...]] | None = None, name: str = ""
) -> None:
    """ValueError naming the model, the release and the refusals (five at most), if any."""
    found = refusals(model, version, shapes)
    if found:
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise ValueError(
            f"{name or 'the model'}: TensorRT {version}'s ONNX parser would refuse it: "
            + "; ".join(found[:5])
            + more
        )
