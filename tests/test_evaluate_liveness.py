"""The liveness evaluation (``fr-edge evaluate-liveness``): per-face ground truth from
labels.csv and its errors, the threshold rule that never sees an attack, leave-one-out
figures, the fusion of cues, and a real run of the command on real photos with the real
MiniFASNet models."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from fr_core.app.cli import main
from fr_core.evaluation.liveness import (
    Face,
    LabelsError,
    decide,
    leave_one_attack_out,
    leave_one_live_out,
    rates,
    read_labels,
    rule_threshold,
    rule_thresholds,
)

HEADER = "file,x,y,w,h,label,note\n"


@pytest.fixture
def folder(tmp_path, fr_data):
    """A small labelled set: two live portraits, one attack photo with two faces (Obama and
    Biden side by side stand in for a holder and the face on a phone)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    faces = fr_data / "faces"
    shutil.copy(faces / "obama.jpg", tmp_path / "real" / "obama.jpg")
    shutil.copy(faces / "biden.jpg", tmp_path / "real" / "biden.jpg")
    shutil.copy(faces / "two_people.jpg", tmp_path / "fake" / "two.jpg")
    return tmp_path


def _labels(folder, rows: str):
    path = folder / "labels.csv"
    path.write_text(HEADER + rows)
    return path


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ("fake/missing.jpg,1,1,10,10,attack,\n", "does not exist"),
        ("fake/two.jpg,1,1,100000,10,attack,\n", "reaches outside"),
        ("fake/two.jpg,-5,1,10,10,attack,\n", "reaches outside"),
        ("fake/two.jpg,1,1,0,10,attack,\n", "w, h > 0"),
        ("fake/two.jpg,1,1,nan,10,attack,\n", "finite"),
        ("fake/two.jpg,a,1,10,10,attack,\n", "must be numbers"),
        ("fake/two.jpg,1,1,10,10,spoof,\n", "allowed live, attack, ignore"),
        ("fake/two.jpg,1,1,10,10,attack,\nfake/two.jpg,1,1,10,10,live,\n", "labelled twice"),
        ("../outside.jpg,1,1,10,10,attack,\n", "under real/ or fake/"),
        ("other/x.jpg,1,1,10,10,attack,\n", "directly in real/ or fake/"),
        ("real/sub/x.jpg,1,1,10,10,attack,\n", "directly in real/ or fake/"),
        ("fake/two.txt,1,1,10,10,attack,\n", "allowed image types"),
        ("fake/tw\x00o.jpg,1,1,10,10,attack,\n", "under real/ or fake/"),
        ('"fake/two.jpg,1,1,10,10,attack\n', "not CSV"),
    ],
)
def test_a_bad_labels_row_is_an_error_naming_its_line_and_what_is_allowed(folder, rows, says):
    """Each kind of bad row gives a LabelsError that names the file's line and the rule."""
    path = _labels(folder, rows)
    with pytest.raises(LabelsError, match=says) as err:
        read_labels(path, folder)
    assert "line 2" in str(err.value) or "line 3" in str(err.value)


def test_a_path_written_two_ways_is_one_file_and_a_repeated_box_is_caught(folder):
    """real/./a.jpg and real//a.jpg name real/a.jpg: stored under that name (so the
    evaluation finds the rows) and a box given twice through them is refused; spaces around
    the header's names are allowed."""
    path = folder / "labels.csv"
    path.write_text("file, x, y, w, h, label\nfake/./two.jpg,1,1,10,10,attack\n")
    assert list(read_labels(path, folder)) == ["fake/two.jpg"]
    path.write_text(HEADER + "fake/./two.jpg,1,1,10,10,attack,\nfake//two.jpg,1,1,10,10,live,\n")
    with pytest.raises(LabelsError, match="labelled twice"):
        read_labels(path, folder)


def test_an_image_too_large_in_pixels_is_refused_before_it_is_decoded(folder, monkeypatch):
    """The pixel count comes from the header; past the cap the error names both numbers."""
    import fr_core.evaluation.liveness as ev

    monkeypatch.setattr(ev, "MAX_IMAGE_PIXELS", 1000)
    path = _labels(folder, "fake/two.jpg,1,1,10,10,attack,\n")
    with pytest.raises(LabelsError, match="pixels, more than 1,000 allowed"):
        read_labels(path, folder)


def test_a_labels_file_with_the_wrong_header_or_not_utf8_is_refused(folder):
    """The header is checked before any row, and bytes that are not UTF-8 are named."""
    (folder / "labels.csv").write_text("name,box,label\nfake/two.jpg,1,attack\n")
    with pytest.raises(LabelsError, match="header must be file,x,y,w,h,label"):
        read_labels(folder / "labels.csv", folder)
    (folder / "labels.csv").write_bytes(HEADER.encode() + b"fake/\xff.jpg,1,1,1,1,live,\n")
    with pytest.raises(LabelsError, match="not UTF-8"):
        read_labels(folder / "labels.csv", folder)


def test_a_multi_face_attack_photo_without_labels_is_an_error_through_the_command(folder):
    """Two faces in fake/ and no rows for them: the command stops and says how to label."""
    result = CliRunner().invoke(
        main,
        ["evaluate-liveness", str(folder), "--out", str(folder / "out"), "--no-plots"],
    )
    assert result.exit_code != 0
    assert "2 faces found in an attack photo without labels" in result.output
    assert "file,x,y,w,h,label" in result.output


