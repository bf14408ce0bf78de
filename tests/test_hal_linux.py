"""The generic Linux HAL: the opencv camera on a real MJPEG-over-HTTP stream (bounded reads,
drops, stall and reopen, masked credentials), the engine's camera watchdog, and the linux
telemetry on a recorded /proc and /sys tree."""

from __future__ import annotations

import logging
import time

import cv2
import pytest
from fr_hal_linux.camera import OpenCvCamera, OpenCvCameraConfig, mask_url
from fr_hal_linux.telemetry import LinuxTelemetry, LinuxTelemetryConfig

from fr_core import FrEdgeError
from fr_core.config import default_config
from fr_core.interfaces import ReadStatus
from fr_core.pipeline.engine import Engine
from fr_core.plugins import build_registry
from fr_core.testing import wait_for
from fr_core.testing.streams import MjpegServer


@pytest.fixture(scope="module")
def clip_frames(fr_data):
    cap = cv2.VideoCapture(str(fr_data / "faces" / "short_hamilton_clip.mp4"))
    frames = []
    while len(frames) < 30:
        ok, f = cap.read()
        assert ok
        frames.append(cv2.resize(f, (320, 180)))
    return frames


@pytest.fixture
def stream(clip_frames):
    with MjpegServer(clip_frames, fps=30) as server:
        yield server


def live(url, **options):
    cam = OpenCvCamera(OpenCvCameraConfig(source=url, **options))
    cam.open()
    return cam


def frames_within(cam, seconds, timeout=0.5):
    got, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        r = cam.read(timeout)
        if r.status is ReadStatus.FRAME:
            got.append(r)
    return got


def test_live_stream_frames_are_the_newest_and_slow_readers_drop(stream):
    cam = live(stream.url)
    try:
        got = frames_within(cam, 1.0)
        assert len(got) >= 10 and got[0].frame.shape == (180, 320, 3)
        assert [r.index for r in got] == sorted({r.index for r in got})  # no frame twice
        before = cam.dropped
        for _ in range(4):  # a consumer at 5 frames/s of a 30 frames/s camera
            time.sleep(0.2)
            assert cam.read(1.0).status is ReadStatus.FRAME
        assert cam.dropped - before >= 10  # counted, not queued
    finally:
        cam.close()


def test_reads_stay_bounded_while_the_stream_stalls_and_it_is_reopened(stream):
    cam = live(stream.url, stall_seconds=1.0, reopen_backoff_max_seconds=1.0)
    try:
        assert frames_within(cam, 0.5)
        stream.pause()
        time.sleep(0.2)
        cam.read(0.0)  # take whatever was in flight
        for _ in range(5):
            t0 = time.monotonic()
            assert cam.read(0.3).status is ReadStatus.TIMEOUT
            assert time.monotonic() - t0 < 0.6  # never longer than asked (plus scheduling)
        # a silent source is reopened (the attempt fails while it stays silent: opening
        # needs a first frame), and once it sends again the camera delivers again
        assert wait_for(lambda: stream.connections >= 2, timeout=10)
        stream.resume()
        assert wait_for(lambda: cam.read(0.5).status is ReadStatus.FRAME, timeout=15)
        assert cam.reopens >= 1
    finally:
        cam.close()


def test_a_dropped_connection_is_reopened(stream):
    cam = live(stream.url, stall_seconds=1.0, reopen_backoff_max_seconds=1.0)
    try:
        assert frames_within(cam, 0.3)
        stream.cut()
        assert wait_for(lambda: stream.connections >= 2, timeout=10)
        assert wait_for(lambda: cam.read(0.5).status is ReadStatus.FRAME, timeout=10)
    finally:
        cam.close()


def test_credentials_in_a_stream_url_never_show(caplog):
    url = "rtsp://admin:hunter2-secret@127.0.0.1:1/live"
    assert mask_url(url) == "rtsp://***@127.0.0.1:1/live"
    cam = OpenCvCamera(OpenCvCameraConfig(source=url, stall_seconds=1.0))
    with caplog.at_level(logging.DEBUG), pytest.raises(FrEdgeError) as exc:
        cam.open()
    assert "***@127.0.0.1" in str(exc.value)
    assert "hunter2" not in str(exc.value) and "hunter2" not in caplog.text


def test_bad_sources_are_named():
    with pytest.raises(ValueError, match=r"'/nope/cam\.mp4' does not exist"):
        OpenCvCameraConfig(source="/nope/cam.mp4")
    with pytest.raises(ValueError, match="must name a device"):
        OpenCvCameraConfig(source="  ")
    # a GStreamer pipeline (a Jetson CSI camera) is a source too, with the gstreamer backend
    csi = (
        "nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! video/x-raw,format=BGRx "
        "! appsink"
    )
    cfg = OpenCvCameraConfig(source=csi, backend="gstreamer")
    assert cfg.is_pipeline and not cfg.is_file
    with pytest.raises(ValueError, match="must end in appsink"):
        OpenCvCameraConfig(source="v4l2src ! fakesink", backend="gstreamer")
    with pytest.raises(ValueError, match="does not exist"):
        OpenCvCameraConfig(source=csi)  # without the gstreamer backend it is just a name


