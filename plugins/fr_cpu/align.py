"""Face alignment for SFace without ``cv2.FaceRecognizerSF``: the similarity transform
(Umeyama's least-squares estimate) that maps the detector's five landmarks onto SFace's
112 x 112 template, applied with ``warpAffine``.

``FaceRecognizerSF.create`` parses the model file just to offer ``alignCrop``, and OpenCV
before 4.11 (JetPack 6 ships 4.8) cannot parse the int8bq SFace file; the TensorRT plugin
aligns with this instead. A test checks it against ``alignCrop`` on real faces.
"""

from __future__ import annotations

import numpy as np

#: Where SFace expects the eyes, nose tip and mouth corners in its 112 x 112 input.
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 matrix of the rotation + uniform scale + translation taking ``src`` points
    closest (least squares) to ``dst`` (Umeyama 1991, without reflection)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    rot = u @ e @ vt
    var = (s**2).sum() / len(src)
    scale = float((sig * np.diag(e)).sum() / var) if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_112(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112 x 112 crop SFace expects, from the frame and the five landmarks."""
    import cv2

    m = similarity(np.asarray(landmarks, np.float64).reshape(5, 2), TEMPLATE)
    crop: np.ndarray = cv2.warpAffine(frame, m, (112, 112), flags=cv2.INTER_LINEAR)
    return crop
