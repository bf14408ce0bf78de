"""Every TensorRT call the plugin makes, in one place.

The plugin uses the tensor-name API only (``num_io_tensors``, ``get_tensor_name``,
``set_tensor_address``, ``execute_async_v3``...), present in TensorRT 8.6 and 10.x alike; the
binding-index API (``get_binding_*``, ``execute_async_v2``) that 10.0 removed is never used.
:data:`TRT_NAMES` lists each module attribute and method used; a test finds every one of
them in the Python bindings of TensorRT 8.6.1 and 10.7 (their compiled modules, read as
bytes: they cannot be imported without NVIDIA's libraries) and finds the removed names only
in 8.6, so the list is checked against both versions' real API surfaces. No other module of
the plugin touches ``tensorrt``: the test also checks that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Module-level names (classes, enums, enum members, functions).
TRT_MODULE = (
    "__version__",
    "Logger",
    "Builder",
    "Runtime",
    "OnnxParser",
    "NetworkDefinitionCreationFlag",
    "EXPLICIT_BATCH",
    "BuilderFlag",
    "FP16",
    "MemoryPoolType",
    "WORKSPACE",
    "TensorIOMode",
    "INPUT",
    "nptype",
    "WARNING",
)

#: Methods and properties on TensorRT objects.
TRT_METHODS = (
    # Builder, network, parser, config, optimisation profile
    "create_network",
    "create_builder_config",
    "platform_has_fast_fp16",
    "parse",
    "num_errors",
    "get_error",
    "set_flag",
    "set_memory_pool_limit",
    "create_optimization_profile",
    "set_shape",
    "add_optimization_profile",
    "build_serialized_network",
    "num_inputs",
    "get_input",
    "name",
    "shape",
    # Runtime, engine, execution context
    "deserialize_cuda_engine",
    "create_execution_context",
    "num_io_tensors",
    "get_tensor_name",
    "get_tensor_mode",
    "get_tensor_shape",
    "get_tensor_dtype",
    "set_input_shape",
    "set_tensor_address",
    "execute_async_v3",
)

#: Present only in TensorRT 10.x and used only when present (the build progress bar).
TRT_OPTIONAL = (
    "progress_monitor",
    "IProgressMonitor",
    "phase_start",
    "step_complete",
    "phase_finish",
)

#: The binding-index API that TensorRT 10 removed: must not appear in TRT_NAMES.
REMOVED_IN_10 = ("execute_async_v2", "get_binding_shape", "num_bindings")

TRT_NAMES = TRT_MODULE + TRT_METHODS


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
        raise ValueError(f"TensorRT cannot parse the ONNX model: {errors}")
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
        raise RuntimeError("TensorRT could not build the engine (see its log above)")
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
