"""Event payloads: ``facial_id`` and ``emotion``, exactly as the original module's README, and
fr-edge's ``presentation_attack`` (a face judged a photo or a screen; docs/events.md).

* ``event_id`` is ``<code>-<epoch milliseconds>-<6 lowercase hex>``: ``EV1-...`` for facial_id,
  ``EV2.<n>-...`` for emotions (codes in :data:`EMOTION_CODES`).
* ``timestamp`` is ISO-8601 UTC with milliseconds and ``Z``: ``2026-01-15T10:00:00.000Z``.
* ``confidence`` is in [0, 1], derived from the cosine distance by
  :func:`distance_to_confidence`.
* ``image`` is a base64 JPEG (see
  :func:`fr_core.delivery.imaging.compress_image_for_event`), or null until one is attached.

Events are pydantic models: ``to_dict()``/``to_json()`` give the wire payload and
:func:`parse_event` reads one back, validating every field. JSON Schemas of both are in
docs/schemas/ (generated from these models; a test keeps them in step).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic.json_schema import JsonDict

FACIAL_ID_CODE = "EV1"

#: Emotion event codes. ``neutral`` has a code for completeness; the engine emits events only
#: for the emotions its config lists (by default all but neutral).
EMOTION_CODES: dict[str, str] = {
    "happy": "EV2.1",
    "sad": "EV2.2",
    "angry": "EV2.3",
    "surprise": "EV2.4",
    "fear": "EV2.5",
    "disgust": "EV2.6",
    "neutral": "EV2.7",
}
EMOTION_BY_CODE = {v: k for k, v in EMOTION_CODES.items()}
ATTACK_CODE = "EV3"  # fr-edge's own: the original module has EV1 and EV2.x only

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
FACIAL_ID_PATTERN = r"^EV1-\d{13}-[0-9a-f]{6}$"
EMOTION_ID_PATTERN = r"^EV2\.[1-7]-\d{13}-[0-9a-f]{6}$"
ATTACK_ID_PATTERN = r"^EV3-\d{13}-[0-9a-f]{6}$"
USER_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"

#: Default parameters of the distance -> confidence mapping (see distance_to_confidence).
DEFAULT_MATCH_THRESHOLD = 0.637
DEFAULT_CONFIDENCE_STEEPNESS = 7.0

MAX_IMAGE_BASE64 = 1_000_000  # a 50 KB JPEG is ~68 KB of base64; refuse anything absurd
_IMAGE_SCHEMA: JsonDict = {
    "description": "base64 JPEG of the face (standard alphabet, padded), or null",
    "contentEncoding": "base64",
    "contentMediaType": "image/jpeg",
}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_timestamp(when: datetime) -> str:
    """``2026-01-15T10:00:00.000Z``: UTC, milliseconds, ``Z``. Naive datetimes are refused."""
    if when.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware (naive datetimes are ambiguous)")
    utc = when.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def new_event_id(code: str, when: datetime) -> str:
    """``<code>-<epoch ms>-<6 hex>``; the random part makes ids unique within a millisecond."""
    return f"{code}-{epoch_ms(when):013d}-{secrets.token_hex(3)}"


def distance_to_confidence(
    distance: float,
    threshold: float = DEFAULT_MATCH_THRESHOLD,
    steepness: float = DEFAULT_CONFIDENCE_STEEPNESS,
) -> float:
    """Map a cosine distance to a confidence in [0, 1].

    A logistic curve centred on the match threshold::

        confidence = 1 / (1 + exp(steepness * (distance - threshold)))

    so a distance at the threshold gives 0.5, smaller distances approach 1 and larger ones 0;
    it is strictly decreasing. With the defaults (SFace's threshold 0.637, steepness 7) the
    README's example distance 0.28 maps to 0.92. Rounded to 3 decimals.
    """
    if not math.isfinite(distance) or distance < 0:
        raise ValueError(f"distance must be a finite number >= 0, got {distance!r}")
    if threshold <= 0 or steepness <= 0:
        raise ValueError("threshold and steepness must be > 0")
    z = steepness * (distance - threshold)
    conf = 0.0 if z > 700 else 1.0 / (1.0 + math.exp(z))
    return round(min(1.0, max(0.0, conf)), 3)


def _check_json_extras(model: BaseModel) -> None:
    for key, value in (model.model_extra or {}).items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"metadata key {key!r} must hold a JSON value (string, finite number, bool, "
                f"null, list or object): {exc}"
            ) from None


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @model_validator(mode="after")
    def _json_only(self) -> _Metadata:
        _check_json_extras(self)
        return self


class FacialIdMetadata(_Metadata):
    """Core metadata of a facial_id event; plugins may add JSON keys (enrichment)."""

    distance: float = Field(ge=0.0, le=2.0, allow_inf_nan=False)
    frames_tracked: int = Field(ge=1)
    inference_ms: int = Field(ge=0)


class EmotionMetadata(_Metadata):
    intensity: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    duration_ms: int = Field(ge=0)


class _Event(BaseModel):
    """Validators and helpers shared by both events; fields are declared in each subclass in
    the README's order, so the JSON reads exactly like the documented payloads."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        json_schema_serialization_defaults_required=True,
    )

    @field_validator("image", check_fields=False)
    @classmethod
    def _b64(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("image must be standard base64 (A-Z a-z 0-9 + / =)") from None
        if not raw.startswith(b"\xff\xd8"):
            raise ValueError("image must be a base64 JPEG (data does not start with FF D8)")
        return v

    @field_validator("timestamp", check_fields=False)
    @classmethod
    def _real_time(cls, v: str) -> str:
        parse_timestamp(v)  # rejects 2026-13-45 that the pattern lets through
        return v

    def to_dict(self) -> dict[str, Any]:
        """The wire payload (JSON-compatible dict)."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return self.model_dump_json()

    @property
    def epoch_ms(self) -> int:
        """The milliseconds part of the event id."""
        return int(self.event_id.split("-")[1])  # type: ignore[attr-defined]


class FacialIdEvent(_Event):
    """An identity confirmed across frames (README: "Facial ID Event")."""

    event_id: str = Field(pattern=FACIAL_ID_PATTERN)
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    user_id: str = Field(pattern=USER_ID_PATTERN)
    event_type: Literal["facial_id"] = "facial_id"
    timestamp: str = Field(pattern=TIMESTAMP_PATTERN)
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    image: str | None = Field(None, max_length=MAX_IMAGE_BASE64, json_schema_extra=_IMAGE_SCHEMA)
    metadata: FacialIdMetadata

    @classmethod
    def create(
        cls,
        *,
        device_id: str,
        user_id: str,
        distance: float,
        frames_tracked: int,
        inference_ms: float = 0,
        when: datetime | None = None,
        threshold: float = DEFAULT_MATCH_THRESHOLD,
        steepness: float = DEFAULT_CONFIDENCE_STEEPNESS,
        image: str | None = None,
    ) -> FacialIdEvent:
        when = when or utc_now()
        return cls(
            event_id=new_event_id(FACIAL_ID_CODE, when),
            device_id=device_id,
            user_id=user_id,
            timestamp=format_timestamp(when),
            confidence=distance_to_confidence(distance, threshold, steepness),
            image=image,
            metadata=FacialIdMetadata(
                distance=round(float(distance), 4),
                frames_tracked=frames_tracked,
                inference_ms=round(inference_ms),
            ),
        )


class EmotionEvent(_Event):
    """A persistent emotion of a face (README: "Emotion Event"); codes in EMOTION_CODES."""

    event_id: str = Field(pattern=EMOTION_ID_PATTERN)
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    user_id: str | None = Field(pattern=USER_ID_PATTERN)
    event_type: Literal["emotion"] = "emotion"
    emotion_code: str = Field(pattern=r"^EV2\.[1-7]$")
    timestamp: str = Field(pattern=TIMESTAMP_PATTERN)
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    image: str | None = Field(None, max_length=MAX_IMAGE_BASE64, json_schema_extra=_IMAGE_SCHEMA)
    metadata: EmotionMetadata

    @model_validator(mode="after")
    def _code_matches_id(self) -> EmotionEvent:
        if not self.event_id.startswith(self.emotion_code + "-"):
            raise ValueError(
                f"event_id {self.event_id!r} must start with its emotion_code {self.emotion_code!r}"
            )
        return self

    @property
    def emotion(self) -> str:
        return EMOTION_BY_CODE[self.emotion_code]

    @classmethod
    def create(
        cls,
        *,
        device_id: str,
        user_id: str | None,
        emotion: str,
        confidence: float,
        intensity: float,
        duration_ms: float,
        when: datetime | None = None,
        image: str | None = None,
    ) -> EmotionEvent:
        if emotion not in EMOTION_CODES:
            raise ValueError(f"unknown emotion {emotion!r}; known: {', '.join(EMOTION_CODES)}")
        when = when or utc_now()
        code = EMOTION_CODES[emotion]
        return cls(
            event_id=new_event_id(code, when),
            device_id=device_id,
            user_id=user_id,
            emotion_code=code,
            timestamp=format_timestamp(when),
            confidence=round(float(confidence), 3),
            image=image,
            metadata=EmotionMetadata(
                intensity=round(float(intensity), 3), duration_ms=round(duration_ms)
            ),
        )


class PresentationAttackMetadata(_Metadata):
    liveness_score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    threshold: float = Field(gt=0.0, lt=1.0, allow_inf_nan=False)
    frames: int = Field(ge=1, description="frames whose liveness scores were fused")
    cues: dict[str, float | None] | None = Field(
        None,
        max_length=16,
        description="each liveness cue's live score for the track (null: the cue abstained); "
        "with several cues liveness_score is the fused score and threshold 0.5",
    )

    @field_validator("cues")
    @classmethod
    def _cue_scores(cls, v: dict[str, float | None] | None) -> dict[str, float | None] | None:
        for name, score in (v or {}).items():
            if not 1 <= len(name) <= 64 or not name.isascii() or not name.isprintable():
                raise ValueError(f"cue name {name!r}: 1-64 printable ASCII characters")
            if score is not None and not (math.isfinite(score) and 0.0 <= score <= 1.0):
                raise ValueError(f"cue {name}: score {score!r} is not in [0, 1]")
        return v


class PresentationAttackEvent(_Event):
    """A face that matched an employee but was judged a presentation attack (a printed
    photo, a screen): no facial_id event was sent for it. ``claimed_user_id`` is the
    employee the face matched (whom the attack impersonated)."""

    event_id: str = Field(pattern=ATTACK_ID_PATTERN)
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    claimed_user_id: str | None = Field(pattern=USER_ID_PATTERN)
    event_type: Literal["presentation_attack"] = "presentation_attack"
    timestamp: str = Field(pattern=TIMESTAMP_PATTERN)
    confidence: float = Field(
        ge=0.0, le=1.0, allow_inf_nan=False, description="1 - the live score: how sure"
    )
    image: str | None = Field(None, max_length=MAX_IMAGE_BASE64, json_schema_extra=_IMAGE_SCHEMA)
    metadata: PresentationAttackMetadata

    @classmethod
    def create(
        cls,
        *,
        device_id: str,
        claimed_user_id: str | None,
        liveness_score: float,
        threshold: float,
        frames: int,
        when: datetime | None = None,
        image: str | None = None,
        cues: Mapping[str, float | None] | None = None,
    ) -> PresentationAttackEvent:
        when = when or utc_now()
        return cls(
            event_id=new_event_id(ATTACK_CODE, when),
            device_id=device_id,
            claimed_user_id=claimed_user_id,
            timestamp=format_timestamp(when),
            confidence=round(1.0 - float(liveness_score), 3),
            image=image,
            metadata=PresentationAttackMetadata(
                liveness_score=round(float(liveness_score), 4),
                threshold=float(threshold),
                frames=int(frames),
                cues=None
                if cues is None
                else {k: None if v is None else round(float(v), 4) for k, v in cues.items()},
            ),
        )


AnyEvent = FacialIdEvent | EmotionEvent | PresentationAttackEvent
Event = Annotated[AnyEvent, Field(discriminator="event_type")]
_EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)


def parse_event(data: dict[str, Any] | str | bytes) -> AnyEvent:
    """Validate a payload (dict or JSON text) into the right event model."""
    if isinstance(data, (str, bytes)):
        return _EVENT_ADAPTER.validate_json(data)
    return _EVENT_ADAPTER.validate_python(data)


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the wire payloads, as published in docs/schemas/."""
    out = {}
    for name, model in (
        ("facial_id", FacialIdEvent),
        ("emotion", EmotionEvent),
        ("presentation_attack", PresentationAttackEvent),
    ):
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://fr-edge.dev/schemas/v1/{name}.schema.json"
        out[name] = schema
    return out


def write_schemas(folder: str) -> list[str]:
    """Write docs/schemas/<name>.schema.json (``make schemas``); returns the paths written."""

    out = []
    for name, schema in event_json_schemas().items():
        path = Path(folder) / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        out.append(str(path))
    return out
