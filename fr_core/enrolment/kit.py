"""The central side's enrolment kit: employee photos -> sync-ready records, computed exactly
as the devices compute them, and checked as the devices check them.

A record is what the central side puts in a sync page's ``upserts`` (docs/central.md), less
the ``version`` the central store assigns::

    {"user_id": "EMP-0001", "model": "SFace", "dim": 128, "embedding": "<base64 <f4>",
     "detector": "yunet", "face_px": 212, "sharpness": 431.0, "photo": "EMP-0001.jpg"}

:class:`EnrolmentKit` uses the same components a device builds from its config (by default
``yunet`` and ``sface``: detector, alignment, model, L2 normalisation) and the same quality
rules as ``fr-edge enroll``: exactly one face, at least ``min_face`` pixels on its shorter
side, a sharp enough aligned crop (variance of the Laplacian). Each refusal says why.
:func:`check_records` runs a device's own page validation
(:func:`fr_core.syncpage.parse_page`) on each record of a central-side file, so a
file that passes is one devices accept.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fr_core.errors import FrEdgeError
from fr_core.interfaces import ComponentKind
from fr_core.plugins import BuildContext, build_registry
from fr_core.storage import check_embedding, check_user_id
from fr_core.syncpage import decode_embedding, encode_embedding, parse_page

DEFAULT_MIN_FACE = 80  # pixels, shorter side of the detector's box
DEFAULT_MIN_SHARPNESS = 60.0  # variance of the Laplacian of the aligned 112 x 112 crop
#: Columns of a CSV output; the JSON lines hold the same keys.
FIELDS = ("user_id", "model", "dim", "embedding", "detector", "face_px", "sharpness", "photo")


def central_user_id(user_id: str) -> str:
    """A user id as the central side should issue it: what devices accept
    (:func:`fr_core.storage.check_user_id`), in Unicode NFC (file names from macOS come
    decomposed, and "José" would otherwise be two different ids), without invisible format
    characters (zero-width spaces, bidirectional controls: an id that looks like another's),
    and without spaces at either end."""
    check_user_id(user_id)
    nfc = unicodedata.normalize("NFC", user_id)
    hidden = sorted({f"U+{ord(c):04X}" for c in nfc if unicodedata.category(c) == "Cf"})
    if hidden:
        raise ValueError(
            f"user id {user_id!r} holds invisible format characters ({', '.join(hidden)}): "
            "it would look like another id; rename the photo or give the id with --ids"
        )
    if nfc != nfc.strip():
        raise ValueError(f"user id {user_id!r} starts or ends with a space")
    return nfc


class EnrolmentRefused(FrEdgeError):
    """A photo the quality rules refuse; ``reason`` says why in words."""

    def __init__(self, photo: str, reason: str) -> None:
        super().__init__(f"{photo}: {reason}")
        self.photo, self.reason = photo, reason


@dataclass(frozen=True)
class EnrolmentRecord:
    user_id: str
    model: str
    embedding: np.ndarray
    detector: str | None
    face_px: int
    sharpness: float
    photo: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "model": self.model,
            "dim": int(self.embedding.size),
            "embedding": encode_embedding(self.embedding),
            "detector": self.detector,
            "face_px": self.face_px,
            "sharpness": round(self.sharpness, 1),
            "photo": self.photo,
        }


class EnrolmentKit:
    """Embeds employee photos with a device's detector and embedder."""

    def __init__(
        self,
        detector: Any,
        embedder: Any,
        detector_name: str | None = None,
        *,
        min_face: int = DEFAULT_MIN_FACE,
        min_sharpness: float = DEFAULT_MIN_SHARPNESS,
    ) -> None:
        self.detector, self.embedder = detector, embedder
        self.detector_name = detector_name
        self.min_face, self.min_sharpness = min_face, min_sharpness

    @classmethod
    def from_config(
        cls, config: Any | None = None, registry: Any | None = None, **rules: Any
    ) -> EnrolmentKit:
        """The kit for a device config (its ``detector`` and ``embedder`` blocks; the
        defaults ``yunet`` and ``sface`` without one)."""

        registry = registry or build_registry()
        ctx = BuildContext(registry=registry, app_config=config)
        parts = []
        for key, default in (("detector", "yunet"), ("embedder", "sface")):
            block = getattr(config, key, None) if config is not None else None
            if block is None:
                component = registry.create(ComponentKind(key), default, {}, ctx, path=key)
                parts.append((default, component))
                continue
            # as a device builds it, fallback included (the name is what actually runs)
            component, fallback = registry.create_block(ComponentKind(key), block, ctx, path=key)
            parts.append((fallback["running"] if fallback else block.plugin, component))
        (det_name, detector), (_, embedder) = parts
        return cls(detector, embedder, det_name, **rules)

    @property
    def model(self) -> str:
        return str(self.embedder.model_name)

    def assess(self, image: np.ndarray, photo: str = "the photo") -> tuple[Any, int, float]:
        """(face, face size in px, sharpness) of the one face in ``image``; EnrolmentRefused
        with the reason when a rule is not met."""
        import cv2

        faces = self.detector.detect(image)
        if len(faces) != 1:
            what = "no face" if not faces else f"{len(faces)} faces"
            raise EnrolmentRefused(photo, f"{what} found; an enrolment photo shows exactly one")
        face = faces[0]
        size = int(min(face.bbox[2], face.bbox[3]))
        if size < self.min_face:
            raise EnrolmentRefused(
                photo,
                f"the face is {size} px; at least {self.min_face} px are needed for a reliable "
                "enrolment (use a closer or larger photo)",
            )
        if hasattr(self.embedder, "align"):
            crop = self.embedder.align(image, face)
        else:
            x, y, w, h = (int(v) for v in face.bbox)
            crop = cv2.resize(image[max(0, y) : y + h, max(0, x) : x + w], (112, 112))
        gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
        if sharpness < self.min_sharpness:
            raise EnrolmentRefused(
                photo,
                f"the face is too blurred (sharpness {sharpness:.0f}, at least "
                f"{self.min_sharpness:.0f} needed)",
            )
        return face, size, sharpness

    def embed_image(self, image: np.ndarray, user_id: str, photo: str = "") -> EnrolmentRecord:
        try:
            user_id = central_user_id(user_id)
        except ValueError as exc:
            raise EnrolmentRefused(photo or repr(user_id), str(exc)) from None
        face, size, sharpness = self.assess(image, photo or user_id)
        vec = check_embedding(np.asarray(self.embedder.embed(image, face), np.float32))
        return EnrolmentRecord(user_id, self.model, vec, self.detector_name, size, sharpness, photo)

    def embed_photo(self, path: Path, user_id: str | None = None) -> EnrolmentRecord:
        """The record of the photo at ``path``, for ``user_id`` (default: the file name's stem,
        so ``EMP-0001.jpg`` enrols ``EMP-0001``)."""
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise EnrolmentRefused(str(path), "not an image OpenCV can read")
        return self.embed_image(image, user_id or Path(path).stem, Path(path).name)

    def embed_many(
        self, items: Iterable[tuple[Path, str | None]]
    ) -> Iterator[EnrolmentRecord | EnrolmentRefused]:
        """A record or the refusal for each (photo, user id) in order. A user id that an
        earlier photo of the same run already gave is refused: which photo should win?"""
        import cv2

        seen: dict[str, str] = {}  # user id -> the photo that gave it
        for path, user_id in items:
            try:
                record = self.embed_photo(path, user_id)
            except EnrolmentRefused as refused:
                yield refused
                continue
            except (FrEdgeError, ValueError, cv2.error) as exc:  # one bad photo, not the batch
                why = " ".join(str(exc).split())[:300]
                yield EnrolmentRefused(Path(path).name, f"could not be embedded ({why})")
                continue
            first = seen.setdefault(record.user_id, str(path))
            if first != str(path):
                yield EnrolmentRefused(
                    Path(path).name,
                    f"user id {record.user_id!r} is already given by {Path(first).name} in "
                    "this run: "
                    "keep one photo per employee (or name the ids with --ids)",
                )
            else:
                yield record


def write_records(records: Iterable[EnrolmentRecord], out: Any, fmt: str) -> int:
    """Write records to the text stream ``out`` as ``jsonl`` or ``csv``; returns how many."""

    n = 0
    writer = csv.DictWriter(out, fieldnames=FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for record in records:
        row = record.as_dict()
        if writer is not None:
            writer.writerow(row)
        else:
            out.write(json.dumps(row) + "\n")
        n += 1
    return n


def read_records(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(line number, record) of a JSON lines or CSV file of records; a line that cannot be
    read at all gives its error text instead of a record."""

    text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Excel's CSV) is not data
    if Path(path).suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            i = reader.line_num
            record: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
            try:
                record["dim"] = int(record["dim"]) if record.get("dim") is not None else None
            except ValueError:
                yield i, f"dim {record['dim']!r} is not an integer"
                continue
            yield i, record
        return
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield i, f"not JSON: {exc.msg}"
            continue
        yield (
            i,
            value if isinstance(value, dict) else f"a JSON {type(value).__name__}, not an object",
        )


@dataclass
class CheckResult:
    accepted: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # devices would refuse
    warnings: list[tuple[int, str]] = field(default_factory=list)  # accepted, but suspicious


def check_records(
    records: Iterable[tuple[int, Mapping[str, Any] | str]], models: Mapping[str, int]
) -> CheckResult:
    """Validate each record as a device validates a sync page's upsert (``models``: the
    embedding models and dimensions the devices use). The same user twice is a problem (a
    page must not hold it twice); a vector whose norm is not 1 is accepted (devices
    normalise) but warned about: the devices' own embeddings are unit vectors, so the
    central pipeline differs from theirs."""
    result = CheckResult()
    seen: dict[str, int] = {}
    for line, record in records:
        if isinstance(record, str):
            result.problems.append((line, record))
            continue
        upsert = {k: record.get(k) for k in ("user_id", "model", "dim", "embedding", "detector")}
        page = {
            "from_version": 0,
            "to_version": 1,
            "latest_version": 1,
            "upserts": [{**upsert, "version": 1}],
        }
        try:
            parse_page(page, models=models)
        except FrEdgeError as exc:
            why = str(exc).replace("malformed sync page: ", "").replace("upserts.0.", "")
            result.problems.append((line, why.replace("upserts.0 ", "")))
            continue
        user = str(record["user_id"])
        if user in seen:
            result.problems.append((line, f"user_id {user!r} already on line {seen[user]}"))
            continue
        seen[user] = line
        try:
            if central_user_id(user) != user:
                result.warnings.append(
                    (
                        line,
                        f"user_id {user!r} is not in Unicode NFC: the same name typed on "
                        "another system may not match it",
                    )
                )
        except ValueError as exc:
            result.warnings.append((line, str(exc)))
        norm = float(np.linalg.norm(decode_embedding(str(record["embedding"]), int(record["dim"]))))
        if abs(norm - 1.0) > 1e-3:
            result.warnings.append(
                (line, f"embedding norm {norm:.4f}, not 1: devices' embeddings are L2-normalised")
            )
        result.accepted += 1
    return result
