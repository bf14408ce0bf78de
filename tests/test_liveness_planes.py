"""Hardware liveness through the HAL: the ``liveness_ir`` and ``liveness_depth`` cues on
synthetic IR and depth planes (live accepted, a screen refused by IR, a print by depth),
every bad input giving its documented error or ``None`` and being counted by the real
recognition stage, the start-time check of the camera's declared planes, the sim camera's
synthetic planes, the opencv camera's second and third streams (files and a live MJPEG
stream on loopback), and the sim camera's planes through the stage end to end."""

from __future__ import annotations

import logging
import re
import tracemalloc

import cv2
import numpy as np
import pytest
from fr_cpu.planes import (
    MAX_GRID,
    DepthLivenessConfig,
    DepthLivenessCue,
    IrLivenessConfig,
    IrLivenessCue,
    depth_relief_mm,
)
from fr_hal_linux.camera import OpenCvCamera, OpenCvCameraConfig
from fr_hal_sim.camera import SimCamera, SimCameraConfig
from fr_numpy import NumpyMatcher
from pydantic import ValidationError

from fr_core import ConfigError, EventValidator
from fr_core.config import default_config
from fr_core.interfaces import ComponentKind, Detection, FrameResult, ReadStatus
from fr_core.pipeline.engine import Engine
from fr_core.pipeline.liveness import LivenessGate
from fr_core.pipeline.recognition import RecognitionStage
from fr_core.plugins import BuildContext, build_registry
from fr_core.testing import shared_data_dir, wait_for
from fr_core.testing.streams import MjpegServer

REGISTRY = build_registry()
FACE = np.random.default_rng(3).normal(size=128).astype(np.float32)
FACE /= np.linalg.norm(FACE)
# obama.jpg (910 x 1137): YuNet's box of the face, as fractions for the sim's presentation_box
OBAMA_BOX = (370, 91, 240, 329)
OBAMA_FRACTIONS = (370 / 910, 91 / 1137, 240 / 910, 329 / 1137)


def ir_cue(**options):
    return IrLivenessCue(IrLivenessConfig(**options))


def depth_cue(**options):
    return DepthLivenessCue(DepthLivenessConfig(**options))


def block_box(frame):
    """The generated scene's face stand-in, found in the pixels: the 230-grey block is the
    only thing whose red channel is over 163 (the background's is 96)."""
    ys, xs = np.nonzero(frame[..., 2] > 163)
    return (
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    )


def scene(presentation="live", frames=12, **options):
    cam = SimCamera(
        SimCameraConfig(planes=["ir", "depth"], presentation=presentation, frames=frames, **options)
    )
    cam.open()
    out = []
    while (r := cam.read(1.0)).status is ReadStatus.FRAME:
        out.append((r, Detection(block_box(r.frame), 0.99)))
    cam.close()
    return out


def obama(presentation, frames=6, noise=3.0):
    src = str(shared_data_dir() / "faces" / "obama.jpg")
    cam = SimCamera(
        SimCameraConfig(
            source=src,
            repeat=frames,
            noise=noise,
            planes=["ir", "depth"],
            presentation=presentation,
            presentation_box=OBAMA_FRACTIONS,
        )
    )
    cam.open()
    out = []
    while (r := cam.read(1.0)).status is ReadStatus.FRAME:
        out.append((r, Detection(OBAMA_BOX, 0.99)))
    cam.close()
    return out


# --- the cues on synthetic planes ------------------------------------------------------------


@pytest.mark.parametrize("noise", [0.0, 4.0])
def test_a_live_face_scores_live_on_both_cues(noise):
    """The sim's live face (skin under IR, a 3 cm relief) scores at or above both cues'
    thresholds on every frame, with and without sensor noise."""
    ir, depth = ir_cue(), depth_cue()
    for result, det in scene("live", noise=noise):
        assert ir.observe(result, det) >= ir.threshold
        assert depth.observe(result, det) >= depth.threshold


def test_a_screen_is_refused_by_ir():
    """A screen is near black under IR: the IR score is far below its threshold."""
    ir = ir_cue()
    scores = [ir.observe(r, d) for r, d in scene("screen")]
    assert max(scores) < 0.2 < ir.threshold


