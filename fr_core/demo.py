"""``fr-edge demo``: the engine on the simulated HAL with embedded defaults.

What it does today: replays the simulated camera through the engine's frame loop at the
camera's rate (dropping frames when a stage is slower, as on a device), compresses one
event-sized face JPEG per second of video with :func:`compress_image_for_event`, samples
telemetry, and prints what every stage did. The recognition stages (detector, tracker,
embedder, matcher, EventValidator) plug into the same loop as they land.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fr_core.config import AppConfig
from fr_core.engine import Engine
from fr_core.imaging import compress_face_jpeg
from fr_core.interfaces import ComponentKind, FrameResult
from fr_core.plugins import Registry


def run_demo(
    config: AppConfig,
    registry: Registry,
    *,
    frames: int,
    snapshots: Path | None = None,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    jpegs: list[tuple[int, int, int, int]] = []  # frame index, bytes, quality, encodes
    fps = float(config.camera.options.get("fps") or 0) or 30.0
    every = max(1, round(fps))
    if snapshots:
        snapshots.mkdir(parents=True, exist_ok=True)

    def snapshot(engine: Engine, result: FrameResult) -> None:
        if result.index % every:
            return
        frame = result.frame
        assert frame is not None
        h, w = frame.shape[:2]
        bbox = [w * 0.3, h * 0.2, w * 0.4, h * 0.6]  # centre of the picture stands in for a face
        jpeg = compress_face_jpeg(frame, 50, bbox)
        jpegs.append((result.index, jpeg.size, jpeg.quality, jpeg.encodes))
        if snapshots:
            (snapshots / f"frame{result.index:06d}.jpg").write_bytes(jpeg.data)

    engine = Engine(config, registry, handlers=[snapshot])
    previous = signal.signal(signal.SIGTERM, lambda *_: engine.request_stop())
    echo(
        f"fr-edge demo: device {config.device_id}, camera {config.camera.plugin!r} "
        f"({config.camera.options.get('source') or 'generated scene'})"
    )
    try:
        with engine:
            stats = engine.run(max_frames=frames)
            telemetry = engine.component(ComponentKind.TELEMETRY)
            sample = telemetry.sample() if telemetry else {}
    except KeyboardInterrupt:
        stats = engine.stats
        sample = {}
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = {
        "frames": stats.frames,
        "fps": round(stats.fps, 1),
        "dropped": stats.camera_dropped,
        "timeouts": stats.timeouts,
        "stage_ms": stats.stage_ms,
        "jpegs": len(jpegs),
        "telemetry": sample,
    }
    echo(
        f"processed {stats.frames} frames at {stats.fps:.1f} fps "
        f"({stats.camera_dropped} dropped by the camera, {stats.timeouts} read timeouts)"
    )
    for idx, size, quality, encodes in jpegs:
        echo(
            f"  frame {idx:5d}: event JPEG {size / 1024:5.1f} KiB at quality {quality} "
            f"({encodes} encode{'s' if encodes > 1 else ''})"
        )
    if sample:
        echo("telemetry: " + ", ".join(f"{k}={v}" for k, v in sample.items()))
    if snapshots:
        echo(f"snapshots written to {snapshots}")
    echo("recognition stages (detector, embedder, matcher): none configured yet")
    return summary
