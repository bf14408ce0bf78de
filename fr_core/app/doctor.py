"""``fr-edge doctor``: the first command on a new device.

Each check returns a :class:`Check`: ``ok``, ``warn`` (works, but look at it), ``fail``
(the device will not work as configured) or ``skip`` (could not be checked here, and why).
The checks build the configured components the way ``fr-edge run`` does, but run nothing
for long and send no event: platform and JetPack, library versions, each model's load (or
TensorRT engine build) time, the camera's first frames, the clock (the kernel's word, and the
broker's ``Date``), the data folder's space and permissions, the broker over TLS with the
device's credentials, and the gallery in the database.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from fr_core.clock import DeviceClock
from fr_core.config import AppConfig
from fr_core.interfaces import ComponentKind, ReadStatus
from fr_core.plugins import BuildContext
from fr_core.storage import DatabaseManager

SEVERITY = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}
FREE_WARN, FREE_FAIL = 1 << 30, 100 << 20  # bytes free in the data folder
CLOCK_SKEW_WARN = 5.0  # seconds between the device's clock and the broker's Date


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail, skip
    detail: str
    seconds: float = 0.0


def _timed(name: str, fn: Callable[[], tuple[str, str]]) -> Check:
    t0 = time.perf_counter()
    try:
        status, detail = fn()
    except Exception as exc:  # a check that breaks is a failed check, never a crash
        status, detail = "fail", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return Check(name, status, detail, round(time.perf_counter() - t0, 3))


def check_platform() -> tuple[str, str]:
    release = Path("/etc/nv_tegra_release")
    base = (
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    if release.is_file():
        first = release.read_text(errors="replace").splitlines()[0].strip("# ").strip()
        return "ok", f"{base}; Jetson, {first}"
    return "ok", f"{base}; not a Jetson (no /etc/nv_tegra_release)"


def check_versions() -> tuple[str, str]:
    parts = []
    status = "ok"
    try:
        import cv2

        parts.append(f"OpenCV {cv2.__version__}")  # whether a plugin can use it: "model" checks
    except ImportError:
        parts.append("OpenCV not installed")
        status = "warn"
    try:
        import tensorrt

        parts.append(f"TensorRT {tensorrt.__version__}")
    except ImportError:
        parts.append("TensorRT not installed (the CPU plugins serve)")
    try:
        import pycuda.driver as cuda

        cuda.init()
        parts.append(f"CUDA driver {cuda.get_driver_version()}, {cuda.Device.count()} GPU(s)")
    except Exception:
        parts.append("no CUDA (pycuda not installed or no GPU)")
    return status, "; ".join(parts)


def check_components(cfg: AppConfig, registry: Any, gating: list[str] | None = None) -> list[Check]:
    """Load each configured model (for TensorRT: build or load its engine), timed. The
    paths of analyzers that gate identity events (liveness) are appended to ``gating``."""

    ctx = BuildContext(registry=registry, app_config=cfg)
    out = []
    for path, kind, block in cfg.components():
        if kind not in (ComponentKind.DETECTOR, ComponentKind.EMBEDDER, ComponentKind.ANALYZER):
            continue

        def build(path: str = path, kind: ComponentKind = kind, block: Any = block) -> Any:
            # built as the engine builds it, fallback included (Registry.create_block)
            comp, fallback = registry.create_block(kind, block, ctx, path=path, log_fallback=False)
            status, detail = "ok", f"{block.plugin} loaded"
            if fallback is not None:
                status = "warn"
                detail = (
                    f"{block.plugin} cannot start ({fallback['reason']}); its fallback "
                    f"{fallback['running']} loaded"
                )
            if gating is not None and getattr(comp, "gates_identity", False):
                gating.append(path)
            close = getattr(comp, "close", None)
            if callable(close):
                close()
            return status, detail

        out.append(_timed(f"model {path}", build))
    if not out:
        out.append(Check("models", "fail", "no detector or embedder configured"))
    return out


def check_camera(cfg: AppConfig, registry: Any, seconds: float = 5.0) -> tuple[str, str]:
    ctx = BuildContext(registry=registry, app_config=cfg)
    cam = registry.create(
        ComponentKind.CAMERA, cfg.camera.plugin, cfg.camera.options, ctx, path="camera"
    )
    cam.open()
    try:
        frames, deadline, shape = 0, time.monotonic() + seconds, None
        while frames < 3 and time.monotonic() < deadline:
            r = cam.read(min(1.0, max(0.05, deadline - time.monotonic())))
            if r.status is ReadStatus.FRAME:
                frames += 1
                shape = getattr(r.frame, "shape", None)
            elif r.status in (ReadStatus.EOS, ReadStatus.ERROR):
                break
    finally:
        cam.close()
    if frames == 0:
        return "fail", f"{cfg.camera.plugin}: no frame within {seconds:.0f} s"
    w, h = (shape[1], shape[0]) if shape else ("?", "?")
    return "ok", f"{cfg.camera.plugin}: {frames} frames, {w} x {h}"


def check_clock(cfg: AppConfig) -> tuple[str, str]:
    synced = DeviceClock().synchronised()
    said = {True: "synchronised", False: "NOT synchronised", None: "unknown"}[synced]
    detail = f"kernel says the clock is {said}"
    status = "warn" if synced is False else "ok"
    if cfg.broker_url.startswith("https://"):
        import requests

        block = cfg.transport.options if cfg.transport else {}
        verify = str(block.get("ca_bundle")) if block.get("ca_bundle") else True
        try:
            answer = requests.head(cfg.broker_url, timeout=5, verify=verify, allow_redirects=False)
            date = answer.headers.get("Date")
        except requests.RequestException as exc:
            return status, f"{detail}; broker's Date not read ({type(exc).__name__})"
        if date:
            skew = time.time() - parsedate_to_datetime(date).timestamp()
            detail += f"; {skew:+.1f} s against the broker's Date"
            if abs(skew) > CLOCK_SKEW_WARN:
                status = "warn"
    else:
        detail += "; the broker's time is read over HTTPS only"
    return status, detail


def check_data_folder(cfg: AppConfig) -> tuple[str, str]:
    block = cfg.storage.options if cfg.storage else {}
    target = str(block.get("path") or cfg.db_path)
    if "://" in target:
        return "skip", f"the database is {target.split('://')[0]}, not a local file"
    folder = Path(target).resolve().parent
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return "fail", f"{folder} cannot be created or written by this user"
    free = shutil.disk_usage(probe).free
    detail = f"{folder}: {free / 2**30:.1f} GiB free"
    status = "ok"
    if folder.exists():
        mode = stat.S_IMODE(folder.stat().st_mode)
        detail += f", mode {mode:o}"
        if mode & 0o077:
            status, detail = "warn", detail + " (others can read it: 700 expected)"
    else:
        detail += " (created at the first start, mode 700)"
    if free < FREE_FAIL:
        status = "fail"
    elif free < FREE_WARN and status == "ok":
        status = "warn"
    return status, detail


def check_broker(cfg: AppConfig, registry: Any) -> tuple[str, str]:
    if cfg.transport is None:
        return "fail", "no transport configured"
    ctx = BuildContext(registry=registry, app_config=cfg)
    t = registry.create(
        ComponentKind.TRANSPORT, cfg.transport.plugin, cfg.transport.options, ctx, path="transport"
    )
    t.start()
    try:
        page = t.fetch_changes(0, 1)
    finally:
        t.stop()
    if isinstance(page, (bytes, str)):
        page = json.loads(page)
    latest = page.get("latest_version") if isinstance(page, dict) else None
    return "ok", f"{cfg.transport.plugin}: TLS and credentials accepted; broker at version {latest}"


def check_gallery(cfg: AppConfig, registry: Any) -> tuple[str, str]:
    block = cfg.storage.options if cfg.storage else {}
    target = str(block.get("path") or cfg.db_path)
    if "://" not in target and not Path(target).exists():
        return "warn", "no database yet: the first sync fills it (fr-edge sync)"
    with DatabaseManager.from_config(cfg, registry, inspect=True) as db:
        counts = db.count_enrollments()
        version = db.get_sync_state().version
        sealing = db.sealing_status()
    if not sealing.get("sealed"):
        return "warn", "templates are NOT sealed at rest (the storage plugin does not seal them)"
    sealed = f"; templates sealed, key {sealing['key_id']} from {sealing['key_source']}"
    if not counts:
        return "warn", f"no enrolments (sync version {version}): nobody can be recognised{sealed}"
    listed = ", ".join(f"{m}: {n}" for m, n in sorted(counts.items()))
    return "ok", f"{listed} (version {version}){sealed}"


def check_liveness(cfg: AppConfig, gating: list[str]) -> tuple[str, str]:
    if gating:
        return "ok", f"{', '.join(gating)} decides liveness before identity events"
    analyzers = [b.plugin for _, k, b in cfg.components() if k is ComponentKind.ANALYZER]
    loaded = f" (analyzers: {', '.join(analyzers)})" if analyzers else ""
    return (
        "warn",
        f"no liveness analyzer loaded{loaded}: a photo held to the camera is not detected; "
        "add {plugin: liveness} to analyzers (docs/liveness.md)",
    )


def run_checks(cfg: AppConfig, registry: Any, camera_seconds: float = 5.0) -> list[Check]:
    gating: list[str] = []
    checks = [
        _timed("platform", check_platform),
        _timed("versions", check_versions),
        *check_components(cfg, registry, gating),
        _timed("camera", lambda: check_camera(cfg, registry, camera_seconds)),
        _timed("clock", lambda: check_clock(cfg)),
        _timed("data folder", lambda: check_data_folder(cfg)),
        _timed("broker", lambda: check_broker(cfg, registry)),
        _timed("gallery", lambda: check_gallery(cfg, registry)),
        _timed("liveness", lambda: check_liveness(cfg, gating)),
    ]
    return checks


def worst(checks: list[Check]) -> str:
    return max((c.status for c in checks), key=lambda s: SEVERITY[s], default="ok")


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"status": worst(checks), "checks": [asdict(c) for c in checks]}
