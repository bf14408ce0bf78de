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


def in_threads(work, n):
    """Run ``work(k)`` in ``n`` threads at once; the exceptions they raised (a failure in a
    thread must fail the test)."""
    errors = []

    def run(k):
        try:
            work(k)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


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

    def work(k):
        for i in range(50):
            a = np.full((64, 64), k * 1000 + i, np.float32)
            assert np.array_equal(acc.to_host(acc.to_device(a)), a)

    assert in_threads(work, 8) == []


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


# --- TrtModel through real device memory -----------------------------------------------------
#
# TensorRT is absent on the GPU machines CI borrows, so the engine is a stand-in: the
# simulated TensorRT's parse, build, cache and tensor calls, with execute_async_v3 replaced by
# work on the GPU at the addresses TrtModel bound: a CUDA kernel for a small graph, or (for
# the real models) device -> pinned host -> OpenCV DNN -> device copies on the same stream.
# Everything of the plugin's own GPU path is real: PycudaAccelerator's device buffers, its
# pinned host twins, the async copies, the stream handle and the synchronisation.


def _stand_in(acc, version, run_on_device):
    """A simulated TensorRT whose execution context calls ``run_on_device(context)`` on the
    accelerator's owning thread, after checking it is given the accelerator's stream."""
    from fr_tensorrt import simulated

    trt = simulated.simulated_trt(version, fast_fp16=True)

    class DeviceContext(simulated.IExecutionContext):
        def execute_async_v3(self, stream_handle):
            assert stream_handle == acc.stream_handle() != 0
            return acc.run(lambda: run_on_device(self))

    engine = type(
        "ICudaEngine",
        (trt.ICudaEngine,),
        {"create_execution_context": lambda self: DeviceContext(self)},
    )
    trt.Runtime = type("Runtime", (trt.Runtime,), {"_engine": engine})
    return trt()


def _affine_graph(path):
    from onnx import TensorProto, helper, numpy_helper

    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1000])],
        [two, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_trt_model_runs_a_kernel_on_device_buffers(acc, tmp_path, version):
    """The graph y = 2x + 1 as a CUDA kernel reading and writing the device addresses
    TrtModel bound: infer() uploads through pinned memory, runs on the stream, reads back;
    many calls from many threads give each caller its own answer."""
    from fr_tensorrt.runner import TrtModel
    from pycuda.compiler import SourceModule

    kernel = acc.run(
        lambda: SourceModule(
            """
            __global__ void fr_affine(const float *x, float *y, int n)
            {
                int i = blockIdx.x * blockDim.x + threadIdx.x;
                if (i < n) y[i] = 2.0f * x[i] + 1.0f;
            }
            """
        ).get_function("fr_affine")
    )

    def run(ctx):
        n = 4 * 1000
        kernel(
            np.uintp(ctx._addresses["x"]),
            np.uintp(ctx._addresses["y"]),
            np.int32(n),
            block=(256, 1, 1),
            grid=((n + 255) // 256, 1),
            stream=acc._stream,
        )
        return True

    model = TrtModel(
        _affine_graph(tmp_path / "affine.onnx"),
        acc,
        cache_dir=tmp_path / "engines",
        trt=_stand_in(acc, version, run),
        progress=False,
    )
    buffers = model._buffers
    assert type(buffers["x"].host.base).__name__ in ("PagelockedHostAllocation", "HostAllocation")
    assert acc.pointer(buffers["x"]) != acc.pointer(buffers["y"])

    def work(k):
        for i in range(20):
            x = np.full((4, 1000), k * 100 + i, np.float32)
            np.testing.assert_array_equal(model.infer({"x": x})["y"], 2 * x + 1)

    assert in_threads(work, 4) == []


def _copy_through_host(acc):
    """Run the engine's network on the CPU between a device -> host and a host -> device copy
    on the accelerator's stream (what a real engine's kernels do in place)."""
    cuda, stream = acc._cuda, acc._stream
    keep = []

    def run(ctx):
        engine = ctx._engine
        inputs = [t for t, is_in in engine._tensors if is_in]
        outputs = [t for t, is_in in engine._tensors if not is_in]
        hosts = {}
        for t in inputs:
            host = cuda.pagelocked_empty(ctx._shapes.get(t.name, t.shape), np.float32)
            cuda.memcpy_dtoh_async(host, ctx._addresses[t.name], stream)
            hosts[t.name] = host
        stream.synchronize()
        for name, host in hosts.items():
            engine._net.setInput(np.array(host), name)
        results = engine._net.forward([t.name for t in outputs])
        keep.clear()
        for t, value in zip(outputs, results, strict=True):
            host = cuda.pagelocked_empty(t.shape, np.float32)
            host[...] = np.asarray(value, np.float32).reshape(t.shape)
            cuda.memcpy_htod_async(ctx._addresses[t.name], host, stream)
            keep.append(host)  # alive until TrtModel synchronises the stream
        return True

    return run


def test_the_trt_plugin_on_device_memory_reports_what_the_cpu_plugin_reports(acc, tmp_path):
    """YuNet and SFace through TrtModel with real device buffers and copies: the same
    faces and embeddings as the CPU plugin on the shared photos."""
    import cv2
    from fr_cpu.models import SFaceConfig, SFaceEmbedder, YuNetConfig, YuNetDetector
    from fr_tensorrt.models import SFaceTrt, TrtConfig, YuNetTrt, YuNetTrtConfig

    from fr_core.testing import shared_data_dir

    from .conftest import REPO

    data = shared_data_dir(REPO)
    assert data is not None
    trt = _stand_in(acc, "10.3.0", _copy_through_host(acc))
    cache = tmp_path / "engines"
    det_gpu = YuNetTrt(YuNetTrtConfig(cache_dir=cache), acc, trt)
    emb_gpu = SFaceTrt(TrtConfig(cache_dir=cache), acc, trt)
    det_cpu, emb_cpu = YuNetDetector(YuNetConfig()), SFaceEmbedder(SFaceConfig())
    faces = 0
    for name in ("obama.jpg", "two_people.jpg", "biden.jpg", "lin-manuel-miranda.png"):
        image = cv2.imread(str(data / "faces" / name))
        a = sorted(det_cpu.detect(image), key=lambda d: d.bbox[0])
        b = sorted(det_gpu.detect(image), key=lambda d: d.bbox[0])
        assert len(a) == len(b) >= 1, name
        # the engine's fixed 640 x 640 input pads more than FaceDetectorYN: up to a third of a
        # network pixel, scaled to the frame (as in tests/test_tensorrt.py)
        scale = max(1.0, max(image.shape[:2]) / 640)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.bbox, y.bbox, atol=0.35 * scale)
            assert float(emb_cpu.embed(image, x) @ emb_gpu.embed(image, x)) > 0.9999
            faces += 1
    assert faces >= 5