def test_a_print_passes_ir_but_is_refused_by_depth(fr_data):
    """A print of a real photo shows its picture under IR (the IR cue is fooled, as in
    life) but is flat: the depth cue refuses it. The same photo presented live passes."""
    ir, depth = ir_cue(), depth_cue()
    for result, det in obama("print"):
        assert ir.observe(result, det) >= ir.threshold
        assert depth.observe(result, det) < 0.3 < depth.threshold
    for result, det in obama("live"):
        assert depth.observe(result, det) >= depth.threshold


def pinhole_plane(height, width, normal, distance, f=500.0):
    """Depth (metres) of a plane n . X = d seen by a pinhole camera of focal length f."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(u - width / 2) / f, (v - height / 2) / f, np.ones_like(u)], axis=-1)
    return (distance / (rays @ np.asarray(normal, np.float64))).astype(np.float32)


def test_a_tilted_print_is_flat_and_a_face_is_not():
    """A print tilted 40 degrees from the camera (its depth is not linear in pixels, but its
    inverse depth is) measures under 1 mm of relief; an ellipsoid face of 3 cm on the same
    tilted sheet measures over 15 mm."""
    tilt = np.radians(40)
    z = pinhole_plane(480, 640, [np.sin(tilt), 0.0, np.cos(tilt)], 0.5)
    box = (220, 140, 200, 200)
    cfg = DepthLivenessConfig()
    assert depth_relief_mm(z, box, cfg) < 1.0
    yy, xx = np.mgrid[140:340, 220:420]
    r2 = ((xx - 320) / 100) ** 2 + ((yy - 240) / 100) ** 2
    bump = np.where(r2 < 1, 0.03 * np.sqrt(np.clip(1 - r2, 0, 1)), 0.0)
    z[140:340, 220:420] -= bump.astype(np.float32)
    assert depth_relief_mm(z, box, cfg) > 15.0


def test_memory_per_face_is_bounded_on_a_huge_frame():
    """A face box filling a 4K frame is read on at most MAX_GRID x MAX_GRID points: both
    cues score it allocating under 1 MB, while one plane of the frame is 8-33 MB."""
    h, w = 2160, 3840
    rng = np.random.default_rng(1)
    frame = np.zeros((h, w, 3), np.uint8)
    planes = {
        "depth": (0.7 + rng.normal(0, 0.001, (h, w))).astype(np.float32),
        "ir": rng.integers(60, 200, (h, w)).astype(np.uint8),
    }
    result = FrameResult(ReadStatus.FRAME, frame, 0, 0.0, planes=planes)
    det = Detection((0, 0, w, h), 0.9)
    assert MAX_GRID == 64
    tracemalloc.start()
    try:
        depth_score = depth_cue().observe(result, det)
        ir_score = ir_cue().observe(result, det)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert depth_score == pytest.approx(0.0, abs=0.2) and ir_score == 1.0
    assert peak < 1_000_000


def test_scores_map_relief_and_levels_as_documented():
    """The depth score is relief / (2 x min_relief_mm), clipped; the IR score is the least
    of its brightness, ring and structure terms (a bright flat patch fails on structure,
    a textured patch darker than a quarter of its ring fails on the ring term)."""
    h, w = 240, 320
    frame = np.zeros((h, w, 3), np.uint8)
    det = Detection((100, 60, 100, 100), 0.9)
    flat = np.full((h, w), 120, np.uint8)
    r = FrameResult(ReadStatus.FRAME, frame, 0, 0.0, planes={"ir": flat})
    assert ir_cue().observe(r, det) == pytest.approx(0.0)
    textured = np.full((h, w), 250, np.uint8)
    rng = np.random.default_rng(0)
    textured[60:160, 100:200] = rng.integers(40, 80, (100, 100)).astype(np.uint8)
    r = FrameResult(ReadStatus.FRAME, frame, 0, 0.0, planes={"ir": textured})
    # mean ~60: brightness 1, structure 1; ring 250: ring term 60 / (0.5 x 250) ~ 0.47
    assert ir_cue().observe(r, det) == pytest.approx(59.5 / 125, abs=0.03)
    rough = (0.6 + 0.05 * rng.integers(0, 2, (h, w))).astype(np.float32)  # 5 cm bumps
    r = FrameResult(ReadStatus.FRAME, frame, 0, 0.0, planes={"depth": rough})
    assert depth_cue().observe(r, det) == 1.0
    assert depth_cue(min_relief_mm=100).observe(r, det) == pytest.approx(0.25, abs=0.01)


# --- bad input -------------------------------------------------------------------------------

H, W = 480, 640
BOX = (200, 120, 160, 160)


def frame_with(planes):
    return FrameResult(ReadStatus.FRAME, np.zeros((H, W, 3), np.uint8), 0, 0.0, planes=planes)


def nan_depth():
    return np.full((H, W), np.nan, np.float32)


def inf_depth():
    z = np.full((H, W), 0.6, np.float32)
    z[200, 280] = np.inf
    return z


def mostly_holes():
    z = np.zeros((H, W), np.float32)
    z[120:140, 200:360] = 0.6  # 12% of the box has a reading
    return z


ERRORS = [
    (
        "ir",
        {"ir": np.zeros((240, 320), np.uint8)},
        r"shape \(240, 320\) differs from the frame's H x W \(480, 640\)",
    ),
    ("ir", {"ir": np.zeros((H, W, 3), np.uint8)}, r"shape \(480, 640, 3\) differs"),
    ("ir", {"ir": np.zeros((H, W), np.float32)}, r"dtype is float32; allowed: uint8"),
    (
        "depth",
        {"depth": np.zeros((H, W), np.uint16)},
        r"dtype is uint16; allowed: float32 \(metres",
    ),
    ("depth", {"depth": np.zeros((H + 1, W), np.float32)}, r"shape \(481, 640\) differs"),
    ("depth", {"depth": inf_depth()}, r"infinite values in the face box; allowed: finite metres"),
    ("depth", {"depth": -np.ones((H, W), np.float32)}, r"negative values"),
    ("ir", {"ir": [[0]]}, r"is a list; allowed: a numpy array"),
]
UNSCORED = [
    ("ir", {}),  # the camera declared the plane; this frame has none
    ("depth", {"ir": np.zeros((H, W), np.uint8)}),
    ("depth", {"depth": nan_depth()}),  # NaN: no reading anywhere
    ("depth", {"depth": np.zeros((H, W), np.float32)}),  # 0: no reading either
    ("depth", {"depth": mostly_holes()}),  # too few valid pixels
]


def cue_for(which):
    return ir_cue() if which == "ir" else depth_cue()


@pytest.mark.parametrize(("which", "planes", "message"), ERRORS)
def test_bad_planes_raise_naming_what_came_and_what_is_allowed(which, planes, message):
    """Each broken plane raises a ValueError naming the cue, what came and what is allowed."""
    with pytest.raises(ValueError, match=message) as exc:
        cue_for(which).observe(frame_with(planes), Detection(BOX, 0.9))
    assert f"liveness_{which}" in str(exc.value)


@pytest.mark.parametrize(("which", "planes"), UNSCORED)
def test_missing_planes_and_missing_readings_give_none(which, planes):
    """A frame without the plane, or whose face box has too few depth readings (NaN or 0),
    is no evidence either way: None."""
    assert cue_for(which).observe(frame_with(planes), Detection(BOX, 0.9)) is None


def test_without_planes_analyze_says_why():
    """analyze(frame, detection) has no plane to read: a clear ValueError, not a score."""
    with pytest.raises(ValueError, match=r"reads the frame's 'ir' plane.*observe"):
        ir_cue().analyze(np.zeros((H, W, 3), np.uint8), Detection(BOX, 0.9))


class FixedDetector:
    def __init__(self, box=BOX):
        self.box = box

    def detect(self, frame):
        return [Detection(self.box, 0.99)]


class BlockDetector:
    def detect(self, frame):
        return [Detection(block_box(frame), 0.99)]


class Embedder:
    model_name, dim = "SFace", 128

    def embed(self, frame, detection):
        return FACE


def stage_for(cues, detector, cooldown=30.0):
    matcher = NumpyMatcher(threshold=0.5)
    matcher.replace_gallery("SFace", ["A"], FACE[None, :])
    clock = {"t": 0.0}
    validator = EventValidator("cam-1", 5, 0.8, cooldown, clock=lambda: clock["t"])
    events = []
    stage = RecognitionStage(
        detector,
        Embedder(),
        matcher,
        validator,
        liveness=LivenessGate(cues, 5),
        attack_events=True,
        on_event=lambda e, t: events.append(
            (e.event_type, getattr(e, "user_id", None) or getattr(e, "claimed_user_id", None))
        ),
    )

    def feed(results):
        for i, r in enumerate(results):
            clock["t"] = i / 10
            stage(None, r)

    return stage, events, feed


@pytest.mark.parametrize(("which", "planes", "message"), ERRORS[:6])
def test_bad_planes_are_counted_errors_in_the_stage(which, planes, message, caplog):
    """Through the real recognition stage, a broken plane costs each frame its score (counted
    in liveness_errors, logged with the cause), never a crash, and no event goes out."""
    stage, events, feed = stage_for([cue_for(which)], FixedDetector())
    with caplog.at_level(logging.ERROR):
        feed([frame_with(planes)] * 12)
    assert events == []
    assert stage.stats.liveness_errors == 12 and stage.stats.liveness_checks == 0
    assert stage.stats.liveness_deferred >= 1 and stage.stats.attacks == 0
    assert f"liveness liveness_{which}: ValueError" in caplog.text
    assert any(re.search(message, r.getMessage()) for r in caplog.records)


@pytest.mark.parametrize(("which", "planes"), UNSCORED)
def test_missing_planes_are_counted_unscored_in_the_stage(which, planes):
    """Through the stage, a frame with nothing usable for a cue is counted in
    liveness_unscored (not as an error) and holds the event: no evidence, no event."""
    stage, events, feed = stage_for([cue_for(which)], FixedDetector())
    feed([frame_with(planes)] * 12)
    assert events == []
    assert stage.stats.liveness_unscored == 12 and stage.stats.liveness_errors == 0
    assert stage.stats.liveness_deferred >= 1


# --- the start-time check --------------------------------------------------------------------


def build(cue, camera):
    ctx = BuildContext(registry=REGISTRY, app_config=default_config(camera=camera))
    return REGISTRY.create(ComponentKind.ANALYZER, cue, {}, ctx, path="analyzers.0")


def test_a_camera_that_does_not_declare_the_plane_is_refused_at_start(fr_data):
    """A cue configured with a camera that does not declare its plane is a configuration
    error when the engine builds it, naming the camera, what it delivers and what to do."""
    with pytest.raises(
        ConfigError,
        match=r"reads the camera's 'ir' plane, but camera 'sim' as configured delivers no plane",
    ):
        build("liveness_ir", {"plugin": "sim"})
    with pytest.raises(ConfigError, match=r"delivers 'ir'; .*depth_device"):
        build("liveness_depth", {"plugin": "sim", "planes": ["ir"]})
    assert build("liveness_ir", {"plugin": "sim", "planes": ["ir"]}).gates_identity
    clip = str(fr_data / "faces" / "short_hamilton_clip.mp4")
    assert build("liveness_ir", {"plugin": "opencv", "source": clip, "ir_device": clip})
    with pytest.raises(ConfigError, match="camera 'opencv' as configured delivers 'ir'"):
        build("liveness_depth", {"plugin": "opencv", "source": clip, "ir_device": clip})
    # the whole engine refuses to start, and says so
    cfg = default_config(
        camera={"plugin": "sim", "frames": 3}, analyzers=[{"plugin": "liveness_depth"}]
    )
    with pytest.raises(ConfigError, match="liveness_depth reads the camera's 'depth' plane"):
        Engine(cfg, REGISTRY).start()


def test_outside_an_engine_there_is_no_camera_to_check():
    """Built without a device config (fr-edge evaluate-liveness, tests) a cue builds."""
    cue = REGISTRY.create(ComponentKind.ANALYZER, "liveness_depth")
    assert cue.name == "liveness_depth" and cue.threshold == 0.5


def test_cue_options_are_validated():
    """Unknown or out-of-range options are refused with the option named."""
    with pytest.raises(ConfigError, match="min_relief_mm"):
        REGISTRY.create(ComponentKind.ANALYZER, "liveness_depth", {"min_relief_mm": 0})
    with pytest.raises(ConfigError, match="darkness"):
        REGISTRY.create(ComponentKind.ANALYZER, "liveness_ir", {"darkness": 3})


# --- the sim camera's synthetic planes -------------------------------------------------------


def test_sim_planes_are_aligned_and_typed_and_absent_by_default():
    """With planes: [ir, depth] each frame carries an H x W uint8 IR and float32 depth plane
    and the camera declares them; without the option nothing changes: no planes, the same
    frames (noise included) as before."""
    with_planes = SimCamera(
        SimCameraConfig(planes=["ir", "depth"], frames=4, width=96, height=64, noise=2.0)
    )
    plain = SimCamera(SimCameraConfig(frames=4, width=96, height=64, noise=2.0))
    assert with_planes.planes == ("ir", "depth") and plain.planes == ()
    with_planes.open()
    plain.open()
    for _ in range(4):
        a, b = with_planes.read(1.0), plain.read(1.0)
        assert b.planes == {} and np.array_equal(a.frame, b.frame)
        assert a.planes["ir"].shape == (64, 96) and a.planes["ir"].dtype == np.uint8
        assert a.planes["depth"].shape == (64, 96) and a.planes["depth"].dtype == np.float32
        assert np.isfinite(a.planes["depth"]).all()


def test_sim_presentation_script_switches_what_is_shown():
    """presentation_script changes the presentation from a given frame on: live, then a
    screen from frame 3 (its face box goes dark under IR), then a print from frame 6."""
    steps = [{"frame": 3, "presentation": "screen"}, {"frame": 6, "presentation": "print"}]
    shots = scene("live", frames=9, presentation_script=steps)
    ir = ir_cue()
    kinds = ["live" if ir.observe(r, d) >= ir.threshold else "refused" for r, d in shots[:6]]
    assert kinds == ["live"] * 3 + ["refused"] * 3
    depth = depth_cue()
    assert [depth.observe(r, d) >= 0.5 for r, d in shots] == [True] * 3 + [False] * 6


def test_sim_plane_options_are_checked():
    """Planes with a file source need the presentation box; a plane named twice, a box
    outside the frame, a background in front of the face are refused, each saying why."""
    with pytest.raises(ValidationError, match="need presentation_box"):
        SimCameraConfig(source=str(shared_data_dir() / "faces" / "obama.jpg"), planes=["ir"])
    with pytest.raises(ValidationError, match="name each plane once"):
        SimCameraConfig(planes=["ir", "ir"])
    with pytest.raises(ValidationError, match="fractions of the frame"):
        SimCameraConfig(planes=["ir"], presentation_box=(0.5, 0.5, 0.6, 0.2))
    with pytest.raises(ValidationError, match="must lie behind the face"):
        SimCameraConfig(planes=["depth"], background_distance_m=0.5)
    with pytest.raises(ValidationError, match="'live', 'screen' or 'print'"):
        SimCameraConfig(planes=["ir"], presentation="mask")


# --- the opencv camera's plane streams -------------------------------------------------------


@pytest.fixture(scope="module")
def clip(fr_data):
    cap = cv2.VideoCapture(str(fr_data / "faces" / "short_hamilton_clip.mp4"))
    frames = []
    while len(frames) < 20:
        ok, f = cap.read()
        assert ok
        frames.append(cv2.resize(f, (320, 180)))
    return frames


def write_video(path, frames, size):
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for f in frames:
        out.write(cv2.resize(f, size))
    out.release()


def read_all(cam, limit=200):
    got = []
    for _ in range(limit):
        r = cam.read(1.0)
        if r.status is not ReadStatus.FRAME:
            break
        got.append(r)
    return got


def test_a_file_ir_stream_is_read_in_step_and_its_end_does_not_end_the_rgb(tmp_path, clip):
    """RGB and IR files read frame by frame: the IR plane is the IR frame in grey, resized
    to the RGB frame's size; when the IR file ends first, the RGB frames go on to their own
    end without the plane, each counted."""
    rgb, ir = tmp_path / "rgb.avi", tmp_path / "ir.avi"
    write_video(rgb, clip, (320, 180))
    write_video(ir, [255 - f for f in clip[:8]], (160, 90))  # half the size, 8 frames
    cam = OpenCvCamera(OpenCvCameraConfig(source=str(rgb), ir_device=str(ir)))
    assert cam.planes == ("ir",)
    cam.open()
    try:
        got = read_all(cam)
    finally:
        cam.close()
    assert len(got) == 20
    with_ir = [r for r in got if "ir" in r.planes]
    assert len(with_ir) == 8 and all(r.planes == {} for r in got[8:])
    assert cam.plane_failures == {"ir": 12}
    plane = with_ir[0].planes["ir"]
    assert plane.shape == (180, 320) and plane.dtype == np.uint8
    expected = cv2.cvtColor(255 - clip[0], cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert np.abs(plane.astype(np.float32) - expected).mean() < 20  # JPEG, half-size
    # and the plane is the IR stream's, not the RGB's: inverted, far from the RGB's grey
    rgb_grey = cv2.cvtColor(with_ir[0].frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert np.abs(plane.astype(np.float32) - rgb_grey).mean() > 40


def test_a_16_bit_depth_sequence_becomes_metres(tmp_path, clip):
    """A 16-bit depth image sequence (millimetres, 0 = no reading) read alongside the RGB
    becomes float32 metres of the RGB frame's size (nearest-neighbour: no invented depth)."""
    rgb = tmp_path / "rgb.avi"
    write_video(rgb, clip[:5], (320, 180))
    for i in range(5):
        mm = np.full((90, 160), 600 + 10 * i, np.uint16)
        mm[:10, :10] = 0
        cv2.imwrite(str(tmp_path / f"depth_{i:03d}.png"), mm)
    cam = OpenCvCamera(
        OpenCvCameraConfig(
            source=str(rgb),
            depth_device=str(tmp_path / "depth_%03d.png"),
            depth_backend="images",
        )
    )
    cam.open()
    try:
        got = read_all(cam)
    finally:
        cam.close()
    assert len(got) == 5 and cam.plane_failures == {"depth": 0}
    for i, r in enumerate(got):
        z = r.planes["depth"]
        assert z.shape == (180, 320) and z.dtype == np.float32
        assert np.unique(z).tolist() == pytest.approx([0.0, 0.6 + 0.01 * i])


