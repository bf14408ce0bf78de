"""The ``linux`` telemetry: health figures from /proc and /sys, on any Linux machine.

Everything is read through ``root`` (default ``/``), so tests run it on a recorded tree and a
container can point it at a mounted host /proc. A figure whose file is missing or unreadable
is left out of the sample (and logged once), never invented.

Figures: ``cpu_load`` (busy share of all CPUs since the previous sample, from /proc/stat),
``load_1m``, ``mem_used_mb`` / ``mem_total_mb`` (MemTotal - MemAvailable), ``cpu_temp_c``
(the hottest thermal zone whose type names the CPU, else the hottest zone), one
``temp_<zone type>_c`` per thermal zone, ``uptime_s``, and ``disk_free_mb`` of ``disk_path``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class LinuxTelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field("/", description="where /proc and /sys are read from (tests, containers)")
    disk_path: str = Field("/", description="file system whose free space is reported")


class LinuxTelemetry:
    def __init__(self, config: LinuxTelemetryConfig) -> None:
        self.config = config
        self.root = Path(config.root)
        self._prev_cpu: tuple[int, int] | None = None
        self._warned: set[str] = set()

    def _read(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text()
        except OSError as exc:
            if rel not in self._warned:
                self._warned.add(rel)
                log.info("telemetry: %s not readable (%s); left out", rel, exc.strerror)
            return None

    def _cpu(self) -> float | None:
        text = self._read("proc/stat")
        if not text or not text.startswith("cpu "):
            return None
        values = [int(v) for v in text.splitlines()[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        total = sum(values[:8])  # guest time is already in user
        prev, self._prev_cpu = self._prev_cpu, (idle, total)
        if prev is None or total <= prev[1]:
            return None
        return round(1.0 - (idle - prev[0]) / (total - prev[1]), 3)

    def thermal_zones(self) -> dict[str, float]:
        zones: dict[str, float] = {}
        base = self.root / "sys/class/thermal"
        if not base.is_dir():
            return zones
        for zone in sorted(base.glob("thermal_zone*")):
            kind = (self._read(f"sys/class/thermal/{zone.name}/type") or zone.name).strip()
            raw = self._read(f"sys/class/thermal/{zone.name}/temp")
            try:
                milli = int((raw or "").strip())
            except ValueError:
                continue
            if milli <= -40000 or milli >= 150000:  # a disabled or broken sensor
                continue
            name = re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or zone.name
            zones[name] = max(zones.get(name, -273.0), milli / 1000)
        return zones

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        cpu = self._cpu()
        if cpu is not None:
            out["cpu_load"] = cpu
        load = self._read("proc/loadavg")
        if load:
            out["load_1m"] = float(load.split()[0])
        mem = self._read("proc/meminfo")
        if mem:
            fields = {
                k: int(v.split()[0])
                for k, _, v in (line.partition(":") for line in mem.splitlines())
                if v.strip()
            }
            if "MemTotal" in fields and "MemAvailable" in fields:
                out["mem_total_mb"] = round(fields["MemTotal"] / 1024, 1)
                out["mem_used_mb"] = round((fields["MemTotal"] - fields["MemAvailable"]) / 1024, 1)
        up = self._read("proc/uptime")
        if up:
            out["uptime_s"] = float(up.split()[0])
        zones = self.thermal_zones()
        for name, value in zones.items():
            out[f"temp_{name}_c"] = value
        cpu_zones = [v for k, v in zones.items() if "cpu" in k or "x86_pkg" in k or "soc" in k]
        if cpu_zones or zones:
            out["cpu_temp_c"] = max(cpu_zones or zones.values())
        try:
            st = os.statvfs(self.config.disk_path)
            out["disk_free_mb"] = round(st.f_bavail * st.f_frsize / 2**20, 1)
        except OSError:
            pass
        return out
