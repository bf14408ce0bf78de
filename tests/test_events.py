"""Event payloads: exactly the spec's fields and types, ids, timestamps, confidence, schemas."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fr_core.events import (
    EMOTION_CODES,
    EmotionEvent,
    FacialIdEvent,
    distance_to_confidence,
    event_json_schemas,
    format_timestamp,
    parse_event,
)

from .conftest import REPO

# The payloads exactly as the original module's README shows them.
SPEC_FACIAL_ID = {
    "event_id": "EV1-1736942400000-a1b2c3",
    "device_id": "cam-001",
    "user_id": "EMP-12345",
    "event_type": "facial_id",
    "timestamp": "2026-01-15T10:00:00.000Z",
    "confidence": 0.92,
    "image": base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg").decode(),
    "metadata": {"distance": 0.28, "frames_tracked": 5, "inference_ms": 45},
}
SPEC_EMOTION = {
    "event_id": "EV2.2-1736942400000-d4e5f6",
    "device_id": "cam-001",
    "user_id": "EMP-12345",
    "event_type": "emotion",
    "emotion_code": "EV2.2",
    "timestamp": "2026-01-15T10:00:05.000Z",
    "confidence": 0.88,
    "image": base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg").decode(),
    "metadata": {"intensity": 0.75, "duration_ms": 2500},
}
WHEN = datetime(2026, 1, 15, 10, 0, 0, tzinfo=timezone.utc)


def types_of(d):
    return {k: (types_of(v) if isinstance(v, dict) else type(v).__name__) for k, v in d.items()}


@pytest.mark.parametrize("payload", [SPEC_FACIAL_ID, SPEC_EMOTION])
def test_spec_payloads_parse_and_round_trip_unchanged(payload):
    event = parse_event(payload)
    assert event.to_dict() == payload
    assert list(json.loads(event.to_json())) == list(payload)  # same field order as the spec
    assert parse_event(event.to_json()) == event


def test_created_events_have_the_spec_fields_and_types():
    fid = FacialIdEvent.create(
        device_id="cam-001",
        user_id="EMP-12345",
        distance=0.28,
        frames_tracked=5,
        inference_ms=45.3,
        when=WHEN,
        image=SPEC_FACIAL_ID["image"],
    )
    got = fid.to_dict()
    assert types_of(got) == types_of(SPEC_FACIAL_ID)
    # (the README's example id, 1736942400000, is 2025-01-15T12:00Z: it does not match its
    # own timestamp; ours always agree)
    assert re.fullmatch(rf"EV1-{int(WHEN.timestamp() * 1000)}-[0-9a-f]{{6}}", got["event_id"])
    assert got["timestamp"] == "2026-01-15T10:00:00.000Z"
    assert got["confidence"] == 0.92 or abs(got["confidence"] - 0.92) < 0.01
    emo = EmotionEvent.create(
        device_id="cam-001",
        user_id="EMP-12345",
        emotion="sad",
        confidence=0.88,
        intensity=0.75,
        duration_ms=2500,
        when=WHEN + timedelta(seconds=5),
        image=SPEC_EMOTION["image"],
    )
    got = emo.to_dict()
    assert types_of(got) == types_of(SPEC_EMOTION)
    assert got["emotion_code"] == "EV2.2" and got["event_id"].startswith(
        f"EV2.2-{int(WHEN.timestamp() * 1000) + 5000}-"
    )
    assert emo.emotion == "sad"


def test_event_ids_are_unique_within_a_millisecond():
    ids = {
        FacialIdEvent.create(
            device_id="d", user_id="u", distance=0.1, frames_tracked=1, when=WHEN
        ).event_id
        for _ in range(500)
    }
    assert len(ids) >= 499  # 24 random bits: a collision in 500 has p < 1 %


def test_timestamps_are_utc_milliseconds_z():
    plus2 = timezone(timedelta(hours=2))
    assert (
        format_timestamp(datetime(2026, 1, 15, 12, 0, 0, 123999, tzinfo=plus2))
        == "2026-01-15T10:00:00.123Z"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 1, 15))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", "EV1-123-a1b2c3"),
        ("event_id", "EV2.2-1736942400000-a1b2c3"),
        ("timestamp", "2026-01-15T10:00:00Z"),
        ("timestamp", "2026-13-45T10:00:00.000Z"),
        ("confidence", 1.2),
        ("confidence", float("nan")),
        ("user_id", ""),
        ("device_id", "has space"),
        ("image", "not base64!"),
        ("image", base64.b64encode(b"PNG not jpeg").decode()),
        ("event_type", "emotion"),
        ("extra_field", 1),
    ],
)
def test_invalid_payloads_are_rejected(field, value):
    with pytest.raises(ValidationError):
        parse_event({**SPEC_FACIAL_ID, field: value})


def test_emotion_code_must_match_its_event_id():
    with pytest.raises(ValidationError, match="must start with its emotion_code"):
        parse_event({**SPEC_EMOTION, "emotion_code": "EV2.3"})


def test_metadata_enrichment_must_stay_json():
    event = parse_event(SPEC_FACIAL_ID)
    event.metadata.camera_zone = "lobby"
    assert event.to_dict()["metadata"]["camera_zone"] == "lobby"
    with pytest.raises(ValidationError, match="must hold a JSON value"):
        event.metadata.bad = object()
    with pytest.raises(ValidationError):
        event.metadata.distance = -1


def test_emotion_codes_cover_the_seven_classes():
    assert sorted(EMOTION_CODES) == sorted(
        ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    )
    assert sorted(EMOTION_CODES.values()) == [f"EV2.{i}" for i in range(1, 8)]


def test_confidence_mapping():
    assert distance_to_confidence(0.28) == pytest.approx(0.92, abs=0.01)  # the spec's example
    assert distance_to_confidence(0.637) == 0.5
    assert distance_to_confidence(0.0) > 0.98 and distance_to_confidence(2.0) < 0.001
    with pytest.raises(ValueError):
        distance_to_confidence(float("inf"))
    with pytest.raises(ValueError):
        distance_to_confidence(-0.1)


@given(st.floats(0, 2), st.floats(0, 2))
def test_confidence_is_bounded_and_decreasing(a, b):
    ca, cb = distance_to_confidence(a), distance_to_confidence(b)
    assert 0.0 <= ca <= 1.0
    if a < b:
        assert ca >= cb


def test_published_schemas_match_the_models():
    for name, schema in event_json_schemas().items():
        path = REPO / "docs" / "schemas" / f"{name}.schema.json"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `make schemas`"


def test_schemas_accept_the_spec_payloads_and_reject_bad_ones():
    schemas = event_json_schemas()
    jsonschema.Draft202012Validator(schemas["facial_id"]).validate(SPEC_FACIAL_ID)
    jsonschema.Draft202012Validator(schemas["emotion"]).validate(SPEC_EMOTION)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schemas["facial_id"]).validate(
            {**SPEC_FACIAL_ID, "confidence": 3}
        )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schemas["facial_id"]).validate(
            {k: v for k, v in SPEC_FACIAL_ID.items() if k != "image"}
        )


user_ids = st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=128)


@given(
    user_ids,
    st.floats(0, 2),
    st.integers(1, 10_000),
    st.floats(0, 1e5),
    st.datetimes(
        min_value=datetime(2001, 9, 9, 2, 0),
        max_value=datetime(2286, 1, 1),
        timezones=st.just(timezone.utc),
    ),
)
def test_facial_id_round_trip(user_id, distance, frames, ms, when):
    event = FacialIdEvent.create(
        device_id="cam-001",
        user_id=user_id,
        distance=distance,
        frames_tracked=frames,
        inference_ms=ms,
        when=when,
    )
    again = parse_event(event.to_json())
    assert again == event
    assert again.epoch_ms == int(when.timestamp() * 1000)
    jsonschema.Draft202012Validator(event_json_schemas()["facial_id"]).validate(event.to_dict())
