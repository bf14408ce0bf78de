"""The ``numpy`` accelerator: host arrays stand in for device buffers."""

from __future__ import annotations

from typing import Any

import numpy as np

from fr_core.interfaces import AcceleratorInfo


class NumpyAccelerator:
    def info(self) -> AcceleratorInfo:
        return AcceleratorInfo(name="numpy", device="cpu", versions={"numpy": np.__version__})

    def to_device(self, array: np.ndarray) -> Any:
        return np.array(array, copy=True, order="C")

    def to_host(self, buffer: Any, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return np.array(buffer, copy=True)
        np.copyto(out, buffer)
        return out

    def synchronize(self) -> None:
        return None

    def close(self) -> None:
        return None
