"""A detector that fails on purpose, for the supervisor test (tests/test_supervisor.py): the
CPU plugin's YuNet, except that while the file named by ``fail_while`` exists every frame
raises, as a plugin with a bug would. A second plugin in this test distribution, so that a
real ``fr-edge run`` process loads it by entry point like any third-party plugin."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fr_core import hookimpl


class FlakyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_while: str = Field(description="path of a file: while it exists, detect() raises")


class FlakyDetector:
    def __init__(self, cfg: FlakyConfig) -> None:
        from fr_cpu.models import YuNetConfig, YuNetDetector

        self.flag = cfg.fail_while
        self.inner = YuNetDetector(YuNetConfig())

    def detect(self, frame: Any) -> list[Any]:
        if os.path.exists(self.flag):
            raise RuntimeError("injected detector bug")
        return self.inner.detect(frame)


@hookimpl
def fr_register_detectors(register: Any) -> None:
    register(
        "flaky_yunet",
        lambda cfg, ctx: FlakyDetector(cfg),
        FlakyConfig,
        description="YuNet that raises while a flag file exists (tests only)",
    )
