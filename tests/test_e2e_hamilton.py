"""End to end on the real video: the simulated camera replays the Hamilton clip through the
engine with the CPU models; Miranda and Lacamoire are enrolled from their portraits.

Run three times: with the default decision (threshold calibrated from recognition.target_far
for the gallery, tracks decided on fused embeddings), with the original module's fixed
match_threshold 0.637 set explicitly, and with the liveness check on (the clip is a broadcast
recording of live people: the check lets Miranda's track through, docs/liveness.md)."""

from __future__ import annotations

import base64
import itertools

import cv2
import numpy as np
import pytest
from fr_numpy import NumpyMatcher

from fr_core import EventValidator
from fr_core.config import default_config
from fr_core.interfaces import ComponentKind
from fr_core.pipeline.engine import Engine
from fr_core.pipeline.recognition import RecognitionStage
from fr_core.plugins import build_registry

FPS = 29.97


@pytest.fixture(scope="module", params=["calibrated", "fixed-0.637", "liveness"])
def run(fr_data, fr_models, request, tmp_path_factory):
    liveness = None
    if request.param == "liveness":
        from fr_cpu.liveness import LivenessAnalyzer, LivenessConfig

        liveness = LivenessAnalyzer(
            LivenessConfig(
                model_dir=fr_models / "minifasnet",
                onnx_cache_dir=tmp_path_factory.mktemp("onnx"),
            )
        )

    def go(cooldown):
        registry = build_registry()
        detector = registry.create(ComponentKind.DETECTOR, "yunet")
        embedder = registry.create(ComponentKind.EMBEDDER, "sface")
        matcher = NumpyMatcher(0.637 if request.param == "fixed-0.637" else None)
        ids, rows = [], []
        for uid, photo in (
            ("EMP-MIRANDA", "lin-manuel-miranda.png"),
            ("EMP-LACAMOIRE", "alex-lacamoire.png"),
        ):
            img = cv2.imread(str(fr_data / "faces" / photo))
            face = max(detector.detect(img), key=lambda d: d.bbox[2] * d.bbox[3])
            ids.append(uid)
            rows.append(embedder.embed(img, face))
        matcher.replace_gallery("SFace", ids, np.stack(rows))
        clock = {"t": 0.0}
        validator = EventValidator("cam-001", 5, 0.8, cooldown, clock=lambda: clock["t"])
        got = []
        stage = RecognitionStage(
            detector,
            embedder,
            matcher,
            validator,
            on_event=lambda e, t: got.append((e, t.id, t.first_frame, clock["t"])),
            liveness=liveness,
        )

        def video_clock(engine, result):  # cooldowns in video time, not wall time
            clock["t"] = result.index / FPS

        cfg = default_config(
            camera={
                "plugin": "sim",
                "fps": 0,
                "source": str(fr_data / "faces" / "short_hamilton_clip.mp4"),
            }
        )
        queued = []
        engine = Engine(cfg, registry, handlers=[video_clock, stage], event_sink=queued.append)
        with engine:
            stats = engine.run()
        assert stats.frames == 275
        return got, queued, stage.stats, request.param

    return go


def test_miranda_is_recognised_and_nobody_else(run):
    got, queued, stats, mode = run(cooldown=30)
    users = [e.user_id for e, *_ in got]
    assert users == ["EMP-MIRANDA"]  # 9 s of video: one event per 30 s cooldown
    # Lacamoire is only tiny at the piano: below the minimum face size, never matched
    assert [e.event_id for e in queued] == [e.event_id for e, *_ in got]
    event = got[0][0]
    jpeg = base64.b64decode(event.image)
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) <= 50 * 1024
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    assert event.confidence > 0.5 and event.metadata.frames_tracked >= 5
    assert stats.embeddings < stats.faces  # confirmed tracks were not embedded every frame
    if mode == "liveness":  # scored only while confirming, and judged live
        assert stats.live == 1 and stats.attacks == 0 and stats.liveness_checks >= 5
        assert stats.liveness_checks < stats.faces / 10


def test_cooldown_and_the_audience_member(run):
    got, *_ = run(cooldown=2.0)
    assert {e.user_id for e, *_ in got} == {"EMP-MIRANDA"}
    times = [t for *_, t in got]
    assert len(times) >= 2
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(times))  # cooldown, video time
    # the audience member, visible from about frame 211, never produces an event
    assert not [tid for _, tid, first, _ in got if first >= 205]
