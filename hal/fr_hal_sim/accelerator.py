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

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return np.zeros(shape, dtype)

    def upload(self, buffer: Any, array: np.ndarray) -> None:
        if buffer.shape != array.shape:
            raise ValueError(f"upload of {array.shape} into a buffer of {buffer.shape}")
        np.copyto(buffer, array, casting="same_kind")

    def pointer(self, buffer: Any) -> int:
        return int(buffer.ctypes.data)

    def stream_handle(self) -> int:
        return 0  # host memory: copies are done when the call returns

    def synchronize(self) -> None:
        return None

    def close(self) -> None:
        return None
