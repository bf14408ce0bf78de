"""The ``jetson`` telemetry: the linux figures plus what a Jetson Orin adds in sysfs, read
through an injectable root (tests use a tree laid out like an Orin Nano's).

* Power rails of the INA3221 monitors (``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*``:
  ``inN_label``, ``inN_input`` in mV, ``currN_input`` in mA): ``power_<label>_w`` per rail
  and ``power_total_w`` (the ``VDD_IN`` rail, the module's input, when present).
* GPU load (``.../gpu.0/load`` or ``.../17000000.gpu/load``, per mille): ``gpu_load`` in
  [0, 1], and the GPU clock ``gpu_freq_mhz`` from its devfreq node.
* The thermal zones (cpu-thermal, gpu-thermal, tj-thermal, ...) come from the linux part;
  ``gpu_temp_c`` is added from ``gpu-thermal``.

``python -m fr_hal_jetson.record OUT`` copies these files from a real device, to replace the
test tree with a recording.
"""

from __future__ import annotations

import re
from pathlib import Path

from fr_hal_linux.telemetry import LinuxTelemetry, LinuxTelemetryConfig

GPU_LOAD_FILES = (
    "sys/devices/platform/17000000.gpu/load",  # Orin, JetPack 6
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",  # Xavier and older
)
GPU_FREQ_GLOBS = (
    "sys/devices/platform/17000000.gpu/devfreq/*/cur_freq",
    "sys/class/devfreq/17000000.gpu/cur_freq",
    "sys/devices/gpu.0/devfreq/*/cur_freq",
)
INA_GLOB = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"


class JetsonTelemetryConfig(LinuxTelemetryConfig):
    pass


class JetsonTelemetry(LinuxTelemetry):
    def power_rails(self) -> dict[str, float]:
        rails: dict[str, float] = {}
        for hw in sorted(self.root.glob(INA_GLOB)):
            rel = hw.relative_to(self.root)
            for label_file in sorted(hw.glob("in*_label")):
                n = label_file.name[2:].split("_")[0]
                label = (self._read(f"{rel}/in{n}_label") or "").strip()
                mv, ma = self._read(f"{rel}/in{n}_input"), self._read(f"{rel}/curr{n}_input")
                if not label or mv is None or ma is None:
                    continue
                try:
                    watts = int(mv.strip()) * int(ma.strip()) / 1e6
                except ValueError:
                    continue
                name = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
                rails[name] = round(watts, 3)
        return rails

    def sample(self) -> dict[str, float]:
        out = super().sample()
        rails = self.power_rails()
        for name, watts in rails.items():
            out[f"power_{name}_w"] = watts
        if "vdd_in" in rails:
            out["power_total_w"] = rails["vdd_in"]
        for rel in GPU_LOAD_FILES:
            if (self.root / rel).is_file():
                raw = self._read(rel)
                if raw and raw.strip().isdigit():
                    out["gpu_load"] = round(int(raw.strip()) / 1000, 3)
                break
        for pattern in GPU_FREQ_GLOBS:
            found = sorted(self.root.glob(pattern))
            if found:
                raw = self._read(str(found[0].relative_to(self.root)))
                if raw and raw.strip().isdigit():
                    out["gpu_freq_mhz"] = round(int(raw.strip()) / 1e6, 1)
                break
        if "temp_gpu_thermal_c" in out:
            out["gpu_temp_c"] = out["temp_gpu_thermal_c"]
        return out


def is_jetson(root: Path = Path("/")) -> bool:
    return (root / "etc/nv_tegra_release").is_file() or "tegra" in (
        (root / "proc/device-tree/compatible").read_text(errors="replace")
        if (root / "proc/device-tree/compatible").is_file()
        else ""
    )
