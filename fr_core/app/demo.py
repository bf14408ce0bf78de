"""``fr-edge demo``: the whole loop on one machine, with no camera, no config, no network.

1. Starts the reference broker on loopback over TLS (its own CA, a random API key).
2. Enrols sample employees at the broker from portraits: by default the astronaut portrait
   that scikit-image ships (skimage/data/astronaut.png, public domain, NASA), or the photos
   given with ``--enrol ID=PHOTO``.
3. Runs the device (``fr-edge run``'s DeviceRunner, dev mode) on the simulated camera: a
   short generated clip in which the portrait moves across the frame (or ``--source``).
4. Prints each event as the broker receives it, then a summary.
"""

from __future__ import annotations

import importlib.metadata
import secrets
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fr_core.app.preview import check_preview_path
from fr_core.app.runner import DeviceRunner
from fr_core.broker.https import ReferenceBroker
from fr_core.config import default_config
from fr_core.enrolment.kit import EnrolmentKit
from fr_core.errors import FrEdgeError
from fr_core.plugins import Registry

DEFAULT_ID = "EMP-0001"


def sample_portrait() -> Path:
    """The astronaut portrait from the scikit-image wheel (read as a file, not imported)."""
    try:
        path = Path(
            str(
                importlib.metadata.distribution("scikit-image").locate_file(
                    "skimage/data/astronaut.png"
                )
            )
        )
    except importlib.metadata.PackageNotFoundError:
        path = Path("/nonexistent")
    if not path.is_file():
        raise FrEdgeError(
            "no sample portrait: install scikit-image (make demo does) or give "
            "--enrol ID=PHOTO and --source VIDEO"
        )
    return path


def make_clip(portrait: Path, folder: Path, frames: int) -> Path:
    """Frames in which the portrait drifts and zooms across a plain background, with a few
    empty frames at the start (the camera sees nobody, then somebody arrives)."""
    import cv2

    img = cv2.imread(str(portrait))
    if img is None:
        raise FrEdgeError(f"{portrait} is not an image")
    folder.mkdir(parents=True, exist_ok=True)
    w, h = 640, 360
    for i in range(frames):
        canvas = np.full((h, w, 3), (60, 64, 70), np.uint8)
        if i >= 5:
            t = (i - 5) / max(1, frames - 6)
            side = int(200 + 60 * t)
            x = int(40 + (w - side - 80) * t)
            y = (h - side) // 2
            canvas[y : y + side, x : x + side] = cv2.resize(img, (side, side))
        cv2.imwrite(str(folder / f"frame{i:05d}.jpg"), canvas)
    return folder


def run_demo(
    registry: Registry,
    *,
    frames: int = 60,
    source: str | None = None,
    enrol: list[tuple[str, Path]] | None = None,
    workdir: Path | None = None,
    preview: Path | None = None,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    if preview is not None:
        check_preview_path(preview)  # before anything starts
    work = Path(workdir or tempfile.mkdtemp(prefix="fr-edge-demo-"))
    people = enrol or [(DEFAULT_ID, sample_portrait())]
    kit = EnrolmentKit.from_config(registry=registry)  # the central side's enrolment kit
    key = secrets.token_urlsafe(16)
    with ReferenceBroker(work / "broker", api_key=key) as broker:
        echo(f"reference broker on {broker.url} (TLS, CA {broker.ca_path})")
        for uid, photo in people:
            record = kit.embed_photo(photo, uid)
            version = broker.store.enrol(
                uid, record.embedding, record.model, record.detector, display_name=photo.stem
            )
            echo(f"enrolled {uid} from {photo.name} at the broker (version {version})")
        clip = source or str(make_clip(people[0][1], work / "clip", frames))
        cfg = default_config(
            broker_url=broker.url,
            api_key=key,
            db_path=str(work / "device" / "faces.db"),
            # the demo's device key lives beside its data folder, not in the user's home
            storage={
                "plugin": "sqlite",
                "key": {"provider": "file", "options": {"path": str(work / "keys" / "device.key")}},
            },
            dev_mode=True,
            heartbeat_interval_seconds=2,
            camera={"plugin": "sim", "source": clip, "fps": 15},
            detector="yunet",
            embedder="sface",
            matcher="numpy",
            telemetry="sim",
            transport={"plugin": "https", "ca_bundle": str(broker.ca_path)},
        )
        seen: set[str] = set()
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(0.3):
                for e in broker.store.ledger():
                    if e["event_id"] not in seen:
                        seen.add(e["event_id"])
                        echo(
                            f"broker received {e['event_type']} {e['event_id']}: "
                            f"{e['user_id']} confidence {e['confidence']:.2f}, face JPEG "
                            f"{e['image_bytes'] / 1024:.1f} KiB"
                        )

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        runner = DeviceRunner(cfg, registry, preview=preview)
        result = runner.run(
            max_frames=frames if source else None,
            on_started=lambda: echo(
                f"device {cfg.device_id} running on the simulated camera ({clip}); Ctrl-C stops it"
            ),
        )
        stop.set()
        watcher.join()
        ledger = broker.store.ledger()
        for e in ledger:
            if e["event_id"] not in seen:
                echo(f"broker received {e['event_type']} {e['event_id']}: {e['user_id']}")
        beats = broker.store.heartbeats()
    eng, rec = result["engine"], result["recognition"]
    echo(
        f"summary: {eng['frames']} frames at {eng['fps']} fps, {rec.get('faces', 0)} faces, "
        f"{rec.get('events', 0)} events sent, {len(ledger)} received by the broker, "
        f"{len(beats)} heartbeats"
    )
    if runner.preview is not None and runner.preview.frames:
        echo(f"annotated video: {preview} ({runner.preview.frames} frames)")
    drawn = runner.preview.annotations if runner.preview is not None else []
    return {"events": ledger, "heartbeats": beats, "preview": drawn, **result}
