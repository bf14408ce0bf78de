"""The ``pycuda`` accelerator: device memory, copies and a stream on an NVIDIA GPU.

A CUDA context is current in one thread at a time, and the engine, the TensorRT runner and
the heartbeat may call from different threads. So every CUDA call runs on one owning thread
that made the device's *primary* context current (``pycuda.autoprimaryctx``, the context
the CUDA runtime and TensorRT use too; ``pycuda.autoinit`` would create a second one);
public methods hand it their work and wait. Host buffers for copies are page-locked, so the
copies are asynchronous on the accelerator's stream until :meth:`synchronize`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from fr_core.errors import FrEdgeError
from fr_core.interfaces import AcceleratorInfo

T = TypeVar("T")


@dataclass
class DeviceBuffer:
    """Device memory with the shape and dtype it holds, and its page-locked host twin."""

    allocation: Any
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    host: Any  # page-locked numpy array of the same shape

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


class PycudaAccelerator:
    def __init__(self, device: int = 0) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]] | None] = queue.Queue()
        self._ready: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(
            target=self._own, args=(device,), name="fr-cuda-owner", daemon=True
        )
        self._thread.start()
        failure = self._ready.get()
        if failure is not None:
            raise FrEdgeError(f"pycuda accelerator: cannot use CUDA device {device}: {failure}")

    # --- the owning thread ---

    def _own(self, device: int) -> None:
        try:
            os.environ.setdefault("CUDA_DEVICE", str(device))
            import pycuda.autoprimaryctx  # noqa: F401  (makes the primary context current)
            import pycuda.driver as cuda

            self._cuda = cuda
            self._stream = cuda.Stream()
            dev = cuda.Context.get_device()
            self._info = AcceleratorInfo(
                name="pycuda",
                device=str(dev.name()),
                compute_capability=tuple(dev.compute_capability()),
                versions={
                    "cuda_driver": ".".join(str(v) for v in _split(cuda.get_driver_version())),
                    "pycuda": __import__("pycuda").VERSION_TEXT,
                },
            )
        except Exception as exc:  # no GPU, no driver, no pycuda
            self._ready.put(f"{type(exc).__name__}: {exc}")
            return
        self._ready.put(None)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, reply = job
            try:
                reply.put((True, fn()))
            except BaseException as exc:
                reply.put((False, exc))

    def _call(self, fn: Callable[[], T]) -> T:
        if not self._thread.is_alive():
            raise FrEdgeError("pycuda accelerator is closed")
        reply: queue.Queue[Any] = queue.Queue()
        self._jobs.put((fn, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        result: T = value
        return result

    # --- Accelerator ---

    def info(self) -> AcceleratorInfo:
        return self._info

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> DeviceBuffer:
        dt = np.dtype(dtype)

        def go() -> DeviceBuffer:
            host = self._cuda.pagelocked_empty(shape, dt)
            return DeviceBuffer(self._cuda.mem_alloc(max(1, host.nbytes)), tuple(shape), dt, host)

        return self._call(go)

    def upload(self, buffer: DeviceBuffer, array: np.ndarray) -> None:
        if tuple(array.shape) != buffer.shape:
            raise ValueError(f"upload of {array.shape} into a buffer of {buffer.shape}")

        def go() -> None:
            np.copyto(buffer.host, array, casting="same_kind")
            self._cuda.memcpy_htod_async(buffer.allocation, buffer.host, self._stream)

        self._call(go)

    def to_device(self, array: np.ndarray) -> DeviceBuffer:
        buffer = self.alloc(tuple(array.shape), array.dtype)
        self.upload(buffer, np.ascontiguousarray(array))
        return buffer

    def to_host(self, buffer: DeviceBuffer, out: np.ndarray | None = None) -> np.ndarray:
        def go() -> np.ndarray:
            self._cuda.memcpy_dtoh_async(buffer.host, buffer.allocation, self._stream)
            self._stream.synchronize()
            if out is None:
                return np.array(buffer.host, copy=True)
            np.copyto(out, buffer.host)
            return out

        return self._call(go)

    def pointer(self, buffer: DeviceBuffer) -> int:
        return int(buffer.allocation)

    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def synchronize(self) -> None:
        self._call(self._stream.synchronize)

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the owning thread (for code that calls CUDA itself, e.g. a kernel)."""
        return self._call(fn)

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout=5)


def _split(version: int) -> tuple[int, int]:
    return version // 1000, (version % 1000) // 10
