"""The ``sim`` camera: replays recorded frames at a chosen rate, with scripted faults.

Sources, by what ``source`` names:

* a video file (anything OpenCV's VideoCapture reads: .mp4, .avi, .mkv, ...);
* one image file, delivered ``repeat`` times;
* a directory of images (.jpg .jpeg .png .bmp, sorted by name) or a glob pattern;
* nothing: a generated test scene of ``width`` x ``height`` (needs no file and no OpenCV).

Each frame carries the source's own time, not the time it was delivered: ``timestamp`` is
the opening time plus the frame's position in the recording (a video's own frame rate; for
images and the generated scene, ``fps``, or 30 frames a second when ``fps`` is 0). So a clip
replayed faster or slower gives the same emotion durations (docs/events.md), as a live
camera's capture times would.

With ``fps > 0`` frames arrive on a real-time schedule: a reader slower than the camera gets
the frame that is current and the ones it missed are dropped and counted (``dropped``), as
with a live camera. ``fps = 0`` delivers every frame as fast as it is read (deterministic,
for tests). ``script`` injects faults at given frame numbers: ``timeout`` (one read returns
TIMEOUT), ``stall`` (no frame for ``seconds``), ``eos`` (the stream ends), ``error``
(the source fails until it is closed and reopened) and ``corrupt`` (that frame arrives as a
2 x 2 single-channel float array, which no OpenCV model accepts: a frame handler's fault).
"""

from __future__ import annotations

import glob
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fr_core.errors import FrEdgeError
from fr_core.files import IMAGE_EXTENSIONS
from fr_core.interfaces import FrameResult, ReadStatus


class ScriptStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    frame: int = Field(ge=0, description="source frame number at which the fault happens")
    action: Literal["timeout", "stall", "eos", "error", "corrupt"]
    seconds: float = Field(0.0, ge=0, le=3600, description="length of a stall")


class SimCameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(
        None, description="video file, image file, image directory or glob; none = test scene"
    )
    fps: float = Field(0.0, ge=0, le=1000, description="delivery rate; 0 = as fast as read")
    loop: bool = Field(False, description="start again at the end instead of reporting EOS")
    repeat: int = Field(1, ge=1, le=1_000_000, description="times each image is delivered")
    width: int = Field(640, ge=16, le=7680, description="test scene width")
    height: int = Field(360, ge=16, le=4320, description="test scene height")
    frames: int = Field(300, ge=1, le=10_000_000, description="test scene length in frames")
    noise: float = Field(
        0.0,
        ge=0.0,
        le=64.0,
        description="sensor noise: Gaussian, this standard deviation in grey levels, added to "
        "every frame (a still image repeated then differs frame to frame, as on a camera)",
    )
    seed: int = Field(0, ge=0, description="seed of the noise")
    script: list[ScriptStep] = Field(default_factory=list, description="scripted faults")

    @field_validator("source")
    @classmethod
    def _exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if any(ch in v for ch in "*?["):
            if not glob.glob(v):
                raise ValueError(f"no file matches the pattern {v!r}")
        elif not os.path.exists(v):
            raise ValueError(f"{v!r} does not exist (a video, an image, or a folder of images)")
        return v


class _Frames(Protocol):
    def next(self) -> np.ndarray | None: ...

    def skip(self, n: int) -> int: ...

    def close(self) -> None: ...


