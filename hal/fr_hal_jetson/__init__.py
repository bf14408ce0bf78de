"""Jetson HAL: ``jetson`` camera (jetson_utils videoSource), ``pycuda`` accelerator (one
owning thread, the device's primary context) and ``jetson`` telemetry (Orin power rails,
GPU load and clock, on top of the linux figures).

Nothing from NVIDIA is imported until a component is built: elsewhere the components are
listed as unavailable with the reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fr_core import hookimpl


def _missing(module: str, how: str) -> str | None:
    return (
        None
        if importlib.util.find_spec(module) is not None
        else f"{module} is not installed ({how})"
    )


@hookimpl
def fr_register_camera_sources(register: Any) -> None:
    from fr_hal_jetson.camera import JetsonCamera, JetsonCameraConfig

    register(
        "jetson",
        lambda cfg, ctx: JetsonCamera(cfg),
        JetsonCameraConfig,
        unavailable=_missing(
            "jetson_utils", "build jetson-utils from dusty-nv/jetson-inference; docs/jetson.md"
        ),
        description="CSI/V4L2/RTSP/file sources through jetson_utils, hardware decoding",
    )


@hookimpl
def fr_register_accelerators(register: Any) -> None:
    def build(cfg: Any, ctx: Any) -> Any:
        from fr_hal_jetson.accelerator import PycudaAccelerator

        return PycudaAccelerator()

    register(
        "pycuda",
        build,
        None,
        unavailable=_missing("pycuda", "pip install pycuda on a machine with CUDA; docs/jetson.md"),
        description="CUDA device memory and a stream (primary context, one owning thread)",
    )


@hookimpl
def fr_register_telemetry(register: Any) -> None:
    from fr_hal_jetson.telemetry import JetsonTelemetry, JetsonTelemetryConfig, is_jetson

    register(
        "jetson",
        lambda cfg, ctx: JetsonTelemetry(cfg),
        JetsonTelemetryConfig,
        unavailable=None if is_jetson(Path("/")) else "not a Jetson (no /etc/nv_tegra_release)",
        description="linux figures plus Orin power rails, GPU load and clock",
    )
