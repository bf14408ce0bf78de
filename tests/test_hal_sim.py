"""HAL contract tests (every camera/telemetry/accelerator that loads here: sim, linux, and
jetson on a Jetson) and the sim HAL in detail."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fr_hal_sim.camera import SimCamera, SimCameraConfig

from fr_core import ConfigError, FrEdgeError
from fr_core.interfaces import (
    Accelerator,
    CameraSource,
    ComponentKind,
    ReadStatus,
    Telemetry,
)
from fr_core.plugins import build_registry
from fr_core.testing import shared_data_dir

REGISTRY = build_registry()

# Options that give each camera back-end a short, finite stream for the contract tests.
CONTRACT_OPTIONS = {
    "sim": {"frames": 12, "width": 64, "height": 48},
    "opencv": {"source": str(shared_data_dir() / "faces" / "short_hamilton_clip.mp4")},
}


@pytest.fixture(params=REGISTRY.names(ComponentKind.CAMERA, available_only=True))
def camera(request):
    name = request.param
    assert name in CONTRACT_OPTIONS, f"camera {name!r} needs contract options in this test"
    cam = REGISTRY.create(ComponentKind.CAMERA, name, CONTRACT_OPTIONS[name])
    yield cam
    cam.close()


def test_camera_contract_stream(camera):
    assert isinstance(camera, CameraSource)
    assert camera.read(0.1).status is ReadStatus.ERROR  # not open: an error result, no raise
    camera.open()
    frames, last_index, last_ts = 0, -1, 0.0
    for _ in range(1000):
        r = camera.read(1.0)
        if r.status is ReadStatus.EOS:
            break
        if r.status is ReadStatus.FRAME:
            assert r.frame.dtype == np.uint8 and r.frame.ndim == 3 and r.frame.shape[2] == 3
            assert r.index > last_index and r.timestamp >= last_ts
            last_index, last_ts = r.index, r.timestamp
            frames += 1
    assert frames > 0
    assert camera.read(0.1).status is ReadStatus.EOS  # EOS is sticky
    camera.close()
    camera.close()  # idempotent
    camera.open()  # reopen starts again
    assert camera.read(1.0).status is ReadStatus.FRAME


@pytest.mark.parametrize("name", REGISTRY.names(ComponentKind.TELEMETRY, available_only=True))
def test_telemetry_contract(name):
    tel = REGISTRY.create(ComponentKind.TELEMETRY, name)
    assert isinstance(tel, Telemetry)
    sample = tel.sample()
    assert sample and all(isinstance(k, str) and np.isfinite(v) for k, v in sample.items())


@pytest.mark.parametrize("name", REGISTRY.names(ComponentKind.ACCELERATOR, available_only=True))
def test_accelerator_contract(name):
    acc = REGISTRY.create(ComponentKind.ACCELERATOR, name)
    assert isinstance(acc, Accelerator)
    assert acc.info().name
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    dev = acc.to_device(host)
    out = np.empty_like(host)
    acc.synchronize()
    assert np.array_equal(acc.to_host(dev, out), host)
    # allocate, upload, read back; the pointer is an address a runtime can be given
    buf = acc.alloc((2, 3, 4), np.float32)
    acc.upload(buf, host * 2)
    acc.synchronize()
    assert np.array_equal(acc.to_host(buf), host * 2)
    assert isinstance(acc.pointer(buf), int) and acc.pointer(buf) != 0
    assert isinstance(acc.stream_handle(), int)
    acc.close()


# --- the sim camera in detail -------------------------------------------------------------


class FakeTime:
    def __init__(self):
        self.t = 0.0

    def clock(self):
        return self.t

    def sleep(self, dt):
        self.t += max(0.0, dt)


def sim(**options):
    ft = FakeTime()
    cam = SimCamera(SimCameraConfig(**options), clock=ft.clock, sleep=ft.sleep)
    cam.open()
    return cam, ft


def drain(cam, timeout=1.0, limit=10_000):
    out = []
    for _ in range(limit):
        r = cam.read(timeout)
        out.append(r)
        if r.status is ReadStatus.EOS:
            break
    return out


def test_generated_scene_is_deterministic_and_finite():
    a, _ = sim(frames=5)
    b, _ = sim(frames=5)
    fa = [r.frame for r in drain(a) if r.frame is not None]
    fb = [r.frame for r in drain(b) if r.frame is not None]
    assert len(fa) == 5 and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert not np.array_equal(fa[0], fa[1])  # something moves


def test_real_time_schedule_and_dropped_frames():
    cam, ft = sim(frames=100, fps=10)
    r0 = cam.read(1.0)
    assert r0.index == 0
    ft.t += 0.55  # the reader was busy for 5.5 frame periods
    r1 = cam.read(1.0)
    assert r1.index == 5 and cam.dropped == 4
    r2 = cam.read(1.0)  # next frame is due at 0.6 s: the camera waits for it
    assert r2.index == 6 and ft.t == pytest.approx(0.6)


def test_read_waits_at_most_the_timeout():
    cam, ft = sim(frames=10, fps=1)
    cam.read(1.0)
    before = ft.t
    assert cam.read(0.2).status is ReadStatus.TIMEOUT
    assert ft.t - before == pytest.approx(0.2)


def test_scripted_faults():
    cam, ft = sim(
        frames=10,
        script=[
            {"frame": 2, "action": "timeout"},
            {"frame": 4, "action": "stall", "seconds": 3},
            {"frame": 6, "action": "error"},
        ],
    )
    statuses = [cam.read(1.0).status for _ in range(4)]
    assert statuses == ["frame", "frame", "timeout", "frame"]
    assert cam.read(1.0).index == 3
    t0 = ft.t
    stalled = [cam.read(1.0).status for _ in range(3)]
    assert stalled == ["timeout"] * 3 and ft.t - t0 == pytest.approx(3.0)
    assert cam.read(1.0).index == 4
    assert cam.read(1.0).index == 5
    err = cam.read(1.0)
    assert err.status is ReadStatus.ERROR and "frame 6" in err.error
    assert cam.read(1.0).status is ReadStatus.ERROR  # failed until reopened
    cam.close()
    cam.open()
    indexes = [r.index for r in drain(cam) if r.status is ReadStatus.FRAME]
    assert indexes == list(range(10))  # the fault fired once


def test_scripted_corrupt_frame():
    cam, _ = sim(frames=4, script=[{"frame": 1, "action": "corrupt"}])
    frames = [r for r in drain(cam) if r.status is ReadStatus.FRAME]
    assert [r.index for r in frames] == [0, 1, 2, 3]  # it is a frame, counted as one
    bad = frames[1].frame
    assert bad.shape == (2, 2) and bad.dtype == np.float64 and np.isnan(bad).all()
    assert frames[2].frame.shape == frames[0].frame.shape


def test_scripted_eos():
    cam, _ = sim(frames=10, script=[{"frame": 3, "action": "eos"}])
    assert [r.status for r in drain(cam)] == ["frame"] * 3 + ["eos"]


def test_loop_restarts_the_source():
    cam, _ = sim(frames=3, loop=True)
    rs = [cam.read(1.0) for _ in range(7)]
    assert all(r.status is ReadStatus.FRAME for r in rs)
    assert np.array_equal(rs[0].frame, rs[3].frame)


def test_video_source(fr_data):
    clip = fr_data / "faces" / "short_hamilton_clip.mp4"
    cam, _ = sim(source=str(clip))
    frames = [r for r in drain(cam) if r.status is ReadStatus.FRAME]
    assert len(frames) == 275 and frames[0].frame.shape == (360, 640, 3)


def test_image_folder_glob_and_single_image(fr_data):
    train = fr_data / "faces" / "knn_examples" / "train" / "obama"
    cam, _ = sim(source=str(train))
    assert sum(r.status is ReadStatus.FRAME for r in drain(cam)) == 2
    cam, _ = sim(source=str(fr_data / "faces" / "obama*.jpg"), repeat=2)
    n_obama = len(list((fr_data / "faces").glob("obama*.jpg")))
    assert sum(r.status is ReadStatus.FRAME for r in drain(cam)) == 2 * n_obama
    cam, _ = sim(source=str(fr_data / "faces" / "biden.jpg"), repeat=4)
    assert sum(r.status is ReadStatus.FRAME for r in drain(cam)) == 4


def test_bad_sources_are_clear(tmp_path):
    registry = build_registry()
    with pytest.raises(ConfigError, match="does not exist"):
        registry.create(ComponentKind.CAMERA, "sim", {"source": str(tmp_path / "x.mp4")})
    with pytest.raises(ConfigError, match="no file matches"):
        registry.create(ComponentKind.CAMERA, "sim", {"source": str(tmp_path / "*.jpg")})
    cam = registry.create(ComponentKind.CAMERA, "sim", {"source": str(tmp_path)})
    with pytest.raises(FrEdgeError, match="holds no image"):
        cam.open()
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    cam = registry.create(ComponentKind.CAMERA, "sim", {"source": str(tmp_path / "broken.mp4")})
    with pytest.raises(FrEdgeError, match="cannot open"):
        cam.open()


def test_real_clock_read_is_bounded():
    cam = SimCamera(SimCameraConfig(frames=5, fps=0.1))
    cam.open()
    cam.read(1.0)
    t0 = time.monotonic()
    assert cam.read(0.05).status is ReadStatus.TIMEOUT
    assert time.monotonic() - t0 < 2.0  # the next frame is 10 s away