def test_a_depth_stream_of_8_bit_colour_is_refused_per_frame(tmp_path, clip, caplog):
    """A depth source delivering 8-bit colour frames (OpenCV converted them) cannot be
    depth: the RGB frames go out without it, counted, and the log says what came and what
    is allowed."""
    rgb = tmp_path / "rgb.avi"
    write_video(rgb, clip[:6], (320, 180))
    cam = OpenCvCamera(OpenCvCameraConfig(source=str(rgb), depth_device=str(rgb)))
    cam.open()
    with caplog.at_level(logging.WARNING):
        try:
            got = read_all(cam)
        finally:
            cam.close()
    assert len(got) == 6 and all(r.planes == {} for r in got)
    assert cam.plane_failures == {"depth": 6}
    assert "allowed: 16-bit single-channel values" in caplog.text
    assert caplog.text.count("goes without its depth plane") == 1  # rate-limited


def test_a_live_ir_stream_that_stalls_never_holds_up_the_rgb(clip):
    """RGB and IR as two live MJPEG streams on loopback: frames carry the IR plane; while the
    IR stream is paused the RGB frames keep coming without it (counted); once it resumes the
    plane comes back."""
    with (
        MjpegServer(clip, fps=30) as rgb,
        MjpegServer([255 - f[:90, :160] for f in clip], fps=30) as ir,
    ):
        cam = OpenCvCamera(
            OpenCvCameraConfig(
                source=rgb.url, ir_device=ir.url, stall_seconds=1.0, reopen_backoff_max_seconds=1.0
            )
        )
        cam.open()
        try:

            def frame_has_ir(want):
                r = cam.read(0.5)
                return r.status is ReadStatus.FRAME and ("ir" in r.planes) is want

            assert wait_for(lambda: frame_has_ir(True), timeout=15)
            r = cam.read(1.0)
            if "ir" in r.planes:
                assert r.planes["ir"].shape == r.frame.shape[:2] == (180, 320)
            ir.pause()
            before = cam.plane_failures["ir"]
            assert wait_for(lambda: frame_has_ir(False), timeout=10)
            # RGB frames keep coming, each without the plane and counted
            assert wait_for(
                lambda: frame_has_ir(False) and cam.plane_failures["ir"] >= before + 10,
                timeout=15,
            )
            ir.resume()
            assert wait_for(lambda: frame_has_ir(True), timeout=20)
        finally:
            cam.close()


