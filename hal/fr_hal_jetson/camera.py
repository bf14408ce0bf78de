"""The ``jetson`` camera: NVIDIA's ``jetson_utils.videoSource`` (CSI cameras through
libargus, V4L2, RTSP/WebRTC, files), decoding on the Jetson's hardware.

Frames are captured as RGB in mapped (zero-copy) memory, converted to BGR on the GPU, and
handed over as numpy arrays, so the rest of the pipeline sees what every other camera gives.
``read(timeout)`` passes its timeout to ``Capture``, which returns nothing when it expires;
the end of a file is EOS; any other capture failure is an ERROR result (the engine reopens
the source, and its watchdog reopens one that stays silent).
"""

from __future__ import annotations

import time
from typing import Any

from fr_hal_linux.camera import mask_url
from pydantic import BaseModel, ConfigDict, Field

from fr_core.errors import FrEdgeError
from fr_core.interfaces import FrameResult, ReadStatus


class JetsonCameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        "csi://0",
        description="jetson_utils URI: csi://0, v4l2:///dev/video0, rtsp://..., file://...",
    )
    width: int | None = Field(None, ge=16, le=7680, description="requested width")
    height: int | None = Field(None, ge=16, le=4320, description="requested height")
    fps: float | None = Field(None, gt=0, le=240, description="requested frame rate")
    flip: str | None = Field(
        None,
        pattern=r"^(none|counterclockwise|rotate-180|clockwise|horizontal|vertical)$",
        description="CSI flip method",
    )
    codec: str | None = Field(None, pattern=r"^(h264|h265|vp8|vp9|mjpeg)$")
    loop: int = Field(0, ge=-1, description="file sources: times to loop (-1: forever)")


class JetsonCamera:
    def __init__(self, config: JetsonCameraConfig) -> None:
        self.config = config
        self.label = mask_url(config.source)
        self._src: Any = None
        self._bgr: Any = None
        self._index = 0
        self._ended = False
        self.dropped = 0
        self.opens = 0

    def _argv(self) -> list[str]:
        c = self.config
        args = []
        if c.width:
            args.append(f"--input-width={c.width}")
        if c.height:
            args.append(f"--input-height={c.height}")
        if c.fps:
            args.append(f"--input-rate={c.fps}")
        if c.flip:
            args.append(f"--input-flip={c.flip}")
        if c.codec:
            args.append(f"--input-codec={c.codec}")
        if c.loop:
            args.append(f"--input-loop={c.loop}")
        args.append("--headless")
        return args

    def open(self) -> None:
        from jetson_utils import videoSource

        self.close()
        try:
            self._src = videoSource(self.config.source, argv=self._argv())
        except Exception as exc:
            raise FrEdgeError(f"jetson camera: cannot open {self.label}: {exc}") from None
        self._ended, self._index = False, 0
        self.opens += 1

    def read(self, timeout: float) -> FrameResult:
        if self._src is None:
            return FrameResult(ReadStatus.ERROR, error="camera is not open")
        if self._ended:
            return FrameResult(ReadStatus.EOS)
        import jetson_utils as ju

        try:
            rgb = self._src.Capture(format="rgb8", timeout=max(0, int(timeout * 1000)))
        except Exception as exc:
            if not self._src.IsStreaming():
                self._ended = True
                return FrameResult(ReadStatus.EOS)
            return FrameResult(ReadStatus.ERROR, error=f"{self.label}: {exc}")
        if rgb is None:
            if not self._src.IsStreaming():
                self._ended = True
                return FrameResult(ReadStatus.EOS)
            return FrameResult(ReadStatus.TIMEOUT)
        if self._bgr is None or (self._bgr.width, self._bgr.height) != (rgb.width, rgb.height):
            self._bgr = ju.cudaAllocMapped(width=rgb.width, height=rgb.height, format="bgr8")
        ju.cudaConvertColor(rgb, self._bgr)
        ju.cudaDeviceSynchronize()
        frame = ju.cudaToNumpy(self._bgr).copy()  # the mapped buffer is reused next frame
        index = self._index
        self._index += 1
        return FrameResult(ReadStatus.FRAME, frame, index, time.monotonic())

    def close(self) -> None:
        if self._src is not None:
            try:
                self._src.Close()
            finally:
                self._src = None
