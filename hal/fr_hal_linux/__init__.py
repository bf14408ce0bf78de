"""Generic Linux HAL: any camera OpenCV's VideoCapture opens (USB/V4L2, RTSP, HTTP, files)
and health figures from /proc and /sys.

* camera ``opencv``: see :mod:`fr_hal_linux.camera` (bounded reads, newest frame only, drops
  counted, stall detection and reopening, credentials masked).
* telemetry ``linux``: see :mod:`fr_hal_linux.telemetry`.
"""

from __future__ import annotations

import sys
from typing import Any

from fr_core import hookimpl


def _not_linux() -> str | None:
    return None if sys.platform.startswith("linux") else f"needs Linux (this is {sys.platform})"


def _no_opencv() -> str | None:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return "OpenCV is not installed (pip install 'fr-edge[cpu]', or JetPack's OpenCV)"
    return None


@hookimpl
def fr_register_camera_sources(register: Any) -> None:
    from fr_hal_linux.camera import OpenCvCamera, OpenCvCameraConfig

    register(
        "opencv",
        lambda cfg, ctx: OpenCvCamera(cfg),
        OpenCvCameraConfig,
        unavailable=_no_opencv(),
        description="USB/V4L2 devices, RTSP/HTTP streams and files through OpenCV VideoCapture",
    )


@hookimpl
def fr_register_telemetry(register: Any) -> None:
    from fr_hal_linux.telemetry import LinuxTelemetry, LinuxTelemetryConfig

    register(
        "linux",
        lambda cfg, ctx: LinuxTelemetry(cfg),
        LinuxTelemetryConfig,
        unavailable=_not_linux(),
        description="CPU load, memory, thermal zones, uptime, free disk from /proc and /sys",
    )
