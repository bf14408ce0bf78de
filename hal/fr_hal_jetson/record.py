"""``python -m fr_hal_jetson.record OUT``: copy the files the jetson telemetry reads from
this device into OUT (same relative paths), to test the telemetry against a real Jetson's
tree. Only small text files under /proc and /sys are copied; nothing else is touched."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fr_hal_jetson.telemetry import GPU_FREQ_GLOBS, GPU_LOAD_FILES, INA_GLOB

PATTERNS = (
    "proc/stat",
    "proc/loadavg",
    "proc/meminfo",
    "proc/uptime",
    "etc/nv_tegra_release",
    "sys/class/thermal/thermal_zone*/type",
    "sys/class/thermal/thermal_zone*/temp",
    *GPU_LOAD_FILES,
    *GPU_FREQ_GLOBS,
    INA_GLOB + "/in*_label",
    INA_GLOB + "/in*_input",
    INA_GLOB + "/curr*_input",
)


def record(out: Path, root: Path = Path("/")) -> int:
    n = 0
    for pattern in PATTERNS:
        for src in sorted(root.glob(pattern)):
            dst = out / src.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, dst)
                n += 1
            except OSError as exc:
                print(f"skipped {src}: {exc.strerror}", file=sys.stderr)
    return n


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        sys.exit("usage: python -m fr_hal_jetson.record OUT")
    print(f"{record(Path(sys.argv[1]))} files recorded in {sys.argv[1]}")
