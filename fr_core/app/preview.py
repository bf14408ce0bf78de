"""An annotated video of what the device saw: boxes, track ids, who (the employee id, or the
name in dev mode), and the processing rate. ``fr-edge demo --preview out.mp4`` and
``fr-edge run --preview out.mp4`` add it as a frame handler after the recognition stage.

The file is written as ``.<stem>.partial<suffix>`` (the container is chosen by the suffix)
and renamed when the run ends, so a file with the
final name is always a complete video. Names are shown only in dev mode, as everywhere else.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fr_core.errors import FrEdgeError
from fr_core.interfaces import FrameResult

log = logging.getLogger(__name__)

KNOWN = (80, 200, 60)  # BGR: a recognised face
CONFIRMED = (60, 220, 255)  # an event was sent for this track
UNKNOWN = (40, 120, 230)  # nobody recognised


@dataclass(frozen=True)
class Annotation:
    frame: int
    track: str
    box: tuple[int, int, int, int]
    color: tuple[int, int, int]
    text: str


def check_preview_path(path: Path) -> Path:
    """``path`` if a preview can be written there, else a FrEdgeError saying why."""
    if path.suffix.lower() not in (".mp4", ".avi"):
        raise FrEdgeError(f"preview file {path}: the name must end in .mp4 or .avi")
    folder = path.parent.resolve()
    if not folder.is_dir():
        raise FrEdgeError(f"preview file {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise FrEdgeError(f"preview file {path}: folder {folder} is not writable")
    if path.is_dir():
        raise FrEdgeError(f"preview file {path} is a folder")
    return path


def _label(canvas: Any, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Text on a dark band, readable on any background."""
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(canvas, (x - 2, y - th - 3), (x + tw + 2, y + base), (20, 20, 20), -1)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)


class PreviewWriter:
    """Frame handler: draws the tracks the recognition stage saw in this frame and appends
    the frame to the video. ``annotations`` keeps what was drawn on the last frames (for
    tests and for a caller that wants to show them elsewhere)."""

    __name__ = "preview"

    def __init__(
        self,
        path: Path,
        stage: Any,
        *,
        fps: float = 15.0,
        name_of: Callable[[str], str | None] | None = None,
        keep: int = 1000,
    ) -> None:
        self.path = check_preview_path(Path(path))
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.stage, self.fps, self.name_of = stage, fps if fps > 0 else 15.0, name_of
        self.keep = keep
        self.annotations: list[Annotation] = []
        self.frames = 0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self._times: list[float] = []

    def _open(self, width: int, height: int) -> None:
        import cv2

        fourcc = "mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"
        writer = cv2.VideoWriter(
            str(self.partial), cv2.VideoWriter.fourcc(*fourcc), self.fps, (width, height)
        )
        if not writer.isOpened():
            raise FrEdgeError(
                f"cannot write {self.path}: this OpenCV has no {fourcc} encoder "
                "(try an .avi name, which uses MJPG)"
            )
        self._writer, self._size = writer, (width, height)

    def __call__(self, engine: Any, result: FrameResult) -> None:
        import cv2

        frame = result.frame
        if frame is None:
            return
        h, w = frame.shape[:2]
        if self._writer is None:
            self._open(w, h)
        canvas = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if (w, h) != self._size:  # a source that changed size mid-run: keep the first size
            canvas = cv2.resize(canvas, self._size)
        fid = self.stage.stats.frames - 1  # the stage numbers frames as it processes them
        for track in self.stage.tracker.tracks.values():
            if track.last_frame != fid:
                continue
            x, y, bw, bh = (round(v) for v in track.bbox)
            who = track.user_id
            if who is None:
                color, text = UNKNOWN, f"T{track.id} unknown"
            else:
                name = self.name_of(who) if self.name_of else None
                color = CONFIRMED if track.confirmed else KNOWN
                text = f"T{track.id} {who}" + (f" ({name})" if name else "")
            cv2.rectangle(canvas, (x, y), (x + bw, y + bh), color, 2)
            _label(canvas, text, x, max(14, y - 6), color)
            self.annotations.append(Annotation(fid, track.id, (x, y, bw, bh), color, text))
        if len(self.annotations) > self.keep:
            del self.annotations[: len(self.annotations) - self.keep]
        now = time.monotonic()
        self._times.append(now)
        self._times = [t for t in self._times if now - t <= 2.0]
        rate = (len(self._times) - 1) / (now - self._times[0]) if len(self._times) > 1 else 0.0
        _label(canvas, f"frame {fid}  {rate:.1f} fps", 8, 20, (255, 255, 255))
        self._writer.write(canvas)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None if no frame was written."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        os.replace(self.partial, self.path)
        log.info("preview written: %s (%d frames)", self.path, self.frames)
        return self.path
