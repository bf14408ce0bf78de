"""A simulated ``tensorrt`` module for machines without TensorRT (CI, development).

It offers exactly the names :mod:`fr_tensorrt.api` lists (a test checks), backed by OpenCV
DNN over the same ONNX file. :func:`simulated_trt` makes one that behaves as a given release
in what the plugin can see: ``__version__`` (JetPack 6.0 ships 8.6, 6.1/6.2 ship 10.3), fast
FP16 or not, ``IProgressMonitor`` (10.x only), the explicit-batch flag (required before 10,
deprecated from 10), and a parser that refuses what the real one refuses by the rules known
here: opsets outside the release's range, INT8 DequantizeLinear with a non-zero zero point,
block-quantized INT8. a "plan" is the ONNX bytes behind a header, execution reads the
inputs from and writes the outputs to the addresses the runner bound, as TensorRT does with
device memory. It exercises the plugin's own code (engine cache, tensor-name calls, buffers
through the accelerator, shared pre- and post-processing) on CPU; it says nothing about
TensorRT's numerics, which only a Jetson run checks.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from typing import Any

import numpy as np

HEADER = b"FR-EDGE-SIMULATED-TRT\n"
PROGRESS_SEEN: list[str] = []  # build phases a progress monitor was told of (tests read it)


class _Enum:
    def __init__(self, **members: int) -> None:
        for k, v in members.items():
            setattr(self, k, v)


class _Logger:
    WARNING = 2

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


# opset ranges of the ONNX parsers (onnx-tensorrt docs/operators.md of each release line:
# "up to Opset 17" for 8.5/8.6, "opset 9 to opset 20" for 10.0; taken as the same for 10.3)
OPSET_RANGES = {8: (1, 17), 10: (9, 20)}


def parser_refusals(model: Any, major: int) -> list[str]:
    """Why TensorRT ``major``'s ONNX parser would refuse ``model`` (empty: it would not, by
    the rules known here)."""
    from onnx import numpy_helper

    low, high = OPSET_RANGES.get(major, (1, 20))
    errors = []
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and not low <= o.version <= high:
            errors.append(f"opset {o.version} outside TensorRT {major}'s range {low}-{high}")
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        attrs = {a.name for a in node.attribute}
        x = inits.get(node.input[0])
        int8 = x is not None and x.data_type == 3  # TensorProto.INT8
        if int8 and "block_size" in attrs:
            errors.append(f"{node.name or node.output[0]}: INT8 block quantization (INT4 only)")
        if len(node.input) > 2 and node.input[2] in inits:
            zp = numpy_helper.to_array(inits[node.input[2]])
            if zp.any():
                errors.append(f"{node.name or node.output[0]}: zero point must be 0")
    return errors


class _Parser:
    _major = 10  # set by simulated_trt

    def __init__(self, network: _Network, logger: Any) -> None:
        self.network = network
        self.errors: list[str] = []

    def parse(self, data: bytes) -> bool:
        import onnx

        try:
            model = onnx.load_from_string(bytes(data))
        except Exception as exc:  # onnx raises DecodeError and friends
            self.errors = [f"not an ONNX model: {exc}"]
            return False
        self.errors = parser_refusals(model, self._major)[:5]
        if self.errors:
            return False
        self.network.onnx = bytes(data)
        self.network.model = model
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class _Tensor:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape


class _Network:
    def __init__(self) -> None:
        self.onnx = b""
        self.model: Any = None

    def _io(self, outputs: bool) -> list[_Tensor]:
        graph = self.model.graph
        # weights may be listed as graph inputs too (initializers, or outputs of the
        # DequantizeLinear nodes of a quantized model): those are not inputs to feed
        inner = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
        items = graph.output if outputs else [i for i in graph.input if i.name not in inner]
        return [
            _Tensor(i.name, tuple(d.dim_value or -1 for d in i.type.tensor_type.shape.dim))
            for i in items
        ]

    @property
    def num_inputs(self) -> int:
        return len(self._io(False))

    def get_input(self, i: int) -> _Tensor:
        return self._io(False)[i]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        self.shapes[name] = tuple(opt)


class _Config:
    def __init__(self) -> None:
        self.flags: set[int] = set()
        self.profiles: list[_Profile] = []

    def set_memory_pool_limit(self, pool: int, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: int) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class _Builder:
    platform_has_fast_fp16 = False  # set by simulated_trt
    _major = 10

    def __init__(self, logger: Any) -> None:
        self.builds = 0

    def create_network(self, flags: int = 0) -> _Network:
        explicit = bool(flags & 1)
        if self._major < 10 and not explicit:
            raise ValueError("TensorRT 8.x parses ONNX only into an explicit-batch network")
        if self._major >= 10 and flags:
            raise ValueError("TensorRT 10 has no network creation flags to set (deprecated)")
        return _Network()

    def create_builder_config(self) -> _Config:
        return _Config()

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes:
        SimulatedTensorRT.builds += 1
        monitor = getattr(config, "progress_monitor", None)
        if monitor is not None:  # TensorRT 10 reports build phases
            PROGRESS_SEEN.append("Building engine")
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                if not monitor.step_complete("Building engine", step):
                    return None  # type: ignore[return-value]
            monitor.phase_finish("Building engine")
        return HEADER + network.onnx


class _Engine:
    def __init__(self, onnx_bytes: bytes) -> None:
        import onnx

        net = _Network()
        net.model = onnx.load_from_string(onnx_bytes)
        self._tensors = [(t, True) for t in net._io(False)] + [(t, False) for t in net._io(True)]
        fd, path = tempfile.mkstemp(suffix=".onnx")
        with os.fdopen(fd, "wb") as f:
            f.write(onnx_bytes)
        try:
            import cv2

            self.net = cv2.dnn.readNetFromONNX(path)
        finally:
            os.unlink(path)

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    def get_tensor_name(self, i: int) -> str:
        return self._tensors[i][0].name

    def _find(self, name: str) -> tuple[_Tensor, bool]:
        for t, is_input in self._tensors:
            if t.name == name:
                return t, is_input
        raise KeyError(name)

    def get_tensor_mode(self, name: str) -> int:
        return 1 if self._find(name)[1] else 2

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._find(name)[0].shape

    def get_tensor_dtype(self, name: str) -> int:
        return 0  # float32, as TensorRT's DataType.FLOAT

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def _view(self, name: str) -> np.ndarray:
        tensor, _ = self.engine._find(name)
        shape = self.shapes.get(name, tensor.shape)
        n = int(np.prod(shape)) * 4
        raw = (ctypes.c_char * n).from_address(self.addresses[name])
        return np.frombuffer(memoryview(raw), np.float32).reshape(shape)

    def execute_async_v3(self, stream: int) -> bool:
        inputs = [t.name for t, is_in in self.engine._tensors if is_in]
        outputs = [t.name for t, is_in in self.engine._tensors if not is_in]
        for name in inputs:
            self.engine.net.setInput(self._view(name).copy(), name)
        results = self.engine.net.forward(outputs)
        for name, value in zip(outputs, results, strict=True):
            view = self._view(name)
            view[...] = np.asarray(value, np.float32).reshape(view.shape)
        return True


class _Runtime:
    def __init__(self, logger: Any) -> None:
        pass

    def deserialize_cuda_engine(self, plan: bytes) -> _Engine | None:
        if not bytes(plan).startswith(HEADER):
            return None
        return _Engine(bytes(plan)[len(HEADER) :])


class _SimulatedBase:
    """Use a :func:`simulated_trt` class as the ``trt`` argument of TrtModel."""

    __version__ = "10.3.0"
    builds = 0
    Logger = _Logger
    Builder = _Builder
    Runtime = _Runtime
    OnnxParser = _Parser
    NetworkDefinitionCreationFlag = _Enum(EXPLICIT_BATCH=0)
    BuilderFlag = _Enum(FP16=0)
    MemoryPoolType = _Enum(WORKSPACE=0)
    TensorIOMode = _Enum(INPUT=1, OUTPUT=2)

    @staticmethod
    def nptype(dtype: int) -> Any:
        return np.float32


class _ProgressMonitor:
    """TensorRT 10's IProgressMonitor: subclassed by the plugin."""

    def __init__(self) -> None:
        pass


def simulated_trt(version: str = "10.3.0", fast_fp16: bool = True) -> Any:
    """A simulated ``tensorrt`` module behaving as ``version`` (see the module doc)."""
    major = int(version.split(".")[0])
    builder = type("Builder", (_Builder,), {"platform_has_fast_fp16": fast_fp16, "_major": major})
    parser = type("OnnxParser", (_Parser,), {"_major": major})
    members: dict[str, Any] = {
        "__version__": version,
        "Builder": builder,
        "OnnxParser": parser,
    }
    if major >= 10:
        members["IProgressMonitor"] = _ProgressMonitor
    return type(f"SimulatedTensorRT_{version.replace('.', '_')}", (_SimulatedBase,), members)


#: TensorRT 10.3 (JetPack 6.1/6.2) on a GPU without fast FP16: the default of the tests
SimulatedTensorRT: Any = simulated_trt("10.3.0", fast_fp16=False)
