"""The ``liveness`` analyzer: is the face in front of the camera a live person, or a printed
photo or a screen held to it? Two MiniFASNet models (V2 on a 2.7x crop, V1SE on a 4x crop) on
OpenCV DNN; their softmax outputs are averaged and the live class's share is the score.

The checkpoints are fetched into the model cache by ``fr-edge models fetch minifasnet``
(pinned by SHA-256; ``--from DIR`` offline), translated to ONNX once by
:mod:`fr_cpu.minifasnet` and cached by hash. The recognition stage decides a track's liveness
over the frames that confirm it (docs/liveness.md); this analyzer scores one face.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fr_core.files import cache_root
from fr_core.interfaces import AnalysisResult, Detection
from fr_core.modelfiles import ModelFile, locate
from fr_cpu.minifasnet import LIVE_CLASS, crop, onnx_model, scale_of

_REPO = "https://raw.githubusercontent.com/minivision-ai/Silent-Face-Anti-Spoofing/b6d5f04"
#: The two files (minivision-ai/Silent-Face-Anti-Spoofing, commit b6d5f04, Apache-2.0):
#: name, SHA-256, size, what it is.
_FILES = (
    (
        "2.7_80x80_MiniFASNetV2.pth",
        "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        1_849_453,
        "MiniFASNetV2, 80x80 input, 2.7x face crop",
    ),
    (
        "4_0_0_80x80_MiniFASNetV1SE.pth",
        "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
        1_856_130,
        "MiniFASNetV1SE, 80x80 input, 4x face crop",
    ),
)
MODEL_FILES = tuple(
    ModelFile(
        name=name,
        group="minifasnet",
        url=f"{_REPO}/resources/anti_spoof_models/{name}",
        sha256=digest,
        size=size,
        licence="Apache-2.0",
        description=what,
    )
    for name, digest, size, what in _FILES
)
#: docs/liveness.md, "Honest thresholds": the rule that sees live faces only (the highest
#: threshold refusing at most 3% of live tracks) on antispoof-dev, `make liveness`
#: (docs/liveness/texture-alone). The old 0.7 was fitted to the six attacks.
DEFAULT_THRESHOLD = 0.355


class LivenessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        DEFAULT_THRESHOLD,
        gt=0,
        lt=1,
        description="least live score (mean over a track's confirming frames) of a live face",
    )
    min_face_size: float = Field(
        64.0,
        ge=16.0,
        le=1024.0,
        description="faces whose box's shorter side is smaller (pixels) are not judged: the "
        "model's 80 x 80 input would be upsampled from them; the identity event waits until "
        "the face is near enough",
    )
    model_dir: Path | None = Field(
        None,
        description="folder holding the two .pth files; default the model cache's minifasnet "
        "folder (fr-edge models fetch minifasnet)",
    )
    onnx_cache_dir: Path | None = Field(
        None, description="where the ONNX translations are kept; default ~/.cache/fr-edge/models"
    )


def onnx_files(config: LivenessConfig) -> list[tuple[Path, float]]:
    """The ONNX translations of the verified checkpoints (an error naming the command that
    fetches them when one is missing), with their crop scales."""

    folder = config.onnx_cache_dir or cache_root() / "models"
    out = []
    for model in MODEL_FILES:
        path = locate(model, config.model_dir)
        # the bytes translated are checked again: the file may change after locate()
        out.append((onnx_model(path, folder, model.sha256), scale_of(path)))
    return out


def liveness_result(probabilities: list[np.ndarray], threshold: float) -> AnalysisResult:
    """The two models' softmax vectors -> live score (mean share of class 1) and verdict."""

    mean = np.mean([np.asarray(p, np.float64).reshape(-1) for p in probabilities], axis=0)
    live = float(mean[LIVE_CLASS])
    label = "live" if live >= threshold else "attack"
    classes = {f"class_{i}": float(v) for i, v in enumerate(mean)}  # 1 live; 0, 2 attacks
    return AnalysisResult(label, live, {"live": live, "attack": 1.0 - live, **classes})


class LivenessAnalyzer:
    """``analyze(frame, detection)`` -> AnalysisResult("live" | "attack", live score)."""

    name = "liveness"
    gates_identity = True  # the recognition stage holds identity events on its verdict

    def __init__(self, config: LivenessConfig) -> None:
        import cv2

        self.config = config
        self.threshold = config.threshold
        self.min_face_size = config.min_face_size
        self._nets: list[tuple[Any, float]] = [
            (cv2.dnn.readNetFromONNX(str(path)), scale) for path, scale in onnx_files(config)
        ]
        self._lock = threading.Lock()

    def analyze(self, frame: np.ndarray, detection: Detection) -> AnalysisResult:
        probabilities = []
        with self._lock:
            for net, scale in self._nets:
                net.setInput(crop(frame, detection.bbox, scale))
                probabilities.append(np.asarray(net.forward(), np.float32))
        return liveness_result(probabilities, self.threshold)
