"""Interfaces of the components that plugins provide.

Each is a :class:`typing.Protocol`: a plugin's class need not inherit from it, it only has to
provide the methods. The registry checks (``isinstance`` on the runtime-checkable protocol)
that a factory returned an object of the right shape, so a wrong plugin fails with a clear error
when the engine is built, not on the first frame.

Images are numpy arrays in OpenCV's convention: ``H x W x 3`` ``uint8`` in BGR order.
Bounding boxes are ``(x, y, w, h)`` in pixels of the frame they came from.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # the storage value types; fr_core.storage imports this module
    from fr_core.storage import (
        ApplyResult,
        Enrollment,
        OutboxItem,
        OutboxStats,
        SyncState,
    )
    from fr_core.syncpage import ChangesPage


class ComponentKind(str, enum.Enum):
    """The kinds of component a plugin can register, with the hook that registers each."""

    DETECTOR = "detector"
    EMBEDDER = "embedder"
    MATCHER = "matcher"
    TRANSPORT = "transport"
    STORAGE = "storage"
    CAMERA = "camera"
    TELEMETRY = "telemetry"
    ACCELERATOR = "accelerator"
    ANALYZER = "analyzer"
    KEY_PROVIDER = "key_provider"

    @property
    def hook_name(self) -> str:
        return _HOOKS[self]


_HOOKS = {
    ComponentKind.DETECTOR: "fr_register_detectors",
    ComponentKind.EMBEDDER: "fr_register_embedders",
    ComponentKind.MATCHER: "fr_register_matchers",
    ComponentKind.TRANSPORT: "fr_register_transports",
    ComponentKind.STORAGE: "fr_register_storages",
    ComponentKind.CAMERA: "fr_register_camera_sources",
    ComponentKind.TELEMETRY: "fr_register_telemetry",
    ComponentKind.ACCELERATOR: "fr_register_accelerators",
    ComponentKind.ANALYZER: "fr_register_analyzers",
    ComponentKind.KEY_PROVIDER: "fr_register_key_providers",
}


# --- value types --------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """One detected face: box, detector score in [0, 1], optional 5-point landmarks."""

    bbox: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None  # shape (5, 2): eyes, nose tip, mouth corners


@dataclass(frozen=True)
class Match:
    """A gallery hit: the enrolled user and the cosine distance (1 - cosine similarity)."""

    user_id: str
    distance: float


class ReadStatus(str, enum.Enum):
    """Outcome of :meth:`CameraSource.read`. Only ``FRAME`` carries an image."""

    FRAME = "frame"
    TIMEOUT = "timeout"  # nothing arrived within the timeout; the source is still open
    EOS = "eos"  # end of stream (end of file); reading again returns EOS
    ERROR = "error"  # the source failed; the caller may close and reopen it


@dataclass(frozen=True)
class FrameResult:
    status: ReadStatus
    frame: np.ndarray | None = None
    index: int = -1  # frame number counted by the source since open
    timestamp: float = 0.0  # seconds, monotonic clock of the source
    error: str | None = None
    #: planes aligned pixel for pixel with ``frame``, from cameras that deliver them
    #: (a camera's ``planes`` attribute names them): ``"ir"``, H x W uint8 near-infrared;
    #: ``"depth"``, H x W float32 metres (0 or NaN: no reading). docs/liveness.md;
    #: the planes' contract, the cameras that deliver them (``sim``: synthetic, for CI;
    #: ``opencv``: ``ir_device``/``depth_device``) and the cues: docs/liveness-hardware.md.
    planes: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisResult:
    """Output of an analyzer for one face, e.g. an emotion label with its probability."""

    label: str
    score: float
    scores: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """What a transport delivered: ids acknowledged by the broker, and ids it refused for good."""

    acknowledged: Sequence[str] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)  # event_id -> reason


@dataclass(frozen=True)
class AcceleratorInfo:
    name: str
    device: str  # e.g. "NVIDIA Orin (sm_87)" or "cpu"
    compute_capability: tuple[int, int] | None = None
    versions: Mapping[str, str] = field(default_factory=dict)  # cuda, tensorrt, ...


# --- component protocols ------------------------------------------------------------------


@runtime_checkable
class Detector(Protocol):
    """Finds faces in a frame."""

    def detect(self, frame: np.ndarray) -> list[Detection]: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns a detected face into an L2-normalised float32 embedding of ``dim`` values."""

    model_name: str
    dim: int

    def embed(self, frame: np.ndarray, detection: Detection) -> np.ndarray: ...


