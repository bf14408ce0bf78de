"""fr_core.pipeline.decision: the open-set operating point and the one decision function."""

from __future__ import annotations

import base64
import threading

import numpy as np
import pytest
from fr_numpy import NumpyMatcher
from hypothesis import given
from hypothesis import strategies as st

from fr_core.config import default_config
from fr_core.interfaces import Match
from fr_core.pipeline.decision import (
    UNCALIBRATED,
    Candidates,
    DecisionError,
    DecisionPolicy,
    calibrate,
    confusable_pairs,
    decide,
    false_accept_rate,
    fuse,
    identify,
    read_gallery_file,
    threshold_for,
)


def unit_rows(rng, n, d=128):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@given(
    st.floats(1e-5, 0.1),
    st.floats(-0.2, 0.3),
    st.floats(0.02, 0.2),
    st.integers(1, 200_000),
)
def test_threshold_and_false_accept_rate_are_inverse(target, mean, sd, n):
    t = threshold_for(target, mean, sd, n)
    assert false_accept_rate(t, mean, sd, n) == pytest.approx(target, rel=1e-3)
    # a larger gallery needs a stricter threshold for the same target
    assert threshold_for(target, mean, sd, n + 1000) > t


def test_calibration_keeps_its_target_when_the_model_holds():
    """Random unit vectors in 1024-D have near-Gaussian impostor scores: the calibrated
    threshold must accept strangers at the target rate (binomial bounds, 20,000 strangers).
    (In 128-D the cosine's tail is lighter than Gaussian and the rule is conservative: half
    the target at 1%.)"""
    rng = np.random.default_rng(3)
    gallery = unit_rows(rng, 600, 1024)
    for target in (0.01, 0.05):
        point = calibrate("RandomModel", gallery, DecisionPolicy(target_far=target))
        assert point.method == "calibrated" and point.pairs == 20_000
        assert point.impostor_sd == pytest.approx(1 / np.sqrt(1024), rel=0.05)
        strangers = unit_rows(rng, 20_000, 1024)
        accepted = float(((strangers @ gallery.T).max(axis=1) >= point.threshold).mean())
        sigma = np.sqrt(target * (1 - target) / 20_000)
        assert abs(accepted - target) < 4 * sigma + 0.1 * target, (target, accepted)
        assert point.expected_false_accepts_per_1000 == pytest.approx(1000 * target, rel=1e-3)


def test_small_galleries_lean_on_the_model_prior_and_never_go_below_verification():
    rng = np.random.default_rng(4)
    one = calibrate("SFace", unit_rows(rng, 1), DecisionPolicy(target_far=0.01))
    assert one.method == "floor" and one.threshold == pytest.approx(0.363)
    ten = calibrate("SFace", unit_rows(rng, 10), DecisionPolicy(target_far=0.001))
    assert ten.pairs == 45 and 0.363 < ten.threshold < 0.5
    big = calibrate("SFace", unit_rows(rng, 1000), DecisionPolicy(target_far=0.001))
    assert big.gallery_size == 1000 and big.pairs == 20_000


def test_an_unknown_model_with_a_small_gallery_accepts_nobody_unless_told():
    rng = np.random.default_rng(5)
    rows = unit_rows(rng, 5, 16)
    point = calibrate("Custom", rows, DecisionPolicy())
    assert point.method == "uncalibrated" and point.threshold == UNCALIBRATED
    d = decide(Candidates([Match("a", 0.0)], point))  # even an identical face
    assert d.user_id is None and d.reason == "below_threshold"
    fixed = calibrate("Custom", rows, DecisionPolicy(match_threshold=0.4))
    assert fixed.method == "fixed" and fixed.threshold == pytest.approx(0.6)
    assert fixed.target_far is None


def test_policy_from_config_uses_match_threshold_only_when_set():
    assert DecisionPolicy.from_config(default_config()) == DecisionPolicy(0.001, None)
    cfg = default_config(match_threshold=0.55, recognition={"target_far": 0.002})
    assert DecisionPolicy.from_config(cfg) == DecisionPolicy(0.002, 0.55)
    with pytest.raises(DecisionError, match=r"target_far must be in \[1e-9, 1\)"):
        DecisionPolicy(target_far=0)
    with pytest.raises(DecisionError, match="cosine distance"):
        DecisionPolicy(match_threshold=3.0)


def test_decide():
    point = calibrate("SFace", unit_rows(np.random.default_rng(6), 50), DecisionPolicy())
    t = point.threshold
    assert decide(Candidates([], point)).reason == "empty_gallery"
    hit = decide(Candidates([Match("EMP-1", 1 - t - 0.01)], point))
    assert hit.user_id == "EMP-1" and hit.reason == "match" and hit.threshold == t
    miss = decide(Candidates([Match("EMP-1", 1 - t + 0.01)], point))
    assert miss.user_id is None and miss.reason == "below_threshold"
    assert miss.distance == pytest.approx(1 - t + 0.01)
    # the nearest decides, in whatever order a matcher listed them
    unsorted = decide(Candidates([Match("FAR", 0.9), Match("NEAR", 0.1)], point))
    assert unsorted.user_id == "NEAR"
    for bad in (float("nan"), -0.1, 2.5):
        with pytest.raises(DecisionError, match="a cosine distance is a finite number"):
            decide(Candidates([Match("X", bad)], point))
    with pytest.raises(DecisionError, match="needs L2-normalised rows"):
        calibrate("SFace", 3 * unit_rows(np.random.default_rng(6), 50))


