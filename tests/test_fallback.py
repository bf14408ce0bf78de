"""``fallback``: a component that cannot start is replaced by the one its block names, loudly
(issue 13, item 5). Here TensorRT is absent, so the TensorRT components cannot start: that
is the case a Jetson meets when an engine cannot be built. The whole run (log, heartbeats,
metrics) is checked in tests/test_run.py and tests/test_metrics.py."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from fr_core import hookimpl
from fr_core.config import default_config
from fr_core.errors import ComponentUnavailableError, ConfigError, PluginError
from fr_core.interfaces import ComponentKind
from fr_core.pipeline.engine import Engine
from fr_core.plugins import build_registry

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT starts here"
)
REGISTRY = build_registry()


def engine(**blocks):
    cfg = default_config(camera={"plugin": "sim", "frames": 3, "width": 64, "height": 48}, **blocks)
    return Engine(cfg, REGISTRY)


def test_the_cpu_counterpart_runs_with_the_options_it_shares(caplog):
    eng = engine(
        detector={
            "plugin": "yunet_trt",
            "fallback": "cpu",
            "score_threshold": 0.7,
            "precision": "fp32",
            "workspace_mb": 64,
        },
    )
    with caplog.at_level(logging.ERROR), eng:
        detector = eng.components["detector"]
        assert type(detector).__name__ == "YuNetDetector"
        assert detector.config.score_threshold == 0.7  # shared; precision/workspace dropped
        assert eng.fallbacks["detector"]["configured"] == "yunet_trt"
        assert eng.fallbacks["detector"]["running"] == "yunet"
        assert "TensorRT is not installed" in eng.fallbacks["detector"]["reason"]
    assert "detector: detector 'yunet_trt' cannot start" in caplog.text
    assert "running 'yunet' instead (fallback)" in caplog.text


def test_a_named_fallback_with_its_own_options():
    eng = engine(
        embedder={"plugin": "sface_trt", "fallback": "sface", "fallback_options": {}},
    )
    with eng:
        assert type(eng.components["embedder"]).__name__ == "SFaceEmbedder"
        assert eng.fallbacks["embedder"]["running"] == "sface"


def test_without_a_fallback_the_start_fails_and_says_why():
    eng = engine(detector="yunet_trt")
    with pytest.raises(ComponentUnavailableError, match=r"yunet_trt.*TensorRT is not installed"):
        eng.start()
    assert eng.fallbacks == {}


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        (
            {"detector": {"plugin": "yunet", "fallback": "cpu"}},
            r"detector\.fallback: detector 'yunet' declares no CPU counterpart",
        ),
        (
            {"detector": {"plugin": "yunet_trt", "fallback": "nope"}},
            r"detector\.fallback: unknown detector 'nope'; available: .*yunet",
        ),
        ({"detector": {"plugin": "yunet", "fallback": "yunet"}}, "cannot be its own fallback"),
        # the transport is built by the IoT client, not the engine: a fallback would not run
        ({"transport": {"plugin": "https", "fallback": "mqtt"}}, "a transport cannot have"),
        # a fallback that cannot run here either is refused before start
        ({"detector": {"plugin": "yunet", "fallback": "yunet_trt"}}, "not available here either"),
        (
            {
                "detector": {
                    "plugin": "yunet_trt",
                    "fallback": "cpu",
                    "fallback_options": {"score_threshold": 2},
                }
            },
            r"detector\.fallback\.score_threshold",
        ),
    ],
)
def test_a_bad_fallback_is_a_config_error_before_anything_starts(blocks, message):
    with pytest.raises(ConfigError, match=message):
        engine(**blocks)


def test_engine_only_options_stay_with_the_engine_and_renamed_ones_follow():
    """emotion_trt's cache_dir holds engines, its onnx_cache_dir the converted model: the
    CPU emotion analyzer gets the latter as its cache_dir, never the former."""
    block = {
        "plugin": "emotion_trt",
        "fallback": "cpu",
        "cache_dir": "/engines",
        "onnx_cache_dir": "/models",
        "precision": "fp32",
        "margin": 0.2,
    }
    from fr_core.config import ComponentConfig
    from fr_core.interfaces import ComponentKind

    name, options = REGISTRY.fallback_of(ComponentKind.ANALYZER, ComponentConfig(**block))
    assert name == "emotion" and options == {"cache_dir": "/models", "margin": 0.2}


def test_a_failing_fallback_names_both_failures(monkeypatch):
    from fr_cpu.models import YuNetDetector

    def broken(self, config):
        raise RuntimeError("the CPU model file is damaged")

    monkeypatch.setattr(YuNetDetector, "__init__", broken)
    eng = engine(detector={"plugin": "yunet_trt", "fallback": "cpu"})
    with pytest.raises(
        Exception,
        match=r"detector: detector 'yunet_trt' cannot start \(.*"
        r"TensorRT is not installed.*\); its fallback 'yunet' cannot start either",
    ):
        eng.start()


def test_cli_commands_build_components_with_their_fallback(caplog):
    """fr-edge sync, enroll, calibrate... build the config's components as fr-edge run does,
    fallback included: on a Jetson whose engine cannot be built they still work."""
    from fr_core.app.cli import _component

    cfg = default_config(embedder={"plugin": "sface_trt", "fallback": "cpu"})
    with caplog.at_level(logging.ERROR):
        embedder = _component(cfg, REGISTRY, "embedder", "sface")
    assert type(embedder).__name__ == "SFaceEmbedder"
    assert "running 'sface' instead (fallback)" in caplog.text


def test_a_fallback_must_provide_what_the_component_it_replaces_provides(fr_registry):
    """A liveness analyzer falling back to the emotion analyzer would turn the liveness gate
    off without a word; an embedder falling back to another model would fill the gallery
    with embeddings nothing matches. Both are refused when the config is read."""
    cfg = default_config(analyzers=[{"plugin": "liveness_trt", "fallback": "emotion"}])
    block = cfg.analyzers[0]
    refused = r"cannot stand in for 'liveness_trt'.*gates_identity=True.*liveness gate off"
    with pytest.raises(ConfigError, match=refused):
        fr_registry.fallback_of(ComponentKind.ANALYZER, block, "analyzers.0")
    ok = default_config(analyzers=[{"plugin": "liveness_trt", "fallback": "cpu"}]).analyzers[0]
    assert fr_registry.fallback_of(ComponentKind.ANALYZER, ok, "analyzers.0")[0] == "liveness"


def test_a_component_that_lies_about_what_it_provides_is_refused(fr_add_plugin):
    class Liar:
        name = "liar"
        gates_identity = False

        def analyze(self, frame, detection):
            return None

    class Plugin:
        @hookimpl
        def fr_register_analyzers(self, register):
            register("liar", lambda cfg, ctx: Liar(), provides={"gates_identity": True})

    registry = fr_add_plugin(Plugin(), "liar-plugin")
    with pytest.raises(PluginError, match="registered gates_identity=True but built a Liar"):
        registry.create(ComponentKind.ANALYZER, "liar", {})
