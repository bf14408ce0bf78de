"""A fake ``jetson_utils`` (dusty-nv/jetson-utils' Python module) that behaves as the real one
in what the ``jetson`` camera relies on, for CPU CI:

* ``videoSource(uri, argv=[...])`` opens ``file://`` paths (decoded here with OpenCV) and
  ``csi://N`` / ``v4l2:///dev/videoN`` (a moving test pattern); ``--input-width`` and friends
  are parsed as the real command line parser does, unknown flags ignored;
* ``Capture(format="rgb8", timeout=ms)`` returns a ``cudaImage`` in *mapped memory that the
  source reuses* (the real one cycles a small ring of buffers: a caller that keeps the
  array without copying sees it overwritten), ``None`` when ``timeout`` passes without a
  frame (0: return at once, -1: wait forever), and raises once the stream has ended, after
  which ``IsStreaming()`` is False; only the formats the real one takes are accepted;
* ``cudaAllocMapped``, ``cudaConvertColor`` (rgb8 <-> bgr8, same size only),
  ``cudaDeviceSynchronize`` and ``cudaToNumpy`` (a view of the image's memory, not a copy).

Faults for tests: ``STALLS`` (frame index -> seconds the source is silent before it),
``ERRORS`` (frame indexes whose capture raises while the stream goes on), ``OPENED`` (every
source made, with its argv).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("rgb8", "rgba8", "rgb32f", "rgba32f", "bgr8", "bgra8")
STALLS: dict[int, float] = {}
ERRORS: set[int] = set()
OPENED: list[videoSource] = []


class cudaImage:
    def __init__(self, width: int, height: int, format: str = "rgb8") -> None:
        if format not in ("rgb8", "bgr8"):
            raise ValueError(f"cudaImage: format {format!r} is not one this fake allocates")
        self.width, self.height, self.format = int(width), int(height), format
        self.shape = (self.height, self.width, 3)
        self.mapped = True
        self._array = np.zeros(self.shape, np.uint8)


def cudaAllocMapped(width: int, height: int, format: str = "rgb8") -> cudaImage:
    return cudaImage(width, height, format)


def cudaConvertColor(input: cudaImage, output: cudaImage) -> None:
    if (input.width, input.height) != (output.width, output.height):
        raise Exception("jetson.utils -- cudaConvertColor() input and output sizes differ")
    if {input.format, output.format} != {"rgb8", "bgr8"} and input.format != output.format:
        raise Exception(f"cudaConvertColor: {input.format} -> {output.format} unsupported here")
    src = input._array
    output._array[...] = src if input.format == output.format else src[:, :, ::-1]


def cudaDeviceSynchronize() -> None:
    pass


def cudaToNumpy(image: cudaImage) -> np.ndarray:
    return image._array  # the mapped memory itself, as the real one maps it


def _argv(argv: list[str]) -> dict[str, str]:
    out = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            out[key] = value
        elif arg.startswith("--"):
            out[arg[2:]] = ""
    return out


class videoSource:
    RING = 4  # mapped buffers the source cycles through

    def __init__(self, uri: str, argv: list[str] | None = None) -> None:
        self.uri, self.argv = uri, list(argv or [])
        opts = _argv(self.argv)
        self._loop = int(opts.get("input-loop", "0"))
        self._lock = threading.Lock()
        self._index = 0
        self._streaming = True
        self._capture: Any = None
        if uri.startswith("file://") or "://" not in uri:
            import cv2

            path = Path(uri.removeprefix("file://"))
            if not path.is_file():
                raise Exception(f"videoSource -- failed to find file '{path}'")
            self._capture = cv2.VideoCapture(str(path))
            if not self._capture.isOpened():
                raise Exception(f"videoSource -- failed to create input stream from {uri}")
            w, h = (
                int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            )
            self._fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 30.0)
        elif uri.startswith(("csi://", "v4l2://")):
            w = int(opts.get("input-width", "1280"))
            h = int(opts.get("input-height", "720"))
            self._fps = float(opts.get("input-rate", "30"))
        else:
            raise Exception(f"videoSource -- unsupported protocol in {uri}")
        self._ring = [cudaImage(w, h, "rgb8") for _ in range(self.RING)]
        OPENED.append(self)

    def GetWidth(self) -> int:
        return self._ring[0].width

    def GetHeight(self) -> int:
        return self._ring[0].height

    def GetFrameRate(self) -> float:
        return self._fps

    def IsStreaming(self) -> bool:
        return self._streaming

    def _next_bgr(self) -> np.ndarray | None:
        if self._capture is None:  # a moving pattern, as a live camera never ends
            img = self._ring[0]
            y, x = np.mgrid[0 : img.height, 0 : img.width]
            v = ((x + y + 8 * self._index) % 256).astype(np.uint8)
            return np.dstack([v, 255 - v, np.full_like(v, self._index % 256)])
        ok, frame = self._capture.read()
        if not ok and self._loop != 0:
            import cv2

            self._loop -= 1 if self._loop > 0 else 0
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
        return frame if ok else None

    def Capture(self, format: str = "rgb8", timeout: int = 1000) -> cudaImage | None:
        if format not in FORMATS:
            raise Exception(f"videoSource.Capture() -- invalid format '{format}'")
        if format != "rgb8":
            raise Exception(f"this fake captures rgb8 only (asked {format})")
        with self._lock:
            if not self._streaming:
                raise Exception("videoSource -- failed to capture image (EOS)")
            stall = STALLS.get(self._index, 0.0)
            if stall:
                wait = stall if timeout < 0 else min(stall, timeout / 1000)
                time.sleep(wait)
                if wait < stall:
                    STALLS[self._index] = stall - wait
                    return None  # timed out: the frame comes later
                STALLS.pop(self._index)
            index = self._index
            if index in ERRORS:
                self._index += 1
                raise Exception(f"videoSource -- failed to capture image {index}")
            frame = self._next_bgr()
            if frame is None:
                self._streaming = False
                raise Exception("videoSource -- failed to capture image (EOS)")
            image = self._ring[index % self.RING]
            image._array[...] = frame[:, :, ::-1]  # the source delivers RGB
            self._index += 1
            return image

    def Close(self) -> None:
        self._streaming = False
        if self._capture is not None:
            self._capture.release()
            self._capture = None
