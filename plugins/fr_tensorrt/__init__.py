"""TensorRT plugin ``fr_tensorrt`` for Jetson: YuNet (``yunet_trt``), SFace (``sface_trt``)
and the emotion model (``emotion_trt``) as TensorRT engines built from the same ONNX files as
the CPU plugin, with its pre- and post-processing.

Nothing here imports ``tensorrt`` until a component is built: on a machine without it
``fr-edge plugins`` lists the components as unavailable, with the reason. Engines are built
once (FP16 where the GPU has it), with a progress bar, and cached by model digest, TensorRT
version, GPU name and compute capability, precision and shapes (:mod:`fr_tensorrt.cache`).
Every TensorRT call goes through :mod:`fr_tensorrt.api` (tensor-name API only, so 8.6 and
10.x both work). Buffers and the stream come from the HAL accelerator (``pycuda`` on a
Jetson), named by the config's ``accelerator`` block.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from fr_core import hookimpl


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return (
            "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer); "
            "make the venv with --system-site-packages (docs/jetson.md)"
        )
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed (pip install pycuda on the Jetson; docs/jetson.md)"
    return None


def _accelerator(ctx: Any) -> Any:
    from fr_core.interfaces import ComponentKind

    block = getattr(ctx.app_config, "accelerator", None) if ctx is not None else None
    if block is None:
        return ctx.registry.create(ComponentKind.ACCELERATOR, "pycuda")
    return ctx.registry.create(ComponentKind.ACCELERATOR, block.plugin, block.options)


def _register(
    register: Any,
    name: str,
    component: str,
    config: str,
    cpu: str,
    what: str,
    provides: dict[str, Any] | None = None,
) -> None:
    """Register ``name``, built as ``fr_tensorrt.models.<component>`` from ``<config>`` on
    the configured accelerator, with ``cpu`` as its ``fallback: cpu``."""
    from fr_tensorrt import models

    def build(cfg: Any, ctx: Any) -> Any:
        accelerator = _accelerator(ctx)
        try:
            built = getattr(models, component)(cfg, accelerator)
        except BaseException:  # an engine that cannot be built: free the GPU context now
            close = getattr(accelerator, "close", None)
            if callable(close):
                close()
            raise
        built.accelerator = accelerator  # closed with the component (Component.close)
        return built

    register(
        name,
        build,
        getattr(models, config),
        unavailable=unavailable_reason(),
        cpu_fallback=cpu,
        description=what,
        provides=provides,
    )


@hookimpl
def fr_register_detectors(register: Any) -> None:
    _register(
        register, "yunet_trt", "YuNetTrt", "YuNetTrtConfig", "yunet",
        "YuNet as a TensorRT engine (Jetson)",
    )  # fmt: skip


@hookimpl
def fr_register_embedders(register: Any) -> None:
    _register(
        register, "sface_trt", "SFaceTrt", "TrtConfig", "sface",
        "SFace as a TensorRT engine (Jetson), embeddings compatible with sface",
        {"model_name": "SFace"},
    )  # fmt: skip


@hookimpl
def fr_register_analyzers(register: Any) -> None:
    _register(
        register, "emotion_trt", "EmotionTrt", "EmotionTrtConfig", "emotion",
        "the emotion model as a TensorRT engine (Jetson)",
        {"gates_identity": False},
    )  # fmt: skip
    _register(
        register, "liveness_trt", "LivenessTrt", "LivenessTrtConfig", "liveness",
        "the liveness analyzer's MiniFASNet models as TensorRT engines (Jetson)",
        {"gates_identity": True},
    )  # fmt: skip
