"""The Jetson HAL off a Jetson: the telemetry on a tree laid out like an Orin Nano's sysfs
(JetPack 6: INA3221 rails VDD_IN, VDD_CPU_GPU_CV, VDD_SOC; GPU at 17000000.gpu), the
recorder that copies such a tree from a device, the components' unavailability here, and the
``jetson`` camera against a faithful fake of ``jetson_utils`` (tests/jetson_utils_fake.py:
RGB frames in reused mapped memory, Capture timeouts, errors, end of stream). The pycuda
accelerator needs a GPU; tests/test_gpu.py runs it on a GPU machine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from fr_hal_jetson.camera import JetsonCamera, JetsonCameraConfig
from fr_hal_jetson.record import record
from fr_hal_jetson.telemetry import JetsonTelemetry, JetsonTelemetryConfig, is_jetson

from fr_core.config import default_config
from fr_core.errors import FrEdgeError
from fr_core.interfaces import ComponentKind, ReadStatus
from fr_core.pipeline.engine import Engine
from fr_core.plugins import build_registry

INA = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
RAILS = {1: ("VDD_IN", 5048, 1208), 2: ("VDD_CPU_GPU_CV", 5040, 312), 3: ("VDD_SOC", 5040, 392)}
ZONES = [
    ("cpu-thermal", 49531),
    ("gpu-thermal", 47968),
    ("cv0-thermal", 47156),
    ("soc0-thermal", 48343),
    ("tj-thermal", 49531),
]


def orin_tree(root):
    files = {
        "etc/nv_tegra_release": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n",
        "proc/stat": "cpu  2255 34 2290 22625563 6290 127 456 0 0 0\n",
        "proc/loadavg": "0.52 0.58 0.59 1/389 12345\n",
        "proc/meminfo": "MemTotal:        7802464 kB\nMemAvailable:    5931216 kB\n",
        "proc/uptime": "3600.50 20000.00\n",
        "sys/devices/platform/17000000.gpu/load": "273\n",
        "sys/devices/platform/17000000.gpu/devfreq/17000000.gpu/cur_freq": "624750000\n",
    }
    for n, (label, mv, ma) in RAILS.items():
        files[f"{INA}/in{n}_label"] = label + "\n"
        files[f"{INA}/in{n}_input"] = f"{mv}\n"
        files[f"{INA}/curr{n}_input"] = f"{ma}\n"
    for i, (kind, milli) in enumerate(ZONES):
        files[f"sys/class/thermal/thermal_zone{i}/type"] = kind + "\n"
        files[f"sys/class/thermal/thermal_zone{i}/temp"] = f"{milli}\n"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_orin_figures(tmp_path):
    tel = JetsonTelemetry(JetsonTelemetryConfig(root=str(orin_tree(tmp_path / "orin"))))
    s = tel.sample()
    assert s["power_vdd_in_w"] == round(5048 * 1208 / 1e6, 3) == s["power_total_w"]
    assert s["power_vdd_cpu_gpu_cv_w"] == round(5040 * 312 / 1e6, 3)
    assert s["power_vdd_soc_w"] == round(5040 * 392 / 1e6, 3)
    assert s["gpu_load"] == 0.273 and s["gpu_freq_mhz"] == 624.8
    assert s["cpu_temp_c"] == 49.531 and s["gpu_temp_c"] == 47.968
    assert s["mem_used_mb"] == round((7802464 - 5931216) / 1024, 1)
    assert is_jetson(tmp_path / "orin") and not is_jetson(tmp_path / "nothing")


def test_a_rail_with_a_bad_reading_is_left_out(tmp_path):
    root = orin_tree(tmp_path / "orin")
    (root / INA / "curr2_input").write_text("garbage\n")
    (root / INA / "in3_input").unlink()
    s = JetsonTelemetry(JetsonTelemetryConfig(root=str(root))).sample()
    assert "power_vdd_in_w" in s
    assert "power_vdd_cpu_gpu_cv_w" not in s and "power_vdd_soc_w" not in s


def test_the_recorder_copies_what_the_telemetry_reads(tmp_path):
    device = orin_tree(tmp_path / "device")
    (device / "sys/class/thermal/thermal_zone0/policy").write_text("step_wise\n")  # not read
    n = record(tmp_path / "copy", device)
    assert n == 5 + 2 + 9 + 10  # /proc x4 + release, GPU load + clock, 3 rails x3, 5 zones x2
    assert not (tmp_path / "copy/sys/class/thermal/thermal_zone0/policy").exists()
    a = JetsonTelemetry(JetsonTelemetryConfig(root=str(device))).sample()
    b = JetsonTelemetry(JetsonTelemetryConfig(root=str(tmp_path / "copy"))).sample()
    for k in ("uptime_s", "disk_free_mb"):
        a.pop(k, None), b.pop(k, None)
    assert a == b


def test_off_a_jetson_the_components_say_why():
    reg = build_registry()
    assert "jetson_utils is not installed" in reg.get(ComponentKind.CAMERA, "jetson").unavailable
    assert "pycuda is not installed" in reg.get(ComponentKind.ACCELERATOR, "pycuda").unavailable
    assert "not a Jetson" in reg.get(ComponentKind.TELEMETRY, "jetson").unavailable


# --- the jetson camera on the fake jetson_utils -------------------------------------------


@pytest.fixture
def jetson_utils(monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "jetson_utils", Path(__file__).with_name("jetson_utils_fake.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "jetson_utils", module)
    return module


def clip(fr_data):
    return fr_data / "faces" / "short_hamilton_clip.mp4"


def test_the_camera_gives_the_clips_frames_as_bgr_copies_then_eos(jetson_utils, fr_data):
    """Every frame equals OpenCV's decoding of the file (so RGB -> BGR is right), frames
    kept by the caller are not overwritten by later ones (the mapped buffers are reused),
    and the end of the file is EOS, not an error."""
    cam = JetsonCamera(JetsonCameraConfig(source=f"file://{clip(fr_data)}"))
    cam.open()
    ref = cv2.VideoCapture(str(clip(fr_data)))
    kept, n = [], 0
    while True:
        result = cam.read(1.0)
        if result.status is ReadStatus.EOS:
            break
        assert result.status is ReadStatus.FRAME and result.index == n
        ok, expected = ref.read()
        assert ok and np.array_equal(result.frame, expected), n
        if n < 6:
            kept.append((result.frame, expected))
        n += 1
    assert n == 275 and not ref.read()[0]
    for frame, expected in kept:
        assert np.array_equal(frame, expected)
    assert cam.read(1.0).status is ReadStatus.EOS
    cam.close()
    assert not jetson_utils.OPENED[-1].IsStreaming()


def test_a_silent_source_times_out_then_delivers(jetson_utils):
    jetson_utils.STALLS.update({2: 0.25})
    cam = JetsonCamera(JetsonCameraConfig(source="csi://0", width=320, height=240))
    cam.open()
    statuses = [cam.read(0.1).status for _ in range(5)]
    assert statuses[:2] == [ReadStatus.FRAME, ReadStatus.FRAME]
    assert ReadStatus.TIMEOUT in statuses[2:4] and statuses[-1] is ReadStatus.FRAME
    frame = cam.read(0.1)
    assert frame.frame.shape == (240, 320, 3) and frame.frame.dtype == np.uint8
    cam.close()


def test_a_capture_error_is_an_error_result_and_the_stream_goes_on(jetson_utils):
    jetson_utils.ERRORS.update({1})
    cam = JetsonCamera(JetsonCameraConfig(source="v4l2:///dev/video0"))
    cam.open()
    first, second, third = (cam.read(0.5) for _ in range(3))
    assert first.status is ReadStatus.FRAME
    assert second.status is ReadStatus.ERROR and "failed to capture image 1" in second.error
    assert third.status is ReadStatus.FRAME
    cam.close()
    jetson_utils.ERRORS.clear()


def test_options_become_the_command_line_jetson_utils_parses(jetson_utils):
    cam = JetsonCamera(
        JetsonCameraConfig(
            source="csi://0", width=1920, height=1080, fps=30, flip="rotate-180", codec="h264"
        )
    )
    cam.open()
    src = jetson_utils.OPENED[-1]
    assert src.argv == [
        "--input-width=1920",
        "--input-height=1080",
        "--input-rate=30.0",
        "--input-flip=rotate-180",
        "--input-codec=h264",
        "--headless",
    ]
    assert (src.GetWidth(), src.GetHeight()) == (1920, 1080)
    assert cam.read(0.5).frame.shape == (1080, 1920, 3)
    cam.close()
    with pytest.raises(FrEdgeError, match=r"jetson camera: cannot open file:///nope\.mp4"):
        JetsonCamera(JetsonCameraConfig(source="file:///nope.mp4")).open()


def test_the_engine_runs_detection_on_the_jetson_camera(jetson_utils, fr_data):
    """Registered as available once jetson_utils imports; the engine reads the clip through
    it and YuNet finds a face in its frames."""
    registry = build_registry()
    assert registry.get(ComponentKind.CAMERA, "jetson").unavailable is None
    cfg = default_config(
        camera={"plugin": "jetson", "source": f"file://{clip(fr_data)}"}, detector="yunet"
    )
    faces = []
    with Engine(cfg, registry) as engine:
        detector = engine.component(ComponentKind.DETECTOR)
        engine.handlers.append(
            lambda eng, frame: (
                faces.append(len(detector.detect(frame.frame))) if frame.index % 25 == 0 else None
            )
        )
        stats = engine.run()
    assert stats.frames == 275 and len(faces) == 11 and max(faces) >= 1
