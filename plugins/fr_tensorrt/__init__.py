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


@hookimpl
def fr_register_detectors(register: Any) -> None:
    from fr_tensorrt.models import YuNetTrtConfig

    def build(cfg: Any, ctx: Any) -> Any:
        from fr_tensorrt.models import YuNetTrt

        return YuNetTrt(cfg, _accelerator(ctx))

    register(
        "yunet_trt",
        build,
        YuNetTrtConfig,
        unavailable=unavailable_reason(),
        cpu_fallback="yunet",
        description="YuNet as a TensorRT engine (Jetson)",
    )


@hookimpl
def fr_register_embedders(register: Any) -> None:
    from fr_tensorrt.models import TrtConfig

    def build(cfg: Any, ctx: Any) -> Any:
        from fr_tensorrt.models import SFaceTrt

        return SFaceTrt(cfg, _accelerator(ctx))

    register(
        "sface_trt",
        build,
        TrtConfig,
        unavailable=unavailable_reason(),
        cpu_fallback="sface",
        description="SFace as a TensorRT engine (Jetson), embeddings compatible with sface",
    )


@hookimpl
def fr_register_analyzers(register: Any) -> None:
    from fr_tensorrt.models import EmotionTrtConfig

    def build(cfg: Any, ctx: Any) -> Any:
        from fr_tensorrt.models import EmotionTrt

        return EmotionTrt(cfg, _accelerator(ctx))

    register(
        "emotion_trt",
        build,
        EmotionTrtConfig,
        unavailable=unavailable_reason(),
        cpu_fallback="emotion",
        description="the emotion model as a TensorRT engine (Jetson)",
    )
