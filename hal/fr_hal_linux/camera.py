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

**Planes** (docs/liveness-hardware.md). ``ir_device`` and ``depth_device`` name second and
third OpenCV sources (a V4L2 node, an index, a URL, a file or an image sequence) read
alongside ``source`` for the frame's ``"ir"`` plane (converted to grey, uint8) and its
``"depth"`` plane (16-bit values, e.g. a V4L2 Z16 stream in millimetres, times
``depth_scale_m``: float32 metres, 0 kept as "no reading"). A plane of another size than the
RGB frame is resized to it (IR bilinear, depth nearest-neighbour: no depth is invented at a
face's edge). Resizing is not alignment: fr-edge assumes a co-located RGB-IR or RGB-D
module that delivers frames aligned pixel for pixel (or registered by its driver); aligning
two separate cameras needs their calibration, which fr-edge does not do.

A file ``source`` reads its planes in step, frame by frame, in the caller's thread. A live
``source`` reads each plane source on a grabber thread of its own that keeps its newest frame
(reopened after ``stall_seconds`` of silence, with the same backoff), and a frame takes the
newest plane frame grabbed within ``plane_max_age_seconds`` of it. A plane source that fails,
stalls, ends or delivers a frame that cannot be converted never holds up or ends the RGB
stream: the frame goes out without that plane, counted in ``plane_failures[plane]`` and
logged (at most once a minute per plane); the liveness cue reading it leaves that frame
unscored.
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
PLANE_BACKENDS = {**BACKENDS, "images": 2000}  # cv2.CAP_IMAGES: 16-bit PNG/TIFF sequences
PlaneBackend = Literal["any", "v4l2", "ffmpeg", "gstreamer", "images"]
PLANE_LOG_INTERVAL = 60.0  # seconds between two log lines about one plane's failures


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
    ir_device: str | None = Field(
        None,
        description="source of the 'ir' plane, read alongside source: a V4L2 device "
        "(/dev/video2 or its index), a stream URL, a video file or an image sequence; its "
        "frames are converted to grey uint8 and resized to the RGB frame's size. Assumes a "
        "co-located RGB-IR module delivering aligned frames (docs/liveness-hardware.md)",
    )
    ir_backend: PlaneBackend = Field("any", description="OpenCV capture back-end of ir_device")
    depth_device: str | None = Field(
        None,
        description="source of the 'depth' plane, read alongside source: a device, URL or "
        "file delivering 16-bit single-channel frames (a V4L2 Z16 stream, 16-bit PNGs with "
        "depth_backend: images), converted to float32 metres with depth_scale_m",
    )
    depth_backend: PlaneBackend = Field(
        "any", description="OpenCV capture back-end of depth_device ('images' for a sequence)"
    )
    depth_fourcc: str | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="pixel format asked of depth_device (CAP_PROP_FOURCC), e.g. 'Z16' or "
        "'Y16'; default the device's own",
    )
    depth_scale_m: float = Field(
        0.001,
        gt=0,
        le=1.0,
        description="metres per unit of the depth stream's 16-bit values (Z16: millimetres)",
    )
    plane_max_age_seconds: float = Field(
        0.2,
        gt=0,
        le=10.0,
        description="live sources: the newest plane frame goes with an RGB frame only when "
        "grabbed within this many seconds of it; otherwise the frame goes without the plane",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must name a device, a stream URL or a file")
        return v

    @field_validator("ir_device", "depth_device")
    @classmethod
    def _plane_source(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if not v:
            raise ValueError("must name a device, a stream URL or a file (or be left out)")
        if "://" in v or v.isdigit() or "!" in v:
            return v
        if "%" in v:  # an image sequence such as depth_%04d.png: its folder must exist
            folder = os.path.dirname(v) or "."
            if not os.path.isdir(folder):
                raise ValueError(f"{v!r}: the folder {folder!r} does not exist")
            return v
        if not os.path.exists(v):
            raise ValueError(
                f"{v!r} does not exist (a device such as /dev/video2, a URL, a file or an "
                "image sequence such as ir_%04d.png)"
            )
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
    def planes(self) -> tuple[str, ...]:
        """The planes a camera with this config delivers (its ``planes`` attribute)."""
        return tuple(
            name
            for name, device in (("ir", self.ir_device), ("depth", self.depth_device))
            if device is not None
        )

    @property
    def is_file(self) -> bool:
        return (
            "://" not in self.source
            and not self.source.isdigit()
            and not self.source.startswith("/dev/")
            and not self.is_pipeline
        )


def convert_plane(
    name: str, raw: np.ndarray, shape: tuple[int, int], depth_scale_m: float
) -> np.ndarray:
    """A plane source's frame as the ``name`` plane of an RGB frame of H x W ``shape``: IR as
    H x W uint8 grey (16-bit IR scaled down by 256), depth as H x W float32 metres (16-bit
    values times ``depth_scale_m``; 0 stays 0, "no reading"). ValueError names what came
    when the frame cannot be one."""
    import cv2

    height, width = shape
    img = np.asarray(raw)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if name == "ir":
        if img.ndim == 3 and img.shape[2] in (3, 4) and img.dtype == np.uint8:
            code = cv2.COLOR_BGR2GRAY if img.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
            img = cv2.cvtColor(img, code)
        if img.ndim == 2 and img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        if img.ndim != 2 or img.dtype != np.uint8:
            raise ValueError(
                f"the ir source delivered {tuple(raw.shape)} {raw.dtype} frames; allowed: "
                "grey or BGR uint8, or 16-bit grey"
            )
        if img.shape != (height, width):
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(img)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise ValueError(
            f"the depth source delivered {tuple(raw.shape)} {raw.dtype} frames; allowed: "
            "16-bit single-channel values (a Z16 or Y16 stream: set depth_fourcc; 16-bit "
            "PNGs: depth_backend: images)"
        )
    if img.shape != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)
    return img.astype(np.float32) * np.float32(depth_scale_m)


class _PlaneSource:
    """One plane's OpenCV source: read in step with a file ``source`` (``read_in_step``), or
    by a grabber thread of its own that keeps the newest frame (``start``/``newest``)."""

    def __init__(
        self, name: str, source: str, backend: str, config: OpenCvCameraConfig, clock: Any
    ) -> None:
        self.name, self.source, self.backend = name, source, backend
        self.label = mask_url(source)
        self.config = config
        self._clock = clock
        self.cap: Any = None  # in-step reading only; a grabber owns its own capture
        self._lock = threading.Lock()
        self._latest: tuple[np.ndarray, float] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.reopens = 0

    def capture(self) -> Any:
        import cv2

        src: Any = int(self.source) if self.source.isdigit() else self.source
        params: list[int] = []
        if "://" in self.source:  # network: no read may block past the stall limit
            ms = int(self.config.stall_seconds * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(src, PLANE_BACKENDS[self.backend], params)
        if not cap.isOpened():
            cap.release()
            raise FrEdgeError(f"opencv camera: cannot open the {self.name} source {self.label}")
        if self.name == "depth":
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # the 16-bit values, not a colour picture
            if self.config.depth_fourcc:
                four = self.config.depth_fourcc.ljust(4)
                code = sum(ord(c) << (8 * i) for i, c in enumerate(four))
                cap.set(cv2.CAP_PROP_FOURCC, float(code))
        if not self.config.is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    # --- in step with a file source ---------------------------------------------------------

    def open_in_step(self) -> None:
        self.close()
        try:
            self.cap = self.capture()
        except FrEdgeError as exc:  # the RGB stream goes on; each frame counts the miss
            log.warning("%s; frames go without the %s plane", exc, self.name)
            self.cap = None

    def read_in_step(self) -> tuple[np.ndarray | None, str]:
        if self.cap is None:
            return None, "its source could not be opened"
        ok, frame = self._read(self.cap)
        if not ok or frame is None:
            return None, "its source delivered no frame (ended or failed)"
        return frame, ""

    # --- a live source: a grabber thread of its own -----------------------------------------

    def start(self) -> None:
        """Start the grabber; it opens the source itself, so a plane source slow to open
        (or failing to) never delays the RGB stream's ``open``."""
        self.close()
        self._latest = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._grab_loop,
            args=(self._stop,),
            name=f"fr-camera-{self.name}-grabber",
            daemon=True,
        )
        self._thread.start()

    def _read(self, cap: Any) -> tuple[bool, Any]:
        try:
            ok, frame = cap.read()
        except Exception as exc:  # an OpenCV error in a read: a failed read, not a dead thread
            log.debug("the %s source %s: %s", self.name, self.label, exc)
            return False, None
        return bool(ok), frame

    def _grab_loop(self, stop: threading.Event) -> None:
        """Owns its capture (and any it reopens) until it returns, and releases it."""
        cap: Any = None
        try:
            try:
                cap = self.capture()
            except FrEdgeError as exc:  # retried with backoff below; RGB goes on
                log.warning(
                    "%s; retrying, frames go without the %s plane meanwhile", exc, self.name
                )
            backoff = 0.5
            last = self._clock()
            while not stop.is_set():
                ok, frame = (False, None) if cap is None else self._read(cap)
                now = self._clock()
                if stop.is_set():
                    break
                if ok and frame is not None:
                    backoff, last = 0.5, now
                    with self._lock:
                        self._latest = (frame, now)
                    continue
                if cap is not None and now - last < self.config.stall_seconds:
                    stop.wait(0.05)
                    continue
                if cap is not None:
                    log.warning(
                        "camera %s: the %s source %s delivered nothing for %.1fs; reopening",
                        mask_url(self.config.source),
                        self.name,
                        self.label,
                        now - last,
                    )
                    cap.release()
                    cap = None
                if stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.config.reopen_backoff_max_seconds)
                try:
                    cap = self.capture()
                    self.reopens += 1
                    last = self._clock()
                except FrEdgeError as exc:
                    log.debug("%s", exc)
        finally:
            if cap is not None:
                cap.release()

    def newest(self, stamp: float) -> tuple[np.ndarray | None, str]:
        """The newest frame grabbed within ``plane_max_age_seconds`` of ``stamp``."""
        with self._lock:
            latest = self._latest
        if latest is None:
            return None, "its source has delivered no frame yet"
        frame, grabbed = latest
        age = abs(stamp - grabbed)
        if age > self.config.plane_max_age_seconds:
            return None, f"its newest frame is {age:.2f}s from the RGB frame's"
        return frame, ""

    def signal_stop(self) -> None:
        self._stop.set()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                log.warning(
                    "camera: the %s grabber is blocked in a read; it releases its capture "
                    "when the read returns",
                    self.name,
                )
            self._thread = None
        if self.cap is not None:
            self.cap.release()
            self.cap = None


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
        #: the planes each frame carries when their sources deliver (docs/liveness-hardware.md)
        self.planes: tuple[str, ...] = config.planes
        #: frames that went out without a declared plane, by plane (its source failed)
        self.plane_failures: dict[str, int] = {name: 0 for name in self.planes}
        self._plane_logged: dict[str, float] = {}
        self._plane_sources = [
            _PlaneSource(name, device, backend, config, clock)
            for name, device, backend in (
                ("ir", config.ir_device, config.ir_backend),
                ("depth", config.depth_device, config.depth_backend),
            )
            if device is not None
        ]

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
            for plane in self._plane_sources:
                plane.open_in_step()
            return
        for plane in self._plane_sources:
            plane.start()
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
        return FrameResult(ReadStatus.FRAME, frame, index, stamp, planes=self._planes(frame, stamp))

    def _read_file(self) -> FrameResult:
        if self._ended:
            return FrameResult(ReadStatus.EOS)
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._ended = True
            return FrameResult(ReadStatus.EOS)
        index = self._grabbed
        self._grabbed += 1
        stamp = self._clock()
        return FrameResult(ReadStatus.FRAME, frame, index, stamp, planes=self._planes(frame, stamp))

    # --- planes ------------------------------------------------------------------------------

    def _planes(self, frame: np.ndarray, stamp: float) -> dict[str, np.ndarray]:
        """This frame's planes from their sources; a plane that cannot be had is left out,
        counted and logged, and never costs the RGB frame."""
        out: dict[str, np.ndarray] = {}
        for plane in self._plane_sources:
            if self.config.is_file:
                raw, why = plane.read_in_step()
            else:
                raw, why = plane.newest(stamp)
            if raw is not None:
                try:
                    out[plane.name] = convert_plane(
                        plane.name, raw, frame.shape[:2], self.config.depth_scale_m
                    )
                    continue
                except Exception as exc:  # a bad plane frame costs the plane, not the frame
                    why = str(exc)
            self._plane_failed(plane.name, why)
        return out

    def _plane_failed(self, name: str, why: str) -> None:
        self.plane_failures[name] = self.plane_failures.get(name, 0) + 1
        now = time.monotonic()
        last = self._plane_logged.get(name)
        if last is None or now - last >= PLANE_LOG_INTERVAL:
            self._plane_logged[name] = now
            log.warning(
                "camera %s: a frame goes without its %s plane: %s (%d such frames so far)",
                self.label,
                name,
                why,
                self.plane_failures[name],
            )

    def close(self) -> None:
        self._stop.set()
        for plane in self._plane_sources:
            plane.signal_stop()  # all at once: their waits overlap
        for plane in self._plane_sources:
            plane.close(self.close_timeout)
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