class _Scene:
    """A generated scene: a gradient with a moving block, deterministic per frame number."""

    def __init__(self, width: int, height: int, frames: int) -> None:
        self.w, self.h, self.frames, self.i = width, height, frames, 0
        yy, xx = np.mgrid[0:height, 0:width]
        self.base = np.stack(
            [
                (xx * 255 // max(1, width - 1)),
                (yy * 255 // max(1, height - 1)),
                np.full_like(xx, 96),
            ],
            axis=2,
        ).astype(np.uint8)

    def next(self) -> np.ndarray | None:
        if self.i >= self.frames:
            return None
        f = self.base.copy()
        side = max(8, min(self.w, self.h) // 4)
        x = int((self.w - side) * (0.5 + 0.5 * math.sin(self.i / 15)))
        y = int((self.h - side) * (0.5 + 0.5 * math.cos(self.i / 23)))
        f[y : y + side, x : x + side] = (230, 230, 230)
        self.i += 1
        return f

    def skip(self, n: int) -> int:
        k = min(n, self.frames - self.i)
        self.i += k
        return k

    def close(self) -> None:
        return None


class _Images:
    def __init__(self, paths: list[str], repeat: int) -> None:
        if not paths:
            raise FrEdgeError("sim camera: the source holds no image (.jpg .jpeg .png .bmp)")
        self.paths, self.repeat, self.i = paths, repeat, 0
        self._cache: tuple[int, np.ndarray] | None = None

    def _load(self, k: int) -> np.ndarray:
        if self._cache and self._cache[0] == k:
            return self._cache[1]
        import cv2

        img = cv2.imread(self.paths[k], cv2.IMREAD_COLOR)
        if img is None:
            raise FrEdgeError(f"sim camera: {self.paths[k]} is not an image OpenCV can read")
        self._cache = (k, img)
        return img

    def next(self) -> np.ndarray | None:
        if self.i >= len(self.paths) * self.repeat:
            return None
        img = self._load(self.i // self.repeat)
        self.i += 1
        return img.copy()

    def skip(self, n: int) -> int:
        k = min(n, len(self.paths) * self.repeat - self.i)
        self.i += k
        return k

    def close(self) -> None:
        self._cache = None


class _Video:
    def __init__(self, path: str) -> None:
        import cv2

        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise FrEdgeError(f"sim camera: OpenCV cannot open {path} as a video")
        rate = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = rate if math.isfinite(rate) and 0 < rate <= 1000 else None

    def next(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        return frame if ok else None

    def skip(self, n: int) -> int:
        done = 0
        while done < n and self.cap.grab():
            done += 1
        return done

    def close(self) -> None:
        self.cap.release()


def _open_frames(cfg: SimCameraConfig) -> _Frames:
    src = cfg.source
    if src is None:
        return _Scene(cfg.width, cfg.height, cfg.frames)
    if any(ch in src for ch in "*?["):
        paths = sorted(p for p in glob.glob(src) if p.lower().endswith(IMAGE_EXTENSIONS))
        return _Images(paths, cfg.repeat)
    p = Path(src)
    if p.is_dir():
        paths = sorted(str(x) for x in p.iterdir() if x.suffix.lower() in IMAGE_EXTENSIONS)
        return _Images(paths, cfg.repeat)
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return _Images([str(p)], cfg.repeat)
    return _Video(str(p))


class SimCamera:
    """See the module docstring. ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        config: SimCameraConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.config = config
        self._clock, self._sleep = clock, sleep
        self._frames: _Frames | None = None
        self._failed: str | None = None
        self._ended = False
        self.dropped = 0
        self.opens = 0
        # Faults fire once per camera, not once per open: a reopened source does not fail
        # again at the same frame.
        self._script = {s.frame: s for s in config.script}

    # --- CameraSource ---

    def open(self) -> None:
        self.close()
        self._frames = _open_frames(self.config)
        self._next = 0  # number of the next source frame
        self._t0 = self._clock()
        self._media_t0 = self._t0  # frame n's timestamp: _media_t0 + n / _media_fps
        self._media_fps = getattr(self._frames, "fps", None) or self.config.fps or 30.0
        self._stall_until = 0.0
        self._failed = None
        self._ended = False
        self._noise = np.random.default_rng(self.config.seed)
        self.opens += 1

    def read(self, timeout: float) -> FrameResult:
        if self._frames is None:
            return FrameResult(ReadStatus.ERROR, error="camera is not open")
        if self._failed:
            return FrameResult(ReadStatus.ERROR, error=self._failed)
        if self._ended:
            return FrameResult(ReadStatus.EOS)
        now = self._clock()
        if now < self._stall_until:
            self._sleep(min(timeout, self._stall_until - now))
            return FrameResult(ReadStatus.TIMEOUT)
        step = self._script.pop(self._next, None)
        corrupt = step is not None and step.action == "corrupt"
        if step is not None and not corrupt:
            result = self._apply(step, timeout)
            if result is not None:
                return result
        fps = self.config.fps
        if fps > 0:
            due = self._t0 + self._next / fps
            now = self._clock()
            late = int((now - due) * fps)
            if late >= 1:  # the camera moved on: drop the frames we missed
                skipped = self._frames.skip(late)
                self.dropped += skipped
                self._next += skipped
                due = self._t0 + self._next / fps
            if due > now:
                if due - now > timeout:
                    self._sleep(timeout)
                    return FrameResult(ReadStatus.TIMEOUT)
                self._sleep(due - now)
        frame = self._frames.next()
        if frame is None and self.config.loop and self._next > 0:
            self._frames.close()
            self._frames = _open_frames(self.config)
            frame = self._frames.next()
        if frame is None:
            self._ended = True
            return FrameResult(ReadStatus.EOS)
        idx = self._next
        self._next += 1
        if corrupt:
            frame = np.full((2, 2), np.nan, np.float64)
        elif self.config.noise > 0:
            grain = self._noise.normal(0.0, self.config.noise, frame.shape)
            frame = np.clip(frame + grain, 0, 255).astype(np.uint8)
        return FrameResult(ReadStatus.FRAME, frame, idx, self._media_t0 + idx / self._media_fps)

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None

    # --- faults ---

    def _apply(self, step: ScriptStep, timeout: float) -> FrameResult | None:
        if step.action == "timeout":
            self._sleep(min(timeout, 0.001))
            return FrameResult(ReadStatus.TIMEOUT)
        if step.action == "eos":
            self._ended = True
            return FrameResult(ReadStatus.EOS)
        if step.action == "error":
            self._failed = f"scripted error at frame {step.frame}"
            return FrameResult(ReadStatus.ERROR, error=self._failed)
        # stall: nothing for `seconds`; the schedule resumes afterwards
        self._stall_until = self._clock() + step.seconds
        self._t0 += step.seconds
        self._sleep(min(timeout, step.seconds))
        return FrameResult(ReadStatus.TIMEOUT)
