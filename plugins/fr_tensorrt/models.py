"""YuNet, SFace and the emotion model as TensorRT engines, with the pre- and
post-processing of the CPU plugin (fr_cpu), so both back-ends report the same thing.

The engines have fixed shapes: YuNet 640 x 640 (a frame is scaled to fit, padded, and the
faces scaled back), SFace 112 x 112, emotion 64 x 64.

YuNet and SFace engines are built from float, opset-17 graphs derived from the int8bq files
(fr_cpu.dequant, cached by hash): TensorRT's parser refuses the asymmetric, block-quantized
INT8 and the opset 21 of the originals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from fr_cpu import yunet_post
from fr_cpu.align import align_112
from fr_cpu.dequant import float_model
from fr_cpu.emotion import emotion_result, face_input, resolve_emotion_model
from fr_cpu.liveness import LivenessConfig, liveness_result, onnx_files
from fr_cpu.minifasnet import crop
from fr_cpu.models import normalised_embedding, resolve_model, sface_input
from pydantic import BaseModel, ConfigDict, Field, FilePath

from fr_core.errors import FrEdgeError
from fr_core.interfaces import AnalysisResult, Detection
from fr_tensorrt.runner import TrtModel

YUNET_SIDE = 640


class _Closes:
    """TensorRT components own their accelerator (one CUDA owner thread and stream each):
    ``close()`` releases it, so a component the engine stops or replaces frees the GPU."""

    accelerator: Any = None

    def close(self) -> None:
        close = getattr(self.accelerator, "close", None)
        if callable(close):
            close()
        self.accelerator = None


class TrtConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: FilePath | None = Field(None, description="ONNX file; default: the CPU plugin's")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    precision: Literal["fp16", "fp32"] = Field(
        "fp16", description="fp16 where the GPU has fast FP16 (Orin has), else fp32"
    )
    cache_dir: Path | None = Field(
        None, description="where engines are kept; default ~/.cache/fr-edge/engines"
    )
    workspace_mb: int = Field(256, ge=16, le=16384, description="builder workspace")

    #: options of the engine alone: not handed to a ``fallback: cpu`` component
    FALLBACK_EXCLUDE: ClassVar[tuple[str, ...]] = ("precision", "cache_dir", "workspace_mb")


class YuNetTrtConfig(TrtConfig):
    score_threshold: float = Field(0.6, gt=0, lt=1)
    nms_threshold: float = Field(0.3, gt=0, lt=1)
    top_k: int = Field(100, ge=1, le=5000)


def _model(
    cfg: TrtConfig, default: str, accelerator: Any, shapes: dict[str, Any], trt: Any
) -> TrtModel:
    path = resolve_model(default, cfg.model_path, cfg.sha256)
    if path.name.endswith("_int8bq.onnx"):
        path = float_model(path, cfg.cache_dir.parent / "models" if cfg.cache_dir else None)
    return TrtModel(
        path,
        accelerator,
        precision=cfg.precision,
        shapes=shapes,
        cache_dir=cfg.cache_dir,
        workspace_mb=cfg.workspace_mb,
        trt=trt,
    )


class YuNetTrt(_Closes):
    def __init__(self, config: YuNetTrtConfig, accelerator: Any, trt: Any = None) -> None:
        self.config = config
        self.model = _model(
            config,
            "face_detection_yunet_2023mar_int8bq.onnx",
            accelerator,
            {"input": (1, 3, YUNET_SIDE, YUNET_SIDE)},
            trt,
        )

    def detect(self, frame: np.ndarray) -> list[Detection]:
        import cv2

        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.dtype != np.uint8:
            raise ValueError("frame must be an H x W x 3 uint8 BGR array")
        h, w = frame.shape[:2]
        scale = min(1.0, YUNET_SIDE / max(h, w))
        img = (
            frame
            if scale == 1.0
            else cv2.resize(
                frame,
                (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=cv2.INTER_AREA,
            )
        )
        canvas = np.zeros((YUNET_SIDE, YUNET_SIDE, 3), np.uint8)
        canvas[: img.shape[0], : img.shape[1]] = img
        outputs = self.model.infer({"input": yunet_post.preprocess(canvas)})
        faces = yunet_post.decode(
            outputs,
            (YUNET_SIDE, YUNET_SIDE),
            self.config.score_threshold,
            self.config.nms_threshold,
            self.config.top_k,
        )
        return [
            Detection(
                tuple(v / scale for v in d.bbox),
                d.score,
                None if d.landmarks is None else np.asarray(d.landmarks) / scale,
            )
            for d in faces
        ]


class SFaceTrt(_Closes):
    model_name = "SFace"  # the same embeddings as fr_cpu's sface: one gallery serves both
    dim = 128

    def __init__(self, config: TrtConfig, accelerator: Any, trt: Any = None) -> None:
        # aligned without cv2.FaceRecognizerSF: JetPack's OpenCV 4.8 cannot parse the model
        self.model = _model(
            config,
            "face_recognition_sface_2021dec_int8bq.onnx",
            accelerator,
            {"data": (1, 3, 112, 112)},
            trt,
        )
        (self._output,) = self.model.outputs

    def embed(self, frame: np.ndarray, detection: Detection) -> np.ndarray:
        if detection.landmarks is None:
            raise FrEdgeError("SFace needs the detector's 5 landmarks")
        blob = sface_input(align_112(frame, np.asarray(detection.landmarks)))
        return normalised_embedding(self.model.infer({"data": blob})[self._output])


def _engine(
    path: Path, accelerator: Any, config: Any, shape: tuple[int, ...], trt: Any
) -> TrtModel:
    """An engine for a model whose one input is named ``input``, with the config's
    precision, cache and workspace."""
    return TrtModel(
        path,
        accelerator,
        precision=config.precision,
        shapes={"input": shape},
        cache_dir=config.cache_dir,
        workspace_mb=config.workspace_mb,
        trt=trt,
    )


class EmotionTrtConfig(TrtConfig):
    margin: float = Field(0.1, ge=0.0, le=1.0)
    onnx_cache_dir: Path | None = Field(None, description="where the converted ONNX is kept")

    #: the CPU analyzer's cache_dir is this onnx_cache_dir (this cache_dir holds engines)
    FALLBACK_RENAME: ClassVar[dict[str, str]] = {"onnx_cache_dir": "cache_dir"}


class EmotionTrt(_Closes):
    name = "emotion"
    gates_identity = False

    def __init__(self, config: EmotionTrtConfig, accelerator: Any, trt: Any = None) -> None:
        self.config = config
        path = resolve_emotion_model(config.model_path, config.sha256, config.onnx_cache_dir)
        self.model = _engine(path, accelerator, config, (1, 1, 64, 64), trt)

    def analyze(self, frame: np.ndarray, detection: Detection) -> AnalysisResult:
        probs = self.model.infer({"input": face_input(frame, detection.bbox, self.config.margin)})
        return emotion_result(next(iter(probs.values())))


class LivenessTrtConfig(LivenessConfig):
    precision: Literal["fp16", "fp32"] = Field("fp16", description="as for the other engines")
    cache_dir: Path | None = Field(None, description="where engines are kept")
    workspace_mb: int = Field(256, ge=16, le=16384)

    FALLBACK_EXCLUDE: ClassVar[tuple[str, ...]] = ("precision", "cache_dir", "workspace_mb")


class LivenessTrt(_Closes):
    """The ``liveness`` analyzer's two MiniFASNet models as TensorRT engines, built from the
    same ONNX translations; the same crops and the same decision (fr_cpu.liveness)."""

    name = "liveness"
    gates_identity = True

    def __init__(self, config: LivenessTrtConfig, accelerator: Any, trt: Any = None) -> None:
        self.config = config
        self.threshold = config.threshold
        self.min_face_size = config.min_face_size
        self._models = [
            (_engine(path, accelerator, config, (1, 3, 80, 80), trt), scale)
            for path, scale in onnx_files(config)
        ]

    def analyze(self, frame: np.ndarray, detection: Detection) -> AnalysisResult:
        probabilities = [
            next(iter(model.infer({"input": crop(frame, detection.bbox, scale)}).values()))
            for model, scale in self._models
        ]
        return liveness_result(probabilities, self.threshold)
