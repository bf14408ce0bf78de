"""`--preview`: the annotated video of `fr-edge demo` / `fr-edge run`, read back frame by frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from fr_numpy import NumpyMatcher

from fr_core import EventValidator
from fr_core.app.cli import main
from fr_core.app.demo import run_demo
from fr_core.app.preview import CONFIRMED, KNOWN, UNKNOWN, PreviewWriter
from fr_core.errors import FrEdgeError
from fr_core.interfaces import ComponentKind, FrameResult, ReadStatus
from fr_core.pipeline.recognition import RecognitionStage
from fr_core.plugins import build_registry


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def edge_color(frame, box):
    """The median colour along the top edge of a drawn box (2 px line)."""
    x, y, w, _ = box
    return np.median(frame[y : y + 2, x + 2 : x + w - 2].reshape(-1, 3), axis=0)


def test_demo_writes_an_annotated_video(tmp_path):
    out = tmp_path / "out.mp4"
    lines = []
    result = run_demo(
        build_registry(), frames=30, workdir=tmp_path / "w", preview=out, echo=lines.append
    )
    assert out.is_file() and not list(tmp_path.glob(".*partial*"))
    frames = read_video(out)
    processed = result["engine"]["frames"]
    assert len(frames) == processed and frames[0].shape == (360, 640, 3)
    assert f"annotated video: {out} ({processed} frames)" in lines
    drawn = result["preview"]
    named = [a for a in drawn if a.text.endswith("EMP-0001 (astronaut)")]  # dev mode: names
    assert named, [a.text for a in drawn]
    # and it is in the video: the box's top edge has the colour of its state
    for a in named[-3:]:
        got = edge_color(frames[a.frame], a.box)
        assert np.all(np.abs(got - np.array(a.color)) < 60), (got, a.color)
    assert {a.color for a in named} <= {KNOWN, CONFIRMED}


@pytest.fixture(scope="module")
def stage_parts(fr_data):
    reg = build_registry()
    det = reg.create(ComponentKind.DETECTOR, "yunet")
    emb = reg.create(ComponentKind.EMBEDDER, "sface")
    photo = cv2.imread(str(fr_data / "faces" / "two_people.jpg"))
    obama = cv2.imread(str(fr_data / "faces" / "obama.jpg"))
    face = max(det.detect(obama), key=lambda d: d.bbox[2] * d.bbox[3])
    matcher = NumpyMatcher(threshold=0.637)
    matcher.replace_gallery("SFace", ["EMP-OBAMA"], emb.embed(obama, face)[None, :])
    return det, emb, matcher, photo


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_boxes_ids_and_colours_are_in_the_frames(tmp_path, stage_parts, suffix):
    det, emb, matcher, photo = stage_parts
    stage = RecognitionStage(det, emb, matcher, EventValidator("cam-001", 3, 0.8, 60))
    out = tmp_path / f"p{suffix}"
    writer = PreviewWriter(out, stage, fps=10)  # no name_of: production shows no names
    for i in range(6):
        result = FrameResult(ReadStatus.FRAME, photo, i, i / 10)
        stage(None, result)
        writer(None, result)
    assert writer.close() == out
    frames = read_video(out)
    assert len(frames) == 6
    last = [a for a in writer.annotations if a.frame == 5]
    texts = sorted(a.text.split(" ", 1)[1] for a in last)
    assert texts == ["EMP-OBAMA", "unknown"]  # Obama recognised, Biden not; no names
    for a in last:
        expected = {"EMP-OBAMA": CONFIRMED, "unknown": UNKNOWN}[a.text.split(" ", 1)[1]]
        assert a.color == expected  # confirmed after 3 frames: an event was due
        got = edge_color(frames[5], a.box)
        assert np.all(np.abs(got - np.array(expected)) < 60), (got, expected)
    # the source frame itself is untouched by drawing
    assert not np.array_equal(frames[5], photo)


def test_bad_preview_paths_are_refused_before_anything_starts(tmp_path):
    with pytest.raises(FrEdgeError, match=r"must end in \.mp4 or \.avi"):
        PreviewWriter(tmp_path / "x.gif", None)
    with pytest.raises(FrEdgeError, match="does not exist"):
        PreviewWriter(tmp_path / "missing" / "x.mp4", None)
    out = CliRunner().invoke(main, ["demo", "--preview", str(tmp_path / "nope" / "v.mp4")])
    assert out.exit_code != 0 and "does not exist" in out.output
    assert "reference broker" not in out.output  # refused before the broker started
