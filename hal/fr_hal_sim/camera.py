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

With ``planes: [ir, depth]`` every frame also carries **synthetic** near-infrared and depth
planes aligned with it (:attr:`FrameResult.planes`, docs/liveness-hardware.md), for CI of the
``liveness_ir`` and ``liveness_depth`` cues; they are drawn from the frame, not measured. One
face is presented in ``presentation_box`` (the generated scene: its moving block), as
``presentation`` says, or as ``presentation_script`` says from a given frame on:

* ``live``: IR = half the frame's luminance (ambient near-infrared) and, in the ellipse
  inscribed in the box, ``40 + 0.5 x luminance + 110 x shading`` (skin reflecting the
  illuminator, brightest at the face's centre, shading = sqrt(1 - r^2) of the ellipse);
  depth = the background wall (``background_distance_m``, tilted 0.2 m over the frame's
  height) with, in the ellipse, an ellipsoid face at ``face_distance_m`` whose rim lies
  ``face_relief_m`` (3 cm) behind its centre;
* ``screen``: IR near black in the whole box (``6 + luminance / 40``: a screen emits no
  near-infrared), depth a flat, slightly tilted sheet at ``face_distance_m``;
* ``print``: IR ``30 + 0.6 x luminance`` in the box (paper reflects near-infrared: the
  print's picture shows), depth flat as for a screen.

Depth has Gaussian noise of ``depth_noise_mm``. The camera's ``planes`` attribute names the
planes it delivers (empty without the option, and nothing else changes then).
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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fr_core.errors import FrEdgeError
from fr_core.files import IMAGE_EXTENSIONS
from fr_core.interfaces import FrameResult, ReadStatus


class ScriptStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    frame: int = Field(ge=0, description="source frame number at which the fault happens")
    action: Literal["timeout", "stall", "eos", "error", "corrupt"]
    seconds: float = Field(0.0, ge=0, le=3600, description="length of a stall")


PLANES = ("ir", "depth")
Presentation = Literal["live", "screen", "print"]


class PresentationStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    frame: int = Field(ge=0, description="source frame number from which this presentation holds")
    presentation: Presentation = Field(
        description="what is shown in the presentation box: live, screen or print"
    )


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
    planes: list[Literal["ir", "depth"]] = Field(
        default_factory=list,
        description="synthetic planes delivered aligned with every frame, for CI of the IR "
        "and depth liveness cues: 'ir' (H x W uint8) and/or 'depth' (H x W float32 metres); "
        "drawn from the frame and presentation, not measured (docs/liveness-hardware.md)",
    )
    presentation: Presentation = Field(
        "live",
        description="what the synthetic planes show in the presentation box: 'live' (skin "
        "under IR, a face's relief), 'screen' (near black under IR, flat) or 'print' (the "
        "picture under IR, flat)",
    )
    presentation_script: list[PresentationStep] = Field(
        default_factory=list,
        description="presentation changes by frame: each step's presentation holds from its "
        "frame on (before the first: presentation)",
    )
    presentation_box: tuple[float, float, float, float] | None = Field(
        None,
        description="where the presented face is, as [x, y, w, h] fractions of the frame's "
        "width and height; default for the generated scene its moving block (needed with "
        "planes and a file source)",
    )
    face_distance_m: float = Field(
        0.6, ge=0.1, le=10.0, description="synthetic depth of the presented face or sheet"
    )
    background_distance_m: float = Field(
        1.5, ge=0.2, le=20.0, description="synthetic depth of the wall behind, at mid-height"
    )
    face_relief_m: float = Field(
        0.03,
        ge=0.0,
        le=0.2,
        description="a live face's synthetic relief: how far its rim lies behind its centre",
    )
    depth_noise_mm: float = Field(
        1.0, ge=0.0, le=100.0, description="standard deviation of the synthetic depth noise"
    )

    @field_validator("planes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"planes {v}: name each plane once (allowed: {', '.join(PLANES)})")
        return v

    @field_validator("presentation_box")
    @classmethod
    def _box(
        cls, v: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if v is None:
            return v
        x, y, w, h = v
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x and 0 < h <= 1 - y):
            raise ValueError(
                f"presentation_box {list(v)}: [x, y, w, h] fractions of the frame, the box "
                "inside it (0 <= x, y < 1; 0 < w <= 1 - x; 0 < h <= 1 - y)"
            )
        return v

    @model_validator(mode="after")
    def _scene(self) -> SimCameraConfig:
        if self.planes and self.source is not None and self.presentation_box is None:
            raise ValueError(
                "planes with a file source need presentation_box: where the presented face "
                "is, as [x, y, w, h] fractions of the frame"
            )
        if self.background_distance_m <= self.face_distance_m + self.face_relief_m:
            raise ValueError(
                f"background_distance_m ({self.background_distance_m}) must lie behind the "
                f"face (face_distance_m + face_relief_m = "
                f"{self.face_distance_m + self.face_relief_m})"
            )
        return self

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
        self.box: tuple[int, int, int, int] | None = None  # the last block drawn: x, y, w, h
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
        self.box = (x, y, side, side)
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


def synthetic_planes(
    frame: np.ndarray,
    box: tuple[int, int, int, int],
    presentation: str,
    names: tuple[str, ...],
    cfg: SimCameraConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The synthetic ``names`` planes of an H x W x 3 BGR frame presenting ``presentation``
    in ``box`` (x, y, w, h pixels): see the module docstring for what each looks like."""
    height, width = frame.shape[:2]
    x, y, w, h = box
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width, x + w), min(height, y + h)
    # the ellipse inscribed in the box: r2 < 1 inside, shading sqrt(1 - r2)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    r2 = ((xx + 0.5 - (x + w / 2)) / (w / 2)) ** 2 + ((yy + 0.5 - (y + h / 2)) / (h / 2)) ** 2
    inside = r2 < 1.0
    shade = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    out: dict[str, np.ndarray] = {}
    if "ir" in names:
        f = frame.astype(np.float32)
        luma = 0.114 * f[..., 0] + 0.587 * f[..., 1] + 0.299 * f[..., 2]
        ir = 0.5 * luma  # ambient near-infrared: the scene further from the illuminator
        face = luma[y0:y1, x0:x1]
        if presentation == "live":
            skin = 40.0 + 0.5 * face + 110.0 * shade
            ir[y0:y1, x0:x1] = np.where(inside, skin, ir[y0:y1, x0:x1])
        elif presentation == "screen":
            ir[y0:y1, x0:x1] = 6.0 + face / 40.0
        else:  # print
            ir[y0:y1, x0:x1] = 30.0 + 0.6 * face
        out["ir"] = np.clip(ir, 0, 255).astype(np.uint8)
    if "depth" in names:
        rows = np.arange(height, dtype=np.float32)[:, None]
        depth = np.repeat(
            cfg.background_distance_m + 0.2 * (rows / max(1, height - 1) - 0.5), width, axis=1
        )
        if presentation == "live":
            head = cfg.face_distance_m + cfg.face_relief_m * (1.0 - shade)
            depth[y0:y1, x0:x1] = np.where(inside, head, depth[y0:y1, x0:x1])
        else:  # a flat sheet, slightly tilted, filling the box
            depth[y0:y1, x0:x1] = cfg.face_distance_m + 0.02 * (xx - x0) / max(1, w)
        if cfg.depth_noise_mm > 0:
            depth += rng.normal(0.0, cfg.depth_noise_mm / 1000.0, depth.shape)
        out["depth"] = depth.astype(np.float32)
    return out


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
        #: the planes every frame carries (synthetic: see the module docstring)
        self.planes: tuple[str, ...] = tuple(config.planes)
        self._presentations = sorted(config.presentation_script, key=lambda p: p.frame)

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
        self._plane_noise = np.random.default_rng([self.config.seed, 1])
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
        stamp = self._media_t0 + idx / self._media_fps
        if self.planes and not corrupt:
            box = self._presentation_box(frame)
            if box is not None:
                planes = synthetic_planes(
                    frame,
                    box,
                    self.presentation_at(idx),
                    self.planes,
                    self.config,
                    self._plane_noise,
                )
                return FrameResult(ReadStatus.FRAME, frame, idx, stamp, planes=planes)
        return FrameResult(ReadStatus.FRAME, frame, idx, stamp)

    # --- synthetic planes ---

    def presentation_at(self, index: int) -> str:
        """What is presented at source frame ``index``: the last step of
        ``presentation_script`` at or before it, else ``presentation``."""
        kind: str = self.config.presentation
        for step in self._presentations:
            if step.frame > index:
                break
            kind = step.presentation
        return kind

    def _presentation_box(self, frame: np.ndarray) -> tuple[int, int, int, int] | None:
        height, width = frame.shape[:2]
        if self.config.presentation_box is not None:
            fx, fy, fw, fh = self.config.presentation_box
            return (
                int(fx * width),
                int(fy * height),
                max(1, int(fw * width)),
                max(1, int(fh * height)),
            )
        return getattr(self._frames, "box", None)  # the generated scene's block

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
