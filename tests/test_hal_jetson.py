"""The Jetson HAL off a Jetson: the telemetry on a tree laid out like an Orin Nano's sysfs
(JetPack 6: INA3221 rails VDD_IN, VDD_CPU_GPU_CV, VDD_SOC; GPU at 17000000.gpu), the
recorder that copies such a tree from a device, and the components' unavailability here.
The camera and the pycuda accelerator need the device; tests/test_gpu.py runs the latter on a
GPU machine."""

from __future__ import annotations

from fr_hal_jetson.record import record
from fr_hal_jetson.telemetry import JetsonTelemetry, JetsonTelemetryConfig, is_jetson

from fr_core.interfaces import ComponentKind
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
