"""The central side's enrolment kit (issue 15, item 1): `fr-edge embed` turns photos into
sync-ready records that equal what a device computes for the same faces, refuses bad photos
with the reason, `--check` applies a device's own page validation to a central-side file,
and `fr-edge broker import` puts a checked file into the reference broker, from which a real
device syncs the same vectors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from fr_core import DatabaseManager
from fr_core.app.cli import main
from fr_core.config import default_config
from fr_core.enrolment import EnrolmentKit, EnrolmentRefused
from fr_core.interfaces import ComponentKind
from fr_core.pipeline.engine import Engine
from fr_core.plugins import build_registry
from fr_core.syncpage import decode_embedding, encode_embedding

ONE_FACE = ["obama.jpg", "biden.jpg", "lin-manuel-miranda.png", "alex-lacamoire.png"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


class Spy:
    """The device's embedder, recording what it computes."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []
        self.model_name, self.dim = inner.model_name, inner.dim

    def embed(self, frame, detection):
        vec = self.inner.embed(frame, detection)
        self.seen.append(vec)
        return vec


def device_embeddings(photo):
    """What a device's recognition stage computes for the face in ``photo`` delivered by its
    camera: the engine, the sim camera, the stage, the configured components."""
    from fr_numpy import NumpyMatcher

    from fr_core import EventValidator
    from fr_core.pipeline.recognition import RecognitionStage

    registry = build_registry()
    spy = Spy(registry.create(ComponentKind.EMBEDDER, "sface"))
    stage = RecognitionStage(
        registry.create(ComponentKind.DETECTOR, "yunet"),
        spy,
        NumpyMatcher(),
        EventValidator("cam-001", 5, 0.8, 30),
    )
    cfg = default_config(camera={"plugin": "sim", "source": str(photo), "repeat": 2})
    with Engine(cfg, registry, handlers=[stage], event_sink=lambda e: None) as engine:
        engine.run()
    assert spy.seen
    return spy.seen


def test_the_kits_records_are_the_devices_embeddings(fr_data, tmp_path):
    """`fr-edge embed` in its own process, read back from its JSON lines, against the device
    path on the same photos: cosine >= 0.9999 (measured 1.0: the same code on both sides)."""
    photos = [fr_data / "faces" / n for n in ONE_FACE]
    out = tmp_path / "records.jsonl"
    done = cli("embed", *photos, "--out", out, "--no-progress")
    assert done.exit_code == 0, done.output
    records = read_jsonl(out)
    assert [r["user_id"] for r in records] == [p.stem for p in photos]
    worst = 1.0
    for record, photo in zip(records, photos, strict=True):
        assert record["model"] == "SFace" and record["dim"] == 128
        assert record["detector"] == "yunet" and record["photo"] == photo.name
        assert record["face_px"] >= 80 and record["sharpness"] >= 60
        vec = decode_embedding(record["embedding"], 128)
        assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
        for seen in device_embeddings(photo):
            worst = min(worst, float(vec @ seen))
    assert worst >= 0.9999, worst


def test_every_refusal_names_its_reason(fr_data, tmp_path):
    faces = fr_data / "faces"
    blurred = tmp_path / "blurred.jpg"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(cv2.imread(str(faces / "obama.jpg")), (0, 0), 6))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ids = tmp_path / "ids.csv"
    ids.write_text(
        "photo,user_id\ntwo_people.jpg,EMP-2\nobama-240p.jpg,EMP-3\nblurred.jpg,EMP-4\n"
        "broken.jpg,EMP-5\nobama.jpg,EMP\x07BELL\nbiden.jpg,EMP-6\n"
    )
    out = tmp_path / "r.jsonl"
    done = cli(
        "embed", faces / "two_people.jpg", faces / "obama-240p.jpg", blurred, broken,
        faces / "obama.jpg", faces / "biden.jpg", "--ids", ids, "--out", out, "--no-progress",
    )  # fmt: skip
    assert done.exit_code == 1
    text = done.output
    assert "refused two_people.jpg: 2 faces found; an enrolment photo shows exactly one" in text
    assert "refused obama-240p.jpg: the face is 54 px; at least 80 px are needed" in text
    assert "refused blurred.jpg: the face is too blurred (sharpness" in text
    assert f"refused {broken}: not an image OpenCV can read" in text
    assert "user_id must be 1-128 characters without control characters" in text
    assert "1 records, 5 photos refused" in text
    assert [r["user_id"] for r in read_jsonl(out)] == ["EMP-6"]
    missing = tmp_path / "partial.csv"
    missing.write_text("photo,user_id\nobama.jpg,EMP-1\n")
    done = cli("embed", faces / "obama.jpg", faces / "biden.jpg", "--ids", missing)
    assert done.exit_code != 0 and "gives no user_id for" in done.output


