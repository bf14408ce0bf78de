"""`fr-edge evaluate` on the real LFW photos of ../shared/data/lfw-dev and `fr-edge
calibrate` on a device database and on a central-side gallery file.

The figures asserted are the product's quality floor on this data (docs/recognition.md has
the full report): no probe matched to the wrong employee with 250 enrolled, at most 5 of the
1,000 never-enrolled people accepted, tracks of three photos right >= 99%."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fr_core import DatabaseManager
from fr_core.app.cli import main
from fr_core.testing import require, shared_data_dir


@pytest.fixture(scope="module")
def lfw_report(tmp_path_factory, request):
    data = shared_data_dir(Path(str(request.config.rootpath)))
    require(
        data is not None and (data / "lfw-dev" / "manifest.csv").is_file(),
        "lfw-dev not found: set FR_TEST_DATA or place the shared data at ../shared/data",
    )
    out = tmp_path_factory.mktemp("evaluation")
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(data / "lfw-dev"),
            "--out",
            str(out),
            "--sizes",
            "10",
            "--draws",
            "2",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text()), result.output


def scenario(report, name):
    return next(s for s in report["scenarios"] if s["name"] == name)


def test_evaluate_reports_the_targets_on_lfw_dev(lfw_report):
    out, report, output = lfw_report
    assert report["photos"] == 2284 and report["roles"] == {
        "gallery": 250,
        "probe": 1034,
        "unknown": 1000,
    }
    assert report["no_embedding"] == []
    full = scenario(report, "enrolled 250")["policy"]
    assert full["probes"] == 1034 and full["strangers"] == 1000
    assert full["wrong_employee"] == 0
    assert full["strangers_accepted"] <= 5
    assert full["right_person_rate"] >= 0.96
    assert full["tracks"] > 1000 and full["tracks_right_person_rate"] >= 0.99
    assert full["operating_point"]["method"] == "calibrated"
    grown = scenario(report, "grown 1250")["policy"]
    assert grown["wrong_employee_rate"] <= 0.005 and grown["strangers"] == 0
    assert grown["operating_point"]["threshold"] > full["operating_point"]["threshold"]
    # the fixed pair-verification point, for comparison: the problem this rule solves
    assert scenario(report, "enrolled 250")["baseline"]["strangers_accepted"] > 100
    small = scenario(report, "enrolled 10")
    assert small["draws"] == 2 and small["policy"]["stranger_tracks"] > 0
    assert "| enrolled 250 |" in output and (out / "report.md").read_text().startswith("|")


def test_evaluate_writes_the_plots(lfw_report):
    out, report, _ = lfw_report
    for name in ("det.png", "false_accepts.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    det = scenario(report, "enrolled 250")["det"]
    assert len(det["far"]) == len(det["frr"]) == len(det["threshold"]) == 200
    assert det["far"] == sorted(det["far"], reverse=True)  # fewer accepts as t rises
    assert det["frr"] == sorted(det["frr"])


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        (None, "has no manifest.csv"),
        ("who,file,role\n", "header must name identity,file,role"),
        ("identity,file,role\nA,a.jpg,visitor\n", "line 2: role 'visitor' is not one of"),
        ("identity,file,role\nA,missing.jpg,gallery\n", "line 2: missing.jpg does not exist"),
        ("identity,file,role\nA,../outside.jpg,gallery\n", "is outside"),
        ("identity,file,role\nA,a.jpg,probe\n", "no gallery photo"),
        ("identity,file,role\nA,a.jpg,gallery\nA,a.jpg,unknown\n", "both enrolled and unknown"),
    ],
)
def test_bad_manifests_are_refused_with_the_reason(tmp_path, manifest, fragment):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not really")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    if manifest is not None:
        (folder / "manifest.csv").write_text(manifest)
    out = CliRunner().invoke(main, ["evaluate", str(folder), "--out", str(tmp_path / "o")])
    assert out.exit_code == 2 and fragment in out.output, out.output
    assert not (tmp_path / "o").exists()


def unit(rng, n, d=128):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_calibrate_a_central_gallery_file(tmp_path):
    rng = np.random.default_rng(11)
    rows = unit(rng, 300)
    ids = [f"EMP-{i:04d}" for i in range(300)]
    twin = rows[7] + 0.05 * unit(rng, 1)[0]  # one person enrolled twice
    lines = [
        {
            "user_id": u,
            "model": "SFace",
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode(),
        }
        for u, v in [*zip(ids, rows, strict=True), ("EMP-0007-AGAIN", twin)]
    ]
    gallery = tmp_path / "gallery.jsonl"
    gallery.write_text("".join(json.dumps(x) + "\n" for x in lines))
    before = sorted(p.name for p in tmp_path.iterdir())
    out = CliRunner().invoke(main, ["calibrate", "--gallery", str(gallery)])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # writes nothing
    assert "SFace: 301 enrolments, threshold 0." in out.output
    assert "EMP-0007 ~ EMP-0007-AGAIN" in out.output
    report_file = tmp_path / "calibration.json"
    out = CliRunner().invoke(
        main,
        [
            "calibrate",
            "--gallery",
            str(gallery),
            "--target-far",
            "0.01",
            "--json",
            "--report",
            str(report_file),
        ],
    )
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)["SFace"]
    assert report == json.loads(report_file.read_text())["SFace"]
    point = report["operating_point"]
    assert point["target_far"] == 0.01 and point["gallery_size"] == 301
    # random vectors score lower than faces: the verification point is the stricter bar here
    assert point["method"] == "floor" and point["threshold"] == pytest.approx(0.363)
    assert point["expected_false_accepts_per_1000"] < 10
    assert [p["a"] for p in report["confusable_pairs"]] == ["EMP-0007"]
    thresholds = [t["threshold"] for t in report["targets"]]
    assert thresholds == sorted(thresholds, reverse=True)  # a looser target, a lower bar
    fixed = report["fixed_verification_point"]
    assert fixed["threshold"] == 0.363
    assert fixed["expected_false_accepts_per_1000"] == pytest.approx(
        point["expected_false_accepts_per_1000"], abs=0.01
    )


def test_calibrate_the_device_database(tmp_path):
    rng = np.random.default_rng(12)
    db_path = tmp_path / "faces.db"
    with DatabaseManager(str(db_path)) as db:
        for i, v in enumerate(unit(rng, 40)):
            db.upsert_enrollment(f"EMP-{i}", v, "SFace")
    cfg = tmp_path / "device.yaml"
    cfg.write_text(f"device_id: cam-1\nbroker_url: https://b.example\ndb_path: {db_path}\n")
    out = CliRunner().invoke(main, ["calibrate", "--config", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    point = json.loads(out.output)["SFace"]["operating_point"]
    assert point["gallery_size"] == 40 and point["pairs"] == 780
    out = CliRunner().invoke(main, ["calibrate"])
    assert out.exit_code == 2 and "give --config" in out.output
