"""Benchmarks of the vision pipeline (issue 5).

- End to end on the Hamilton clip with the CPU plugins: frames/s of the engine (sim camera,
  recognition stage: tracker, re-embedding only when due) >= 1.3x a naive loop that detects
  and embeds every face in every frame with the same models, same run, and both give the
  same facial_id events. Both apply the same minimum face size: it is a recognition rule
  (an embedding of a face a few pixels wide matched an employee), not a speed trick.
- `fr-edge run`: time from process start to the first processed frame, and steady-state RSS
  while it runs (reported, no target).

Under `make test` the clip's first 90 frames run once, without timing, to check the events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from fr_numpy import NumpyMatcher

from fr_core import EventValidator
from fr_core.config import default_config
from fr_core.interfaces import ComponentKind
from fr_core.pipeline.engine import Engine
from fr_core.pipeline.recognition import RecognitionStage
from fr_core.plugins import build_registry

from ..conftest import REPO
from ..faces import hamilton_gallery

FPS = 29.97


@pytest.fixture(scope="module")
def models(fr_data):
    reg = build_registry()
    det = reg.create(ComponentKind.DETECTOR, "yunet")
    emb = reg.create(ComponentKind.EMBEDDER, "sface")
    ids, gallery = hamilton_gallery(det, emb, fr_data)
    return reg, det, emb, ids, gallery


def clip(fr_data, limit):
    cap = cv2.VideoCapture(str(fr_data / "faces" / "short_hamilton_clip.mp4"))
    frames = []
    while len(frames) < limit:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    return frames


def naive(det, emb, matcher, frames, min_face):
    """Detect and embed every face of every frame; the EventValidator keyed by the face's
    index in the frame (no tracker); video-time cooldown."""
    t = {"now": 0.0}
    validator = EventValidator("cam-001", 5, 0.8, 30, clock=lambda: t["now"])
    events = []
    for i, frame in enumerate(frames):
        t["now"] = i / FPS
        faces = [d for d in det.detect(frame) if min(d.bbox[2], d.bbox[3]) >= min_face]
        faces.sort(key=lambda d: d.bbox[0])
        for k, d in enumerate(faces):
            hits = matcher.search("SFace", emb.embed(frame, d), k=1)
            user, dist = (hits[0].user_id, hits[0].distance) if hits else (None, 1.0)
            e = validator.process_recognition(f"face_{k}", user, min(max(dist, 0), 2), i)
            if e is not None:
                events.append(e.user_id)
    return events


def ours(reg, det, emb, matcher, source, limit, liveness=None):
    t = {"now": 0.0}
    validator = EventValidator("cam-001", 5, 0.8, 30, clock=lambda: t["now"])
    stage = RecognitionStage(det, emb, matcher, validator, liveness=liveness)
    events = []
    stage.on_event = lambda e, tr: events.append(e.user_id)

    def video_clock(engine, result):
        t["now"] = result.index / FPS

    cfg = default_config(camera={"plugin": "sim", "fps": 0, "source": source})
    engine = Engine(cfg, reg, handlers=[video_clock, stage], event_sink=lambda e: None)
    with engine:
        stats = engine.run(max_frames=limit)
    return events, stats.frames, stage


@pytest.mark.benchmark(group="pipeline")
def test_bench_pipeline_vs_naive_loop(benchmark, models, fr_data, tmp_path):
    reg, det, emb, ids, gallery = models
    limit = 90 if benchmark.disabled else 275
    frames = clip(fr_data, limit)
    folder = tmp_path / "frames"  # the same frames for both, decoded once
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), f)
    matcher = NumpyMatcher(threshold=0.637)
    matcher.replace_gallery("SFace", ids, gallery)
    naive_runs, our_runs = [], []
    rounds = 1 if benchmark.disabled else 2
    for _ in range(rounds):
        t0 = time.perf_counter()
        naive_events = naive(det, emb, matcher, frames, 32.0)
        naive_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        our_events, n, stage = ours(reg, det, emb, matcher, str(folder), limit)
        our_runs.append(time.perf_counter() - t0)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert n == len(frames)
    assert our_events == naive_events  # the same facial_id events
    if limit >= 275:
        assert our_events == ["EMP-MIRANDA"]
    embedded_share = stage.stats.embeddings / max(1, stage.stats.faces)
    if benchmark.disabled:
        return
    ours_fps, naive_fps = n / min(our_runs), n / min(naive_runs)
    ratio = ours_fps / naive_fps
    benchmark.extra_info.update(
        ours_fps=ours_fps, naive_fps=naive_fps, ratio=ratio, embedded_share=embedded_share
    )
    print(
        f"\n{n} frames: pipeline {ours_fps:.1f} frames/s, naive loop {naive_fps:.1f} "
        f"frames/s, ratio {ratio:.2f}; faces embedded {embedded_share:.0%} "
        f"(runs: ours {[round(x, 2) for x in our_runs]} s, naive "
        f"{[round(x, 2) for x in naive_runs]} s)"
    )
    assert ratio >= 1.3


@pytest.mark.benchmark(group="pipeline")
@pytest.mark.parametrize("cues", ["texture", "every photo cue"])
def test_bench_pipeline_with_liveness(benchmark, models, fr_data, fr_models, tmp_path, cues):
    """Issues 14 and 23: with the liveness check on (MiniFASNet alone, or with the context
    and motion cues too), the pipeline keeps >= 85% of its frames/s on the Hamilton clip
    (the cues run only on tracks being confirmed), and Miranda's event still goes out. Same
    run, same frames, best of 3 each, alternated. The IR and depth cues need a camera that
    delivers those planes, which the clip has not: they are not in this figure."""
    from fr_cpu.context import ContextAnalyzer, ContextConfig
    from fr_cpu.liveness import LivenessAnalyzer, LivenessConfig
    from fr_cpu.motion import MotionAnalyzer, MotionConfig

    reg, det, emb, ids, gallery = models
    # the whole clip even under `make test`: with the check, Miranda's event waits for his
    # face to reach 64 px (frame 92), so a shorter clip has no event to compare
    limit = 275
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(clip(fr_data, limit)):
        cv2.imwrite(str(folder / f"{i:05d}.png"), f)
    matcher = NumpyMatcher()
    matcher.replace_gallery("SFace", ids, gallery)
    texture = LivenessAnalyzer(
        LivenessConfig(model_dir=fr_models / "minifasnet", onnx_cache_dir=tmp_path / "onnx")
    )
    liveness: list = [texture]
    if cues != "texture":
        liveness += [ContextAnalyzer(ContextConfig()), MotionAnalyzer(MotionConfig())]
    plain_runs, live_runs = [], []
    for _ in range(1 if benchmark.disabled else 3):
        t0 = time.perf_counter()
        plain_events, n, _ = ours(reg, det, emb, matcher, str(folder), limit)
        plain_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        live_events, n2, stage = ours(reg, det, emb, matcher, str(folder), limit, liveness)
        live_runs.append(time.perf_counter() - t0)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert n == n2 == limit and live_events == plain_events == ["EMP-MIRANDA"]
    assert stage.stats.live == 1
    if benchmark.disabled:
        return
    ratio = min(plain_runs) / min(live_runs)
    benchmark.extra_info.update(
        plain_fps=n / min(plain_runs),
        liveness_fps=n / min(live_runs),
        ratio=ratio,
        liveness_checks=stage.stats.liveness_checks,
        liveness_ms_mean=stage.stats.liveness_ms / max(1, stage.stats.liveness_checks),
    )
    print(
        f"\n{cues}: {n} frames: {n / min(plain_runs):.1f} frames/s without liveness, "
        f"{n / min(live_runs):.1f} with ({ratio:.0%}); {stage.stats.liveness_checks} faces "
        f"scored, {stage.stats.liveness_ms / max(1, stage.stats.liveness_checks):.1f} ms each"
    )
    assert ratio >= 0.85


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@pytest.mark.benchmark(group="pipeline")
def test_bench_run_startup_and_rss(benchmark, fr_data, tmp_path):
    """Spawns `fr-edge run` on the clip in a loop at 15 frames/s, without a reachable broker
    (events stay in the outbox): startup to first processed frame, then RSS sampled."""
    seconds = 4 if benchmark.disabled else 20
    cfg = {
        "device_id": "cam-001",
        "broker_url": "https://127.0.0.1:9",  # nothing listens: the outbox keeps the events
        "api_key": "bench-key-12345678",
        "db_path": str(tmp_path / "faces.db"),
        "camera": {
            "plugin": "sim",
            "fps": 15,
            "loop": True,
            "source": str(fr_data / "faces" / "short_hamilton_clip.mp4"),
        },
        "detector": "yunet",
        "embedder": "sface",
        "matcher": "numpy",
        "telemetry": "sim",
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("fr-edge")), "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    startup = None
    samples = []
    try:
        for line in proc.stdout:
            if "first frame processed" in line:
                startup = time.perf_counter() - t0
                break
        assert startup is not None, "fr-edge run never processed a frame"
        end = time.monotonic() + seconds
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.5)
            samples.append(rss_mb(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert proc.returncode in (0, 130, -signal.SIGTERM), out[-2000:]
    steady = samples[len(samples) // 2 :]
    assert steady and all(np.isfinite(steady))
    median = float(np.median(steady))
    growth = steady[-1] - steady[0]
    benchmark.extra_info.update(startup_s=startup, rss_mb=median, rss_growth_mb=growth)
    print(
        f"\nfr-edge run: first frame {startup:.2f} s after start; steady RSS {median:.0f} MB "
        f"(growth over the second half {growth:+.1f} MB)"
    )
    assert 0 < startup < 120 and 50 < median < 4000  # sanity: a process that really ran
