"""GPU-marked tests: run on a machine with an NVIDIA GPU and pycuda (`make gpu-test`; see
../shared/gpu/README.md), deselected elsewhere. Selected, a missing GPU or pycuda is a
failure, not a skip."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def acc():
    try:
        from fr_hal_jetson.accelerator import PycudaAccelerator

        a = PycudaAccelerator()
    except Exception as exc:
        pytest.fail(f"GPU tests selected but no usable CUDA/pycuda here: {exc}")
    yield a
    a.close()


def test_pycuda_accelerator_contract(acc):
    from fr_core.interfaces import Accelerator

    assert isinstance(acc, Accelerator)
    info = acc.info()
    assert info.name == "pycuda" and info.compute_capability and info.compute_capability[0] >= 5
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(acc.to_host(acc.to_device(host)), host)
    buf = acc.alloc((2, 3, 4), np.float32)
    acc.upload(buf, host * 3)
    acc.synchronize()
    out = np.empty_like(host)
    assert acc.to_host(buf, out) is out and np.array_equal(out, host * 3)
    assert acc.pointer(buf) != 0 and acc.stream_handle() != 0


def test_many_threads_share_the_owning_thread(acc):
    errors = []

    def work(k):
        try:
            for i in range(50):
                a = np.full((64, 64), k * 1000 + i, np.float32)
                assert np.array_equal(acc.to_host(acc.to_device(a)), a)
        except Exception as exc:  # collected: a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_kernel_on_the_accelerator_stream_matches_numpy(acc):
    """HWC uint8 -> CHW float32 (the detector's input layout) as a CUDA kernel, run on the
    owning thread, against numpy's transpose."""

    def build():
        from pycuda.compiler import SourceModule

        return SourceModule(
            """
            __global__ void fr_hwc_to_chw(const unsigned char *src, float *dst, int h, int w)
            {
                int x = blockIdx.x * blockDim.x + threadIdx.x;
                int y = blockIdx.y * blockDim.y + threadIdx.y;
                if (x >= w || y >= h) return;
                for (int c = 0; c < 3; ++c)
                    dst[(c * h + y) * w + x] = (float)src[(y * w + x) * 3 + c];
            }
            """
        ).get_function("fr_hwc_to_chw")

    kernel = acc.run(build)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    src, dst = acc.to_device(img), acc.alloc((1, 3, 97, 131), np.float32)
    acc.run(
        lambda: kernel(
            src.allocation,
            dst.allocation,
            np.int32(97),
            np.int32(131),
            block=(16, 16, 1),
            grid=((131 + 15) // 16, (97 + 15) // 16),
            stream=acc._stream,
        )
    )
    from fr_cpu.yunet_post import preprocess

    expected = preprocess(img)[:, :, :97, :131]
    assert np.array_equal(acc.to_host(dst), expected)
