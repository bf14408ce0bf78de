"""The ``opencv`` camera: USB/V4L2 devices, RTSP/HTTP streams and files through OpenCV's
VideoCapture, on any Linux machine.

OpenCV's ``read`` may block for as long as the network or the driver likes (an RTSP source
that stops sending blocks it for good). So a live source is read by a grabber thread that
keeps only the newest frame: ``read(timeout)`` waits at most ``timeout`` for one, frames the
consumer was too slow to take are dropped and counted, never queued. If the source delivers
nothing for ``stall_seconds`` the grabber reopens it, with a capped exponential backoff
(``reopens`` counts them); the engine's watchdog does the same from the outside for any
source. A file is read in the caller's thread, every frame, and ends with EOS.

The grabber thread owns its capture: it opens (after the first, which ``open`` makes to report
errors at once), reads and releases it, and nothing else touches it. A GStreamer or V4L2
read can block with no timeout of its own; ``close`` then waits ``close_timeout`` for the
grabber and returns without it, and the grabber releases its capture when the read returns.
(Before, ``close`` released a capture the grabber was still reading: a native crash on the
documented ``nvarguscamerasrc`` set-up.)

Credentials in a stream URL (``rtsp://user:secret@host/...``) never reach a log line or an
error: they are masked as ``rtsp://***@host/...``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fr_core.errors import FrEdgeError
from fr_core.interfaces import FrameResult, ReadStatus

log = logging.getLogger(__name__)

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
BACKENDS = {"any": 0, "v4l2": 200, "ffmpeg": 1900, "gstreamer": 1800}


def mask_url(source: str) -> str:
    """``source`` with any user:password@ of a URL replaced by ***@."""
    return _USERINFO.sub("***@", source)


class OpenCvCameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description="a device (/dev/video0 or its index 0), a stream URL (rtsp://, http://) "
        "or a video file; put credentials in ${VARIABLES}, not in the file"
    )
    backend: Literal["any", "v4l2", "ffmpeg", "gstreamer"] = Field(
        "any", description="OpenCV capture back-end"
    )
    width: int | None = Field(None, ge=16, le=7680, description="requested frame width")
    height: int | None = Field(None, ge=16, le=4320, description="requested frame height")
    fps: float | None = Field(None, gt=0, le=1000, description="requested frame rate")
    stall_seconds: float = Field(
        5.0, gt=0, le=3600, description="a live source silent this long is reopened"
    )
    reopen_backoff_max_seconds: float = Field(
        30.0, gt=0, le=3600, description="longest wait between two reopen attempts"
    )
    rtsp_over_tcp: bool = Field(True, description="RTSP over TCP (no lost UDP packets)")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must name a device, a stream URL or a file")
        return v

    @model_validator(mode="after")
    def _exists(self) -> OpenCvCameraConfig:
        v = self.source
        if self.is_pipeline:
            if "appsink" not in v:
                raise ValueError("source: a GStreamer pipeline must end in appsink")
        elif "://" not in v and not v.isdigit() and not os.path.exists(v):
            raise ValueError(
                f"source: {v!r} does not exist (a device such as /dev/video0, or a file)"
            )
        return self

    @property
    def is_pipeline(self) -> bool:
        """A GStreamer pipeline (backend gstreamer, with "!" between elements), as for a
        CSI camera on a Jetson: ``nvarguscamerasrc ! ... ! appsink``."""
        return self.backend == "gstreamer" and "!" in self.source

    @property
    def is_file(self) -> bool:
        return (
            "://" not in self.source
            and not self.source.isdigit()
            and not self.source.startswith("/dev/")
            and not self.is_pipeline
        )


class OpenCvCamera:
    """See the module docstring."""

    close_timeout = 5.0  # seconds close() waits for a grabber blocked in a read

    def __init__(self, config: OpenCvCameraConfig, clock: Any = time.monotonic) -> None:
        self.config = config
        self.label = mask_url(config.source)
        self._clock = clock
        self._cap: Any = None
        self._lock = threading.Condition()
        self._latest: tuple[np.ndarray, int, float] | None = None
        self._taken = -1
        self._grabbed = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ended = False
        self._error: str | None = None
        self.dropped = 0
        self.reopens = 0
        self.opens = 0

    # --- capture ---------------------------------------------------------------------------

    def _capture(self) -> Any:
        import cv2

        if self.config.rtsp_over_tcp and self.config.source.startswith("rtsp"):
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        src: Any = int(self.config.source) if self.config.source.isdigit() else self.config.source
        params: list[int] = []
        if "://" in self.config.source:  # network: no read may block past the stall limit
            ms = int(self.config.stall_seconds * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(src, BACKENDS[self.config.backend], params)
        if not cap.isOpened():
            cap.release()
            raise FrEdgeError(f"opencv camera: cannot open {self.label}")
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, self.config.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self.config.height),
            (cv2.CAP_PROP_FPS, self.config.fps),
        ):
            if value:
                cap.set(prop, float(value))
        if not self.config.is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        return cap

    def open(self) -> None:
        self.close()
        self._ended, self._error = False, None
        self._latest, self._taken, self._grabbed = None, -1, 0
        cap = self._capture()  # here, so that a source that cannot open says so at once
        self.opens += 1
        if self.config.is_file:
            self._cap = cap
            return
        self._stop = threading.Event()  # the grabber's own: a stuck old one stays stopped
        self._thread = threading.Thread(
            target=self._grab_loop, args=(cap, self._stop), name="fr-camera-grabber", daemon=True
        )
        self._thread.start()

    def _grab_loop(self, cap: Any, stop: threading.Event) -> None:
        """Owns ``cap`` (and any capture it reopens) until it returns, and releases it."""
        backoff = 0.5
        last = self._clock()
        try:
            while not stop.is_set():
                ok, frame = (False, None) if cap is None else cap.read()
                now = self._clock()
                if stop.is_set():
                    break  # closed while this read blocked: the frame is nobody's now
                if ok and frame is not None:
                    backoff, last = 0.5, now
                    with self._lock:
                        if self._latest is not None and self._latest[1] > self._taken:
                            self.dropped += 1  # the consumer never took the previous one
                        self._latest = (frame, self._grabbed, now)
                        self._grabbed += 1
                        self._lock.notify_all()
                    continue
                if now - last < self.config.stall_seconds and cap is not None:
                    stop.wait(0.05)
                    continue
                log.warning(
                    "camera %s delivered nothing for %.1fs; reopening", self.label, now - last
                )
                if cap is not None:
                    cap.release()
                    cap = None
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.config.reopen_backoff_max_seconds)
                try:
                    cap = self._capture()
                    self.reopens += 1
                    last = self._clock()
                except FrEdgeError as exc:
                    log.warning("%s", exc)
        finally:
            if cap is not None:
                cap.release()

    # --- CameraSource ----------------------------------------------------------------------

    def read(self, timeout: float) -> FrameResult:
        if self._cap is None and self._thread is None:
            return FrameResult(ReadStatus.ERROR, error="camera is not open")
        if self.config.is_file:
            return self._read_file()
        deadline = self._clock() + max(0.0, timeout)
        with self._lock:
            while self._latest is None or self._latest[1] <= self._taken:
                left = deadline - self._clock()
                if left <= 0:
                    return FrameResult(ReadStatus.TIMEOUT)
                self._lock.wait(left)
            frame, index, stamp = self._latest
            self._taken = index
        return FrameResult(ReadStatus.FRAME, frame, index, stamp)

    def _read_file(self) -> FrameResult:
        if self._ended:
            return FrameResult(ReadStatus.EOS)
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._ended = True
            return FrameResult(ReadStatus.EOS)
        index = self._grabbed
        self._grabbed += 1
        return FrameResult(ReadStatus.FRAME, frame, index, self._clock())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.close_timeout)
            if self._thread.is_alive():
                log.warning(
                    "camera %s: the grabber is blocked in a read; it releases its capture "
                    "when the read returns",
                    self.label,
                )
            self._thread = None
        if self._cap is not None:  # a file: read in the caller's thread, so nobody else's
            self._cap.release()
            self._cap = None
