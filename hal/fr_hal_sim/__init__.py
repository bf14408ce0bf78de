"""Simulated HAL: camera, telemetry and accelerator that run anywhere, for CI and demos.

* camera ``sim``: replays a video file, a single image, or a directory / glob of images at a
  chosen rate (or a generated test scene when no source is given), and can script timeouts,
  stalls, end of stream and errors at given frames.
* telemetry ``sim``: plausible, deterministic figures (temperatures, power, load).
* accelerator ``numpy``: host memory standing in for device memory.
"""

from __future__ import annotations

from typing import Any

from fr_core import hookimpl
from fr_hal_sim.accelerator import NumpyAccelerator
from fr_hal_sim.camera import SimCamera, SimCameraConfig
from fr_hal_sim.telemetry import SimTelemetry, SimTelemetryConfig


@hookimpl
def fr_register_camera_sources(register: Any) -> None:
    register(
        "sim",
        lambda cfg, ctx: SimCamera(cfg),
        SimCameraConfig,
        description="replays a video, image or image folder at a set rate; scripted faults",
    )


@hookimpl
def fr_register_telemetry(register: Any) -> None:
    register(
        "sim",
        lambda cfg, ctx: SimTelemetry(cfg),
        SimTelemetryConfig,
        description="deterministic simulated temperatures, power and load",
    )


@hookimpl
def fr_register_accelerators(register: Any) -> None:
    register(
        "numpy",
        lambda cfg, ctx: NumpyAccelerator(),
        None,
        description="host memory as device memory (no GPU)",
    )