def test_per_face_labels_score_the_holder_as_live_and_the_screen_as_attack(folder, fr_models):
    """With a row per face, the attack photo gives one live face and one attack face, each
    scored by the real MiniFASNet through still tracks, and the report counts them so."""
    shutil.copytree(fr_models / "minifasnet", folder / "models")
    # the two faces of two_people.jpg as YuNet finds them (left: Obama, right: Biden)
    import cv2
    from fr_cpu.models import YuNetConfig, YuNetDetector

    found = YuNetDetector(YuNetConfig()).detect(cv2.imread(str(folder / "fake" / "two.jpg")))
    assert len(found) == 2
    left, right = sorted(found, key=lambda d: d.bbox[0])
    _labels(
        folder,
        "".join(
            f"fake/two.jpg,{','.join(str(int(v)) for v in d.bbox)},{label},\n"
            for d, label in ((left, "live"), (right, "attack"))
        ),
    )
    config = folder / "cues.yaml"
    config.write_text(
        "device_id: cam-1\nbroker_url: https://127.0.0.1:1\nanalyzers:\n"
        f"  - {{plugin: liveness, model_dir: {folder / 'models'}, "
        f"onnx_cache_dir: {folder / 'onnx'}}}\n"
    )
    out = folder / "out"
    result = CliRunner().invoke(
        main,
        [
            "evaluate-liveness",
            str(folder),
            "--config",
            str(config),
            "--out",
            str(out),
            "--tracks-per-photo",
            "2",
            "--moved-tracks",
            "0",
            "--no-plots",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "report.json").read_text())
    assert summary["counts"]["live_faces"] == 3 and summary["counts"]["attack_faces"] == 1
    faces = {(f["file"], f["label"]) for f in summary["faces"]}
    assert ("fake/two.jpg", "live") in faces and ("fake/two.jpg", "attack") in faces
    at = summary["decisions"]["liveness"]["rule"]["still"]
    assert at["live_tracks"] + at["live_undecided"] == 6 and at["attack_faces"] == 1
    assert "leave-one-attack-out" in (out / "report.md").read_text()


def test_the_rule_keeps_at_most_the_target_share_of_live_scores_below_it():
    """At target q, no more than floor(q n) live scores lie below the chosen threshold, and
    one more refusal would break it."""
    scores = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    t = rule_threshold(scores, 0.03)
    assert t is not None
    assert sum(1 for s in scores if s < t) <= 3
    assert sum(1 for s in scores if s < t + 0.011) > 3
    assert rule_threshold([], 0.03) is None


def _face(name, live, *scores, cue="texture"):
    return Face(name, (0, 0, 10, 10), live, still=[{cue: s} for s in scores])


def test_the_rule_never_sees_attacks_but_the_old_rule_does():
    """Moving every attack score changes none of the rule's thresholds; leave-one-attack-out
    shows the old rule (just above every other attack) letting in an attack unlike the
    others, which the in-sample old rule would hide."""
    live = [_face(f"l{i}", True, 0.6 + i / 100) for i in range(40)]
    attacks = [_face("a1", False, 0.1), _face("a2", False, 0.2), _face("a3", False, 0.7)]
    before = rule_thresholds(live + attacks, ["texture"])
    moved = [_face(a.file, False, 0.99) for a in attacks]
    assert rule_thresholds(live + moved, ["texture"]) == before
    loo = leave_one_attack_out(live + attacks, ["texture"], 0.03, "texture")
    assert loo["attack_faces"] == 3
    assert loo["accepted_refuse_every_attack_rule_files"] == ["a3"]  # above the others
    assert loo["accepted_bpcer_rule_files"] == ["a3"]  # 0.7 is above the rule's 0.61 too
    lol = leave_one_live_out(live + attacks, ["texture"], 0.03, "texture")
    assert lol["live_tracks"] == 40 and lol["live_refused"] >= 1


def test_fusion_refuses_when_any_conclusive_cue_refuses_and_waits_when_none_has_evidence():
    """The gate's rule, as the evaluation applies it: every cue with evidence must say live;
    an abstaining cue is not a veto; no evidence at all is undecided."""
    t = {"texture": 0.5, "motion": 0.5}
    assert decide({"texture": 0.9, "motion": None}, t) is True
    assert decide({"texture": 0.9, "motion": 0.1}, t) is False
    assert decide({"texture": None, "motion": None}, t) is None
    assert decide({"texture": 0.9, "motion": 0.1}, t, "texture") is True
    faces = [
        Face("l", (0, 0, 1, 1), True, still=[{"texture": 0.9, "motion": None}]),
        Face("a", (0, 0, 1, 1), False, still=[{"texture": 0.9, "motion": 0.1}]),
    ]
    fused = rates(faces, t, "fused", "all")
    assert fused["attacks_accepted"] == 0 and fused["live_refused"] == 0
    alone = rates(faces, t, "texture", "all")
    assert alone["attacks_accepted"] == 1


def test_with_several_cues_the_rule_keeps_the_fused_gate_within_the_target():
    """Two cues: one that never refuses a live face (every live score 1.0) and one spread
    out. The shared quantile level gives the spread cue the whole 3% budget, and the fused
    gate refuses at most 3% of the live tracks; splitting the budget in halves would have
    refused fewer and accepted more attacks."""
    live = [
        Face(f"l{i}", (0, 0, 1, 1), True, still=[{"texture": i / 100, "context": 1.0}])
        for i in range(1, 101)
    ]
    t = rule_thresholds(live, ["texture", "context"], 0.03)
    fused = rates(live, t, "fused", "all")
    assert fused["bpcer"] <= 0.03 and fused["live_refused"] == 3
    assert t["texture"] == pytest.approx(0.04)