def test_the_engine_watchdog_reopens_a_silent_camera():
    cfg = default_config(
        camera={
            "plugin": "sim",
            "frames": 40,
            "width": 64,
            "height": 48,
            "script": [{"frame": 5, "action": "stall", "seconds": 30}],
        },
        camera_watchdog_seconds=0.5,
    )
    engine = Engine(cfg, build_registry(), read_timeout=0.1)
    with engine:
        t0 = time.monotonic()
        stats = engine.run(max_seconds=20)
    # the stall would have lasted 30 s; the watchdog reopened the camera after ~0.5 s and
    # the reopened source (its faults fire once) ran to its end
    assert stats.camera_stalls == 1 and stats.camera_reopens == 1
    assert stats.frames == 5 + 40 and time.monotonic() - t0 < 10


# --- telemetry on a recorded tree ------------------------------------------------------------

STAT_1 = "cpu  1000 0 500 8000 500 0 0 0 0 0\ncpu0 500 0 250 4000 250 0 0 0 0 0\n"
STAT_2 = "cpu  1600 0 700 8600 600 0 0 0 0 0\ncpu0 800 0 350 4300 300 0 0 0 0 0\n"
MEMINFO = "MemTotal:        7999999 kB\nMemFree:  1000000 kB\nMemAvailable:    3000000 kB\n"


def recorded_tree(root, zones):
    (root / "proc").mkdir(parents=True)
    (root / "proc/stat").write_text(STAT_1)
    (root / "proc/loadavg").write_text("1.25 0.90 0.70 2/345 6789\n")
    (root / "proc/meminfo").write_text(MEMINFO)
    (root / "proc/uptime").write_text("12345.67 20000.00\n")
    for i, (kind, milli) in enumerate(zones):
        z = root / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{milli}\n")


def test_linux_telemetry_reads_a_recorded_tree(tmp_path):
    recorded_tree(
        tmp_path,
        [
            ("cpu-thermal", 47500),
            ("gpu-thermal", 45000),
            ("tj-thermal", 48000),
            ("PMIC-Die", -256000),
        ],  # a sensor reporting nonsense is left out
    )
    tel = LinuxTelemetry(LinuxTelemetryConfig(root=str(tmp_path), disk_path=str(tmp_path)))
    first = tel.sample()
    assert "cpu_load" not in first  # needs two samples
    assert first["load_1m"] == 1.25 and first["uptime_s"] == 12345.67
    assert first["mem_total_mb"] == round(7999999 / 1024, 1)
    assert first["mem_used_mb"] == round((7999999 - 3000000) / 1024, 1)
    assert first["temp_cpu_thermal_c"] == 47.5 and first["temp_gpu_thermal_c"] == 45.0
    assert first["cpu_temp_c"] == 47.5  # the CPU's own zone, not the hottest
    assert not any("pmic" in k for k in first) and first["disk_free_mb"] > 0
    (tmp_path / "proc/stat").write_text(STAT_2)
    # busy 600 + 200 of a total delta 1500 (user 600, system 200, idle 600, iowait 100)
    assert tel.sample()["cpu_load"] == round(1 - 700 / 1500, 3)


def test_missing_files_are_left_out_and_logged_once(tmp_path, caplog):
    tel = LinuxTelemetry(LinuxTelemetryConfig(root=str(tmp_path / "empty")))
    with caplog.at_level(logging.INFO):
        assert set(tel.sample()) <= {"disk_free_mb"}
        tel.sample()
    assert caplog.text.count("proc/meminfo not readable") == 1


def test_without_a_cpu_zone_the_hottest_zone_is_the_cpu_temperature(tmp_path):
    recorded_tree(tmp_path, [("acpitz", 40000), ("x86_pkg_temp", 52000), ("iwlwifi_1", 60000)])
    s = LinuxTelemetry(LinuxTelemetryConfig(root=str(tmp_path))).sample()
    assert s["cpu_temp_c"] == 52.0 and s["temp_iwlwifi_1_c"] == 60.0
    recorded_tree(tmp_path / "b", [("acpitz", 41000), ("iwlwifi_1", 39000)])
    assert (
        LinuxTelemetry(LinuxTelemetryConfig(root=str(tmp_path / "b"))).sample()["cpu_temp_c"]
        == 41.0
    )


class BlockingCapture:
    """A capture whose read() blocks until let go, as a GStreamer or V4L2 read can; it
    records a release() that comes while a read is in progress (a native crash in OpenCV)."""

    def __init__(self):
        import threading

        self.reading = threading.Event()
        self.let_go = threading.Event()
        self.released = False
        self.released_while_reading = False
        self._in_read = False

    def read(self):
        self._in_read = True
        self.reading.set()
        self.let_go.wait(10)
        self._in_read = False
        return False, None

    def release(self):
        self.released_while_reading |= self._in_read
        self.released = True


def test_close_never_releases_a_capture_the_grabber_is_reading(monkeypatch):
    """Issue 12, item 7: close() released the capture under a grabber blocked in read()."""
    cap = BlockingCapture()
    cam = OpenCvCamera(OpenCvCameraConfig(source="/dev/null", stall_seconds=60))
    monkeypatch.setattr(cam, "_capture", lambda: cap)
    cam.close_timeout = 0.2
    cam.open()
    assert cap.reading.wait(5)
    t0 = time.monotonic()
    cam.close()  # the grabber is stuck in read(): close returns without it
    assert time.monotonic() - t0 < 2
    assert not cap.released  # not under the reader's feet
    assert cam.read(0.1).status is ReadStatus.ERROR  # closed
    cap.let_go.set()  # the read returns: the grabber releases its own capture and ends
    assert wait_for(lambda: cap.released, timeout=5)
    assert not cap.released_while_reading
