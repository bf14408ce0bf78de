"""A simulated ``tensorrt`` module for machines without TensorRT (CI, development).

It offers exactly the names :mod:`fr_tensorrt.api` lists (a test checks), backed by OpenCV
DNN over the same ONNX file: a "plan" is the ONNX bytes behind a header, execution reads the
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


class _Enum:
    def __init__(self, **members: int) -> None:
        for k, v in members.items():
            setattr(self, k, v)


class _Logger:
    WARNING = 2

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


class _Parser:
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
    platform_has_fast_fp16 = False  # a CPU: the runner must fall back to fp32

    def __init__(self, logger: Any) -> None:
        self.builds = 0

    def create_network(self, flags: int = 0) -> _Network:
        return _Network()

    def create_builder_config(self) -> _Config:
        return _Config()

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes:
        SimulatedTensorRT.builds += 1
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


class SimulatedTensorRT:
    """Use as the ``trt`` argument of :class:`fr_tensorrt.runner.TrtModel`."""

    __version__ = "0.0.0-simulated"
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
