"""A simulated ``tensorrt`` module for machines without TensorRT (CI, development).

:func:`simulated_trt` makes one that behaves as a given release in everything the plugin
can see. Its classes carry the real classes' names and offer only members the real bindings
of that release have (a test checks each against the surfaces read from NVIDIA's 8.6.1 and
10.3.0 wheels, ``tests/trt_surfaces``): ``__version__`` (JetPack 6.0 ships 8.6, 6.1/6.2 ship
10.3), fast FP16 or not, ``IProgressMonitor`` and ``IBuilderConfig.progress_monitor`` (10.x
only; setting it on 8.6 fails as it does there), the explicit-batch flag (required before 10,
deprecated from 10), the DataType members of the release (INT64 from 10; 8.6 casts an INT64
input down to INT32), errors reported through the ``ILogger`` given to the builder, and a
parser that refuses what :mod:`fr_tensorrt.compat` says the release refuses.

A "plan" is the ONNX bytes behind a header. Execution reads the inputs from and writes the
outputs to the addresses the runner bound, as TensorRT does with device memory, in each
tensor's own dtype: through OpenCV DNN for float32 graphs (the real models), through ONNX's
reference evaluator otherwise (int32, float16...). It exercises the plugin's own code (engine
cache, tensor-name calls, buffers through the accelerator, shared pre- and post-processing)
on CPU; it says nothing about TensorRT's numerics, which only a Jetson run checks.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from typing import Any

import numpy as np

from fr_tensorrt import compat

HEADER = b"FR-EDGE-SIMULATED-TRT\n"
PROGRESS_SEEN: list[str] = []  # build phases a progress monitor was told of (tests read it)
STATS = {"builds": 0}  # engines built by any simulated release (tests read it)

# ONNX element type -> (DataType member, numpy dtype)
_ONNX_TO_TRT = {
    1: ("FLOAT", np.float32),
    10: ("HALF", np.float16),
    3: ("INT8", np.int8),
    6: ("INT32", np.int32),
    7: ("INT64", np.int64),
    9: ("BOOL", np.bool_),
    2: ("UINT8", np.uint8),
}
_NPTYPE = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


class _Strict:
    """Setting a public attribute the real class does not have fails, as on pybind11
    objects (``_settable`` lists those it has)."""

    _settable: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in self._settable:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


class _Members:
    def __init__(self, **members: Any) -> None:
        for k, v in members.items():
            setattr(self, k, v)


class ILogger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self) -> None:
        pass

    def log(self, severity: int, msg: str) -> None:
        pass


class Logger(ILogger):
    def __init__(self, min_severity: int = 2) -> None:
        self._min = min_severity


class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], elem_type: int) -> None:
        self._name, self._shape, self._elem = name, shape, elem_type

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape


def _io(model: Any, outputs: bool) -> list[ITensor]:
    graph = model.graph
    # weights may be listed as graph inputs too (initializers, or outputs of the
    # DequantizeLinear nodes of a quantized model): those are not inputs to feed
    inner = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    items = graph.output if outputs else [i for i in graph.input if i.name not in inner]
    return [
        ITensor(
            i.name,
            tuple(d.dim_value or -1 for d in i.type.tensor_type.shape.dim),
            i.type.tensor_type.elem_type,
        )
        for i in items
    ]


class INetworkDefinition:
    def __init__(self) -> None:
        self._onnx = b""
        self._model: Any = None

    @property
    def num_inputs(self) -> int:
        return len(_io(self._model, False))

    def get_input(self, index: int) -> ITensor:
        return _io(self._model, False)[index]


class OnnxParser:
    _version = "10.3.0"  # set by simulated_trt

    def __init__(self, network: INetworkDefinition, logger: Any) -> None:
        self._network = network
        self._errors: list[str] = []

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx

        try:
            graph = onnx.load_from_string(bytes(model))
        except Exception as exc:  # onnx raises DecodeError and friends
            self._errors = [f"not an ONNX model: {exc}"]
            return False
        self._errors = compat.refusals(graph, self._version, parser_only=True)[:5]
        if self._errors:
            return False
        self._network._onnx = bytes(model)
        self._network._model = graph
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        return self._errors[index]


class IOptimizationProfile:
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[int, ...]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self._shapes[input] = tuple(opt)


class IBuilderConfig(_Strict):
    def __init__(self) -> None:
        self._flags: set[int] = set()
        self._profiles: list[IOptimizationProfile] = []
        self._monitor: Any = None

    def set_memory_pool_limit(self, pool: int, pool_size: int) -> None:
        self._workspace = pool_size

    def set_flag(self, flag: int) -> None:
        self._flags.add(flag)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1


class _BuilderConfig10(IBuilderConfig):
    _settable = frozenset({"progress_monitor"})


class Builder:
    platform_has_fast_fp16 = False  # set by simulated_trt
    _major = 10
    _config = IBuilderConfig
    _build_error: str | None = None  # set by simulated_trt: the builder fails with it

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    @staticmethod
    def _unshaped(network: INetworkDefinition, config: IBuilderConfig) -> list[str]:
        return _unshaped_inputs(network, config)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        explicit = bool(flags & 1)
        if self._major < 10 and not explicit:
            raise ValueError("TensorRT 8.x parses ONNX only into an explicit-batch network")
        if self._major >= 10 and flags:
            raise ValueError("TensorRT 10 has no network creation flags to set (deprecated)")
        return INetworkDefinition()

    def create_builder_config(self) -> IBuilderConfig:
        return self._config()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(
        self, network: INetworkDefinition, config: IBuilderConfig
    ) -> bytes | None:
        monitor = getattr(config, "progress_monitor", None)
        if monitor is not None:  # TensorRT 10 reports build phases
            PROGRESS_SEEN.append("Building engine")
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                if not monitor.step_complete("Building engine", step):
                    return None
            monitor.phase_finish("Building engine")
        if self._build_error is not None:  # as TensorRT: the reason goes to the logger
            self._logger.log(ILogger.ERROR, self._build_error)
            return None
        unshaped = self._unshaped(network, config)
        if unshaped:  # as TensorRT: a dynamic input needs a profile giving its shapes
            self._logger.log(
                ILogger.ERROR,
                "Network has dynamic or shape inputs, but no optimization profile has been "
                f"defined for {', '.join(unshaped)}.",
            )
            return None
        STATS["builds"] += 1
        return HEADER + network._onnx


def _fits(dims: tuple[int, ...], shape: tuple[int, ...] | None) -> bool:
    return (
        shape is not None
        and len(shape) == len(dims)
        and all(s > 0 and (d < 0 or d == s) for d, s in zip(dims, shape, strict=True))
    )


def _unshaped_inputs(network: INetworkDefinition, config: IBuilderConfig) -> list[str]:
    """The dynamic inputs no optimization profile gives a shape that fits."""
    out = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in dims) and not any(
            _fits(dims, p._shapes.get(tensor.name)) for p in config._profiles
        ):
            out.append(tensor.name)
    return out


class ICudaEngine:
    _major = 10

    def __init__(self, onnx_bytes: bytes) -> None:
        import onnx

        self._model = onnx.load_from_string(onnx_bytes)
        self._tensors = [(t, True) for t in _io(self._model, False)] + [
            (t, False) for t in _io(self._model, True)
        ]
        self._float = all(t._elem == 1 for t, _ in self._tensors)
        self._net: Any = None
        if self._float:  # OpenCV DNN: fast enough for the real models
            fd, path = tempfile.mkstemp(suffix=".onnx")
            with os.fdopen(fd, "wb") as f:
                f.write(onnx_bytes)
            try:
                import cv2

                self._net = cv2.dnn.readNetFromONNX(path)
            finally:
                os.unlink(path)

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    def get_tensor_name(self, index: int) -> str:
        return self._tensors[index][0].name

    def _find(self, name: str) -> tuple[ITensor, bool]:
        for t, is_input in self._tensors:
            if t.name == name:
                return t, is_input
        raise KeyError(name)

    def get_tensor_mode(self, name: str) -> int:
        return 1 if self._find(name)[1] else 2

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._find(name)[0].shape

    def _dtype(self, name: str) -> tuple[str, Any]:
        member, dtype = _ONNX_TO_TRT[self._find(name)[0]._elem]
        if member == "INT64" and self._major < 10:  # 8.x casts INT64 down to INT32
            return "INT32", np.int32
        return member, dtype

    def get_tensor_dtype(self, name: str) -> str:
        return self._dtype(name)[0]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self._engine = engine
        self._addresses: dict[str, int] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        self._shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._addresses[name] = int(memory)
        return True

    def _view(self, name: str) -> np.ndarray:
        tensor, _ = self._engine._find(name)
        dtype = np.dtype(self._engine._dtype(name)[1])
        shape = self._shapes.get(name, tensor.shape)
        raw = (ctypes.c_char * (int(np.prod(shape)) * dtype.itemsize)).from_address(
            self._addresses[name]
        )
        return np.frombuffer(memoryview(raw), dtype).reshape(shape)

    def execute_async_v3(self, stream_handle: int) -> bool:
        engine = self._engine
        inputs = [t for t, is_in in engine._tensors if is_in]
        outputs = [t.name for t, is_in in engine._tensors if not is_in]
        if engine._float:
            for t in inputs:
                engine._net.setInput(self._view(t.name).copy(), t.name)
            results = engine._net.forward(outputs)
        else:
            from onnx.reference import ReferenceEvaluator

            feeds: dict[str, Any] = {
                t.name: self._view(t.name).astype(_ONNX_TO_TRT[t._elem][1]) for t in inputs
            }
            results = ReferenceEvaluator(engine._model).run(outputs, feeds)
        for name, value in zip(outputs, results, strict=True):
            view = self._view(name)
            view[...] = np.asarray(value).astype(view.dtype).reshape(view.shape)
        return True


class Runtime:
    _engine = ICudaEngine

    def __init__(self, logger: Any) -> None:
        pass

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        if not bytes(serialized_engine).startswith(HEADER):
            return None
        return self._engine(bytes(serialized_engine)[len(HEADER) :])


class IProgressMonitor:
    """TensorRT 10's IProgressMonitor: subclassed by the plugin."""

    def __init__(self) -> None:
        pass


