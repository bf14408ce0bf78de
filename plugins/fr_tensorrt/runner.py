"""One ONNX model as a TensorRT engine: built once per key (cache.py) with a progress bar,
buffers allocated through the HAL accelerator, run on its stream by tensor name."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fr_core.errors import FrEdgeError
from fr_core.files import cache_root
from fr_tensorrt import api, compat
from fr_tensorrt.cache import EngineCache, engine_key

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return cache_root() / "engines"


def prune_unused_inputs(data: bytes) -> bytes:
    """The model without graph inputs no node reads. The int8bq SFace file declares 29 such
    leftovers (its weights before quantization); TensorRT's parser would make each a network
    input the engine then waits for."""
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "the TensorRT plugin needs the onnx package: pip install 'fr-edge[jetson]'"
        ) from None
    model = onnx.load_from_string(data)
    used = {name for node in model.graph.node for name in node.input}
    unused = [i for i in model.graph.input if i.name not in used]
    if not unused:
        return data
    for i in unused:
        model.graph.input.remove(i)
    log.debug("%d unused graph inputs removed before building", len(unused))
    pruned: bytes = model.SerializeToString()
    return pruned


class EngineError(FrEdgeError):
    """An engine could not be built or loaded; the message names the model, the TensorRT
    version and what TensorRT (or the static check) said."""


class TrtModel:
    """``infer({input name: array})`` -> {output name: array}. Thread-safe (one at a time:
    one execution context)."""

    def __init__(
        self,
        onnx_path: Path,
        accelerator: Any,
        *,
        precision: str = "fp16",
        shapes: Mapping[str, tuple[int, ...]] | None = None,
        cache_dir: Path | None = None,
        workspace_mb: int = 256,
        trt: Any = None,
        progress: bool = True,
    ) -> None:
        self.trt = trt if trt is not None else api.load_tensorrt()
        self.accelerator = accelerator
        self.name = Path(onnx_path).stem
        data = prune_unused_inputs(Path(onnx_path).read_bytes())
        info = accelerator.info()
        if info.compute_capability is None:
            raise ValueError(
                f"accelerator {info.name!r} has no GPU compute capability: TensorRT needs a "
                "CUDA accelerator (jetson's pycuda accelerator)"
            )
        shapes = dict(shapes or {})
        self.key = engine_key(
            hashlib.sha256(data).hexdigest(),
            str(self.trt.__version__),
            info.device,
            info.compute_capability,
            precision,
            shapes,
        )
        version = str(self.trt.__version__)
        logger = api.make_logger(self.trt)
        cache = EngineCache(cache_dir or default_cache_dir())
        plan = cache.load(self.key, self.name)
        self.built_now = plan is None
        if plan is None:
            self._static_check(data, version, shapes)
            try:
                plan, fp16 = self._build(data, precision, shapes, workspace_mb, logger, progress)
            except (ValueError, RuntimeError) as exc:
                raise EngineError(f"{self.name}: no TensorRT {version} engine ({exc})") from None
            path = cache.store(self.key, self.name, plan, {"fp16": fp16})
            log.info(
                "TensorRT engine for %s built (%s) and cached: %s",
                self.name,
                "fp16" if fp16 else "fp32",
                path,
            )
        try:
            self.engine = api.Engine(self.trt, plan, logger)
        except RuntimeError as exc:
            raise EngineError(
                f"{self.name}: the cached TensorRT {version} engine does not load ({exc}); "
                f"delete it to rebuild: {cache.paths(self.key, self.name)[0]}"
            ) from None
        self.inputs: dict[str, tuple[tuple[int, ...], Any]] = {}
        self.outputs: dict[str, tuple[tuple[int, ...], Any]] = {}
        self._buffers: dict[str, Any] = {}
        for name, is_input, shape, dtype in self.engine.tensors():
            if is_input and any(d < 0 for d in shape):
                shape = tuple(shapes[name])
                self.engine.set_input_shape(name, shape)
            (self.inputs if is_input else self.outputs)[name] = (shape, np.dtype(dtype))
            self._buffers[name] = accelerator.alloc(shape, np.dtype(dtype))
            self.engine.bind(name, accelerator.pointer(self._buffers[name]))
        self._host = {n: np.empty(s, d) for n, (s, d) in self.outputs.items()}
        self._lock = threading.Lock()

    def _static_check(self, data: bytes, version: str, shapes: dict[str, tuple[int, ...]]) -> None:
        """fr_tensorrt.compat's rules first, so a refusal names the rule; a release it has no
        data for is left to TensorRT's own parser."""
        import onnx

        try:
            compat.release_of(version)
        except ValueError as exc:
            log.warning("%s: static check skipped (%s)", self.name, exc)
            return
        try:
            compat.check(onnx.load_from_string(data), version, shapes, self.name)
        except ValueError as exc:
            raise EngineError(str(exc)) from None

    def _build(
        self,
        data: bytes,
        precision: str,
        shapes: dict[str, tuple[int, ...]],
        workspace_mb: int,
        logger: Any,
        progress: bool,
    ) -> tuple[bytes, bool]:
        from tqdm import tqdm

        bar = tqdm(desc=f"building TensorRT engine {self.name}", unit="step", disable=not progress)

        def on_progress(phase: str, step: int, total: int) -> None:
            bar.set_postfix_str(phase[:40])
            if total > 0:
                bar.reset(total=total)
            elif step > 0:
                bar.update(1)

        log.info("building the TensorRT engine for %s (minutes on a Jetson; once)", self.name)
        try:
            return api.build_plan(
                self.trt,
                data,
                fp16=precision == "fp16",
                shapes=shapes,
                workspace_bytes=workspace_mb << 20,
                logger=logger,
                on_progress=on_progress,
            )
        finally:
            bar.close()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ValueError(f"{self.name}: inputs {sorted(missing)} not given")
        acc = self.accelerator
        with self._lock:
            for name, (shape, dtype) in self.inputs.items():
                array = np.ascontiguousarray(inputs[name], dtype=dtype)
                if array.shape != shape:
                    raise ValueError(f"{self.name}: input {name} is {array.shape}, needs {shape}")
                acc.upload(self._buffers[name], array)
            self.engine.run(acc.stream_handle())
            out = {n: acc.to_host(self._buffers[n], self._host[n]) for n in self.outputs}
            acc.synchronize()
            return {n: v.copy() for n, v in out.items()}
