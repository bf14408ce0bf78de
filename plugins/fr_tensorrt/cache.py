"""The engine cache: a TensorRT engine is valid only for the model, TensorRT version, GPU,
precision and shapes it was built for, so all of them are in its key.

Key fields: the ONNX file's SHA-256, the TensorRT version, the GPU's name and compute
capability, the precision asked for (``fp16`` or ``fp32``) and the input shapes. The file
name carries a digest of the key; the key itself is stored next to the engine (``.json``)
with the engine's own digest, and both are checked before an engine is loaded: a stale,
foreign or damaged engine is rebuilt, never deserialized. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from fr_core.files import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineKey:
    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str  # "fp16" or "fp32": what was asked; the record says what was built
    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def file_name(self, model_name: str) -> str:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in model_name)[:40]
        return f"{safe}-{self.digest()[:20]}.engine"


def engine_key(
    model_sha256: str,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    precision: str,
    shapes: dict[str, tuple[int, ...]],
) -> EngineKey:
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, not {precision!r}")
    return EngineKey(
        model_sha256.lower(),
        tensorrt_version,
        gpu_name,
        (int(compute_capability[0]), int(compute_capability[1])),
        precision,
        tuple(sorted((k, tuple(int(d) for d in v)) for k, v in shapes.items())),
    )


class EngineCache:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def paths(self, key: EngineKey, model_name: str) -> tuple[Path, Path]:
        engine = self.folder / key.file_name(model_name)
        return engine, engine.with_suffix(".json")

    def load(self, key: EngineKey, model_name: str) -> bytes | None:
        """The cached plan for ``key``, or None (absent, for another key, or damaged)."""
        engine, record = self.paths(key, model_name)
        if not engine.is_file() or not record.is_file():
            return None
        try:
            meta = json.loads(record.read_text())
        except (OSError, ValueError):
            log.warning("engine cache record %s is unreadable; rebuilding", record)
            return None
        if meta.get("key") != json.loads(json.dumps(asdict(key))):
            log.warning("engine cache %s was built for something else; rebuilding", engine)
            return None
        plan = engine.read_bytes()
        if hashlib.sha256(plan).hexdigest() != meta.get("engine_sha256"):
            log.warning("engine cache %s is damaged (digest mismatch); rebuilding", engine)
            return None
        return plan

    def store(self, key: EngineKey, model_name: str, plan: bytes, built: dict[str, object]) -> Path:
        engine, record = self.paths(key, model_name)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "key": asdict(key),
            "engine_sha256": hashlib.sha256(plan).hexdigest(),
            "built": built,
        }
        atomic_write(engine, plan)
        atomic_write(record, json.dumps(meta, indent=2).encode())
        return engine