def test_opencv_plane_options_are_checked(tmp_path):
    """A plane source that does not exist is refused, naming it; URLs, indexes and image
    sequences in an existing folder are accepted; no plane option, no planes."""
    with pytest.raises(ValidationError, match=r"'/nope/ir' does not exist"):
        OpenCvCameraConfig(source="/dev/null", ir_device="/nope/ir")
    with pytest.raises(ValidationError, match="folder '/nope' does not exist"):
        OpenCvCameraConfig(source="/dev/null", depth_device="/nope/d_%04d.png")
    cfg = OpenCvCameraConfig(
        source="/dev/null", ir_device="2", depth_device=str(tmp_path / "d_%04d.png")
    )
    assert cfg.planes == ("ir", "depth")
    assert OpenCvCameraConfig(source="/dev/null").planes == ()
    assert OpenCvCamera(OpenCvCameraConfig(source="/dev/null")).planes == ()


# --- end to end: the sim camera's planes through the stage -----------------------------------


def run_camera(cam, cues, detector, frames=40):
    stage, events, feed = stage_for(cues, detector)
    cam.open()
    results = []
    while len(results) < frames and (r := cam.read(1.0)).status is ReadStatus.FRAME:
        results.append(r)
    cam.close()
    feed(results)
    return stage, events


