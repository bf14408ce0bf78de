"""The ``sim`` telemetry provider: deterministic, plausible figures for heartbeats."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field


class SimTelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_temperature_c: float = Field(45.0, ge=-40, le=120, description="mean CPU temperature")
    period_s: float = Field(60.0, gt=0, description="period of the simulated load cycle")


class SimTelemetry:
    def __init__(self, config: SimTelemetryConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._t0 = clock()

    def sample(self) -> dict[str, float]:
        phase = math.sin(2 * math.pi * (self._clock() - self._t0) / self.config.period_s)
        load = 0.5 + 0.3 * phase
        return {
            "cpu_temp_c": round(self.config.base_temperature_c + 8 * load, 2),
            "gpu_temp_c": round(self.config.base_temperature_c + 10 * load, 2),
            "power_total_w": round(5.0 + 6.0 * load, 2),
            "cpu_load": round(load, 3),
            "gpu_load": round(max(0.0, load - 0.1), 3),
            "mem_used_mb": round(2048 + 512 * load, 1),
        }