def test_the_python_api(fr_data):
    kit = EnrolmentKit.from_config()
    record = kit.embed_photo(fr_data / "faces" / "obama.jpg", "EMP-OBAMA")
    assert record.user_id == "EMP-OBAMA" and record.as_dict()["dim"] == 128
    with pytest.raises(EnrolmentRefused) as refused:
        kit.embed_photo(fr_data / "faces" / "two_people.jpg")
    assert refused.value.photo == "two_people.jpg" and "2 faces" in refused.value.reason
    strict = EnrolmentKit(kit.detector, kit.embedder, "yunet", min_face=1000)
    with pytest.raises(EnrolmentRefused, match="at least 1000 px"):
        strict.embed_photo(fr_data / "faces" / "obama.jpg")


def test_check_applies_the_devices_validation(fr_data, tmp_path):
    good = tmp_path / "good.jsonl"
    assert cli("embed", fr_data / "faces" / "obama.jpg", "--out", good).exit_code == 0
    record = read_jsonl(good)[0]
    vec = decode_embedding(record["embedding"], 128)
    nan = encode_embedding(np.full(128, np.nan, np.float32))
    zero = encode_embedding(np.zeros(128, np.float32))
    lines = [
        json.dumps(record),
        json.dumps(dict(record, dim=64)),
        json.dumps(dict(record, user_id="EMP-NAN", embedding=nan)),
        json.dumps(dict(record, user_id="EMP-ARC", model="ArcFace", dim=512)),
        json.dumps(dict(record, user_id="EMP-ZERO", embedding=zero)),
        json.dumps(record),  # the same user twice
        "{not json",
        "[1, 2]",
        json.dumps(dict(record, user_id="EMP-X", embedding=encode_embedding(vec * 3))),
    ]
    path = tmp_path / "central.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = cli("embed", "--check", path)
    assert done.exit_code == 1
    text = done.output
    assert f"{path}:2: refused:" in text and "dim 64 does not match model 'SFace' (128)" in text
    assert f"{path}:3: refused:" in text and "NaN or infinite" in text
    assert (
        f"{path}:4: refused:" in text and "unknown model 'ArcFace'; this device uses SFace" in text
    )
    assert f"{path}:5: refused:" in text and "all zeros" in text
    assert f"{path}:6: refused: user_id 'obama' already on line 1" in text
    assert f"{path}:7: refused: not JSON" in text and f"{path}:8: refused: a JSON list" in text
    assert f"{path}:9: warning: embedding norm 3.0000, not 1" in text
    assert "2 records devices accept, 7 refused, 1 warnings (SFace 128)" in text


def test_csv_output_checks_and_imports(fr_data, tmp_path):
    out = tmp_path / "records.csv"
    photos = [fr_data / "faces" / n for n in ONE_FACE]
    assert cli("embed", *photos, "--format", "csv", "--out", out).exit_code == 0
    assert out.read_text().splitlines()[0] == (
        "user_id,model,dim,embedding,detector,face_px,sharpness,photo"
    )
    checked = cli("embed", "--check", out)
    assert checked.exit_code == 0 and "4 records devices accept, 0 refused" in checked.output
    imported = cli("broker", "import", "--data", tmp_path / "broker", out)
    assert imported.exit_code == 0 and "imported 4 enrolments" in imported.output


def test_imported_records_reach_a_device_unchanged(fr_data, tmp_path, monkeypatch):
    """embed -> import into the reference broker -> a device's `fr-edge sync` over HTTPS:
    the device holds exactly the kit's vectors; a file with one bad record imports nothing."""
    from fr_core.broker import ReferenceBroker

    records = tmp_path / "records.jsonl"
    assert cli("embed", *[fr_data / "faces" / n for n in ONE_FACE], "--out", records).exit_code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(records.read_text() + json.dumps({"user_id": "X", "model": "SFace"}) + "\n")
    refused = cli("broker", "import", "--data", tmp_path / "broker", bad)
    assert refused.exit_code != 0 and "nothing imported" in refused.output
    assert cli("broker", "import", "--data", tmp_path / "broker", records).exit_code == 0
    key = "kit-key-0123456789"
    with ReferenceBroker(tmp_path / "broker", api_key=key) as ref:
        cfg = {
            "device_id": "cam-kit",
            "broker_url": ref.url,
            "api_key": "${FR_TEST_KEY}",
            "db_path": str(tmp_path / "device" / "faces.db"),
            "camera": "sim",
            "transport": {"plugin": "https", "ca_bundle": str(ref.ca_path)},
        }
        path = tmp_path / "device.yaml"
        path.write_text(yaml.safe_dump(cfg))
        monkeypatch.setenv("FR_TEST_KEY", key)
        synced = cli("sync", "--config", path, "--no-progress")
        assert synced.exit_code == 0, synced.output
    with DatabaseManager(str(tmp_path / "device" / "faces.db")) as db:
        held = db.get_all_enrollments("SFace")
    assert len(held) == len(ONE_FACE)
    for record in read_jsonl(records):
        assert np.array_equal(held[record["user_id"]], decode_embedding(record["embedding"], 128))