def test_the_matcher_publishes_gallery_and_point_together():
    """identify() never pairs a gallery with another gallery's operating point, while
    writers grow and shrink the gallery."""
    rng = np.random.default_rng(7)
    m = NumpyMatcher()
    rows = unit_rows(rng, 400)
    m.replace_gallery("SFace", [f"u{i}" for i in range(200)], rows[:200])
    errors: list[str] = []
    stop = threading.Event()

    def read():
        q = rows[0]
        while not stop.is_set():
            c = m.identify("SFace", q, k=10_000)
            if len(c.matches) != c.point.gallery_size:
                errors.append(f"{len(c.matches)} enrolments, point for {c.point.gallery_size}")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    for i in range(200, 400):
        m.add("SFace", f"u{i}", rows[i])
        if i % 3 == 0:
            m.remove("SFace", f"u{i - 100}")
    stop.set()
    for r in readers:
        r.join()
    assert not errors, errors[:3]
    assert m.operating_point("SFace").gallery_size == m.size("SFace")
    # a bigger gallery, a stricter threshold
    small = NumpyMatcher()
    small.replace_gallery("SFace", ["a", "b"], rows[:2])
    assert m.operating_point("SFace").threshold > small.operating_point("SFace").threshold


def test_search_applies_the_point_and_identify_does_not():
    rng = np.random.default_rng(8)
    m = NumpyMatcher()
    rows = unit_rows(rng, 30)
    m.replace_gallery("SFace", [f"u{i}" for i in range(30)], rows)
    stranger = unit_rows(rng, 1)[0]
    assert m.search("SFace", stranger) == []
    c = m.identify("SFace", stranger, k=3)
    assert len(c.matches) == 3 and decide(c).user_id is None
    assert identify(m, "SFace", rows[4]).user_id == "u4"
    assert m.search("SFace", rows[4])[0].user_id == "u4"


def test_fuse():
    a = np.array([1, 0, 0], np.float32)
    b = np.array([0, 1, 0], np.float32)
    f = fuse([a, b])
    assert np.allclose(f, [2**-0.5, 2**-0.5, 0]) and f.dtype == np.float32
    with pytest.raises(ValueError, match="cancel out"):
        fuse([a, -a])


def test_confusable_pairs_match_brute_force():
    rng = np.random.default_rng(9)
    rows = unit_rows(rng, 3000, 8)  # low dimension: many close pairs, more than one block
    ids = [f"u{i}" for i in range(3000)]
    got, total = confusable_pairs(rows, ids, 0.97, limit=100_000)
    s = rows @ rows.T
    i, j = np.nonzero(np.triu(s >= 0.97, 1))
    assert {(a, b) for a, b, _ in got} == {(ids[x], ids[y]) for x, y in zip(i, j, strict=True)}
    assert total == len(i) > 10
    assert [v for *_, v in got] == sorted((v for *_, v in got), reverse=True)
    # a bounded list, whatever the threshold: the most similar first, all of them counted
    few, everything = confusable_pairs(rows, ids, 0.5, limit=7)
    assert len(few) == 7 and everything == int(np.triu(s >= 0.5, 1).sum())
    assert [v for *_, v in few] == sorted(np.round(s[np.triu_indices(3000, 1)], 4))[::-1][:7]


def _line(uid, vec, model="SFace", **extra):
    import json

    raw = base64.b64encode(np.asarray(vec, "<f4").tobytes()).decode()
    return json.dumps({"user_id": uid, "model": model, "embedding": raw, **extra}) + "\n"


def test_gallery_file(tmp_path):
    good = tmp_path / "g.jsonl"
    good.write_text(_line("A", [1, 0, 0]) + "\n" + _line("B", [0, 1, 0], dim=3))
    ids, rows = read_gallery_file(good)["SFace"]
    assert ids == ["A", "B"] and rows.shape == (2, 3)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json\n", "line 1: not JSON"),
        ('["a"]\n', "line 1: must be a JSON object"),
        ('{"user_id": "", "model": "SFace", "embedding": "AAAA"}\n', "user_id must be 1-128"),
        ('{"user_id": "A", "model": "", "embedding": "AAAA"}\n', "model must be 1-64"),
        ('{"user_id": "A", "model": "SFace", "embedding": "@@@@"}\n', "not standard base64"),
        ('{"user_id": "A", "model": "SFace", "embedding": 5}\n', "embedding must be standard"),
        (_line("A", [np.nan, 1, 0]), "line 1: embedding"),
        (_line("A", [0, 0, 0]), "line 1: embedding"),
        (_line("A", [1, 0, 0], dim=4), "dim 4 needs 16"),
        (_line("A", [1, 0, 0]) + _line("A", [0, 1, 0]), "line 2: A appears twice"),
        (_line("A", [1, 0, 0]) + _line("B", [0, 1]), "line 2: 2 values where SFace has 3"),
    ],
)
def test_gallery_file_errors_name_the_line(tmp_path, text, fragment):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    with pytest.raises(DecisionError, match=fragment):
        read_gallery_file(bad)