@pytest.mark.parametrize(
    ("presentation", "expected", "deciding"),
    [
        ("live", [("facial_id", "A")], None),
        ("screen", [("presentation_attack", "A")], {"liveness_ir"}),
        ("print", [("presentation_attack", "A")], {"liveness_ir", "liveness_depth"}),
    ],
)
def test_sim_planes_through_the_stage(presentation, expected, deciding):
    """The sim camera's generated scene with synthetic planes, through the real stage with
    both cues: a live face gets its facial_id event, a screen or a print held in its place
    gets none (a presentation_attack event instead)."""
    cam = SimCamera(SimCameraConfig(planes=["ir", "depth"], presentation=presentation))
    stage, events = run_camera(cam, [ir_cue(), depth_cue()], BlockDetector())
    assert events == expected
    assert stage.stats.liveness_errors == 0 and stage.stats.liveness_unscored == 0
    if deciding:
        assert set(stage.stats.attacks_by_cue) <= deciding and stage.stats.attacks == 1


def test_a_print_of_a_real_photo_is_refused_by_depth_through_the_stage(fr_data):
    """A real portrait presented as a print fools the IR cue but not the depth cue: no
    facial_id event, and the refusal is the depth cue's; presented live it gets its event."""
    for presentation, expected in (
        ("print", [("presentation_attack", "A")]),
        ("live", [("facial_id", "A")]),
    ):
        cam = SimCamera(
            SimCameraConfig(
                source=str(fr_data / "faces" / "obama.jpg"),
                repeat=10,
                noise=3.0,
                planes=["ir", "depth"],
                presentation=presentation,
                presentation_box=OBAMA_FRACTIONS,
            )
        )
        stage, events = run_camera(cam, [ir_cue(), depth_cue()], FixedDetector(OBAMA_BOX))
        assert events == expected
        if presentation == "print":
            assert stage.stats.attacks_by_cue == {"liveness_depth": 1}


def test_plane_failures_of_the_camera_reach_the_engine_s_figures():
    """What the camera counts in plane_failures is what heartbeats' camera.plane_failures
    carry (the engine reads it from the running camera)."""
    cfg = default_config(camera={"plugin": "sim", "frames": 3, "planes": ["ir"]})
    engine = Engine(cfg, REGISTRY)
    engine.start()
    try:
        engine.components["camera"].plane_failures = {"ir": 3}
        assert engine.refresh_stats().camera_plane_failures == {"ir": 3}
    finally:
        engine.stop()