@runtime_checkable
class Matcher(Protocol):
    """Nearest-neighbour search over the enrolled embeddings, one gallery per model name.

    Who a face is, is decided by :func:`fr_core.pipeline.decision.decide` on what ``identify``
    returns: the nearest enrolments, not thresholded, and the
    :class:`~fr_core.pipeline.decision.OperatingPoint` of the same gallery snapshot. A matcher
    recomputes that point with :func:`fr_core.pipeline.decision.calibrate` whenever its gallery
    changes and publishes both in one step (docs/writing_plugins.md, "Matchers").
    """

    def replace_gallery(self, model: str, user_ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Atomically replace the whole gallery of ``model``."""

    def add(self, model: str, user_id: str, embedding: np.ndarray) -> None: ...

    def remove(self, model: str, user_id: str) -> bool: ...

    def search(self, model: str, embedding: np.ndarray, k: int = 1) -> list[Match]:
        """The ``k`` nearest enrolments that reach the operating point, nearest first."""

    def identify(self, model: str, embedding: np.ndarray, k: int = 1) -> Any:
        """:class:`fr_core.pipeline.decision.Candidates`: the ``k`` nearest, unthresholded, and the
        operating point of the gallery they came from."""


@runtime_checkable
class Transport(Protocol):
    """Carries events, heartbeats and enrolment sync between the device and the broker."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> SendResult: ...

    def send_heartbeat(self, payload: Mapping[str, Any]) -> None: ...

    def fetch_changes(
        self, since_version: int, limit: int, cursor: str | None = None
    ) -> Mapping[str, Any] | bytes | str:
        """One page of enrolment changes after ``since_version``, or of a snapshot when
        ``since_version`` is 0 (``cursor`` continues a snapshot). Format: docs/broker-api.md."""


@runtime_checkable
class Storage(Protocol):
    """Local durable state: enrolments, device config, sync state and the event outbox.

    :class:`fr_core.storage.DatabaseManager` is the public face of the configured storage;
    its docstrings describe each method. Every write is one transaction.
    """

    def initialize(self) -> None: ...

    def close(self) -> None: ...

    def upsert_enrollment(
        self,
        user_id: str,
        embedding: np.ndarray,
        model: str,
        *,
        detector: str | None = None,
        display_name: str | None = None,
    ) -> None: ...

    def delete_enrollment(self, user_id: str) -> bool: ...

    def get_enrollment(self, user_id: str) -> Enrollment | None: ...

    def get_all_enrollments(self, model: str | None = None) -> dict[str, np.ndarray]: ...

    def iter_enrollments(self, model: str | None, batch: int) -> Iterator[Enrollment]: ...

    def iter_embedding_blocks(self, batch: int) -> Iterator[tuple[str, list[str], np.ndarray]]: ...

    def count_enrollments(self) -> dict[str, int]: ...

    def get_config(self, key: str, default: str | None = None) -> str | None: ...

    def set_config(self, key: str, value: str) -> None: ...

    def get_sync_state(self) -> SyncState: ...

    def apply_changes(self, page: ChangesPage) -> ApplyResult:
        """Apply one validated sync page in one transaction (see docs/broker-api.md)."""

    def record_sync_attempt(self, error: str | None) -> None: ...

    def begin_resync(self) -> None: ...

    def finish_resync(self, version: int) -> None: ...

    def abort_resync(self) -> None: ...

    def outbox_append(self, event: Mapping[str, Any]) -> None: ...

    def outbox_append_many(self, events: Sequence[Mapping[str, Any]]) -> None: ...

    def outbox_claim(self, limit: int, lease_seconds: float) -> list[OutboxItem]: ...

    def outbox_ack(self, event_ids: Sequence[str]) -> int: ...

    def outbox_fail(self, event_ids: Sequence[str], error: str, retry_in: float) -> None: ...

    def outbox_release_claims(self) -> int: ...

    def outbox_stats(self) -> OutboxStats: ...

    def integrity_check(self) -> str: ...


# What a storage plugin may offer beyond Storage; DatabaseManager uses each when present.


@runtime_checkable
class ClockedStorage(Protocol):
    def clock_status(self) -> dict[str, Any]:
        """Whether the wall clock is synchronised, and the store's lifetime clock."""


@runtime_checkable
class LeaseRenewingStorage(Protocol):
    def outbox_renew(self, event_ids: Sequence[str], lease_seconds: float) -> int:
        """Extend the leases of claimed events still on the wire; how many were renewed."""


@runtime_checkable
class SealingStorage(Protocol):
    def sealing_status(self) -> dict[str, Any]:
        """Whether templates are sealed at rest, the cipher, the key's id and source."""


@runtime_checkable
class CameraSource(Protocol):
    """A stream of frames. ``read`` never blocks longer than ``timeout`` seconds."""

    def open(self) -> None: ...

    def read(self, timeout: float) -> FrameResult: ...

    def close(self) -> None: ...


@runtime_checkable
class Telemetry(Protocol):
    """Platform health figures for heartbeats: temperatures, power, memory, load."""

    def sample(self) -> dict[str, float]: ...


@runtime_checkable
class Accelerator(Protocol):
    """Device memory and execution for inference back-ends. Copies are queued on the
    accelerator's stream; ``synchronize`` waits for them. ``pointer`` and ``stream_handle``
    are the raw addresses an inference runtime (TensorRT) is given."""

    def info(self) -> AcceleratorInfo: ...

    def to_device(self, array: np.ndarray) -> Any: ...

    def to_host(self, buffer: Any, out: np.ndarray | None = None) -> np.ndarray: ...

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Any: ...

    def upload(self, buffer: Any, array: np.ndarray) -> None: ...

    def pointer(self, buffer: Any) -> int: ...

    def stream_handle(self) -> int: ...

    def synchronize(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Analyzer(Protocol):
    """Per-face analysis such as emotion; ``name`` identifies the analysis in events."""

    name: str

    def analyze(self, frame: np.ndarray, detection: Detection) -> AnalysisResult: ...


@runtime_checkable
class LivenessCue(Protocol):
    """What a liveness analyzer (``gates_identity = True``) may add to ``analyze`` to judge a
    track rather than one frame, or to read the frame's IR or depth planes
    (:mod:`fr_core.pipeline.liveness`). Optional attributes: ``window`` (observations
    kept, default ``confirmation_frames``) and ``min_observations`` (needed to judge)."""

    name: str
    threshold: float

    def observe(self, result: FrameResult, detection: Detection) -> Any:
        """What this cue keeps of one frame's face; ``None``: nothing usable here."""

    def judge(self, observations: Sequence[Any]) -> float | None:
        """The track's live score in [0, 1] from its last observations; ``None`` to
        abstain (no evidence either way)."""


@runtime_checkable
class KeyProvider(Protocol):
    """Where the device key comes from (see :mod:`fr_core.keys`): the storage seals the face
    templates and wraps the outbox image keys with it."""

    def load(self) -> bytes:
        """The 32-byte device key; raises :class:`fr_core.keys.KeyUnavailableError` saying
        what to set when it cannot be had."""

    def describe(self) -> str:
        """Where the key comes from, for status and logs; never the key itself."""


PROTOCOLS: dict[ComponentKind, type] = {
    ComponentKind.DETECTOR: Detector,
    ComponentKind.EMBEDDER: Embedder,
    ComponentKind.MATCHER: Matcher,
    ComponentKind.TRANSPORT: Transport,
    ComponentKind.STORAGE: Storage,
    ComponentKind.CAMERA: CameraSource,
    ComponentKind.TELEMETRY: Telemetry,
    ComponentKind.ACCELERATOR: Accelerator,
    ComponentKind.ANALYZER: Analyzer,
    ComponentKind.KEY_PROVIDER: KeyProvider,
}