def simulated_trt(
    version: str = "10.3.0", fast_fp16: bool = True, build_error: str | None = None
) -> Any:
    """A simulated ``tensorrt`` module behaving as ``version`` (see the module doc). With
    ``build_error`` the builder fails, logging that message as TensorRT logs its errors."""
    major = int(version.split(".")[0])
    data_types = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8"]
    if major >= 10:
        data_types += ["BF16", "INT64", "INT4"]
    data_type = _Members(**{m: m for m in data_types})
    nptypes = {m: t for m, t in _NPTYPE.items() if m in data_types}

    def nptype(trt_type: str) -> Any:
        if trt_type not in nptypes:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return nptypes[trt_type]

    engine = type("ICudaEngine", (ICudaEngine,), {"_major": major})
    members: dict[str, Any] = {
        "__version__": version,
        "ILogger": ILogger,
        "Logger": Logger,
        "Builder": type(
            "Builder",
            (Builder,),
            {
                "platform_has_fast_fp16": fast_fp16,
                "_major": major,
                "_config": _BuilderConfig10 if major >= 10 else IBuilderConfig,
                "_build_error": build_error,
            },
        ),
        "Runtime": type("Runtime", (Runtime,), {"_engine": engine}),
        "OnnxParser": type("OnnxParser", (OnnxParser,), {"_version": version}),
        "INetworkDefinition": INetworkDefinition,
        "ITensor": ITensor,
        "IBuilderConfig": IBuilderConfig,
        "IOptimizationProfile": IOptimizationProfile,
        "ICudaEngine": engine,
        "IExecutionContext": IExecutionContext,
        "NetworkDefinitionCreationFlag": _Members(EXPLICIT_BATCH=0),
        "BuilderFlag": _Members(FP16=0),
        "MemoryPoolType": _Members(WORKSPACE=0),
        "TensorIOMode": _Members(NONE=0, INPUT=1, OUTPUT=2),
        "DataType": data_type,
        "nptype": staticmethod(nptype),
    }
    if major >= 10:
        members["IProgressMonitor"] = IProgressMonitor
    return type(f"tensorrt_{version.replace('.', '_')}", (), members)


#: TensorRT 10.3 (JetPack 6.1/6.2) on a GPU without fast FP16: the default of the tests
SimulatedTensorRT: Any = simulated_trt("10.3.0", fast_fp16=False)
