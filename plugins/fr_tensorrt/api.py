"""Every TensorRT call the plugin makes, in one place.

The plugin uses the tensor-name API only (``num_io_tensors``, ``get_tensor_name``,
``set_tensor_address``, ``execute_async_v3``...), present in TensorRT 8.6 and 10.x alike; the
binding-index API (``get_binding_*``, ``execute_async_v2``) that 10.0 removed is never used.
:data:`TRT_CALLS` lists each class member and module name used, with the type it gives; a
test checks every one against the API surfaces of the TensorRT 8.6.1 and 10.3.0 Python
bindings (``tests/trt_surfaces``: each class's members and pybind11 signatures, read by
importing NVIDIA's wheels), so a member must exist on *that* class with *that* result in
both releases. No other module of the plugin touches ``tensorrt``: the test also checks that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: "Class.member" (or "module.name") -> the type it gives, as the bindings' signatures write
#: it ("" for module names, enum members and attributes: only their presence is checked).
TRT_CALLS: dict[str, str] = {
    "module.__version__": "",
    "module.nptype": "",
    "module.ILogger": "",
    "module.Builder": "",
    "module.Runtime": "",
    "module.OnnxParser": "",
    "ILogger.__init__": "None",
    "ILogger.log": "None",
    "ILogger.ERROR": "",
    "ILogger.WARNING": "",
    "Builder.__init__": "None",
    "Builder.create_network": "INetworkDefinition",
    "Builder.create_builder_config": "IBuilderConfig",
    "Builder.platform_has_fast_fp16": "bool",
    "Builder.create_optimization_profile": "IOptimizationProfile",
    "Builder.build_serialized_network": "IHostMemory",
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": "",
    "OnnxParser.__init__": "None",
    "OnnxParser.parse": "bool",
    "OnnxParser.num_errors": "int",
    "OnnxParser.get_error": "IParserError",
    "INetworkDefinition.num_inputs": "int",
    "INetworkDefinition.get_input": "ITensor",
    "ITensor.name": "str",
    "ITensor.shape": "Dims",
    "IBuilderConfig.set_memory_pool_limit": "None",
    "IBuilderConfig.set_flag": "None",
    "IBuilderConfig.add_optimization_profile": "int",
    "MemoryPoolType.WORKSPACE": "",
    "BuilderFlag.FP16": "",
    "IOptimizationProfile.set_shape": "None",
    "Runtime.__init__": "None",
    "Runtime.deserialize_cuda_engine": "ICudaEngine",
    "ICudaEngine.create_execution_context": "IExecutionContext",
    "ICudaEngine.num_io_tensors": "int",
    "ICudaEngine.get_tensor_name": "str",
    "ICudaEngine.get_tensor_mode": "TensorIOMode",
    "ICudaEngine.get_tensor_shape": "Dims",
    "ICudaEngine.get_tensor_dtype": "DataType",
    "TensorIOMode.INPUT": "",
    "IExecutionContext.set_input_shape": "bool",
    "IExecutionContext.set_tensor_address": "bool",
    "IExecutionContext.execute_async_v3": "bool",
}

#: Present only in TensorRT 10.x and used only when present (the build progress bar).
TRT_OPTIONAL: dict[str, str] = {
    "module.IProgressMonitor": "",
    "IBuilderConfig.progress_monitor": "IProgressMonitor",
    "IProgressMonitor.__init__": "None",
    "IProgressMonitor.phase_start": "None",
    "IProgressMonitor.step_complete": "bool",
    "IProgressMonitor.phase_finish": "None",
}

#: The binding-index API that TensorRT 10 removed: must not appear in TRT_CALLS.
REMOVED_IN_10 = (
    "IExecutionContext.execute_async_v2",
    "ICudaEngine.get_binding_shape",
    "ICudaEngine.num_bindings",
)


def load_tensorrt() -> Any:
    """The ``tensorrt`` module; ImportError with what to install if it is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError(
            f"TensorRT is not importable here ({exc}): on a Jetson it comes with JetPack "
            "(python3-libnvinfer), seen from a venv made with --system-site-packages"
        ) from None
    return tensorrt


def version_tuple(trt: Any) -> tuple[int, ...]:
    return tuple(int(p) for p in str(trt.__version__).split(".")[:3] if p.isdigit())


def make_logger(trt: Any) -> Any:
    """A TensorRT ``ILogger`` that sends TensorRT's messages to Python logging and keeps its
    errors (``.errors``), so a failed build can say why."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= int(trt.ILogger.ERROR):
                self.errors.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif level <= int(trt.ILogger.WARNING):
                log.warning("TensorRT: %s", msg)

    return Logger()


class Engine:
    """A deserialized engine and one execution context, through the tensor-name API."""

    def __init__(self, trt: Any, plan: bytes, logger: Any) -> None:
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built elsewhere?)")
        self.context = self.engine.create_execution_context()
        self._input_mode = trt.TensorIOMode.INPUT
        self._nptype: Callable[[Any], Any] = trt.nptype

    def tensors(self) -> list[tuple[str, bool, tuple[int, ...], Any]]:
        """(name, is_input, shape, numpy dtype) of every I/O tensor."""
        out = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            out.append(
                (
                    name,
                    self.engine.get_tensor_mode(name) == self._input_mode,
                    tuple(self.engine.get_tensor_shape(name)),
                    self._nptype(self.engine.get_tensor_dtype(name)),
                )
            )
        return out

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(name, shape):
            raise ValueError(f"TensorRT refused shape {shape} for input {name!r}")

    def bind(self, name: str, address: int) -> None:
        if not self.context.set_tensor_address(name, int(address)):
            raise RuntimeError(f"TensorRT refused the buffer of tensor {name!r}")

    def run(self, stream_handle: int) -> None:
        if not self.context.execute_async_v3(int(stream_handle)):
            raise RuntimeError("TensorRT execution failed")


def build_plan(
    trt: Any,
    onnx_bytes: bytes,
    *,
    fp16: bool,
    shapes: dict[str, tuple[int, ...]],
    workspace_bytes: int,
    logger: Any,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> tuple[bytes, bool]:
    """Build a serialized engine; returns (plan, whether FP16 was used)."""
    builder = trt.Builder(logger)
    flags = 0
    if version_tuple(trt) < (10,):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT {trt.__version__}'s ONNX parser refused it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    use_fp16 = fp16 and builder.platform_has_fast_fp16
    if use_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    dynamic = [
        network.get_input(i)
        for i in range(network.num_inputs)
        if any(int(d) < 0 for d in network.get_input(i).shape)
    ]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            shape = shapes.get(tensor.name)
            if shape is None:
                raise ValueError(f"input {tensor.name!r} has a dynamic shape: give its shape")
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    if on_progress is not None and hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, on_progress)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        said = "; ".join(getattr(logger, "errors", [])[-3:]) or "see TensorRT's log above"
        raise RuntimeError(f"TensorRT {trt.__version__} could not build the engine: {said}")
    return bytes(plan), use_fp16


def _progress_monitor(trt: Any, on_progress: Callable[[str, int, int], None]) -> Any:
    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Any, num_steps: int) -> None:
            on_progress(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            on_progress(phase_name, step + 1, -1)
            return True

        def phase_finish(self, phase_name: str) -> None:
            on_progress(phase_name, -1, -1)

    return Monitor()
