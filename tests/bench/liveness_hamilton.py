"""What the liveness check decides on the Hamilton clip, and why (docs/liveness.md).

    python -m tests.bench.liveness_hamilton [DATA] [MODELS] > docs/liveness/hamilton.md

Runs the recognition stage on the clip with Miranda and Lacamoire enrolled and the liveness
analyzer on (its defaults), recording every face the analyzer scored: the frame, the face's
size, the live score; then the stage's decisions (live, attacks, held for a face too small).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fr_cpu.context import ContextAnalyzer, ContextConfig
from fr_cpu.liveness import LivenessAnalyzer, LivenessConfig
from fr_cpu.motion import MotionAnalyzer, MotionConfig
from fr_numpy import NumpyMatcher

from fr_core import EventValidator
from fr_core.config import default_config
from fr_core.interfaces import ComponentKind
from fr_core.pipeline.engine import Engine
from fr_core.pipeline.liveness import cue_name
from fr_core.pipeline.recognition import RecognitionStage
from fr_core.plugins import build_registry

FPS = 29.97


class Recording(LivenessAnalyzer):
    def __init__(self, config: LivenessConfig) -> None:
        super().__init__(config)
        self.seen: list[tuple[int, float, float]] = []  # frame, face side, score
        self.frame = 0

    def analyze(self, frame, detection):  # type: ignore[no-untyped-def]
        result = super().analyze(frame, detection)
        self.seen.append((self.frame, min(detection.bbox[2:]), result.score))
        return result


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    models = Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/models")
    registry = build_registry()
    det = registry.create(ComponentKind.DETECTOR, "yunet")
    emb = registry.create(ComponentKind.EMBEDDER, "sface")
    ids, rows = [], []
    for uid, photo in (
        ("EMP-MIRANDA", "lin-manuel-miranda.png"),
        ("EMP-LACAMOIRE", "alex-lacamoire.png"),
    ):
        img = cv2.imread(str(data / "faces" / photo))
        ids.append(uid)
        rows.append(emb.embed(img, max(det.detect(img), key=lambda d: d.bbox[2] * d.bbox[3])))
    matcher = NumpyMatcher()
    matcher.replace_gallery("SFace", ids, np.stack(rows))
    liveness = Recording(LivenessConfig(model_dir=models / "minifasnet"))

    def run(gate: Any) -> tuple[RecognitionStage, list[tuple[str, int]]]:
        clock = {"t": 0.0, "frame": 0}
        validator = EventValidator("cam-001", 5, 0.8, 30, clock=lambda: clock["t"])
        events: list[tuple[str, int]] = []
        stage = RecognitionStage(
            det,
            emb,
            matcher,
            validator,
            liveness=gate,
            on_event=lambda e, t: events.append((e.user_id, int(clock["frame"]))),
        )

        def tick(engine, result):  # type: ignore[no-untyped-def]
            clock["t"], clock["frame"] = result.index / FPS, result.index
            liveness.frame = result.index

        source = str(data / "faces" / "short_hamilton_clip.mp4")
        cfg = default_config(camera={"plugin": "sim", "source": source})
        with Engine(cfg, registry, handlers=[tick, stage], event_sink=lambda e: None) as engine:
            engine.run()
        return stage, events

    _, plain = run(None)
    stage, events = run(liveness)
    s = stage.stats
    print("# Liveness on the Hamilton clip\n")
    print(
        f"`python -m tests.bench.liveness_hamilton`: {s.frames} frames, threshold "
        f"{liveness.threshold}, faces smaller than {liveness.min_face_size:.0f} px not judged.\n"
    )
    print("| frame | face (px) | live score |\n| --- | --- | --- |")
    for frame, side, score in liveness.seen:
        print(f"| {frame} | {side:.0f} | {score:.3f} |")
    mean = float(np.mean([v for *_, v in liveness.seen])) if liveness.seen else float("nan")
    print(
        f"\nDecisions: {s.live} live, {s.attacks} attacks, {s.liveness_deferred} held for a "
        f"face too small; mean of the scores above {mean:.3f}; facial_id events: "
        f"{', '.join(f'{u} at frame {f}' for u, f in events) or 'none'}; without the "
        f"check: {', '.join(f'{u} at frame {f}' for u, f in plain) or 'none'}."
    )
    # every photo cue fused (docs/liveness.md, "Cues and their fusion")
    liveness.seen.clear()
    cues = [liveness, ContextAnalyzer(ContextConfig()), MotionAnalyzer(MotionConfig())]
    stage, events = run(cues)
    s = stage.stats
    print(
        f"\nWith the context and motion cues too ({', '.join(cue_name(c) for c in cues)}, fused "
        f"by the rule 'all'): {s.live} live, {s.attacks} attacks (by cue: "
        f"{s.attacks_by_cue or 'none'}), {s.liveness_deferred} held; facial_id events: "
        f"{', '.join(f'{u} at frame {f}' for u, f in events) or 'none'}."
    )


if __name__ == "__main__":
    main()