def test_a_photo_that_breaks_the_models_is_one_refusal_and_the_file_is_whole(
    fr_data, tmp_path, monkeypatch
):
    """An embedder failing on one photo (here: a degenerate vector) refuses that photo with
    the reason; the others are written; an earlier --out file is replaced whole."""
    from fr_cpu.models import SFaceEmbedder

    real = SFaceEmbedder.embed
    calls = {"n": 0}

    def flaky(self, frame, detection):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("SFace produced a degenerate embedding for this face")
        return real(self, frame, detection)

    monkeypatch.setattr(SFaceEmbedder, "embed", flaky)
    out = tmp_path / "r.jsonl"
    out.write_text("an older file\n")
    photos = [fr_data / "faces" / n for n in ONE_FACE[:3]]
    done = cli("embed", *photos, "--out", out, "--no-progress")
    assert done.exit_code == 1
    assert f"refused {photos[1].name}: could not be embedded (SFace produced a degenerate" in (
        done.output
    )
    assert [r["user_id"] for r in read_jsonl(out)] == [photos[0].stem, photos[2].stem]


def test_csv_written_by_excel_with_a_bom_is_read(fr_data, tmp_path):
    out = tmp_path / "records.csv"
    assert (
        cli("embed", fr_data / "faces" / "obama.jpg", "--format", "csv", "--out", out).exit_code
        == 0
    )
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())
    checked = cli("embed", "--check", bom)
    assert checked.exit_code == 0 and "1 records devices accept" in checked.output


def test_central_ids_are_nfc_visible_and_trimmed():
    """Issue 15 follow-up: ids the central side issues from file names. macOS gives file
    names decomposed (NFD); a zero-width or bidi character makes an id look like another."""
    from fr_core.enrolment.kit import central_user_id

    decomposed = "Jose\u0301"  # J o s e + combining acute
    assert central_user_id(decomposed) == "Jos\u00e9"
    for hidden in ("EMP\u200b-1", "EMP-1\u202e", "\ufeffEMP-1"):
        with pytest.raises(ValueError, match="invisible format characters"):
            central_user_id(hidden)
    with pytest.raises(ValueError, match="starts or ends with a space"):
        central_user_id("EMP-1 ")
    with pytest.raises(ValueError, match="without control characters"):
        central_user_id("EMP\n1")


def test_one_id_twice_in_a_run_is_refused_for_the_second_photo(tmp_path, fr_data):
    kit = EnrolmentKit.from_config(None)
    photo = fr_data / "faces" / "obama.jpg"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "EMP-1.jpg", tmp_path / "b" / "EMP-1.jpg"
    first.write_bytes(photo.read_bytes())
    second.write_bytes(photo.read_bytes())
    out = list(kit.embed_many([(first, None), (second, None), (first, "EMP-2")]))
    assert out[0].user_id == "EMP-1" and out[2].user_id == "EMP-2"
    assert isinstance(out[1], EnrolmentRefused)
    assert "already given by EMP-1.jpg in this run" in out[1].reason


def test_check_warns_about_ids_that_only_look_alike(tmp_path):
    from fr_core.enrolment.kit import check_records
    from fr_core.syncpage import encode_embedding

    e = np.zeros(128, np.float32)
    e[0] = 1.0
    rows = [
        (
            1,
            {
                "user_id": "Jose\u0301",
                "model": "SFace",
                "dim": 128,
                "embedding": encode_embedding(e),
            },
        ),
        (
            2,
            {
                "user_id": "EMP\u200b2",
                "model": "SFace",
                "dim": 128,
                "embedding": encode_embedding(e),
            },
        ),
    ]
    result = check_records(rows, {"SFace": 128})
    assert result.accepted == 2 and not result.problems  # devices take them ...
    assert [line for line, _ in result.warnings] == [1, 2]  # ... but the central side is told
    assert "not in Unicode NFC" in result.warnings[0][1]
    assert "invisible format characters (U+200B)" in result.warnings[1][1]
