"""Which OpenCV the CPU plugin can run on: 4.8 and later, through the float graphs before
4.11 (see the package docstring)."""

from __future__ import annotations

import importlib.util

MIN_OPENCV = (4, 8)  # the oldest run in CI (JetPack 6's)
INT8BQ_OPENCV = (4, 11)  # the first that parses the int8bq files


def opencv_problem() -> str | None:
    """Why OpenCV cannot run these models here, or None."""
    try:
        import cv2
    except ImportError:
        return "OpenCV is not installed (pip install 'fr-edge[cpu]', or JetPack's OpenCV)"
    problem = version_problem(cv2.__version__)
    no_onnx = importlib.util.find_spec("onnx") is None
    if problem is None and no_onnx and not reads_int8bq(cv2.__version__):
        return (
            f"OpenCV {cv2.__version__} needs the float graphs derived from the int8bq "
            "files, and deriving them needs the onnx package: pip install onnx"
        )
    return problem


def _version(version: str) -> tuple[int, int]:
    major, minor = (int(x) for x in version.split(".")[:2])
    return major, minor


def version_problem(version: str) -> str | None:
    try:
        found = _version(version)
    except ValueError:
        return f"cannot read the OpenCV version {version!r}"
    if found < MIN_OPENCV:
        return (
            f"OpenCV {version} is older than {MIN_OPENCV[0]}.{MIN_OPENCV[1]}, the oldest the "
            "CPU plugin is tested on; install OpenCV >= 4.8"
        )
    return None


def reads_int8bq(version: str) -> bool:
    """Whether this OpenCV parses the int8bq ONNX files itself (4.11 and later)."""
    return _version(version) >= INT8BQ_OPENCV