def test_a_large_gallery_is_calibrated_from_a_fixed_sample():
    """100,000 enrolments: 20,000 sampled pairs, the same for the same size; one enrolment
    more moves the threshold by less than 0.005 (docs/recognition.md)."""
    rows = unit_rows(np.random.default_rng(10), 100_001)
    a = calibrate("SFace", rows[:100_000])
    assert a.pairs == 20_000 and a == calibrate("SFace", rows[:100_000])
    b = calibrate("SFace", rows)
    assert abs(a.threshold - b.threshold) < 0.005
    assert b.track_threshold == pytest.approx(b.threshold + 0.017)


def test_the_example_config_calibrates():
    """config_example.json must not switch calibration off (match_threshold: null)."""
    from pathlib import Path

    from fr_core.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "config_example.json")
    assert DecisionPolicy.from_config(cfg) == DecisionPolicy(0.001, None)


def test_a_track_taken_over_by_another_face_is_not_carried_on_the_old_fusion():
    """The IoU tracker can hand a box to the next person at the door: the fused window
    restarts when a face is unlike the ones fused, so B is B at once, not A for 4 frames."""
    from fr_core import EventValidator
    from fr_core.interfaces import Detection
    from fr_core.pipeline.recognition import RecognitionStage
    from fr_core.pipeline.tracker import IouTracker

    rng = np.random.default_rng(13)
    a, b = unit_rows(rng, 2)
    frames = [a] * 6 + [b] * 3

    class OneBox:
        def detect(self, frame):
            return [Detection((10, 10, 100, 100), 0.9)]

    class Script:
        model_name, dim = "SFace", 128

        def __init__(self):
            self.i = 0

        def embed(self, frame, detection):
            noisy = frames[self.i] + 0.02 * unit_rows(rng, 1)[0]
            self.i += 1
            return (noisy / np.linalg.norm(noisy)).astype(np.float32)

    matcher = NumpyMatcher()
    matcher.replace_gallery("SFace", ["EMP-A", "EMP-B"], np.stack([a, b]))
    stage = RecognitionStage(
        OneBox(),
        Script(),
        matcher,
        EventValidator("cam-1", 50, 0.8, 60),
        IouTracker(reembed_every=1, stable_after=100),
    )
    seen = []
    for _ in frames:
        stage(None, type("R", (), {"frame": np.zeros((120, 120, 3), np.uint8), "timestamp": 0})())
        seen.append(next(iter(stage.tracker.tracks.values())).user_id)
    assert seen == ["EMP-A"] * 6 + ["EMP-B"] * 3


def test_a_matcher_without_identify_is_refused_by_name():
    from fr_core import hookimpl
    from fr_core.errors import PluginError
    from fr_core.interfaces import ComponentKind
    from fr_core.plugins import build_registry

    class OldMatcher:  # written before issue 11: no identify
        def replace_gallery(self, model, user_ids, embeddings): ...
        def add(self, model, user_id, embedding): ...
        def remove(self, model, user_id): ...
        def search(self, model, embedding, k=1): ...

    class Plugin:
        @hookimpl
        def fr_register_matchers(self, register):
            register("old", lambda cfg, ctx: OldMatcher())

    registry = build_registry(extra_plugins=[("old-matcher", Plugin())], load_entrypoints=False)
    with pytest.raises(PluginError, match="lacks the Matcher interface: no identify"):
        registry.create(ComponentKind.MATCHER, "old")


def test_an_embedder_can_declare_its_model_prior(monkeypatch):
    from fr_core.pipeline import decision

    monkeypatch.setattr(decision, "MODEL_PRIORS", dict(decision.MODEL_PRIORS))
    rows = unit_rows(np.random.default_rng(14), 5, 16)
    assert calibrate("Custom", rows).method == "uncalibrated"
    decision.register_prior("Custom", mean=0.0, sd=0.25, verification=0.5, fusion_shift=0.01)
    point = calibrate("Custom", rows)
    assert point.method in ("calibrated", "floor") and point.threshold >= 0.5
    assert point.track_threshold == pytest.approx(point.threshold + 0.01)
    with pytest.raises(DecisionError, match="prior for 'Bad'"):
        decision.register_prior("Bad", mean=0.0, sd=0.0, verification=0.5)
