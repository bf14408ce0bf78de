"""YuNet (2023mar) pre- and post-processing in numpy, for back-ends that run the raw network:
the TensorRT plugin, and any runtime that returns the twelve output tensors.

The CPU plugin runs the same network through ``cv2.FaceDetectorYN``; a test checks that
decoding OpenCV DNN's raw outputs with these functions gives the same faces as
FaceDetectorYN on real photos, so every back-end reports identical detections.

Network: input ``input`` 1 x 3 x H x W, BGR, 0-255, H and W multiples of 32. Outputs per
stride s in (8, 16, 32), one row per grid cell (row-major): ``cls_s`` and ``obj_s`` (scores),
``bbox_s`` (dx, dy, log w, log h, in cells), ``kps_s`` (five landmarks, in cells).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fr_core.interfaces import Detection

STRIDES = (8, 16, 32)
OUTPUTS = tuple(f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES)


def padded_size(width: int, height: int) -> tuple[int, int]:
    """The network input size for an image: each side rounded up to a multiple of 32."""
    return (-(-width // 32) * 32, -(-height // 32) * 32)


def preprocess(image: np.ndarray) -> np.ndarray:
    """1 x 3 x H' x W' float32 (BGR, unscaled), the image in the top-left corner, zeros
    elsewhere: the padding FaceDetectorYN applies."""
    h, w = image.shape[:2]
    pw, ph = padded_size(w, h)
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :h, :w] = image.transpose(2, 0, 1)
    return blob


def decode(
    outputs: Mapping[str, np.ndarray],
    input_size: tuple[int, int],
    score_threshold: float,
    nms_threshold: float,
    top_k: int,
) -> list[Detection]:
    """Faces (in the input's pixels) from the raw outputs, after non-maximum suppression."""
    import cv2

    pw, ph = input_size
    boxes, scores, marks = [], [], []
    for s in STRIDES:
        cols, rows = pw // s, ph // s
        cls = np.asarray(outputs[f"cls_{s}"], np.float32).reshape(-1)
        obj = np.asarray(outputs[f"obj_{s}"], np.float32).reshape(-1)
        n = cols * rows
        if cls.size != n:
            raise ValueError(f"cls_{s} has {cls.size} values; a {pw}x{ph} input gives {n}")
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = np.nonzero(score >= score_threshold)[0]
        if keep.size == 0:
            continue
        bbox = np.asarray(outputs[f"bbox_{s}"], np.float32).reshape(-1, 4)[keep]
        kps = np.asarray(outputs[f"kps_{s}"], np.float32).reshape(-1, 10)[keep]
        c = (keep % cols).astype(np.float32)
        r = (keep // cols).astype(np.float32)
        cx, cy = (c + bbox[:, 0]) * s, (r + bbox[:, 1]) * s
        w, h = np.exp(bbox[:, 2]) * s, np.exp(bbox[:, 3]) * s
        boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1))
        pts = kps.reshape(-1, 5, 2)
        marks.append(
            np.stack([(pts[:, :, 0] + c[:, None]) * s, (pts[:, :, 1] + r[:, None]) * s], 2)
        )
        scores.append(score[keep])
    if not boxes:
        return []
    all_boxes = np.concatenate(boxes)
    all_scores = np.concatenate(scores)
    all_marks = np.concatenate(marks)
    chosen = cv2.dnn.NMSBoxes(
        all_boxes.tolist(), all_scores.tolist(), score_threshold, nms_threshold, top_k=top_k
    )
    order = np.asarray(chosen, dtype=np.int64).reshape(-1)
    return [
        Detection(
            tuple(float(v) for v in all_boxes[i]),  # type: ignore[arg-type]
            float(all_scores[i]),
            all_marks[i].astype(np.float32),
        )
        for i in order
    ]
